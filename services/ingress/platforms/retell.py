"""Retell `call_ended` / `call_analyzed` webhooks -> ConversationEnded.

Field names from retell-sdk (`PhoneCallResponse`, `WebCallResponse`). Some of Retell's docs show
`event_type` instead of `event`: both are read. Calls that never connected (`not_connected`) come
through both events too, possibly without timestamps: they are published with estimated times.
Retell's body has no account id (the endpoint's account is used) and an integer agent version.
The spoken turns come from `transcript_object`; the tool results of `transcript_with_tool_calls`, when
Retell sends it, are placed among them as tool messages.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired, Required

from pydantic import AliasChoices, ConfigDict, Field, TypeAdapter, ValidationError, model_validator, with_config
from typing_extensions import TypedDict

from schemas.end_reasons import EndReason
from schemas.events import MAX_ID_LENGTH, ConversationEnded, EndReasonInfo
from services.ingress.platforms.common import (
    Context,
    Ignored,
    Lenient,
    PayloadError,
    account,
    agent,
    build_from,
    dropped_empty,
    end_reason,
    event_id,
    from_epoch,
    parse,
    split_scalars,
    times,
)

_ROLES: dict[str, Literal["agent", "customer", "human_agent"]] = {
    "agent": "agent",
    "user": "customer",
    "transfer_target": "human_agent",
}
_STATUS = {"ended": "completed", "not_connected": "not_connected", "error": "failed"}
_START, _END = "call.start_timestamp", "call.end_timestamp"  # named by a time no calendar holds
# How a call that reached a voicemail ends when Retell's voicemail detection did not end it
# (voicemail_reached): the agent or the mailbox hangs up, or the line goes silent after the beep. Only
# call_analysis.in_voicemail (call_analyzed) then says it was a voicemail.
_VOICEMAIL_ENDS = frozenset({"agent_hangup", "user_hangup", "inactivity"})


# A transcript's utterances and words are TypedDicts, not models: validated into plain dicts (every key
# present, defaults filled in), they cost a fraction of a model instance each, and a Retell transcript
# carries a word entry for every word spoken. Their JSON Schema is the models' (the OpenAPI document).


@with_config(ConfigDict(extra="ignore", hide_input_in_errors=True))
class RetellWord(TypedDict, total=False):
    start: Annotated[float | None, Field(default=None)]
    end: Annotated[float | None, Field(default=None)]


@with_config(ConfigDict(extra="ignore", hide_input_in_errors=True))
class RetellUtterance(TypedDict):
    role: str
    content: str
    words: NotRequired[Annotated[list[RetellWord], Field(default_factory=list)]]


@with_config(ConfigDict(extra="ignore", hide_input_in_errors=True))
class RetellTranscriptItem(TypedDict):
    """An item of `transcript_with_tool_calls`, only the keys the mapping reads: an utterance (role agent,
    user or transfer_target; content; words), a tool result (role tool_call_result; content, a text), or
    another item (tool_call_invocation, node_transition, dtmf, sms, injected), which is left out, as is one
    without a role: the spoken turns come from transcript_object, so an item the mapping cannot place is
    no reason to refuse the call."""

    role: NotRequired[Annotated[str | None, Field(default=None)]]
    content: NotRequired[Annotated[Any, Field(default=None)]]
    words: NotRequired[Annotated[list[RetellWord], Field(default_factory=list)]]


@with_config(ConfigDict(extra="ignore", hide_input_in_errors=True))
class RetellAnalysis(TypedDict, total=False):
    call_summary: Annotated[str | None, Field(default=None)]
    call_successful: Annotated[bool | None, Field(default=None)]
    user_sentiment: Annotated[str | None, Field(default=None)]
    in_voicemail: Annotated[bool | None, Field(default=None)]
    custom_analysis_data: Annotated[dict[str, Any] | None, Field(default=None)]


# The call too: a dict with every key (defaults filled in) instead of a model of 21 fields, the same
# validation and the same JSON Schema.
@with_config(ConfigDict(extra="ignore", hide_input_in_errors=True))
class RetellCall(TypedDict, total=False):
    call_id: Required[Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]]
    agent_id: Annotated[str | None, Field(default=None)]
    agent_name: Annotated[str | None, Field(default=None)]
    agent_version: Annotated[int | str | None, Field(default=None)]
    call_type: Annotated[str | None, Field(default=None)]
    direction: Annotated[str | None, Field(default=None)]  # inbound, outbound: another value is read as inbound
    from_number: Annotated[str | None, Field(default=None)]
    to_number: Annotated[str | None, Field(default=None)]
    call_status: Annotated[str | None, Field(default=None)]
    start_timestamp: Annotated[int | None, Field(None, ge=0)]
    end_timestamp: Annotated[int | None, Field(None, ge=0)]
    duration_ms: Annotated[int | None, Field(None, ge=0)]
    disconnection_reason: Annotated[str | None, Field(default=None)]
    transcript_object: Annotated[list[RetellUtterance] | None, Field(default=None)]
    transcript_with_tool_calls: Annotated[list[RetellTranscriptItem] | None, Field(default=None)]
    recording_url: Annotated[str | None, Field(default=None)]
    public_log_url: Annotated[str | None, Field(default=None)]
    metadata: Annotated[dict[str, Any] | None, Field(default=None)]
    retell_llm_dynamic_variables: Annotated[dict[str, Any] | None, Field(default=None)]
    collected_dynamic_variables: Annotated[dict[str, Any] | None, Field(default=None)]
    call_analysis: Annotated[RetellAnalysis | None, Field(default=None)]
    transfer_destination: Annotated[str | None, Field(default=None)]


_CALL: TypeAdapter[RetellCall] = TypeAdapter(RetellCall)


class RetellWebhook(Lenient):
    event: str
    call: dict[str, Any] | None = None  # absent from chat events (chat_ended, ...), which carry `chat`

    @model_validator(mode="before")
    @classmethod
    def _event_type(cls, data: Any) -> Any:
        if isinstance(data, dict) and "event" not in data and "event_type" in data:
            return {**data, "event": data["event_type"]}
        return data


def natural_key(call_id: str, event: str) -> str:
    return event_id(f"retell:{call_id}:{event}", call_id, "call.call_id")


@with_config(ConfigDict(extra="ignore", hide_input_in_errors=True))
class _RetellWhole(TypedDict):
    """The webhook and its call in one validation, what `map_payload` tries first: a dict, not a model
    (RetellWebhook's), and `event_type` read for an absent `event` by an alias, not by RetellWebhook's
    Python validator. It accepts what RetellWebhook and its call accept (tests/unit/ingress/test_platforms.py)."""

    event: Annotated[str, Field(validation_alias=AliasChoices("event", "event_type"))]
    call: RetellCall


_whole = TypeAdapter(_RetellWhole).validator.validate_python  # pydantic-core's, without TypeAdapter's wrapper


def map_payload(payload: Any, ctx: Context) -> ConversationEnded | Ignored:
    # One validation of the webhook with its call. A payload it refuses goes the two-step way (the
    # webhook, the publish_on check, then the call), which answers as before: an event not published
    # is ignored whatever its call holds, and a bad call's problems are named under `call.`.
    try:
        whole: _RetellWhole = _whole(payload)
    except ValidationError:
        hook = parse(RetellWebhook, payload)
        if hook.event not in ctx.publish_on:
            return _ignored(hook.event, ctx)
        if hook.call is None:
            raise PayloadError([("call", "Field required")]) from None
        try:
            call = _CALL.validate_python(hook.call)
        except ValidationError as exc:
            raise PayloadError.of(exc, "call") from None
        event = hook.event
    else:
        event, call = whole["event"], whole["call"]
        if event not in ctx.publish_on:
            return _ignored(event, ctx)
    web = call["call_type"] == "web_call"
    direction = "outbound" if not web and call["direction"] == "outbound" else "inbound"
    start, end, received = call["start_timestamp"], call["end_timestamp"], ctx.received_at
    if start is not None and end is not None:  # a connected call: both times, as times() returns them
        started, ended, estimated = from_epoch(start, 1000, field=_START), from_epoch(end, 1000, field=_END), False
    else:
        started, ended, estimated = times(
            None if start is None else from_epoch(start, 1000, field=_START),
            None if end is None else from_epoch(end, 1000, field=_END),
            received,
        )
    llm, collected = call["retell_llm_dynamic_variables"], call["collected_dynamic_variables"]
    variables, nested = split_scalars({**llm, **collected} if llm and collected else llm or collected)
    status, duration_ms, transcript = call["call_status"], call["duration_ms"], call["transcript_object"]
    spoken = messages(transcript) if transcript else None
    if spoken is not None and call["transcript_with_tool_calls"]:
        spoken = woven(spoken, tool_results(call["transcript_with_tool_calls"]))
    ours: dict[str, Any] = {}  # dropped_empty({"transfer_destination": ..., "variables": nested}), inline
    if call["transfer_destination"]:  # a text or None: empty is "" or None
        ours["transfer_destination"] = call["transfer_destination"]
    if nested:
        ours["variables"] = nested
    return build_from(
        {
            "event_id": natural_key(call["call_id"], event),
            "conversation_id": call["call_id"],
            "occurred_at": received,  # Retell's body carries no event time
            "account": account(ctx),
            "agent": agent(ctx, call["agent_id"], call["agent_name"], call["agent_version"], field="call.agent_id"),
            "channel": "web" if web else "phone",
            "direction": direction,
            "status": _STATUS.get(status, status) if status else "completed",
            "started_at": started,
            "ended_at": ended,
            "times_estimated": estimated,
            "duration_seconds": duration_ms / 1000 if duration_ms is not None else (0.0 if estimated else None),
            "end_reason": _end_reason(call["disconnection_reason"], call["call_analysis"]),
            "customer": {
                "phone_number": None if web else call["from_number"] if direction == "inbound" else call["to_number"]
            },
            "to_number": None if web else call["to_number"],
            "messages": spoken or None,
            "recording_url": call["recording_url"],
            "conversation_url": call["public_log_url"],
            "dynamic_variables": variables,
            # the call's own keys, and ours only when they hold something
            "metadata": dropped_empty({**(call["metadata"] or {}), **ours}),
            "platform_analysis": analysis(call["call_analysis"]),
        }
    )


def _end_reason(raw: str | None, found: RetellAnalysis | None) -> EndReasonInfo:
    """The end reason of `disconnection_reason`; VOICEMAIL, with Retell's reason kept as raw, for a call
    the analysis found in a voicemail that ended as such calls end (_VOICEMAIL_ENDS)."""
    reason = end_reason("retell", raw)
    if found is not None and found["in_voicemail"] is True and (raw or "").strip().lower() in _VOICEMAIL_ENDS:
        return EndReasonInfo(canonical=EndReason.VOICEMAIL, raw=reason.raw, source_platform="retell")
    return reason


def _ignored(event: str, ctx: Context) -> Ignored:
    return Ignored(f"Retell event {event[:64]!r} is not published (publish_on: {', '.join(ctx.publish_on)})")


# The transcript and the analysis are plain dicts that `build` validates as part of the event (one
# validation instead of one per message): the same event, the same bytes (test_mapped_bytes.py).


def messages(utterances: list[RetellUtterance]) -> list[dict[str, Any]]:
    out = []
    for u in utterances:
        role = _ROLES.get(u["role"])
        if role is None:
            continue
        # _span(u["words"]), inline: a call per utterance, on every request
        first = last = None  # the earliest start and the latest end of the words, those >= 0
        for w in u["words"]:  # (every key is there: validation fills in the defaults)
            start, end = w["start"], w["end"]
            if start is not None and start >= 0 and (first is None or start < first):
                first = start
            if end is not None and end >= 0 and (last is None or end > last):
                last = end
        out.append({"role": role, "text": u["content"], "start_seconds": first, "end_seconds": last})
    return out


def _span(words: list[RetellWord]) -> tuple[float | None, float | None]:
    """The earliest start and the latest end of the words, of those >= 0 (as `messages` finds them)."""
    first = last = None
    for w in words:  # (every key is there: validation fills in the defaults)
        start, end = w["start"], w["end"]
        if start is not None and start >= 0 and (first is None or start < first):
            first = start
        if end is not None and end >= 0 and (last is None or end > last):
            last = end
    return first, last


def tool_results(items: list[RetellTranscriptItem]) -> list[dict[str, Any]]:
    """The tool results (`tool_call_result`) as tool messages. Retell gives a result no time: it is put
    at the latest time an utterance before it reached (its last word's end, else its first word's start),
    the earliest the result can have come; None before any utterance with a time. Tool calls, node
    transitions, keypad digits (dtmf), texts (sms) and injected context are left out."""
    out = []
    at: float | None = None
    for item in items:
        role = item["role"]
        if role in _ROLES:
            first, last = _span(item["words"])
            reached = last if last is not None else first
            if reached is not None and (at is None or reached > at):
                at = reached
        elif role == "tool_call_result" and isinstance(item["content"], str):  # a text (retell-sdk's model)
            out.append({"role": "tool", "text": item["content"], "start_seconds": at, "end_seconds": None})
    return out


def woven(spoken: list[dict[str, Any]], results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The spoken turns, unchanged and in their order, with each tool result before the first turn with a
    time that starts at or after the result's time (the results' times never decrease); the rest last."""
    out, i = [], 0
    for turn in spoken:
        start = turn["start_seconds"]
        if start is not None:
            while i < len(results) and (results[i]["start_seconds"] is None or results[i]["start_seconds"] <= start):
                out.append(results[i])
                i += 1
        out.append(turn)
    out.extend(results[i:])
    return out


def analysis(found: RetellAnalysis | None) -> dict[str, Any] | None:
    if found is None:
        return None
    return {
        "summary": found["call_summary"] or None,
        "successful": found["call_successful"],
        "sentiment": found["user_sentiment"],
        "data": dict(found["custom_analysis_data"] or {}),
        # dropped_empty({"in_voicemail": ...}) of a bool or None, inline
        "details": {} if found["in_voicemail"] is None else {"in_voicemail": found["in_voicemail"]},
    }


class RetellDocumented(Lenient):
    """The body Retell POSTs (only the fields the ingress reads; `event_type` is accepted for `event`)."""

    event: Literal["call_ended", "call_analyzed", "call_started"]
    call: RetellCall
