"""One webhook request: raw body -> authenticated -> JSON -> ConversationEnded -> Kafka -> the answer.

Produces `postcall.conversation-ended.v1` (key = conversation_id; CloudEvents headers whose source is
`/<platform>/<account>`, time the conversation's end, subject the conversation id). Consumes nothing.

| Answer | When |
|---|---|
| 200 `published` | the brokers acknowledged the record (acks=all) |
| 200 `duplicate` | the same event id was already acknowledged (or is in flight) in this process |
| 200 `ignored` | a well-formed message that is not a finished conversation (so the platform does not retry) |
| 400 | the body is not UTF-8 or not JSON |
| 401 | the signature or token is missing, malformed, stale or wrong |
| 413 | the body is over the configured size |
| 422 | valid JSON the mapping cannot use; `problems` name each field |
| 500 `internal_error` | the ingress failed on it (a bug of ours, logged with its traceback): to be retried |
| 503 + Retry-After | Kafka did not acknowledge in time: not known to be published, the platform should retry |
| 503 + Retry-After | `overloaded`: the request bodies in flight are at their limit (app.py's BodyBudget, before this) |

The signature is checked before anything else reads the body; the body is never re-serialised before
that, and never logged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, Field, ValidationError

from schemas.events import ConversationEnded
from services.ingress.endpoints import Endpoint
from services.ingress.platforms import Context, Ignored, PayloadError, map_payload
from services.ingress.publisher import Published, Publisher, TooLarge, Unavailable, ce_source
from services.ingress.signatures import Headers, Refused


class FieldProblem(BaseModel):
    field: str = Field(description="Where in the payload, e.g. message.call.id.")
    problem: str


class ProblemAnswer(BaseModel):
    """Every refusal: a stable code, a sentence for people, and the fields when the payload is at fault."""

    error: str = Field(description="invalid_signature, invalid_utf8, invalid_json, invalid_payload, ...")
    message: str
    problems: list[FieldProblem] | None = None


class AcceptedAnswer(BaseModel):
    status: Literal["published", "duplicate", "ignored"]
    event_id: str | None = None
    conversation_id: str | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    reason: str | None = Field(None, description="Why an ignored message is not published.")


@dataclass(slots=True)
class Answer:
    status: int
    outcome: str  # the metric label and the log's outcome
    body: BaseModel | bytes  # the answer's model, or its JSON already written (`accepted`)
    headers: dict[str, str] = field(default_factory=dict)
    detail: str | None = None  # for the log line: what was refused, never a secret
    event_id: str | None = None  # for the log line: the published (or duplicate) event's
    conversation_id: str | None = None
    exc: BaseException | None = None  # for the log line: the failure of ours a 500 answers (its traceback)

    def json(self) -> bytes:
        """The body as the client reads it: the model's JSON without its None fields."""
        body = self.body
        if isinstance(body, bytes):
            return body
        return body.__pydantic_serializer__.to_json(body, exclude_none=True)


def accepted(status: Literal["published", "duplicate"], done: Published) -> Answer:
    """A published or duplicate answer, its JSON written by orjson from an AcceptedAnswer's fields in
    the model's order: the bytes `AcceptedAnswer(...).model_dump_json(exclude_none=True)` writes
    (test_an_accepted_answers_json_is_the_models), without building and serialising the model."""
    fields = {
        "status": status,
        "event_id": done.event_id,
        "conversation_id": done.conversation_id,
        "topic": done.topic,
        "partition": done.partition,
        "offset": done.offset,
    }
    # every argument positional: keyword arguments and the headers' default_factory cost more (every webhook)
    return Answer(200, status, orjson.dumps(fields), {}, None, done.event_id, done.conversation_id)


def refusal(status: int, outcome: str, error: str, message: str, **kwargs: Any) -> Answer:
    return Answer(status, outcome, ProblemAnswer(error=error, message=message, **kwargs), detail=message)


def failed(exc: Exception) -> Answer:
    """The 500 of a request the ingress failed on itself. The exception's text is for nobody: it may quote
    the payload or name our internals; the log line has its type and traceback (app.py)."""
    message = (
        "the ingress failed on this request (an error of its own, logged): the event is not known to be "
        "published; retry later (a retry has the same event id)"
    )
    body = ProblemAnswer(error="internal_error", message=message)
    return Answer(500, "error", body, detail=type(exc).__name__, exc=exc)


