"""Canonical end-of-conversation reasons, and the tables that map each platform's raw values onto them.

Every platform names the end of a call in its own vocabulary (Vapi alone has 627 `endedReason` values,
ElevenLabs sends free text). Post-call flows are written against one vocabulary, ours, so that a flow
such as "update the CRM on CUSTOMER_HANGUP" works whatever platform carried the call. The names follow
the seed (Copilot Studio): CUSTOMER_HANGUP, BLIND_TRANSFER, CCAAS_TRANSFER; the rest is the union found
across platforms (see reference/end-reasons.md).

Mapping never raises: vocabularies drift (new Vapi providers appear monthly), so an unrecognised value
maps to UNKNOWN and the event still flows. The raw value and the platform travel beside the canonical one.

    canonical_end_reason("vapi", "customer-ended-call")   -> EndReason.CUSTOMER_HANGUP
    canonical_end_reason("retell", "transfer_bridged")     -> EndReason.CCAAS_TRANSFER
    canonical_end_reason("elevenlabs", "The user hung up") -> EndReason.CUSTOMER_HANGUP
    canonical_end_reason("acme", "whatever")               -> EndReason.UNKNOWN

Three derived traits let flows and dashboards group reasons without listing them: `end_actor` (who
ended it), `connected` (whether a live customer was reached) and `outcome_class`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Literal

EndActor = Literal["customer", "agent_ai", "human_agent", "system", "carrier", "unknown"]
OutcomeClass = Literal["completed", "not_connected", "transferred", "error"]


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


R = EndReason

# ── Traits: who ended it, was a live customer reached, and the coarse outcome ─────────────────────
# `connected` is True only when the reason implies a live customer was on the line; errors and
# unreached calls are False. UNKNOWN/OTHER assume the ordinary case (a conversation that took place)
# because most unrecognised values in practice are ordinary endings (ElevenLabs free text, new names).

TRAITS: dict[EndReason, tuple[EndActor, bool, OutcomeClass]] = {
    R.CUSTOMER_HANGUP: ("customer", True, "completed"),
    R.AGENT_HANGUP: ("agent_ai", True, "completed"),
    R.HUMAN_AGENT_HANGUP: ("human_agent", True, "completed"),
    R.BLIND_TRANSFER: ("agent_ai", True, "transferred"),
    R.CCAAS_TRANSFER: ("agent_ai", True, "transferred"),
    R.TRANSFER_FAILED: ("system", True, "error"),
    R.CUSTOMER_HANGUP_DURING_TRANSFER: ("customer", True, "completed"),
    R.VOICEMAIL: ("system", False, "not_connected"),
    R.IVR_REACHED: ("system", False, "not_connected"),
    R.NO_ANSWER: ("carrier", False, "not_connected"),
    R.BUSY: ("carrier", False, "not_connected"),
    R.INVALID_NUMBER: ("carrier", False, "not_connected"),
    R.DECLINED: ("customer", False, "not_connected"),
    R.BLOCKED_OR_SPAM: ("carrier", False, "not_connected"),
    R.DIAL_FAILED: ("carrier", False, "not_connected"),
    R.CALLER_ABANDONED_BEFORE_CONNECT: ("customer", False, "not_connected"),
    R.SILENCE_TIMEOUT: ("system", True, "completed"),
    R.MAX_DURATION: ("system", True, "completed"),
    R.NO_AUDIO: ("system", False, "not_connected"),
    R.CANCELED: ("system", False, "not_connected"),
    R.TAKEN_OVER: ("human_agent", True, "transferred"),
    R.CUSTOM_CONDITION: ("agent_ai", True, "completed"),
    R.NETWORK_DROP: ("carrier", True, "error"),
    R.CARRIER_COMPLETED: ("unknown", True, "completed"),
    R.PLATFORM_ERROR: ("system", False, "error"),
    R.PROVIDER_ERROR: ("system", False, "error"),
    R.CONFIG_OR_BILLING_ERROR: ("system", False, "error"),
    R.EXPIRED: ("system", False, "not_connected"),
    R.OTHER: ("unknown", True, "completed"),
    R.UNKNOWN: ("unknown", True, "completed"),
}


def end_actor(reason: EndReason) -> EndActor:
    """Who ended the conversation: customer, agent_ai, human_agent, system, carrier or unknown."""
    return TRAITS[reason][0]


def connected(reason: EndReason) -> bool:
    """Whether the reason implies a live customer was reached (e.g. gates 'did they ask for X' flows)."""
    return TRAITS[reason][1]


def outcome_class(reason: EndReason) -> OutcomeClass:
    """Coarse outcome: completed, not_connected, transferred or error."""
    return TRAITS[reason][2]


# ── Vapi: exact values first, then ordered glob rules (the grouping Vapi's own docs use) ──────────

VAPI_EXACT: dict[str, EndReason] = {
    "customer-ended-call": R.CUSTOMER_HANGUP,
    "assistant-ended-call": R.AGENT_HANGUP,
    "assistant-ended-call-after-message-spoken": R.AGENT_HANGUP,
    "assistant-ended-call-with-hangup-task": R.AGENT_HANGUP,
    "assistant-said-end-call-phrase": R.AGENT_HANGUP,
    "assistant-forwarded-call": R.BLIND_TRANSFER,
    "call.ringing.hook-executed-transfer": R.BLIND_TRANSFER,
    "call.ending.hook-executed-transfer": R.BLIND_TRANSFER,
    # The assistant-request server answered with a number to forward to instead of an assistant.
    "assistant-request-returned-forwarding-phone-number": R.BLIND_TRANSFER,
    "call.in-progress.error-transfer-failed": R.TRANSFER_FAILED,
    "call.forwarding.operator-busy": R.TRANSFER_FAILED,
    "call.forwarding.no-answer": R.TRANSFER_FAILED,
    "customer-ended-call-before-warm-transfer": R.CUSTOMER_HANGUP_DURING_TRANSFER,
    "customer-ended-call-after-warm-transfer-attempt": R.CUSTOMER_HANGUP_DURING_TRANSFER,
    "customer-ended-call-during-transfer": R.CUSTOMER_HANGUP_DURING_TRANSFER,
    "voicemail": R.VOICEMAIL,
    "customer-did-not-answer": R.NO_ANSWER,
    "customer-busy": R.BUSY,
    "twilio-reported-customer-misdialed": R.INVALID_NUMBER,
    "vonage-rejected": R.DECLINED,
    "call.start.error-fraud-check-failed": R.BLOCKED_OR_SPAM,
    "twilio-failed-to-connect-call": R.DIAL_FAILED,
    "vonage-failed-to-connect-call": R.DIAL_FAILED,
    "call.in-progress.error-sip-outbound-call-failed-to-connect": R.DIAL_FAILED,
    "call.in-progress.error-sip-inbound-call-failed-to-connect": R.DIAL_FAILED,
    "call.ringing.error-sip-inbound-call-failed-to-connect": R.DIAL_FAILED,
    "call.ringing.sip-inbound-caller-hungup-before-call-connect": R.CALLER_ABANDONED_BEFORE_CONNECT,
    "silence-timed-out": R.SILENCE_TIMEOUT,
    "exceeded-max-duration": R.MAX_DURATION,
    "call.in-progress.error-assistant-did-not-receive-customer-audio": R.NO_AUDIO,
    "customer-did-not-give-microphone-permission": R.NO_AUDIO,
    "manually-canceled": R.CANCELED,
    "scheduled-call-deleted": R.CANCELED,
    "call-deleted": R.CANCELED,
    "call.ringing.hook-executed-say": R.CUSTOM_CONDITION,
    "call.ending.hook-executed-say": R.CUSTOM_CONDITION,
    "phone-call-provider-closed-websocket": R.NETWORK_DROP,
    "worker-shutdown": R.NETWORK_DROP,
    "call.in-progress.twilio-completed-call": R.CARRIER_COMPLETED,
    "call.in-progress.sip-completed-call": R.CARRIER_COMPLETED,
    "vonage-completed": R.CARRIER_COMPLETED,
    "vonage-disconnected": R.CARRIER_COMPLETED,
    # Bring-your-own telephony was configured but the provider never delivered the call.
    "phone-call-provider-bypass-enabled-but-no-call-received": R.PROVIDER_ERROR,
    "assistant-not-found": R.CONFIG_OR_BILLING_ERROR,
    "assistant-not-valid": R.CONFIG_OR_BILLING_ERROR,
    "call-start-error-neither-assistant-nor-server-set": R.CONFIG_OR_BILLING_ERROR,
    "call.start.assistant-version-error-validation": R.CONFIG_OR_BILLING_ERROR,
    "assistant-join-timed-out": R.EXPIRED,
}

# `pipeline-error-*` is Vapi's legacy format; with the customer's own provider keys these parts mean
# the customer's credentials, plan, quota or voice/model settings, not an outage (Vapi docs,
# calls/call-ended-reason). 5xx, timeouts and plain "-failed" stay PLATFORM_ERROR.
_BYOK_ACCOUNT_PARTS = (
    "400|401|403|404|429|unauthorized|api-key|invalid-credentials|quota|insufficent-funds|insufficient-funds"
    "|out-of-credits|requested-payment|requested-upgrade|paid-only|free-plan|free-users|creator-plus"
    "|probation|access-denied|forbidden|invalid-config|not-found|invalid-voice|voice-disabled|not-fine-tuned"
    "|missing-samples|not-allowed|max-character-limit|invalid-emotion|voice-manifest|auth-failed|rate-limit"
)

# Ordered: the first matching glob wins, so specific rules sit above the broad prefix they refine.
# Every `*-vapifault-*` value is Vapi's own fault (a worker died, its database, its voice service): the
# platform failed, not the carrier or the customer's provider, so it is checked before anything else.
VAPI_RULES: tuple[tuple[str, EndReason], ...] = (
    ("*-vapifault-*", R.PLATFORM_ERROR),
    ("call.in-progress.error-warm-transfer-*", R.TRANSFER_FAILED),
    ("call.in-progress.error-providerfault-outbound-sip-*", R.DIAL_FAILED),
    ("call.in-progress.error-providerfault-*", R.PROVIDER_ERROR),
    ("call.in-progress.error-pipeline-*", R.PLATFORM_ERROR),
    ("call.start.error-*", R.CONFIG_OR_BILLING_ERROR),
    ("assistant-request-*", R.CONFIG_OR_BILLING_ERROR),
    ("pipeline-error-vapi-*", R.PLATFORM_ERROR),  # Vapi's own models: no customer key involved
    *((f"pipeline-error-*{part}*", R.CONFIG_OR_BILLING_ERROR) for part in _BYOK_ACCOUNT_PARTS.split("|")),
    ("pipeline-error-*", R.PLATFORM_ERROR),
    # Future-proofing for names not yet in the enum, matched only after every known prefix.
    ("customer-ended-call*transfer*", R.CUSTOMER_HANGUP_DURING_TRANSFER),
    ("customer-ended-call*", R.CUSTOMER_HANGUP),
    ("assistant-ended-call*", R.AGENT_HANGUP),
    ("*-transfer-failed", R.TRANSFER_FAILED),
    ("*-transcriber-failed", R.PLATFORM_ERROR),
    ("*-voice-failed", R.PLATFORM_ERROR),
    ("*-llm-failed", R.PLATFORM_ERROR),
    ("call.in-progress.error-*", R.PLATFORM_ERROR),
)

# ── Retell: `disconnection_reason`, a closed Literal of 39 values in the SDK (6.2) ─────────────────

RETELL: dict[str, EndReason] = {
    "user_hangup": R.CUSTOMER_HANGUP,
    "agent_hangup": R.AGENT_HANGUP,
    # the agent ends the call once the user confirms the request (retell-sdk: enable_dnc_detection)
    "user_requested_dnc": R.AGENT_HANGUP,
    "user_requested_callback": R.AGENT_HANGUP,
    "call_transfer": R.BLIND_TRANSFER,
    "transfer_bridged": R.CCAAS_TRANSFER,
    "transfer_cancelled": R.TRANSFER_FAILED,
    "voicemail_reached": R.VOICEMAIL,
    "ivr_reached": R.IVR_REACHED,
    "inactivity": R.SILENCE_TIMEOUT,
    "max_duration_reached": R.MAX_DURATION,
    "concurrency_limit_reached": R.CONFIG_OR_BILLING_ERROR,
    "no_concurrency_fallback": R.CONFIG_OR_BILLING_ERROR,
    "no_valid_payment": R.CONFIG_OR_BILLING_ERROR,
    "credit_exhausted": R.CONFIG_OR_BILLING_ERROR,
    "budget_reached": R.CONFIG_OR_BILLING_ERROR,
    "scam_detected": R.BLOCKED_OR_SPAM,
    "marked_as_spam": R.BLOCKED_OR_SPAM,
    "network_blocked": R.BLOCKED_OR_SPAM,
    "dial_busy": R.BUSY,
    "dial_no_answer": R.NO_ANSWER,
    "dial_failed": R.DIAL_FAILED,
    "sip_routing_error": R.DIAL_FAILED,
    "telephony_provider_permission_denied": R.DIAL_FAILED,
    "telephony_provider_unavailable": R.DIAL_FAILED,
    "invalid_destination": R.INVALID_NUMBER,
    "user_declined": R.DECLINED,
    "error_llm_websocket_open": R.PLATFORM_ERROR,
    "error_llm_websocket_lost_connection": R.PLATFORM_ERROR,
    "error_llm_websocket_runtime": R.PLATFORM_ERROR,
    "error_llm_websocket_corrupt_payload": R.PLATFORM_ERROR,
    "error_asr": R.PLATFORM_ERROR,
    "error_retell": R.PLATFORM_ERROR,
    "error_unknown": R.PLATFORM_ERROR,
    "error_no_audio_received": R.NO_AUDIO,
    "error_user_not_joined": R.NO_AUDIO,
    "registered_call_timeout": R.EXPIRED,
    "manual_stopped": R.CANCELED,
    "call_take_over": R.TAKEN_OVER,
}

# ── Amazon Connect: `DisconnectReason` of the contact record (voice, chat, task, email channels) ─

CONNECT: dict[str, EndReason] = {
    "CUSTOMER_DISCONNECT": R.CUSTOMER_HANGUP,
    "AGENT_DISCONNECT": R.HUMAN_AGENT_HANGUP,
    "AGENT_COMPLETED": R.HUMAN_AGENT_HANGUP,
    "CONTACT_FLOW_DISCONNECT": R.AGENT_HANGUP,
    "TRANSFERRED": R.CCAAS_TRANSFER,
    "TELECOM_UNANSWERED": R.NO_ANSWER,
    "TELECOM_TIMEOUT": R.NO_ANSWER,
    "TELECOM_BUSY": R.BUSY,
    "TELECOM_NUMBER_INVALID": R.INVALID_NUMBER,
    "TELECOM_POTENTIAL_BLOCKING": R.BLOCKED_OR_SPAM,
    "TELECOM_PROBLEM": R.DIAL_FAILED,
    "OUTBOUND_ATTEMPT_FAILED": R.DIAL_FAILED,
    "OUTBOUND_DESTINATION_ENDPOINT_ERROR": R.DIAL_FAILED,
    "OUTBOUND_RESOURCE_ERROR": R.DIAL_FAILED,
    "TELECOM_ORIGINATOR_CANCEL": R.CALLER_ABANDONED_BEFORE_CONNECT,
    "CUSTOMER_NEVER_ARRIVED": R.CALLER_ABANDONED_BEFORE_CONNECT,
    "IDLE_DISCONNECT": R.SILENCE_TIMEOUT,
    "CUSTOMER_CONNECTION_NOT_ESTABLISHED": R.NO_AUDIO,
    "API": R.CANCELED,
    "DISCARDED": R.CANCELED,
    "OUTBUND_PREVIEW_DISCARDED": R.CANCELED,  # sic: the typo is in the product
    "OUTBOUND_PREVIEW_DISCARDED": R.CANCELED,
    "BARGED": R.TAKEN_OVER,
    "AGENT_NETWORK_DISCONNECT": R.NETWORK_DROP,
    "THIRD_PARTY_DISCONNECT": R.NETWORK_DROP,
    "SYSTEM_ERROR": R.PLATFORM_ERROR,
    "EXPIRED": R.EXPIRED,
    "OTHER": R.OTHER,
}

# ── Copilot Studio: Conversation.EndReason, plus Bot Framework EndOfConversationCodes ─────────────
# Keys are folded (lower case, letters and digits only) so CUSTOMER_HANGUP and completedSuccessfully
# both match whatever casing a bridge forwards.

COPILOT: dict[str, EndReason] = {
    "customerhangup": R.CUSTOMER_HANGUP,
    "blindtransfer": R.BLIND_TRANSFER,
    "ccaastransfer": R.CCAAS_TRANSFER,
    "completedsuccessfully": R.AGENT_HANGUP,
    "usercancelled": R.CUSTOMER_HANGUP,
    "bottimedout": R.SILENCE_TIMEOUT,
    "agenttimedout": R.SILENCE_TIMEOUT,
    "botissuedinvalidmessage": R.PLATFORM_ERROR,
    "agentissuedinvalidmessage": R.PLATFORM_ERROR,
    "channelfailed": R.PROVIDER_ERROR,
    "error": R.PLATFORM_ERROR,
    "unknown": R.UNKNOWN,
}

# ── ElevenLabs: `metadata.termination_reason` is free text; `|`-separated keywords, first match wins
# Agent-side phrases sit above customer-side ones so "agent hung up" is not read as a customer hang-up.

ELEVENLABS_KEYWORDS: tuple[tuple[str, EndReason], ...] = (
    ("voicemail", R.VOICEMAIL),
    ("transfer failed|transfer_failed|failed to transfer", R.TRANSFER_FAILED),
    ("transfer_to_number|transfer to number|transferred to|call transferred", R.BLIND_TRANSFER),
    ("max duration|max_duration|maximum duration|duration exceeded|time limit", R.MAX_DURATION),
    ("silence|inactivity|inactive|idle|no user input", R.SILENCE_TIMEOUT),
    (
        "end_call|end call tool|agent ended|agent hung up|assistant ended|ai ended|ended by agent|ended by the agent",
        R.AGENT_HANGUP,
    ),
    (
        "hung up|hangup|hang up|user ended|customer ended|caller ended|ended by user|ended by the user"
        "|remote party|client disconnected|user disconnected|user left",
        R.CUSTOMER_HANGUP,
    ),
    ("busy", R.BUSY),
    ("no answer|no-answer|not answered|unanswered|did not answer", R.NO_ANSWER),
    ("initiation failure|initiation_failure|failed to connect|could not connect", R.DIAL_FAILED),
    ("error|exception|internal failure", R.PLATFORM_ERROR),
)


def _fold(raw: str) -> str:
    return re.sub(r"[^a-z0-9]", "", raw.lower())


def map_vapi(raw: str) -> EndReason:
    """Vapi `endedReason`: the exact table, then the ordered glob rules; UNKNOWN otherwise."""
    value = raw.strip().lower()
    exact = VAPI_EXACT.get(value)
    if exact is not None:
        return exact
    return next((reason for pattern, reason in VAPI_RULES if fnmatchcase(value, pattern)), R.UNKNOWN)


def map_retell(raw: str) -> EndReason:
    """Retell `disconnection_reason` (call_ended / call_analyzed webhooks)."""
    return RETELL.get(raw.strip().lower(), R.UNKNOWN)


def map_connect(raw: str) -> EndReason:
    """Amazon Connect contact record `DisconnectReason`."""
    return CONNECT.get(raw.strip().upper(), R.UNKNOWN)


def map_copilot(raw: str) -> EndReason:
    """Copilot Studio `Conversation.EndReason`, or a Bot Framework end-of-conversation code."""
    return COPILOT.get(_fold(raw), R.UNKNOWN)


def map_elevenlabs(raw: str) -> EndReason:
    """ElevenLabs `termination_reason` (free text, no enum): keyword match, UNKNOWN when nothing fits."""
    text = raw.strip().lower()
    for keywords, reason in ELEVENLABS_KEYWORDS:
        if any(keyword in text for keyword in keywords.split("|")):
            return reason
    return R.UNKNOWN


MAPPERS: dict[str, Callable[[str], EndReason]] = {
    "vapi": map_vapi,
    "retell": map_retell,
    "elevenlabs": map_elevenlabs,
    "connect": map_connect,
    "copilot": map_copilot,
}

PLATFORM_ALIASES: dict[str, str] = {
    "retellai": "retell",
    "elevenlabsagents": "elevenlabs",
    "11labs": "elevenlabs",
    "amazonconnect": "connect",
    "awsconnect": "connect",
    "copilotstudio": "copilot",
    "microsoftcopilotstudio": "copilot",
}


def platform_key(platform: str) -> str:
    """Fold a platform name ("Amazon Connect", "eleven_labs") to a MAPPERS key, when there is one."""
    folded = _fold(platform)
    return PLATFORM_ALIASES.get(folded, folded)


def _canonical_value(raw: str) -> EndReason | None:
    # a dict lookup: EndReason(value) raising ValueError for every vendor value costs ~50 us a call
    return _BY_VALUE.get(raw.strip().upper())


_BY_VALUE: dict[str, EndReason] = {reason.value: reason for reason in EndReason}


def canonical_end_reason(platform: str | None, raw: object) -> EndReason:
    """Map a platform's raw end reason to the canonical vocabulary; never raises.

    A value already in our vocabulary ("CUSTOMER_HANGUP", any case) passes through for every platform,
    before any keyword matching could misread it; otherwise the platform's table decides; an unknown
    platform or value gives UNKNOWN.
    """
    if not isinstance(raw, str) or not raw.strip():
        return R.UNKNOWN
    already = _canonical_value(raw)
    if already is not None:
        return already
    mapper = MAPPERS.get(platform_key(platform)) if isinstance(platform, str) else None
    return mapper(raw) if mapper is not None else R.UNKNOWN
