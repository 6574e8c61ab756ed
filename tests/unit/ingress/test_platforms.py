"""Vendor payloads (examples/webhooks/, built from the vendors' documented examples) -> ConversationEnded:
phone and web calls, calls that never connected, with and without the platform's analysis."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from schemas.end_reasons import EndReason
from schemas.events import ConversationEnded
from services.devkit.webhooks import example
from services.ingress.platforms import MAPPINGS, Context, Ignored, PayloadError

RECEIVED = datetime(2026, 3, 10, 12, 0, 0, tzinfo=UTC)
CTX = Context(
    account_id="acct-copperline",
    account_name="Copperline",
    received_at=RECEIVED,
    agents={
        "5d0e3c2a-91f4-4b7e-a6d8-3c1f9e2b7a40": ("support-line", "Copperline Support Assistant"),
        "agent_7101k2x5m9fjv3q8a0e6r4t1yz": ("support-line", "Support (ElevenLabs)"),
    },
    publish_on=("call_analyzed", "call_ended"),
)


def mapped(platform: str, name: str, ctx: Context = CTX) -> ConversationEnded:
    out = MAPPINGS[platform](orjson.loads(example(name)), ctx)
    assert isinstance(out, ConversationEnded), out
    # what is published is valid against the published contract, field for field
    assert ConversationEnded.model_validate_json(out.model_dump_json()) == out
    return out


def assert_refused_naming(platform: str, payload: dict[str, Any], field: str) -> None:
    """The mapping refuses the payload with a PayloadError (a 422) whose problems name `field`."""
    with pytest.raises(PayloadError) as caught:
        MAPPINGS[platform](payload, CTX)
    assert field in [path for path, _ in caught.value.problems], caught.value.problems


def test_vapi_inbound_phone_call_with_analysis() -> None:
    e = mapped("vapi", "vapi/phone-inbound-with-analysis.json")
    assert e.event_id == "vapi:8c2f4a1e-3b7d-4f0e-9a61-5d2c7e9b1a04:end-of-call-report"
    assert (e.conversation_id, e.account.id, e.agent.id, e.agent.name) == (
        "8c2f4a1e-3b7d-4f0e-9a61-5d2c7e9b1a04",
        "acct-copperline",
        "support-line",
        "Copperline Support Assistant",
    )
    assert (e.channel, e.direction, e.status, e.times_estimated) == ("phone", "inbound", "completed", False)
    assert e.end_reason.canonical is EndReason.CUSTOMER_HANGUP and e.end_reason.raw == "customer-ended-call"
    assert e.started_at == datetime(2026, 3, 3, 16, 4, 11, 120000, tzinfo=UTC)
    assert e.occurred_at == datetime.fromtimestamp(1772553972, UTC)
    assert (e.customer.phone_number, e.customer.name, e.customer.contact_id) == (
        "+13125550177",
        "Priya Raman",
        "crm-contact-20931",
    )
    assert e.to_number == "+13125550100"
    assert e.messages is not None
    assert [m.role for m in e.messages] == ["agent", "customer", "agent", "customer", "tool", "agent", "customer"]
    assert (e.messages[0].start_seconds, e.messages[0].end_seconds) == (1.2, pytest.approx(6.78))
    assert e.recording_url is not None and e.recording_url.endswith("-mono.wav")
    assert e.conversation_url is not None and e.conversation_url.startswith("https://calllogs.vapi.ai/")
    assert e.dynamic_variables == {"account_number": "CL-447201", "open_case_id": "CASE-88214", "tier": "gold"}
    assert e.platform_analysis is not None
    assert e.platform_analysis.successful is True and e.platform_analysis.summary
    assert e.platform_analysis.data == {"issue_category": "billing", "resolved": True, "billing_email_changed": True}
    assert e.metadata["vapi_org_id"] == "6b1f0c3e-2a4d-4c8e-b7f5-0e9d3a2c1b7f"


def test_vapi_web_call_is_inbound_on_the_web_channel_without_analysis() -> None:
    e = mapped("vapi", "vapi/web-call-no-analysis.json")
    assert (e.channel, e.direction, e.to_number, e.customer.phone_number) == ("web", "inbound", None, None)
    assert e.platform_analysis is None and e.end_reason.canonical is EndReason.AGENT_HANGUP
    assert e.agent.id == "support-line"  # the endpoint's alias of the assistant id


def test_vapi_call_that_never_connected_has_estimated_times() -> None:
    e = mapped("vapi", "vapi/not-connected.json")
    assert e.end_reason.canonical is EndReason.NO_ANSWER and e.status == "not_connected"
    assert e.times_estimated and e.started_at == e.ended_at == datetime.fromtimestamp(1772726455, UTC)
    assert e.duration == 0 and e.messages is None and e.platform_analysis is None
    assert (e.direction, e.to_number) == ("outbound", "+14155550123")
    assert e.agent.id == "9b2e7f10-3c4d-4a5b-8e6f-7a1b2c3d4e5f"  # not aliased: the platform's id is kept


def test_vapi_messages_other_than_the_report_are_ignored() -> None:
    out = MAPPINGS["vapi"](orjson.loads(example("vapi/status-update.json")), CTX)
    assert isinstance(out, Ignored) and "status-update" in out.reason


@pytest.mark.parametrize(
    ("timestamp", "occurred_at"),
    [
        (1772553972345, datetime(2026, 3, 3, 16, 6, 12, 345000, tzinfo=UTC)),  # epoch ms, Vapi's SDKs now
        ("1772553972345", datetime(2026, 3, 3, 16, 6, 12, 345000, tzinfo=UTC)),
        ("2026-03-03T16:06:12.345Z", datetime(2026, 3, 3, 16, 6, 12, 345000, tzinfo=UTC)),  # older OpenAPI: ISO
        ("2026-03-03T17:06:12.345+01:00", datetime(2026, 3, 3, 16, 6, 12, 345000, tzinfo=UTC)),
        ("2026-03-03T16:06:12.345", datetime(2026, 3, 3, 16, 6, 12, 345000, tzinfo=UTC)),  # no offset: UTC
    ],
)
def test_vapi_report_timestamp_is_epoch_milliseconds_or_an_iso_8601_time(timestamp: Any, occurred_at: datetime) -> None:
    payload = orjson.loads(example("vapi/phone-inbound-with-analysis.json"))
    payload["message"]["timestamp"] = timestamp
    e = MAPPINGS["vapi"](payload, CTX)
    assert isinstance(e, ConversationEnded) and e.occurred_at == occurred_at


@pytest.mark.parametrize("timestamp", ["soon", "", [1], {"at": 1}])
def test_vapi_report_timestamp_neither_a_number_nor_a_time_is_one_problem_naming_it(timestamp: Any) -> None:
    payload = orjson.loads(example("vapi/phone-inbound-with-analysis.json"))
    payload["message"]["timestamp"] = timestamp
    with pytest.raises(PayloadError) as caught:
        MAPPINGS["vapi"](payload, CTX)
    assert caught.value.problems == [("message.timestamp", "should be epoch milliseconds or an ISO-8601 time")]


def test_retell_phone_call_analyzed_with_analysis_and_integer_agent_version() -> None:
    e = mapped("retell", "retell/phone-voicemail-analyzed.json")
    assert e.event_id == "retell:Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6:call_analyzed"
    assert (e.agent.id, e.agent.name, e.agent.version) == (
        "oBeDLoLOeuAbiuaMFXRtDOLriTJ5tSxD",
        "Copperline Sales Assistant",
        "7",
    )
    assert (e.channel, e.direction, e.customer.phone_number, e.to_number) == (
        "phone",
        "outbound",
        "+16305550164",
        "+16305550164",
    )
    assert e.end_reason.canonical is EndReason.VOICEMAIL and e.duration_seconds == 31.0
    assert e.started_at == datetime.fromtimestamp(1772812800, UTC) and not e.times_estimated
    assert e.messages is not None and [(m.role, m.start_seconds, m.end_seconds) for m in e.messages] == [
        ("customer", 0.71, 4.81),
        ("agent", 6.02, 18.44),
    ]
    assert e.dynamic_variables == {
        "customer_name": "Luis Ortega",
        "lead_source": "webinar",
        "last_node_name": "leave_voicemail",
    }
    assert e.conversation_url is not None and e.conversation_url.endswith("public.log")
    assert e.metadata["campaign"] == "spring-webinar-2026"
    pa = e.platform_analysis
    assert pa is not None and (pa.successful, pa.sentiment, pa.details) == (False, "Neutral", {"in_voicemail": True})
    assert pa.data == {"interest_level": "none", "follow_up_required": True}


def test_retell_web_call_accepts_event_type_and_has_no_analysis() -> None:
    e = mapped("retell", "retell/web-call-ended.json")
    assert e.event_id == "retell:Wk3pQ8xRz1mN5vB7cT2yL9dF4hJ6sA0e:call_ended"
    assert (e.channel, e.direction, e.customer.phone_number, e.platform_analysis) == ("web", "inbound", None, None)
    assert e.end_reason.canonical is EndReason.CUSTOMER_HANGUP and e.agent.version == "3"


def test_retell_call_that_never_connected_without_timestamps_is_published_not_dropped() -> None:
    e = mapped("retell", "retell/not-connected-analyzed.json")
    assert e.status == "not_connected" and e.end_reason.canonical is EndReason.NO_ANSWER
    assert e.times_estimated and e.started_at == e.ended_at == RECEIVED and e.duration == 0
    assert e.customer.phone_number == "+17735550190" and e.messages is None


def test_retell_events_not_published_on_are_ignored() -> None:
    ctx = Context("a", None, RECEIVED, {}, publish_on=("call_analyzed",))
    out = MAPPINGS["retell"](orjson.loads(example("retell/web-call-ended.json")), ctx)
    assert isinstance(out, Ignored) and "call_ended" in out.reason
    started = {"event": "call_started", "call": {"call_id": "x"}}
    assert isinstance(MAPPINGS["retell"](started, ctx), Ignored)


def test_retell_chat_events_without_a_call_are_ignored_and_a_published_event_without_one_is_refused() -> None:
    """Retell sends its chat agents' events (chat_started, chat_ended, chat_analyzed) with a `chat` object
    and no `call` (docs.retellai.com/features/webhook-overview): acknowledged and ignored like any event
    not published on, not a 422. A published event without its call is still refused, naming `call`."""
    ctx = Context("a", None, RECEIVED, {}, publish_on=("call_analyzed", "call_ended"))
    for event in ("chat_started", "chat_ended", "chat_analyzed"):
        out = MAPPINGS["retell"]({"event": event, "chat": {"chat_id": "c1", "agent_id": "a1"}}, ctx)
        assert isinstance(out, Ignored) and event in out.reason, out
    with pytest.raises(PayloadError) as caught:
        MAPPINGS["retell"]({"event": "call_analyzed"}, ctx)
    assert [path for path, _ in caught.value.problems] == ["call"]


def test_retell_answers_do_not_depend_on_validating_webhook_and_call_at_once() -> None:
    """map_payload validates the webhook with its call in one pass and falls back to two steps when that
    fails: an event not published on is ignored whatever its call holds, and a published event's bad
    call is named under `call.`, as validating the webhook, then the call, answers."""
    ctx = Context("a", None, RECEIVED, {}, publish_on=("call_analyzed",))
    broken = {"call_id": "", "start_timestamp": -5, "transcript_object": "no"}
    out = MAPPINGS["retell"]({"event": "call_ended", "call": broken}, ctx)
    assert isinstance(out, Ignored) and "call_ended" in out.reason
    with pytest.raises(PayloadError) as caught:
        MAPPINGS["retell"]({"event_type": "call_analyzed", "call": broken}, ctx)
    assert [path for path, _ in caught.value.problems] == [
        "call.call_id",
        "call.start_timestamp",
        "call.transcript_object",
    ]
    with pytest.raises(PayloadError) as caught:
        MAPPINGS["retell"]({"event": "call_analyzed", "call": []}, ctx)
    assert [path for path, _ in caught.value.problems] == ["call"]


def test_retell_one_pass_accepts_what_the_webhook_and_its_call_accept() -> None:
    """The one-pass validation (a TypedDict whose `event` is read from `event_type` by an alias) accepts
    exactly the payloads that RetellWebhook (whose Python validator reads `event_type`) and then the call
    accept, with the same event and call: what it refuses goes the two-step way."""
    from pydantic import ValidationError

    from services.ingress.platforms import retell

    call = orjson.loads(example("retell/phone-voicemail-analyzed.json"))["call"]
    calls: list[Any] = [call, {"call_id": "c-1"}, {"call_id": ""}, {}, None, [], "no", {**call, "duration_ms": -1}]
    events: list[dict[str, Any]] = [
        {},
        {"event": "call_analyzed"},
        {"event_type": "call_analyzed"},
        {"event": "call_ended", "event_type": "call_analyzed"},
        {"event": None, "event_type": "call_analyzed"},
        {"event": 1},
        {"event_type": None},
        {"event": "", "event_type": 1},
    ]

    def two_steps(payload: dict[str, Any]) -> Any:
        try:
            hook = retell.RetellWebhook.model_validate(payload)
            return hook.event, retell._CALL.validate_python(hook.call)
        except ValidationError:
            return "refused"

    def one_pass(payload: dict[str, Any]) -> Any:
        try:
            whole = retell._whole(payload)
        except ValidationError:
            return "refused"
        return whole["event"], whole["call"]

    answers = []
    for event in events:
        for found in [*calls, "(absent)"]:
            payload = {**event, "extra": 1} if found == "(absent)" else {**event, "call": found}
            answers.append(one_pass(payload))
            assert answers[-1] == two_steps(payload), payload
    assert "refused" in answers and len(set(map(repr, answers))) > 2  # both outcomes, several events


def test_retell_call_metadata_keys_are_kept_whatever_their_names() -> None:
    """Retell's call.metadata (the caller's own object) is published as metadata's keys; one named like a
    key the mapping adds (variables, transfer_destination) was overwritten by an empty value and dropped."""
    payload = orjson.loads(example("retell/phone-voicemail-analyzed.json"))
    payload["call"]["metadata"] = {"campaign": "c1", "variables": {"segment": "smb"}, "transfer_destination": "q7"}
    e = MAPPINGS["retell"](payload, CTX)
    assert isinstance(e, ConversationEnded)
    assert e.metadata == {"campaign": "c1", "variables": {"segment": "smb"}, "transfer_destination": "q7"}
    payload["call"]["transfer_destination"] = "+13125550100"
    e = MAPPINGS["retell"](payload, CTX)
    assert isinstance(e, ConversationEnded) and e.metadata["transfer_destination"] == "+13125550100"


@pytest.mark.parametrize("transfer", [None, "", "+13125550100"])
@pytest.mark.parametrize("voicemail", [None, False, True])
@pytest.mark.parametrize("nested", [{}, {"plan": {"tier": "smb"}}])
def test_retell_empty_values_the_mapping_adds_are_dropped_and_the_callers_kept(
    transfer: str | None, voicemail: bool | None, nested: dict[str, Any]
) -> None:
    payload = orjson.loads(example("retell/phone-voicemail-analyzed.json"))
    call = payload["call"]
    call["metadata"] = {"campaign": "c1", "transfer_destination": "q7", "variables": "v", "empty": ""}
    call["transfer_destination"] = transfer
    call["collected_dynamic_variables"] = {"last": "x", **nested}
    call["call_analysis"]["in_voicemail"] = voicemail
    e = MAPPINGS["retell"](payload, CTX)
    assert isinstance(e, ConversationEnded) and e.platform_analysis is not None
    metadata: dict[str, Any] = {"campaign": "c1", "transfer_destination": transfer or "q7", "variables": nested or "v"}
    assert e.metadata == metadata and list(e.metadata) == list(metadata)
    assert e.platform_analysis.details == ({} if voicemail is None else {"in_voicemail": voicemail})


def test_retell_message_times_are_the_earliest_start_and_latest_end_of_words_not_negative() -> None:
    words = [{"start": 2.5, "end": 3}, {"start": -1, "end": -1}, {"start": 1.25}, {"end": 9}, {"start": None}, {}]
    transcript = [
        {"role": "user", "content": "a", "words": words},
        {"role": "agent", "content": "b", "words": [{"start": -2, "end": -1}]},
        {"role": "system", "content": "c", "words": words},  # not a role the event has: left out
        {"role": "transfer_target", "content": "d"},
    ]
    call = {
        "call_id": "c1",
        "agent_id": "ag",
        "start_timestamp": 1,
        "end_timestamp": 2,
        "transcript_object": transcript,
    }
    ctx = Context("a", None, RECEIVED, {}, publish_on=("call_analyzed",))
    e = MAPPINGS["retell"]({"event": "call_analyzed", "call": call}, ctx)
    assert isinstance(e, ConversationEnded) and e.messages is not None
    assert [(m.role, m.text, m.start_seconds, m.end_seconds) for m in e.messages] == [
        ("customer", "a", 1.25, 9.0),
        ("agent", "b", None, None),
        ("human_agent", "d", None, None),
    ]


@pytest.mark.parametrize(
    ("reason", "canonical"),
    [
        ("agent_hangup", EndReason.AGENT_HANGUP),
        ("user_hangup", EndReason.CUSTOMER_HANGUP),
        (" Inactivity", EndReason.SILENCE_TIMEOUT),
        ("voicemail_reached", EndReason.VOICEMAIL),
        ("max_duration_reached", EndReason.MAX_DURATION),
        ("call_transfer", EndReason.BLIND_TRANSFER),
        ("user_requested_dnc", EndReason.AGENT_HANGUP),
        (None, EndReason.UNKNOWN),
    ],
)
def test_retell_call_the_analysis_found_in_voicemail_that_ended_by_a_hang_up_or_silence_ended_by_voicemail(
    reason: str | None, canonical: EndReason
) -> None:
    """call_analysis.in_voicemail: true turns Retell's hang-up and inactivity reasons into VOICEMAIL (its
    reason kept as raw); other reasons, in_voicemail false or absent, and call_ended (no call_analysis)
    keep the reason's own canonical."""
    payload = orjson.loads(example("retell/phone-voicemail-analyzed.json"))
    payload["call"]["disconnection_reason"] = reason
    voicemail = EndReason.VOICEMAIL if reason in ("agent_hangup", "user_hangup", " Inactivity") else canonical
    for in_voicemail, expected in [(True, voicemail), (False, canonical), (None, canonical)]:
        payload["call"]["call_analysis"]["in_voicemail"] = in_voicemail
        e = MAPPINGS["retell"](payload, CTX)
        assert isinstance(e, ConversationEnded)
        assert (e.end_reason.canonical, e.end_reason.raw, e.end_reason.source_platform) == (expected, reason, "retell")
        assert e.status == "completed" and e.platform_analysis is not None  # call_status says ended: as before
    ended = {"event": "call_ended", "call": {**payload["call"], "call_analysis": None}}
    e = MAPPINGS["retell"](ended, CTX)
    assert isinstance(e, ConversationEnded) and e.end_reason.canonical is canonical


