"""Canonical end-of-conversation reasons, and mappings from each platform's raw values.

Filled in by the contracts work (see reference/end-reasons.md); an unknown value maps to UNKNOWN.
"""

from __future__ import annotations

from enum import StrEnum


class EndReason(StrEnum):
    CUSTOMER_HANGUP = "CUSTOMER_HANGUP"
    AGENT_HANGUP = "AGENT_HANGUP"
    HUMAN_AGENT_HANGUP = "HUMAN_AGENT_HANGUP"
    BLIND_TRANSFER = "BLIND_TRANSFER"
    CCAAS_TRANSFER = "CCAAS_TRANSFER"
    TRANSFER_FAILED = "TRANSFER_FAILED"
    CUSTOMER_HANGUP_DURING_TRANSFER = "CUSTOMER_HANGUP_DURING_TRANSFER"
    VOICEMAIL = "VOICEMAIL"
    IVR_REACHED = "IVR_REACHED"
    NO_ANSWER = "NO_ANSWER"
    BUSY = "BUSY"
    INVALID_NUMBER = "INVALID_NUMBER"
    DECLINED = "DECLINED"
    BLOCKED_OR_SPAM = "BLOCKED_OR_SPAM"
    DIAL_FAILED = "DIAL_FAILED"
    CALLER_ABANDONED_BEFORE_CONNECT = "CALLER_ABANDONED_BEFORE_CONNECT"
    SILENCE_TIMEOUT = "SILENCE_TIMEOUT"
    MAX_DURATION = "MAX_DURATION"
    NO_AUDIO = "NO_AUDIO"
    CANCELED = "CANCELED"
    TAKEN_OVER = "TAKEN_OVER"
    CUSTOM_CONDITION = "CUSTOM_CONDITION"
    NETWORK_DROP = "NETWORK_DROP"
    CARRIER_COMPLETED = "CARRIER_COMPLETED"
    PLATFORM_ERROR = "PLATFORM_ERROR"
    PROVIDER_ERROR = "PROVIDER_ERROR"
    CONFIG_OR_BILLING_ERROR = "CONFIG_OR_BILLING_ERROR"
    EXPIRED = "EXPIRED"
    OTHER = "OTHER"
    UNKNOWN = "UNKNOWN"


def canonical_end_reason(platform: str, raw: str | None) -> EndReason:
    """Map a platform's raw end reason to the canonical vocabulary; never raises."""
    if raw is None:
        return EndReason.UNKNOWN
    try:
        return EndReason(raw.strip().upper())
    except ValueError:
        return EndReason.UNKNOWN
