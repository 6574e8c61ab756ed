"""End-reason mapping: real values from every platform land on the right canonical reason, never raise."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from schemas.end_reasons import (
    CONNECT,
    COPILOT,
    RETELL,
    TRAITS,
    VAPI_EXACT,
    EndReason,
    canonical_end_reason,
    connected,
    end_actor,
    map_connect,
    map_copilot,
    map_elevenlabs,
    map_retell,
    map_vapi,
    outcome_class,
)

R = EndReason
VAPI_VALUES_FILE = Path(__file__).parents[1] / "contract" / "data" / "vapi_ended_reasons.txt"
RETELL_VALUES_FILE = Path(__file__).parents[1] / "contract" / "data" / "retell_disconnection_reasons.txt"

COPILOT_CASES = [
    ("CUSTOMER_HANGUP", R.CUSTOMER_HANGUP),
    ("BLIND_TRANSFER", R.BLIND_TRANSFER),
    ("CCAAS_TRANSFER", R.CCAAS_TRANSFER),
    ("customer_hangup", R.CUSTOMER_HANGUP),
    ("completedSuccessfully", R.AGENT_HANGUP),
    ("userCancelled", R.CUSTOMER_HANGUP),
    ("botTimedOut", R.SILENCE_TIMEOUT),
    ("channelFailed", R.PROVIDER_ERROR),
    ("unknown", R.UNKNOWN),
]

VAPI_CASES = [
    ("customer-ended-call", R.CUSTOMER_HANGUP),
    ("assistant-ended-call", R.AGENT_HANGUP),
    ("assistant-said-end-call-phrase", R.AGENT_HANGUP),
    ("assistant-ended-call-with-hangup-task", R.AGENT_HANGUP),
    ("assistant-forwarded-call", R.BLIND_TRANSFER),
    ("call.ending.hook-executed-transfer", R.BLIND_TRANSFER),
    ("call.in-progress.error-transfer-failed", R.TRANSFER_FAILED),
    ("call.in-progress.error-warm-transfer-silence-timeout", R.TRANSFER_FAILED),
    ("call.forwarding.operator-busy", R.TRANSFER_FAILED),
    ("customer-ended-call-during-transfer", R.CUSTOMER_HANGUP_DURING_TRANSFER),
    ("customer-ended-call-before-warm-transfer", R.CUSTOMER_HANGUP_DURING_TRANSFER),
    ("voicemail", R.VOICEMAIL),
    ("customer-did-not-answer", R.NO_ANSWER),
    ("customer-busy", R.BUSY),
    ("twilio-reported-customer-misdialed", R.INVALID_NUMBER),
    ("vonage-rejected", R.DECLINED),
    ("call.start.error-fraud-check-failed", R.BLOCKED_OR_SPAM),
    ("twilio-failed-to-connect-call", R.DIAL_FAILED),
    ("call.in-progress.error-providerfault-outbound-sip-480-temporarily-unavailable", R.DIAL_FAILED),
    ("call.ringing.sip-inbound-caller-hungup-before-call-connect", R.CALLER_ABANDONED_BEFORE_CONNECT),
    ("silence-timed-out", R.SILENCE_TIMEOUT),
    ("exceeded-max-duration", R.MAX_DURATION),
    ("call.in-progress.error-assistant-did-not-receive-customer-audio", R.NO_AUDIO),
    ("manually-canceled", R.CANCELED),
    ("call.ending.hook-executed-say", R.CUSTOM_CONDITION),
    ("phone-call-provider-closed-websocket", R.NETWORK_DROP),
    ("call.in-progress.error-vapifault-worker-died", R.PLATFORM_ERROR),
    ("call.in-progress.twilio-completed-call", R.CARRIER_COMPLETED),
    ("vonage-completed", R.CARRIER_COMPLETED),
    ("call.in-progress.error-vapifault-openai-voice-failed", R.PLATFORM_ERROR),
    ("call.in-progress.error-vapifault-deepgram-transcriber-failed", R.PLATFORM_ERROR),
    ("call.in-progress.error-providerfault-openai-500-server-error", R.PROVIDER_ERROR),
    ("call.in-progress.error-providerfault-vapi-transcriber-failed", R.PROVIDER_ERROR),
    ("pipeline-error-openai-llm-failed", R.PLATFORM_ERROR),
    ("pipeline-error-cartesia-503-server-error", R.PLATFORM_ERROR),
    ("pipeline-error-vapi-401-unauthorized", R.PLATFORM_ERROR),
    ("pipeline-error-openai-401-incorrect-api-key", R.CONFIG_OR_BILLING_ERROR),
    ("pipeline-error-eleven-labs-quota-exceeded", R.CONFIG_OR_BILLING_ERROR),
    ("call.start.error-subscription-insufficient-credits", R.CONFIG_OR_BILLING_ERROR),
    ("call.start.error-subscription-concurrency-limit-reached", R.CONFIG_OR_BILLING_ERROR),
    ("call.start.error-vapifault-database-error", R.PLATFORM_ERROR),
    ("assistant-request-returned-error", R.CONFIG_OR_BILLING_ERROR),
    ("assistant-not-found", R.CONFIG_OR_BILLING_ERROR),
    ("assistant-join-timed-out", R.EXPIRED),
    # Values not (yet) in Vapi's enum still land by their family.
    ("pipeline-error-newvendor-transcriber-failed", R.PLATFORM_ERROR),
    ("call.in-progress.error-providerfault-newvendor-llm-failed", R.PROVIDER_ERROR),
    ("call.in-progress.error-something-new", R.PLATFORM_ERROR),
    ("  Customer-Ended-Call ", R.CUSTOMER_HANGUP),
]

RETELL_CASES = [
    ("user_hangup", R.CUSTOMER_HANGUP),
    ("agent_hangup", R.AGENT_HANGUP),
    ("call_transfer", R.BLIND_TRANSFER),
    ("transfer_bridged", R.CCAAS_TRANSFER),
    ("transfer_cancelled", R.TRANSFER_FAILED),
    ("voicemail_reached", R.VOICEMAIL),
    ("ivr_reached", R.IVR_REACHED),
    ("inactivity", R.SILENCE_TIMEOUT),
    ("max_duration_reached", R.MAX_DURATION),
    ("dial_busy", R.BUSY),
    ("dial_no_answer", R.NO_ANSWER),
    ("dial_failed", R.DIAL_FAILED),
    ("sip_routing_error", R.DIAL_FAILED),
    ("invalid_destination", R.INVALID_NUMBER),
    ("user_declined", R.DECLINED),
    ("marked_as_spam", R.BLOCKED_OR_SPAM),
    ("scam_detected", R.BLOCKED_OR_SPAM),
    ("error_llm_websocket_lost_connection", R.PLATFORM_ERROR),
    ("error_no_audio_received", R.NO_AUDIO),
    ("no_valid_payment", R.CONFIG_OR_BILLING_ERROR),
    ("registered_call_timeout", R.EXPIRED),
    ("manual_stopped", R.CANCELED),
    ("call_take_over", R.TAKEN_OVER),
    # in retell-sdk 6.2 (UNKNOWN before): the agent ends the call once the user confirms the request
    ("user_requested_dnc", R.AGENT_HANGUP),
    ("user_requested_callback", R.AGENT_HANGUP),
    ("credit_exhausted", R.CONFIG_OR_BILLING_ERROR),
    ("budget_reached", R.CONFIG_OR_BILLING_ERROR),
    ("network_blocked", R.BLOCKED_OR_SPAM),
]

CONNECT_CASES = [
    ("CUSTOMER_DISCONNECT", R.CUSTOMER_HANGUP),
    ("AGENT_DISCONNECT", R.HUMAN_AGENT_HANGUP),
    ("CONTACT_FLOW_DISCONNECT", R.AGENT_HANGUP),
    ("TELECOM_UNANSWERED", R.NO_ANSWER),
    ("TELECOM_BUSY", R.BUSY),
    ("TELECOM_NUMBER_INVALID", R.INVALID_NUMBER),
    ("TELECOM_POTENTIAL_BLOCKING", R.BLOCKED_OR_SPAM),
    ("TELECOM_PROBLEM", R.DIAL_FAILED),
    ("OUTBOUND_ATTEMPT_FAILED", R.DIAL_FAILED),
    ("TELECOM_ORIGINATOR_CANCEL", R.CALLER_ABANDONED_BEFORE_CONNECT),
    ("IDLE_DISCONNECT", R.SILENCE_TIMEOUT),
    ("CUSTOMER_CONNECTION_NOT_ESTABLISHED", R.NO_AUDIO),
    ("API", R.CANCELED),
    ("BARGED", R.TAKEN_OVER),
    ("THIRD_PARTY_DISCONNECT", R.NETWORK_DROP),
    ("SYSTEM_ERROR", R.PLATFORM_ERROR),
    ("EXPIRED", R.EXPIRED),
    ("OTHER", R.OTHER),
    ("customer_disconnect", R.CUSTOMER_HANGUP),
]

# ElevenLabs sends free text; these are the phrasings seen in practice plus paraphrases.
ELEVENLABS_CASES = [
    ("The user hung up", R.CUSTOMER_HANGUP),
    ("User ended the call", R.CUSTOMER_HANGUP),
    ("Call ended by remote party", R.CUSTOMER_HANGUP),
    ("Client disconnected: 1000", R.CUSTOMER_HANGUP),
    ("end_call tool was called.", R.AGENT_HANGUP),
    ("Agent hung up after goodbye", R.AGENT_HANGUP),
    ("voicemail_detection tool was called.", R.VOICEMAIL),
    ("transfer_to_number tool was called.", R.BLIND_TRANSFER),
    ("Max duration exceeded", R.MAX_DURATION),
    ("Conversation ended due to silence", R.SILENCE_TIMEOUT),
    ("", R.UNKNOWN),
    ("Conversation finished", R.UNKNOWN),
]


@pytest.mark.parametrize(("raw", "expected"), COPILOT_CASES)
def test_copilot_values_map(raw: str, expected: EndReason) -> None:
    assert map_copilot(raw) is expected
    assert canonical_end_reason("copilot", raw) is expected


@pytest.mark.parametrize(("raw", "expected"), VAPI_CASES)
def test_vapi_values_map(raw: str, expected: EndReason) -> None:
    assert map_vapi(raw) is expected
    assert canonical_end_reason("vapi", raw) is expected


@pytest.mark.parametrize(("raw", "expected"), RETELL_CASES)
def test_retell_values_map(raw: str, expected: EndReason) -> None:
    assert map_retell(raw) is expected
    assert canonical_end_reason("retell", raw) is expected


def test_every_retell_disconnection_reason_is_in_the_table() -> None:
    """Retell's closed list (the `disconnection_reason` Literal of retell-sdk 6.2.13's PhoneCallResponse and
    WebCallResponse, copied to RETELL_VALUES_FILE): a value missing from RETELL maps to UNKNOWN, read as an
    ordinary completed conversation, so a billing stop or a blocked dial ran the flows of a call that took
    place (five values did: user_requested_dnc, user_requested_callback, credit_exhausted, budget_reached,
    network_blocked). Refresh the file from a newer SDK and this names what the table lacks."""
    values = [line.strip() for line in RETELL_VALUES_FILE.read_text().splitlines() if line.strip()]
    assert len(values) == len(set(values)) == 39
    assert [v for v in values if v not in RETELL] == []
    assert not [v for v in values if map_retell(v) is R.UNKNOWN]


@pytest.mark.parametrize(("raw", "expected"), CONNECT_CASES)
def test_connect_values_map(raw: str, expected: EndReason) -> None:
    assert map_connect(raw) is expected
    assert canonical_end_reason("Amazon Connect", raw) is expected


@pytest.mark.parametrize(("raw", "expected"), ELEVENLABS_CASES)
def test_elevenlabs_free_text_maps_by_keyword(raw: str, expected: EndReason) -> None:
    assert map_elevenlabs(raw) is expected


@pytest.mark.parametrize(
    ("platform", "raw"),
    [
        ("acme-voice", "user_hangup"),
        ("retell", "a-value-retell-never-sent"),
        ("vapi", "totally-new-reason"),
        ("connect", "NEW_REASON"),
        ("vapi", None),
        ("vapi", 42),
        ("vapi", ""),
        (None, "user_hangup"),
        ("vapi", "x" * 100_000),
        ("elevenlabs", "\x00\udcff"),
    ],
)
def test_unknown_platform_or_value_maps_to_unknown_without_raising(platform: object, raw: object) -> None:
    assert canonical_end_reason(platform, raw) is R.UNKNOWN  # type: ignore[arg-type]


@pytest.mark.parametrize("platform", ["vapi", "retell", "elevenlabs", "connect", "copilot", "acme", "unknown"])
@pytest.mark.parametrize("reason", list(EndReason))
def test_canonical_value_passes_through_for_any_platform(platform: str, reason: EndReason) -> None:
    assert canonical_end_reason(platform, reason.value) is reason
    assert canonical_end_reason(platform, reason.value.lower()) is reason


@pytest.mark.parametrize(
    ("platform", "table"), [("vapi", VAPI_EXACT), ("retell", RETELL), ("connect", CONNECT), ("copilot", COPILOT)]
)
def test_platform_values_spelled_like_ours_mean_the_same(platform: str, table: dict[str, EndReason]) -> None:
    # Canonical names pass through before the platform table, so a collision must agree with the table.
    for raw, mapped in table.items():
        if raw.upper() in EndReason.__members__:
            assert mapped is EndReason(raw.upper()), (platform, raw)
            assert canonical_end_reason(platform, raw) is mapped


def test_canonical_names_are_not_misread_by_elevenlabs_keywords() -> None:
    assert canonical_end_reason("elevenlabs", "AGENT_HANGUP") is R.AGENT_HANGUP
    assert canonical_end_reason("elevenlabs", "PROVIDER_ERROR") is R.PROVIDER_ERROR
    assert canonical_end_reason("ElevenLabs", "The user hung up") is R.CUSTOMER_HANGUP
    assert canonical_end_reason("eleven_labs", "end_call tool was called.") is R.AGENT_HANGUP


def test_every_reason_has_traits() -> None:
    assert set(TRAITS) == set(EndReason)


@pytest.mark.parametrize(
    ("reason", "actor", "is_connected", "outcome"),
    [
        (R.CUSTOMER_HANGUP, "customer", True, "completed"),
        (R.AGENT_HANGUP, "agent_ai", True, "completed"),
        (R.HUMAN_AGENT_HANGUP, "human_agent", True, "completed"),
        (R.BLIND_TRANSFER, "agent_ai", True, "transferred"),
        (R.CCAAS_TRANSFER, "agent_ai", True, "transferred"),
        (R.VOICEMAIL, "system", False, "not_connected"),
        (R.NO_ANSWER, "carrier", False, "not_connected"),
        (R.BUSY, "carrier", False, "not_connected"),
        (R.PLATFORM_ERROR, "system", False, "error"),
        (R.PROVIDER_ERROR, "system", False, "error"),
        (R.TRANSFER_FAILED, "system", True, "error"),
        (R.NETWORK_DROP, "carrier", True, "error"),
        (R.UNKNOWN, "unknown", True, "completed"),
    ],
)
def test_traits(reason: EndReason, actor: str, is_connected: bool, outcome: str) -> None:
    assert (end_actor(reason), connected(reason), outcome_class(reason)) == (actor, is_connected, outcome)


def test_not_connected_outcome_never_claims_a_live_customer() -> None:
    inconsistent = [r for r in EndReason if outcome_class(r) == "not_connected" and connected(r)]
    assert inconsistent == []


def test_every_published_vapi_value_maps_to_a_known_reason() -> None:
    """All of Vapi's endedReason enum (627 entries, some repeated) must land somewhere specific."""
    values = [line.strip() for line in VAPI_VALUES_FILE.read_text().splitlines() if line.strip()]
    assert len(values) == 627
    unmapped = sorted({v for v in values if map_vapi(v) is R.UNKNOWN})
    coverage = 1 - len(unmapped) / len(set(values))
    assert coverage >= 0.95, f"{len(unmapped)} unmapped Vapi values: {unmapped}"
    # Each family the docs name must actually be used, not swallowed by one broad rule.
    used = Counter(map_vapi(v) for v in values)
    for reason in (R.PLATFORM_ERROR, R.PROVIDER_ERROR, R.CONFIG_OR_BILLING_ERROR, R.DIAL_FAILED):
        assert used[reason] >= 10, (reason, used[reason])


def test_vapi_fault_prefixes_decide_before_suffix_globs() -> None:
    values = [line.strip() for line in VAPI_VALUES_FILE.read_text().splitlines() if line.strip()]
    providerfault = [v for v in values if v.startswith("call.in-progress.error-providerfault-")]
    assert {map_vapi(v) for v in providerfault} == {R.PROVIDER_ERROR, R.DIAL_FAILED}


def test_every_vapifault_value_is_a_platform_error_never_the_carrier() -> None:
    """Walks Vapi's whole published list: each `*-vapifault-*` value is Vapi's own fault."""
    values = {line.strip() for line in VAPI_VALUES_FILE.read_text().splitlines() if line.strip()}
    vapifault = sorted(v for v in values if "-vapifault-" in v)
    assert len(vapifault) == 183  # distinct values in the list as published; fewer means the file was cut
    wrong = {v: map_vapi(v) for v in vapifault if map_vapi(v) is not R.PLATFORM_ERROR}
    assert wrong == {}
    assert end_actor(R.PLATFORM_ERROR) == "system"  # not "carrier": no live customer is implied