def _said(role: str, content: str, start: float, end: float) -> dict[str, Any]:
    return {"role": role, "content": content, "words": [{"word": content, "start": start, "end": end}]}


def test_retell_tool_results_become_tool_messages_among_the_spoken_turns_at_the_time_before_them() -> None:
    """transcript_with_tool_calls (retell-sdk's shapes): each tool_call_result -> a tool message, at the
    latest time an utterance before it reached (None before any), placed among transcript_object's turns,
    which stay as they were; tool calls, node transitions and keypad digits are left out."""
    spoken = [
        _said("agent", "Hi, this is Copperline.", 0.5, 2.0),
        _said("user", "What's my balance?", 3.0, 4.0),
        {**_said("agent", "Let me check. It is 42 dollars.", 4.5, 5.2), "words": [{"start": 4.5}, {"end": 9.0}]},
        _said("user", "Thanks.", 10.0, 10.5),
    ]
    invocation = {"role": "tool_call_invocation", "tool_call_id": "t1", "name": "get_balance", "arguments": "{}"}
    woven = [
        {**invocation, "tool_call_id": "t0", "name": "initialize"},
        {"role": "tool_call_result", "tool_call_id": "t0", "content": '{"ok": true}', "successful": True},
        spoken[0],
        spoken[1],
        {
            "role": "node_transition",
            "former_node_id": "a",
            "former_node_name": "A",
            "new_node_id": "b",
            "new_node_name": "B",
        },
        _said("agent", "Let me check.", 4.5, 5.2),  # Retell splits the turn where the tool was called
        invocation,
        {"role": "tool_call_result", "tool_call_id": "t1", "content": "42.00", "successful": False},
        {"role": "dtmf", "digit": "1"},
        _said("agent", "It is 42 dollars.", 5.8, 9.0),
        spoken[3],
        {"role": "tool_call_result", "tool_call_id": "t2", "content": "sent"},
        {"role": "tool_call_result", "tool_call_id": "t3", "content": None},  # not a text: left out
        {"tool_call_id": "t4", "content": "no role"},  # not an item the mapping knows: left out
    ]
    call = {"call_id": "c1", "agent_id": "ag", "start_timestamp": 1, "end_timestamp": 2, "transcript_object": spoken}
    ctx = Context("a", None, RECEIVED, {}, publish_on=("call_analyzed",))
    plain = MAPPINGS["retell"]({"event": "call_analyzed", "call": call}, ctx)
    e = MAPPINGS["retell"]({"event": "call_analyzed", "call": {**call, "transcript_with_tool_calls": woven}}, ctx)
    assert isinstance(plain, ConversationEnded) and isinstance(e, ConversationEnded) and e.messages is not None
    assert [(m.role, m.text, m.start_seconds, m.end_seconds) for m in e.messages] == [
        ("tool", '{"ok": true}', None, None),
        ("agent", "Hi, this is Copperline.", 0.5, 2.0),
        ("customer", "What's my balance?", 3.0, 4.0),
        ("agent", "Let me check. It is 42 dollars.", 4.5, 9.0),
        ("tool", "42.00", 5.2, None),
        ("customer", "Thanks.", 10.0, 10.5),
        ("tool", "sent", 10.5, None),
    ]
    assert [m for m in e.messages if m.role != "tool"] == plain.messages  # the spoken turns as before
    # no transcript_object: no messages, as before (the tool results have no turns to be placed among)
    call = {**call, "transcript_object": None, "transcript_with_tool_calls": woven}
    e = MAPPINGS["retell"]({"event": "call_analyzed", "call": call}, ctx)
    assert isinstance(e, ConversationEnded) and e.messages is None


