"""Vapi server messages -> ConversationEnded: only `end-of-call-report` is a finished conversation.

Field names from Vapi's OpenAPI (`ServerMessageEndOfCallReport`, `Call`, `Artifact`, `UserMessage`,
`BotMessage`, `Analysis`). The report's own fields win over the same ones on `call`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import Field, ValidationError, ValidatorFunctionWrapHandler, WrapValidator
from pydantic_core import PydanticCustomError

from schemas.events import MAX_ID_LENGTH, ConversationEnded
from services.ingress.platforms.common import (
    Context,
    Ignored,
    Lenient,
    NullIsAbsent,
    PayloadError,
    account,
    agent,
    aware,
    build,
    dropped_empty,
    end_reason,
    event_id,
    from_epoch,
    parse,
    split_scalars,
    status_for,
    times,
)

REPORT = "end-of-call-report"
_CHANNELS = {
    "inboundPhoneCall": ("phone", "inbound"),
    "outboundPhoneCall": ("phone", "outbound"),
    "webCall": ("web", "inbound"),  # a web call is started by the customer: inbound to the agent
    "vapi.websocketCall": ("web", "inbound"),
}
_ROLES: dict[str, Literal["agent", "customer", "tool"]] = {
    "user": "customer",
    "bot": "agent",
    "assistant": "agent",
    "tool_call_result": "tool",
}


class VapiCustomer(Lenient):
    number: str | None = None
    name: str | None = None
    email: str | None = None
    externalId: str | None = None


class VapiNamed(Lenient):
    id: str | None = None
    name: str | None = None
    number: str | None = None


class VapiOverrides(Lenient):
    variableValues: dict[str, Any] | None = None


class VapiCall(Lenient):
    id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    orgId: str | None = None
    type: str | None = None
    assistantId: str | None = None
    assistantVersion: str | None = None  # the version the call asked for (None: the latest)
    assistant: VapiNamed | None = None
    assistantOverrides: VapiOverrides | None = None
    customer: VapiCustomer | None = None
    phoneNumber: VapiNamed | None = None
    startedAt: datetime | None = None
    endedAt: datetime | None = None
    endedReason: str | None = None


class VapiMono(Lenient):
    combinedUrl: str | None = None


class VapiRecording(Lenient):
    mono: VapiMono | None = None
    stereoUrl: str | None = None


class VapiArtifact(Lenient):
    messages: list[dict[str, Any]] | None = None
    recording: VapiRecording | str | None = None
    recordingUrl: str | None = None
    stereoRecordingUrl: str | None = None
    logUrl: str | None = None
    variableValues: dict[str, Any] | None = None
    structuredOutputs: dict[str, Any] | None = None


class VapiAnalysis(Lenient):
    summary: str | None = None
    structuredData: Any = None
    structuredDataMulti: Any = None
    successEvaluation: Any = None


def _ms_or_iso(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """`timestamp`: epoch milliseconds (Vapi's SDKs now) or an ISO-8601 text (older Vapi OpenAPI
    documents, vapi-client 0.1); one problem naming the field, not one per member of the union."""
    try:
        return handler(value)
    except ValidationError:
        raise PydanticCustomError("time", "should be epoch milliseconds or an ISO-8601 time") from None


class VapiReport(Lenient):
    type: Literal["end-of-call-report"]
    endedReason: str | None = None
    call: VapiCall
    artifact: Annotated[VapiArtifact, NullIsAbsent] = VapiArtifact()
    analysis: Annotated[VapiAnalysis, NullIsAbsent] = VapiAnalysis()
    customer: VapiCustomer | None = None
    phoneNumber: VapiNamed | None = None
    assistant: VapiNamed | None = None
    assistantVersion: str | None = None  # the version label the call was configured with (e.g. v3)
    startedAt: datetime | None = None
    endedAt: datetime | None = None
    timestamp: Annotated[float | datetime | None, WrapValidator(_ms_or_iso)] = None
    cost: float | None = None
    destination: Any = None


class VapiEnvelope(Lenient):
    message: dict[str, Any]


def natural_key(call_id: str) -> str:
    return event_id(f"vapi:{call_id}:{REPORT}", call_id, "message.call.id")


def map_payload(payload: Any, ctx: Context) -> ConversationEnded | Ignored:
    kind = parse(VapiEnvelope, payload).message.get("type")
    if kind != REPORT:
        return Ignored(f"Vapi message type {str(kind)[:64]!r} is not an end-of-call-report")
    report = parse(VapiReport, payload["message"], "message")
    call = report.call
    channel, direction = _CHANNELS.get(call.type or "", ("phone", "inbound"))
    reason = end_reason("vapi", report.endedReason or call.endedReason)
    reported = _reported(report.timestamp, ctx.received_at)
    started, ended, estimated = times(report.startedAt or call.startedAt, report.endedAt or call.endedAt, reported)
    customer = report.customer or call.customer or VapiCustomer()
    called = report.phoneNumber or call.phoneNumber
    assistant = report.assistant or call.assistant
    variables, nested = split_scalars(
        {
            **((call.assistantOverrides.variableValues or {}) if call.assistantOverrides else {}),
            **(report.artifact.variableValues or {}),
        }
    )
    return build(
        event_id=natural_key(call.id),
        conversation_id=call.id,
        occurred_at=reported,
        account=account(ctx),
        agent=agent(
            ctx,
            call.assistantId or (assistant.id if assistant else None),
            assistant.name if assistant else None,
            report.assistantVersion or call.assistantVersion,
            field="message.call.assistantId",
        ),
        channel=channel,
        direction=direction,
        status=status_for(reason.canonical),
        started_at=started,
        ended_at=ended,
        times_estimated=estimated,
        end_reason=reason,
        customer=dict(
            phone_number=customer.number, name=customer.name, email=customer.email, contact_id=customer.externalId
        ),
        to_number=(called.number if called else None) if direction == "inbound" else customer.number,
        messages=messages(report.artifact.messages or []) or None,
        recording_url=_recording(report.artifact),
        conversation_url=report.artifact.logUrl,
        dynamic_variables=variables,
        metadata=dropped_empty(
            {
                "vapi_org_id": call.orgId,
                "cost_usd": report.cost,
                "transfer_destination": report.destination,
                "variables": nested,
            }
        ),
        platform_analysis=analysis(report.analysis, report.artifact.structuredOutputs),
    )


def _reported(timestamp: float | datetime | None, received: datetime) -> datetime:
    if isinstance(timestamp, datetime):
        return aware(timestamp)
    return from_epoch(timestamp, 1000, field="message.timestamp") if timestamp else received


def messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """user -> customer, bot -> agent, tool results -> tool; the system prompt and tool calls are left out."""
    out = []
    for i, item in enumerate(items):
        role = _ROLES.get(str(item.get("role")))
        key = "message" if role != "tool" else "result"
        text = item.get(key)
        if role is None or text is None:
            continue
        start = _number(item.get("secondsFromStart"))
        end = None
        if start is not None and _number(item.get("time")) is not None and _number(item.get("endTime")) is not None:
            end = max(start, start + (float(item["endTime"]) - float(item["time"])) / 1000)
        text = _text(text, f"message.artifact.messages[{i}].{key}")
        out.append(dict(role=role, text=text, start_seconds=start, end_seconds=end))
    return out


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else None


def _text(value: Any, field: str) -> str:
    """A message's text: the value when it is a text, else its JSON (a tool's result may be any JSON). A value
    orjson cannot write (nested over 254 levels; its parser reads up to 1024) is the payload's fault: a 422
    naming it, not a 500 that the platform would retry with the same body for ever."""
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        raise PayloadError([(field, "objects and arrays nest too deep to be written as text")]) from None


def _recording(artifact: VapiArtifact) -> str | None:
    rec = artifact.recording
    if isinstance(rec, str):
        return rec
    mono = rec.mono.combinedUrl if rec is not None and rec.mono is not None else None
    stereo = rec.stereoUrl if rec is not None else None
    return mono or artifact.recordingUrl or stereo or artifact.stereoRecordingUrl


def analysis(found: VapiAnalysis, outputs: dict[str, Any] | None) -> dict[str, Any] | None:
    """summary; successEvaluation as a verdict when it is a pass/fail rubric; structured data and the
    structured outputs (by their names) as values."""
    data: dict[str, Any] = dict(found.structuredData) if isinstance(found.structuredData, dict) else {}
    for key, output in (outputs or {}).items():
        if isinstance(output, dict) and "result" in output:
            data[str(output.get("name") or key)] = output["result"]
    verdict = str(found.successEvaluation).strip().lower() if found.successEvaluation is not None else ""
    details = dropped_empty(
        {"success_evaluation": found.successEvaluation, "structured_data_multi": found.structuredDataMulti}
    )
    if found.structuredData is not None and not isinstance(found.structuredData, dict):
        details["structured_data"] = found.structuredData
    if not (found.summary or data or details):
        return None
    return dict(
        summary=found.summary or None,
        successful={"true": True, "pass": True, "false": False, "fail": False}.get(verdict),
        data=data,
        details=details,
    )


class VapiWebhook(Lenient):
    """The body Vapi POSTs to a server URL (only the fields the ingress reads; other message types are
    acknowledged and ignored)."""

    message: VapiReport