def decode(body: bytes) -> Any | Answer:
    """The JSON value, or a 400: invalid_utf8 when the body is not UTF-8 (whether or not it is JSON),
    else invalid_json. orjson refuses any body that is not valid UTF-8, so a body it parses needs no
    separate UTF-8 pass (which cost a decode of the whole body per request); only a refused one is
    checked, to name the right error."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as bad:
            return refusal(400, "bad_request", "invalid_utf8", f"the body is not valid UTF-8 (byte {bad.start})")
        return refusal(400, "bad_request", "invalid_json", f"the body is not valid JSON: {exc}")


def context(endpoint: Endpoint, received_at: datetime) -> Context:
    return Context.received(endpoint.context_fields, received_at)


def unusable(exc: PayloadError, outcome: str = "invalid") -> Answer:
    """422 naming each field of a payload that cannot become a ConversationEnded."""
    problems = [FieldProblem(field=f, problem=p) for f, p in exc.problems]
    return refusal(422, outcome, "invalid_payload", f"the payload cannot be used: {exc}", problems=problems)


class WebhookHandler:
    def __init__(self, publisher: Publisher, retry_after_seconds: int, clock: Callable[[], float] = time.time) -> None:
        self.publisher, self.retry_after, self.clock = publisher, retry_after_seconds, clock
        self._sources: dict[tuple[str, str], str] = {}  # ce_source by (platform, account id), not native

    async def handle(self, endpoint: Endpoint, headers: Headers, body: bytes) -> Answer:
        now = self.clock()
        try:
            endpoint.verifier.verify(body, headers, now)
        except Refused as exc:
            return refusal(401, "unauthorized", "invalid_signature", str(exc))
        payload = decode(body)
        if isinstance(payload, Answer):
            return payload
        if not isinstance(payload, dict):
            return refusal(422, "invalid", "invalid_payload", "the body must be a JSON object")
        try:
            mapped = map_payload(endpoint.platform, payload, context(endpoint, datetime.fromtimestamp(now, UTC)))
        except PayloadError as exc:
            return unusable(exc)
        except ValidationError as exc:
            # A part a mapping built outside its own checks, which the contract refuses: answered 422 like
            # a payload's fault (a 500 would loop the vendor's retries), but counted and logged at ERROR
            # as `mapping_error`, since it may be a bug of ours rather than the vendor's.
            return unusable(PayloadError.of(exc, "(mapped event)"), "mapping_error")
        if isinstance(mapped, Ignored):
            return Answer(200, "ignored", AcceptedAnswer(status="ignored", reason=mapped.reason), detail=mapped.reason)
        problem = endpoint.agent_refusal(mapped.agent.id)
        if problem is not None:
            return unusable(PayloadError([("agent.id", problem)]))
        return await self._publish(endpoint, mapped)

    def _source(self, platform: str, event: ConversationEnded) -> str:
        """`ce_source(platform, event)`. Except for a native event (whose own platform can name the
        source), it depends on the platform and the account id only, which come from the endpoint:
        computed once per (platform, account) and kept (a bounded number)."""
        if platform == "native":
            return ce_source(platform, event)
        key = (platform, event.account.id)
        source = self._sources.get(key)
        if source is None:
            source = ce_source(platform, event)
            if len(self._sources) < 4096:
                self._sources[key] = source
        return source

    async def _publish(self, endpoint: Endpoint, event: ConversationEnded) -> Answer:
        try:
            done = await self.publisher.publish(event, self._source(endpoint.platform, event))
        except Unavailable as exc:
            answer = refusal(
                503,
                "unavailable",
                "kafka_unavailable",
                f"{exc}; not acknowledged, so not known to be published: retry later (a retry has the same event id)",
            )
            return Answer(503, answer.outcome, answer.body, {"Retry-After": str(self.retry_after)}, answer.detail)
        except TooLarge as exc:
            return refusal(413, "too_large", "payload_too_large", str(exc))
        return accepted("duplicate" if done.duplicate else "published", done)