def test_elevenlabs_web_conversation_with_analysis() -> None:
    e = mapped("elevenlabs", "elevenlabs/web-with-analysis.json")
    assert e.event_id == "elevenlabs:conv_2201k2x6a3b4c5d6e7f8g9h0jk:1772985660"
    assert (e.agent.id, e.agent.name) == ("support-line", "Support (ElevenLabs)")
    assert (e.channel, e.direction, e.status) == ("web", "inbound", "completed")
    assert e.started_at == datetime.fromtimestamp(1772985600, UTC)
    assert e.ended_at == datetime.fromtimestamp(1772985622, UTC) and e.duration_seconds == 22
    assert e.end_reason.canonical is EndReason.CUSTOMER_HANGUP
    assert e.end_reason.raw == "Remote party ended the conversation"
    assert e.messages is not None and [(m.role, m.start_seconds, m.end_seconds) for m in e.messages] == [
        ("agent", 0, 5),
        ("customer", 5, 9),
        ("agent", 11, 17),
        ("customer", 17, 22),
    ]
    assert e.customer.contact_id == "crm-contact-31577"
    assert e.dynamic_variables == {"account_number": "CL-390114"}
    assert e.metadata["timezone"] == "America/Chicago" and "system__time_utc" in e.metadata["system_variables"]
    pa = e.platform_analysis
    assert pa is not None and pa.successful is True and pa.data == {"issue_category": "technical"}
    assert pa.details["data_collection_rationales"]["issue_category"].startswith("The caller")


