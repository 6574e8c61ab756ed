"""ElevenLabs post-call webhooks -> ConversationEnded.

`post_call_transcription` is a finished conversation; `call_initiation_failure` is a call that never
connected (published with estimated times, its `failure_reason` as the raw end reason, DIAL_FAILED
when the reason is not one we know); `post_call_audio` and anything else are acknowledged and not
published. Field names from the elevenlabs SDK (`ConversationHistoryMetadataCommonModel`,
`ConversationHistoryTwilioPhoneCallModel`, ...). The payload has no agent name: the endpoint's
`agents` gives it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from schemas.end_reasons import EndReason
from schemas.events import MAX_ID_LENGTH, ConversationEnded
from services.ingress.platforms.common import (
    Context,
    Ignored,
    Lenient,
    NullIsAbsent,
    account,
    agent,
    build,
    dropped_empty,
    end_reason,
    event_id,
    from_epoch,
    parse,
    split_scalars,
    times,
)

TRANSCRIPTION = "post_call_transcription"
INITIATION_FAILURE = "call_initiation_failure"
_ROLES: dict[str, Literal["agent", "customer"]] = {"agent": "agent", "user": "customer"}
_STATUS = {"done": "completed", "failed": "failed"}
_VERDICT = {"success": True, "failure": False}
_START, _DURATION = "data.metadata.start_time_unix_secs", "data.metadata.call_duration_secs"


class ElevenLabsPhoneCall(Lenient):
    direction: str | None = None  # an open enum (inbound, outbound): another value is read as inbound
    agent_number: str | None = None
    external_number: str | None = None


class ElevenLabsSms(Lenient):
    """An SMS conversation (`SmsConversationInfo`): it has this instead of a `phone_call`."""

    direction: str | None = None
    sms_user_phone_number: str | None = None
    agent_phone_number: str | None = None


class ElevenLabsWhatsApp(Lenient):
    """A WhatsApp conversation (`WhatsAppConversationInfo`): a call or messages; its user id is WhatsApp's,
    not promised to be a phone number."""

    direction: str | None = None  # inbound, outbound, unknown
    whatsapp_user_id: str | None = None
    whatsapp_phone_number_id: str | None = None


class ElevenLabsMetadata(Lenient):
    start_time_unix_secs: int | None = Field(None, ge=0)
    call_duration_secs: float | None = Field(None, ge=0)
    termination_reason: str | None = None
    phone_call: ElevenLabsPhoneCall | None = None
    sms: ElevenLabsSms | None = None
    whatsapp: ElevenLabsWhatsApp | None = None
    cost: float | None = None
    text_only: bool | None = None  # the agent's text-only mode: a chat, no audio
    main_language: str | None = None
    timezone: str | None = None


class ElevenLabsTurn(Lenient):
    role: str
    message: str | None = None
    tool_results: list[Any] | None = None  # objects with `result_value`, what the tool answered
    time_in_call_secs: float | None = None


class ElevenLabsAnalysis(Lenient):
    transcript_summary: str | None = None
    call_successful: str | bool | None = None
    data_collection_results: dict[str, Any] | None = None
    evaluation_criteria_results: dict[str, Any] | None = None


class ElevenLabsClientData(Lenient):
    dynamic_variables: dict[str, Any] | None = None


class ElevenLabsConversation(Lenient):
    agent_id: str | None = None
    agent_name: str | None = None
    version_id: str | None = None  # the agent version the conversation ran
    conversation_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    status: str | None = None
    user_id: str | None = None
    transcript: list[ElevenLabsTurn] | None = None  # left out or null: the webhook's exclude_transcript
    metadata: Annotated[ElevenLabsMetadata, NullIsAbsent] = ElevenLabsMetadata()
    analysis: ElevenLabsAnalysis | None = None
    conversation_initiation_client_data: ElevenLabsClientData | None = None


class ElevenLabsInitiationFailure(Lenient):
    agent_id: str | None = None
    conversation_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    failure_reason: str | None = None
    metadata: dict[str, Any] | None = None


class ElevenLabsEnvelope(Lenient):
    type: str
    event_timestamp: int = Field(ge=0)
    data: dict[str, Any]


def natural_key(conversation_id: str, event_timestamp: int) -> str:
    return event_id(f"elevenlabs:{conversation_id}:{event_timestamp}", conversation_id, "data.conversation_id")


def map_payload(payload: Any, ctx: Context) -> ConversationEnded | Ignored:
    envelope = parse(ElevenLabsEnvelope, payload)
    if envelope.type == INITIATION_FAILURE:
        return _initiation_failure(envelope, parse(ElevenLabsInitiationFailure, envelope.data, "data"), ctx)
    if envelope.type != TRANSCRIPTION:
        return Ignored(f"ElevenLabs webhook type {envelope.type[:64]!r} is not a finished conversation")
    conv = parse(ElevenLabsConversation, envelope.data, "data")
    meta, phone = conv.metadata, conv.metadata.phone_call
    sms = meta.sms if phone is None else None
    whatsapp = meta.whatsapp if phone is None and sms is None else None
    line = phone or sms or whatsapp
    direction = "outbound" if line is not None and line.direction == "outbound" else "inbound"
    channel, customer, ours = "chat" if meta.text_only else "web", None, None  # in a browser or app: no numbers
    if phone is not None:
        channel, customer, ours = "phone", phone.external_number, phone.agent_number
    elif sms is not None:
        channel, customer, ours = "sms", sms.sms_user_phone_number, sms.agent_phone_number
    elif whatsapp is not None:
        channel = "other"  # a WhatsApp call or messages: no channel of the contract says which
    started_at = from_epoch(meta.start_time_unix_secs, field=_START) if meta.start_time_unix_secs is not None else None
    ended_at = (
        from_epoch(meta.start_time_unix_secs + meta.call_duration_secs, field=_DURATION)
        if meta.start_time_unix_secs is not None and meta.call_duration_secs is not None
        else None
    )
    reported = from_epoch(envelope.event_timestamp, field="event_timestamp")
    started, ended, estimated = times(started_at, ended_at, reported)
    client = conv.conversation_initiation_client_data
    variables = (client.dynamic_variables if client is not None else None) or {}
    own, nested = split_scalars({k: v for k, v in variables.items() if not k.startswith("system__")})
    return build(
        event_id=natural_key(conv.conversation_id, envelope.event_timestamp),
        conversation_id=conv.conversation_id,
        occurred_at=reported,
        account=account(ctx),
        agent=agent(ctx, conv.agent_id, conv.agent_name, conv.version_id, field="data.agent_id"),
        channel=channel,
        direction=direction,
        status=_STATUS.get(conv.status or "", conv.status or "completed"),
        started_at=started,
        ended_at=ended,
        times_estimated=estimated,
        duration_seconds=meta.call_duration_secs,
        end_reason=end_reason("elevenlabs", meta.termination_reason),
        customer=dict(phone_number=customer, contact_id=conv.user_id or (whatsapp and whatsapp.whatsapp_user_id)),
        to_number=ours if direction == "inbound" else customer,
        messages=messages(conv.transcript or [], meta.call_duration_secs) or None,
        dynamic_variables=own,
        metadata=dropped_empty(
            {
                "cost": meta.cost,
                "language": meta.main_language,
                "timezone": meta.timezone,  # the extractor reads dates in this zone
                "whatsapp": whatsapp
                and dropped_empty(
                    {"user_id": whatsapp.whatsapp_user_id, "phone_number_id": whatsapp.whatsapp_phone_number_id}
                ),
                "system_variables": {k: v for k, v in variables.items() if k.startswith("system__")},
                "variables": nested,
            }
        ),
        platform_analysis=analysis(conv.analysis),
    )


def _initiation_failure(
    envelope: ElevenLabsEnvelope, failure: ElevenLabsInitiationFailure, ctx: Context
) -> ConversationEnded:
    reported = from_epoch(envelope.event_timestamp, field="event_timestamp")
    body = (failure.metadata or {}).get("body")
    body = body if isinstance(body, dict) else {}
    dialled = next((body[k] for k in ("to_number", "To", "to") if isinstance(body.get(k), str)), None)
    return build(
        event_id=natural_key(failure.conversation_id, envelope.event_timestamp),
        conversation_id=failure.conversation_id,
        occurred_at=reported,
        account=account(ctx),
        agent=agent(ctx, failure.agent_id, field="data.agent_id"),
        channel="phone",
        direction="outbound",  # only an outbound call can fail to be initiated
        status="not_connected",
        started_at=reported,
        ended_at=reported,
        times_estimated=True,
        duration_seconds=0.0,
        end_reason=end_reason("elevenlabs", failure.failure_reason, default=EndReason.DIAL_FAILED),
        customer=dict(phone_number=dialled),
        to_number=dialled,
        metadata=dropped_empty({"telephony": (failure.metadata or {}).get("type")}),
    )


def messages(turns: list[ElevenLabsTurn], duration: float | None) -> list[dict[str, Any]]:
    """user -> customer, agent -> agent; a turn ends where the next one starts (the last at the call's
    end); a turn's tool results (`result_value`) -> tool, at the turn's time, as Vapi's tool results are;
    the tool calls are left out."""
    # when the next turn with a time starts, for every turn: one pass from the end, not a scan of the rest
    # per turn (quadratic: a 1 MB body of 32,000 turns held the event loop 17 s)
    following: list[float | None] = [None] * len(turns)
    upcoming = None
    for i in range(len(turns) - 1, -1, -1):
        following[i] = upcoming
        if turns[i].time_in_call_secs is not None:
            upcoming = turns[i].time_in_call_secs
    out = []
    for turn, next_start in zip(turns, following, strict=True):
        role = _ROLES.get(turn.role)
        if role is None:
            continue
        start = turn.time_in_call_secs if turn.time_in_call_secs is not None and turn.time_in_call_secs >= 0 else None
        if turn.message is not None:
            end = next_start if next_start is not None else duration
            if start is None or end is None or end < start:
                end = None
            out.append(dict(role=role, text=turn.message, start_seconds=start, end_seconds=end))
        for result in turn.tool_results or ():
            value = result.get("result_value") if isinstance(result, dict) else None  # a string (the SDK's model)
            if isinstance(value, str):
                out.append(dict(role="tool", text=value, start_seconds=start, end_seconds=None))
    return out


def analysis(found: ElevenLabsAnalysis | None) -> dict[str, Any] | None:
    if found is None:
        return None
    results = found.data_collection_results or {}
    verdict = found.call_successful
    return dict(
        summary=found.transcript_summary or None,
        successful=verdict if isinstance(verdict, bool) else _VERDICT.get(str(verdict).lower()),
        data={k: v.get("value") if isinstance(v, dict) else v for k, v in results.items()},
        details=dropped_empty(
            {
                "evaluation_criteria_results": found.evaluation_criteria_results,
                "data_collection_rationales": {
                    k: v["rationale"] for k, v in results.items() if isinstance(v, dict) and v.get("rationale")
                },
            }
        ),
    )


class ElevenLabsDocumented(Lenient):
    """The body ElevenLabs POSTs for `post_call_transcription` (only the fields the ingress reads;
    `call_initiation_failure` carries `failure_reason` instead of a transcript)."""

    type: Literal["post_call_transcription", "call_initiation_failure", "post_call_audio"]
    event_timestamp: int
    data: ElevenLabsConversation