def test_elevenlabs_turns_end_where_the_next_timed_turn_starts_in_time_linear_in_their_number() -> None:
    payload = orjson.loads(example("elevenlabs/web-with-analysis.json"))
    timed = [{"role": "user", "message": "a", "time_in_call_secs": 3}, {"role": "agent", "message": "b"}]
    untimed = [{"role": "tool", "time_in_call_secs": 7}, {"role": "agent", "message": "c", "time_in_call_secs": 9}]
    payload["data"]["transcript"] = timed + untimed
    e = MAPPINGS["elevenlabs"](payload, CTX)
    assert isinstance(e, ConversationEnded) and e.messages is not None
    # a turn without a time starts nowhere; the tool's turn is not a message but its time ends the one before
    expected = [("a", 3, 7), ("b", None, None), ("c", 9, 22)]
    assert [(m.text, m.start_seconds, m.end_seconds) for m in e.messages] == expected
    # 32,000 turns in a 1 MB body: each turn scanned the rest for the next time (17 s of CPU, the event loop held)
    payload["data"]["transcript"] = [{"role": "user", "message": ""}] * 32_000
    started = time.process_time()
    MAPPINGS["elevenlabs"](payload, CTX)
    assert time.process_time() - started < 2.0


def test_elevenlabs_tool_results_are_tool_messages_as_vapis_are_and_tool_calls_are_left_out() -> None:
    # the transcript turns as ElevenLabs documents them (GET Conversation, post_call_transcription): a
    # turn with the tool call, then one with its result, neither with a message
    payload = orjson.loads(example("elevenlabs/web-with-analysis.json"))
    call = {"request_id": "req_1", "tool_name": "lookup_visit", "params_as_json": "{}", "tool_has_been_called": True}
    result = {
        "request_id": "req_1",
        "tool_name": "lookup_visit",
        "result_value": '{"visit": "confirmed", "window": "9-11"}',
        "is_error": False,
        "tool_has_been_called": True,
        "tool_latency_secs": 0.41,
        "type": "webhook",
    }
    payload["data"]["transcript"] = [
        {"role": "user", "message": "Is my visit still on?", "time_in_call_secs": 5},
        {"role": "agent", "message": None, "tool_calls": [call], "tool_results": [], "time_in_call_secs": 9},
        {"role": "agent", "message": None, "tool_calls": [], "tool_results": [result], "time_in_call_secs": 10},
        {"role": "agent", "message": "Yes, tomorrow 9 to 11.", "tool_results": None, "time_in_call_secs": 11},
    ]
    e = MAPPINGS["elevenlabs"](payload, CTX)
    assert isinstance(e, ConversationEnded) and e.messages is not None
    assert [(m.role, m.text, m.start_seconds, m.end_seconds) for m in e.messages] == [
        ("customer", "Is my visit still on?", 5, 9),
        ("tool", '{"visit": "confirmed", "window": "9-11"}', 10, None),
        ("agent", "Yes, tomorrow 9 to 11.", 11, 22),
    ]
    vapi = mapped("vapi", "vapi/phone-inbound-with-analysis.json")  # the same role, as Vapi's results have
    assert vapi.messages is not None and [m.text for m in vapi.messages if m.role == "tool"] == ['{"ok":true}']


@pytest.mark.parametrize("depth", [254, 255, 1000])
def test_a_vapi_tool_result_too_deep_to_write_as_text_is_refused_naming_it_not_a_500(depth: int) -> None:
    """orjson reads JSON nested up to 1024 levels and writes up to 254: a deeper result was an
    orjson.JSONEncodeError out of the mapping (the ingress's 500, retried by Vapi with the same body)."""
    payload = orjson.loads(example("vapi/phone-inbound-with-analysis.json"))
    items = payload["message"]["artifact"]["messages"]
    index = next(i for i, m in enumerate(items) if m.get("role") == "tool_call_result")
    deep: Any = []
    for _ in range(depth - 1):
        deep = [deep]
    items[index]["result"] = deep
    if depth <= 254:
        e = MAPPINGS["vapi"](payload, CTX)
        assert isinstance(e, ConversationEnded) and e.messages is not None
        assert [m.text for m in e.messages if m.role == "tool"] == ["[" * depth + "]" * depth]
    else:
        assert_refused_naming("vapi", payload, f"message.artifact.messages[{index}].result")


def test_elevenlabs_outbound_phone_call_without_analysis() -> None:
    e = mapped("elevenlabs", "elevenlabs/phone-outbound-no-analysis.json")
    assert (e.channel, e.direction, e.customer.phone_number, e.to_number) == (
        "phone",
        "outbound",
        "+12245550133",
        "+12245550133",
    )
    assert e.end_reason.canonical is EndReason.AGENT_HANGUP and e.platform_analysis is None


@pytest.mark.parametrize(
    ("platform", "name", "path"),
    [
        # the agent's webhook setting exclude_transcript (the SDK's ConvAiWebhooks: "post-call transcription
        # webhooks omit the turn-by-turn transcript. Analysis, metadata, and other conversation fields are
        # still sent")
        ("elevenlabs", "elevenlabs/web-with-analysis.json", ("data", "transcript")),
        ("vapi", "vapi/phone-inbound-with-analysis.json", ("message", "artifact", "messages")),  # optional
    ],
)
def test_a_transcript_sent_as_null_or_left_out_is_a_call_without_messages_not_a_refusal(
    platform: str, name: str, path: tuple[str, ...]
) -> None:
    """A null transcript was a 422 (`data.transcript: Input should be a valid list`): the call, its
    analysis and its data collection were lost, as ElevenLabs and Vapi do not retry a 4xx."""
    for present in (True, False):
        payload = orjson.loads(example(name))
        parent = payload
        for key in path[:-1]:
            parent = parent[key]
        if present:
            parent[path[-1]] = None
        else:
            del parent[path[-1]]
        e = MAPPINGS[platform](payload, CTX)
        assert isinstance(e, ConversationEnded) and e.messages is None and e.platform_analysis is not None


def test_elevenlabs_sms_conversation_is_an_sms_with_the_customers_number_not_a_web_call() -> None:
    """An agent's SMS conversation carries `metadata.sms` (the SDK's SmsConversationInfo: direction,
    sms_user_phone_number, agent_phone_number) and no `phone_call`: channel sms, its direction, the
    customer's number; it was published as an inbound web conversation without a number."""
    payload = orjson.loads(example("elevenlabs/web-with-analysis.json"))
    sms = {"direction": "inbound", "sms_user_phone_number": "+13125550177", "agent_phone_number": "+13125550100"}
    payload["data"]["metadata"]["sms"] = sms
    # the number called: the agent's on an inbound conversation, the customer's on an outbound one
    for direction, called in (("inbound", "+13125550100"), ("outbound", "+13125550177")):
        sms["direction"] = direction
        e = MAPPINGS["elevenlabs"](payload, CTX)
        assert isinstance(e, ConversationEnded)
        assert (e.channel, e.direction, e.customer.phone_number, e.to_number) == (
            "sms",
            direction,
            "+13125550177",
            called,
        )


def test_elevenlabs_whatsapp_conversation_keeps_its_direction_and_the_users_whatsapp_id() -> None:
    """A WhatsApp conversation carries `metadata.whatsapp` (the SDK's WhatsAppConversationInfo: direction,
    whatsapp_user_id, whatsapp_phone_number_id) and no `phone_call`: it was published as an inbound web
    conversation, so an outbound WhatsApp call ran the inbound flows. Channel `other` (a WhatsApp
    conversation may be a call or messages), its direction, the WhatsApp user id as the contact when the
    conversation names no other; the user id is not taken as a phone number (WhatsApp does not promise
    E.164), and is kept in metadata."""
    payload = orjson.loads(example("elevenlabs/web-with-analysis.json"))
    del payload["data"]["user_id"]
    whatsapp = {"direction": "outbound", "whatsapp_user_id": "13125550177", "whatsapp_phone_number_id": "1055"}
    payload["data"]["metadata"]["whatsapp"] = whatsapp
    e = MAPPINGS["elevenlabs"](payload, CTX)
    assert isinstance(e, ConversationEnded)
    assert (e.channel, e.direction, e.customer.phone_number, e.to_number) == ("other", "outbound", None, None)
    assert e.customer.contact_id == "13125550177"
    assert e.metadata["whatsapp"] == {"user_id": "13125550177", "phone_number_id": "1055"}
    whatsapp["direction"] = "unknown"
    e = MAPPINGS["elevenlabs"](payload, CTX)
    assert isinstance(e, ConversationEnded) and e.direction == "inbound"


def test_elevenlabs_text_only_conversation_is_a_chat_not_a_web_call() -> None:
    """`metadata.text_only` (the SDK's ConversationHistoryMetadataCommonModel; the agent's text-only mode:
    "audio will not be processed and only text will be used") is a chat with the agent: it was published
    as a web call, so a flow on `conversation.channel: chat` never ran for it and the extractor was told
    it was a call. A phone, SMS or WhatsApp conversation keeps its channel."""
    payload = orjson.loads(example("elevenlabs/web-with-analysis.json"))
    payload["data"]["metadata"]["text_only"] = True
    e = MAPPINGS["elevenlabs"](payload, CTX)
    assert isinstance(e, ConversationEnded) and (e.channel, e.direction, e.to_number) == ("chat", "inbound", None)
    payload["data"]["metadata"]["text_only"] = False
    e = MAPPINGS["elevenlabs"](payload, CTX)
    assert isinstance(e, ConversationEnded) and e.channel == "web"
    sms = orjson.loads(example("elevenlabs/web-with-analysis.json"))
    sms["data"]["metadata"] |= {"text_only": True, "sms": {"direction": "inbound", "sms_user_phone_number": "+1312"}}
    e = MAPPINGS["elevenlabs"](sms, CTX)
    assert isinstance(e, ConversationEnded) and e.channel == "sms"
    phone = orjson.loads(example("elevenlabs/phone-outbound-no-analysis.json"))
    phone["data"]["metadata"]["text_only"] = True
    e = MAPPINGS["elevenlabs"](phone, CTX)
    assert isinstance(e, ConversationEnded) and e.channel == "phone"


def test_elevenlabs_version_id_is_the_agent_version() -> None:
    """`version_id` (the agent version the conversation ran) was dropped; mapped, a configuration file
    for that version applies (the agent's default file otherwise), as Retell's `agent_version` does."""
    payload = orjson.loads(example("elevenlabs/web-with-analysis.json"))
    assert mapped("elevenlabs", "elevenlabs/web-with-analysis.json").agent.version is None
    payload["data"]["version_id"] = "agtvrsn_0901k2x6"
    e = MAPPINGS["elevenlabs"](payload, CTX)
    assert isinstance(e, ConversationEnded) and e.agent.version == "agtvrsn_0901k2x6"


def test_vapi_assistant_version_is_the_agent_version() -> None:
    """The report's `assistantVersion` (Vapi's OpenAPI: "the version label (e.g. `v3`) of the assistant
    the call was configured with"; else the call's own, the version it asked for) was dropped, so a
    configuration file for that version never applied to a Vapi call: the default file's flows ran."""
    assert mapped("vapi", "vapi/phone-inbound-with-analysis.json").agent.version is None
    payload = orjson.loads(example("vapi/phone-inbound-with-analysis.json"))
    payload["message"]["assistantVersion"] = "v3"
    payload["message"]["call"]["assistantVersion"] = "v2"  # the call's: what it asked for; the report's wins
    e = MAPPINGS["vapi"](payload, CTX)
    assert isinstance(e, ConversationEnded) and (e.agent.id, e.agent.version) == ("support-line", "v3")
    payload["message"]["assistantVersion"] = None  # "null for inline assistants, squad/workflow calls, ..."
    e = MAPPINGS["vapi"](payload, CTX)
    assert isinstance(e, ConversationEnded) and e.agent.version == "v2"


def test_elevenlabs_call_initiation_failure_is_a_call_that_never_connected() -> None:
    e = mapped("elevenlabs", "elevenlabs/call-initiation-failure.json")
    assert (e.status, e.direction, e.times_estimated, e.duration) == ("not_connected", "outbound", True, 0)
    assert e.end_reason.canonical is EndReason.BUSY and e.end_reason.raw == "busy"
    assert e.customer.phone_number == "+15125550147"
    unknown = orjson.loads(example("elevenlabs/call-initiation-failure.json"))
    unknown["data"]["failure_reason"] = "unknown"
    out = MAPPINGS["elevenlabs"](unknown, CTX)
    assert isinstance(out, ConversationEnded) and out.end_reason.canonical is EndReason.DIAL_FAILED


def test_a_direction_value_the_mapping_does_not_know_does_not_refuse_the_call() -> None:
    """A vendor adding a direction value (ElevenLabs' SDK types it as an open enum) must not turn a
    finished call into a 422 that is never retried: the call is published, inbound as when no direction
    is sent; outbound stays outbound."""
    eleven = orjson.loads(example("elevenlabs/phone-outbound-no-analysis.json"))
    eleven["data"]["metadata"]["phone_call"]["direction"] = "transferred"
    e = MAPPINGS["elevenlabs"](eleven, CTX)
    assert isinstance(e, ConversationEnded) and (e.channel, e.direction) == ("phone", "inbound")
    assert e.to_number == "+13125550100" and e.customer.phone_number == "+12245550133"
    retell = orjson.loads(example("retell/phone-voicemail-analyzed.json"))
    assert retell["call"]["direction"] == "outbound"
    assert MAPPINGS["retell"](retell, CTX).direction == "outbound"  # type: ignore[union-attr]
    retell["call"]["direction"] = "internal"
    r = MAPPINGS["retell"](retell, CTX)
    assert isinstance(r, ConversationEnded) and (r.channel, r.direction) == ("phone", "inbound")


def test_elevenlabs_audio_webhook_is_ignored() -> None:
    assert isinstance(MAPPINGS["elevenlabs"](orjson.loads(example("elevenlabs/post-call-audio.json")), CTX), Ignored)


@pytest.mark.parametrize(
    ("platform", "payload", "field"),
    [
        ("vapi", {"message": {"type": "end-of-call-report", "call": {}}}, "message.call.id"),
        ("vapi", {"nothing": 1}, "message"),
        ("vapi", {"message": {"type": "end-of-call-report", "call": {"id": "c"}}}, "message.call.assistantId"),
        (
            "retell",
            {"event": "call_analyzed", "call": {"call_id": "c", "start_timestamp": "soon"}},
            "call.start_timestamp",
        ),
        ("retell", {"event": "call_ended"}, "call"),
        ("elevenlabs", {"type": "post_call_transcription", "data": {}}, "event_timestamp"),
        ("elevenlabs", {"type": "post_call_transcription", "event_timestamp": 1, "data": {}}, "data.conversation_id"),
        ("native", {"event_id": "e"}, "conversation_id"),
    ],
)
def test_a_payload_that_cannot_be_used_names_the_field(platform: str, payload: dict[str, Any], field: str) -> None:
    assert_refused_naming(platform, payload, field)


def test_native_event_keeps_its_id_and_cannot_name_another_account() -> None:
    event = orjson.loads(example("../conversations/0001-support-resolved-hangup.json"))
    ctx = Context("acct-copperline", None, RECEIVED, {})
    out = MAPPINGS["native"](event, ctx)
    assert isinstance(out, ConversationEnded) and out.event_id == "evt-2026-0001-copilot"
    with pytest.raises(PayloadError, match="publishes for account 'other' only"):
        MAPPINGS["native"](event, Context("other", None, RECEIVED, {}))
    without = {k: v for k, v in event.items() if k != "account"}
    assert MAPPINGS["native"](without, Context("acct-x", "X", RECEIVED, {})).account.id == "acct-x"  # type: ignore[union-attr]


def test_native_event_gets_the_endpoints_agent_alias_like_a_vendors() -> None:
    """An endpoint's `agents` (platform id -> postcall agent id and name) were accepted on a native
    endpoint and never applied: a bridge sending its platform's agent ids had its calls run no flows
    (no configuration has that id). Applied as for the vendors; an agent not listed keeps its id, and the
    event's own agent name and version win over the alias's name."""
    event = orjson.loads(example("../conversations/0001-support-resolved-hangup.json"))
    event["agent"] = {"id": "asst_9f2c41", "version": "3"}  # the bridge's platform's id, no name
    ctx = Context("acct-copperline", None, RECEIVED, {"asst_9f2c41": ("support-line", "Support")})
    out = MAPPINGS["native"](event, ctx)
    assert isinstance(out, ConversationEnded)
    assert (out.agent.id, out.agent.name, out.agent.version) == ("support-line", "Support", "3")
    event["agent"]["name"] = "Its own name"
    named = MAPPINGS["native"](event, ctx)
    assert isinstance(named, ConversationEnded) and named.agent.name == "Its own name"
    unlisted = MAPPINGS["native"](event, Context("acct-copperline", None, RECEIVED, {"other": ("x", None)}))
    assert isinstance(unlisted, ConversationEnded) and unlisted.agent == ConversationEnded.model_validate(event).agent


def _with(name: str, path: tuple[str, ...], value: Any) -> dict[str, Any]:
    payload: dict[str, Any] = orjson.loads(example(name))
    node = payload
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return payload


RETELL, VAPI, ELEVENLABS = (
    "retell/phone-voicemail-analyzed.json",
    "vapi/phone-inbound-with-analysis.json",
    "elevenlabs/web-with-analysis.json",
)
# where a time is read (an epoch far past year 9999, a valid JSON integer, was a ValueError or
# OverflowError out of the mapping: a 500 with no log line, retried by the vendor for as long as it
# retries) and where an agent id is read (one over the contract's 256 characters was a ValidationError
# out of the mapping, a 500)
TIMES = [
    ("retell", RETELL, ("call", "start_timestamp")),
    ("retell", RETELL, ("call", "end_timestamp")),
    ("elevenlabs", ELEVENLABS, ("data", "metadata", "start_time_unix_secs")),
    ("elevenlabs", ELEVENLABS, ("event_timestamp",)),
    ("elevenlabs", ELEVENLABS, ("data", "metadata", "call_duration_secs")),
    ("vapi", VAPI, ("message", "timestamp")),
]
AGENT_IDS = [
    ("retell", RETELL, ("call", "agent_id")),
    ("vapi", VAPI, ("message", "call", "assistantId")),
    ("elevenlabs", ELEVENLABS, ("data", "agent_id")),
]


@pytest.mark.parametrize(
    ("platform", "name", "path", "value"),
    [(*where, value) for where in TIMES for value in (10**15, 2**63, 2**64 + 1)]
    + [(*where, "a" * 300) for where in AGENT_IDS],
)
def test_a_value_the_contract_cannot_hold_is_a_payload_error_naming_its_field(
    platform: str, name: str, path: tuple[str, ...], value: Any
) -> None:
    assert_refused_naming(platform, _with(name, path, value), ".".join(path))


def test_shared_agents_and_end_reasons_are_kept_short_and_bounded() -> None:
    """An agent or end reason whose texts are short is built once and shared; a longer one is built each
    time and never kept; the kept ones stay at most _SHARED (a full cache is emptied first)."""
    from services.ingress.platforms import common

    ctx = Context("a", None, RECEIVED, {})
    first = common.agent(ctx, "ag-1", "Sales", 7, field="call.agent_id")
    assert common.agent(ctx, "ag-1", "Sales", 7, field="call.agent_id") is first
    assert (first.id, first.name, first.version) == ("ag-1", "Sales", "7")
    long_name = "n" * (common._SHORT + 1)
    made = common.agent(ctx, "ag-1", long_name, None, field="call.agent_id")
    assert made.name == long_name and common.agent(ctx, "ag-1", long_name, None, field="call.agent_id") is not made
    assert all(len(key[1] or "") <= common._SHORT for key in common._agents)
    reason = common.end_reason("retell", "voicemail_reached")
    assert common.end_reason("retell", "voicemail_reached") is reason and reason.canonical is EndReason.VOICEMAIL
    long_raw = "r" * (common._SHORT + 1)
    assert common.end_reason("retell", long_raw) is not common.end_reason("retell", long_raw)
    for n in range(common._SHARED + 10):
        common.agent(ctx, f"ag-{n}", None, None, field="call.agent_id")
        common.end_reason("retell", f"raw-{n}")
    assert 0 < len(common._agents) <= common._SHARED and 0 < len(common._reasons) <= common._SHARED


@pytest.mark.parametrize(
    ("platform", "name", "path"),
    [
        ("vapi", "vapi/phone-inbound-with-analysis.json", ("message", "artifact")),
        ("vapi", "vapi/phone-inbound-with-analysis.json", ("message", "analysis")),
        ("elevenlabs", "elevenlabs/web-with-analysis.json", ("data", "metadata")),
    ],
)
def test_an_object_sent_as_null_is_read_as_absent(platform: str, name: str, path: tuple[str, str]) -> None:
    """A serializer that writes an empty optional object as null (`"analysis": null`) got a 422, and a 4xx
    is not retried: the call was lost. Null is read as the object's absence, whatever absence gives."""
    sent_null, left_out = orjson.loads(example(name)), orjson.loads(example(name))
    sent_null[path[0]][path[1]] = None
    del left_out[path[0]][path[1]]

    def outcome(payload: dict[str, Any]) -> Any:
        try:
            return MAPPINGS[platform](payload, CTX)
        except PayloadError as exc:
            return exc.problems

    assert outcome(sent_null) == outcome(left_out)
