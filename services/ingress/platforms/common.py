"""What every platform's mapping shares: its inputs, its two non-event outcomes, and small converters.

A mapping is a pure function `(payload, Context) -> ConversationEnded | Ignored`; it raises
`PayloadError` naming each field it cannot use. It never sees the request, the secrets or Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, TypeVar, cast

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from schemas.end_reasons import EndReason, canonical_end_reason, outcome_class
from schemas.events import MAX_ID_LENGTH, MAX_NESTING, Account, Agent, ConversationEnded, EndReasonInfo, nested_too_deep


class Lenient(BaseModel):
    """A vendor payload model: only the fields we read; anything else the vendor adds is ignored."""

    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True)


def _absent_if_null(value: Any) -> Any:
    return {} if value is None else value


#: On an optional object field with an empty default: a vendor's serializer may write an empty optional
#: object as null, which is read as the object left out (a 422 would lose the call: a 4xx is not retried).
NullIsAbsent = BeforeValidator(_absent_if_null)


@dataclass(frozen=True)
class Context:
    account_id: str
    account_name: str | None
    received_at: datetime
    agents: dict[str, tuple[str | None, str | None]]  # platform agent id -> (postcall id, name)
    default_agent_id: str | None = None
    publish_on: tuple[str, ...] = ()  # Retell: the events that become a conversation

    @classmethod
    def received(cls, fields: dict[str, Any], received_at: datetime) -> Context:
        """`Context(received_at=received_at, **fields)` with all the other fields given, in a third of
        the time (one per request): the instance's dict filled at once, instead of the frozen
        dataclass's `object.__setattr__` per field. Equal to the one __init__ builds (a test)."""
        made = object.__new__(cls)
        made.__dict__.update(fields, received_at=received_at)
        return made


@dataclass(frozen=True)
class Ignored:
    """A well-formed message that is not a finished conversation (a status update, an audio webhook):
    answered 2xx so the platform does not retry it, and not published."""

    reason: str


class PayloadError(Exception):
    """Raised when a payload is valid JSON but cannot become a ConversationEnded (HTTP 422); `problems`
    are (field path in the payload, what is wrong)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{path}: {message}" for path, message in problems))
        self.problems = problems

    @classmethod
    def of(cls, exc: ValidationError, prefix: str = "", limit: int = 10) -> PayloadError:
        problems = []
        for error in exc.errors(include_url=False, include_input=False)[:limit]:
            head = prefix.split(".") if prefix else []
            path = ".".join(str(p) for p in (*head, *error["loc"]))
            problems.append((path or "(root)", str(error["msg"])))
        return cls(problems)


M = TypeVar("M", bound=BaseModel)


# `validate(model, data)` is `model.model_validate(data)` (which calls the same validator with every
# option at its default, None) without that wrapper's ~0.6-1 us per call, on every request's path.


def validate(model: type[M], data: Any) -> M:
    return cast(M, model.__pydantic_validator__.validate_python(data))


def parse(model: type[M], data: Any, prefix: str = "") -> M:
    try:
        return validate(model, data)
    except ValidationError as exc:
        raise PayloadError.of(exc, prefix) from None


def build(**fields: Any) -> ConversationEnded:
    """The event, or a PayloadError naming the event field the payload could not fill validly."""
    return build_from(fields)


def build_from(fields: dict[str, Any]) -> ConversationEnded:
    """`build` from a dict of the fields (no keyword arguments to pack)."""
    try:
        return validate(ConversationEnded, fields)
    except ValidationError as exc:
        raise PayloadError.of(exc, "(mapped event)") from None


def nesting_problems(event: ConversationEnded, prefix: str = "") -> list[tuple[str, str]]:
    """The free-form fields of `event` nested deeper than the contract's MAX_NESTING, as PayloadError
    problems: such an event could not be written (over 255 levels) or read back by any consumer (over 200)."""
    # (plain tests, no tuple of the fields and no comprehensions to build: every published event comes here)
    deep = []
    if event.metadata and nested_too_deep(event.metadata):
        deep.append("metadata")
    analysis = event.platform_analysis
    if analysis is not None:
        if analysis.data and nested_too_deep(analysis.data):
            deep.append("platform_analysis.data")
        if analysis.details and nested_too_deep(analysis.details):
            deep.append("platform_analysis.details")
    if not deep:
        return []
    return [(prefix + name, f"objects and arrays nest deeper than {MAX_NESTING} levels") for name in deep]


def event_id(key: str, vendor_id: str, field: str) -> str:
    """`key`, the event id made from the vendor's `vendor_id` (its natural key), when the contract's id
    holds it; else a PayloadError naming the vendor's field, with the length that would fit (not the
    event's event_id, a field the vendor never sent)."""
    if len(key) <= MAX_ID_LENGTH:
        return key
    room = MAX_ID_LENGTH - (len(key) - len(vendor_id))
    problem = f"String should have at most {room} characters: the event id, at most {MAX_ID_LENGTH}, is made from it"
    raise PayloadError([(field, problem)])


def aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def from_epoch(value: float, unit: float = 1.0, *, field: str) -> datetime:
    """Unix time in seconds (unit 1) or milliseconds (unit 1000) as an aware UTC datetime; a number no
    calendar holds (past year 9999, or beyond a float) is a PayloadError naming `field`, not an exception
    out of the mapping (which would be a 500 the vendor retries)."""
    try:
        return datetime.fromtimestamp(value / unit, UTC)
    except (ValueError, OverflowError, OSError):
        raise PayloadError([(field, "is not a time: out of the range of dates")]) from None


# The small parts of an event that repeat from call to call (the endpoint's account, an agent, an end
# reason) are built once and shared: they are frozen models, and an event holding one serialises exactly
# as with a fresh one (tests/unit/ingress/test_mapped_bytes.py). Bounded in number (names come from
# payloads) and in size: a part with a longer text than _SHORT is built each time, never kept.
_SHARED, _SHORT = 4096, 256


def _short(*texts: str | None) -> bool:
    for text in texts:  # noqa: SIM110 - a loop, not all() over a generator (2-3x its time, every request)
        if text is not None and len(text) > _SHORT:
            return False
    return True


def account(ctx: Context) -> Account:
    return _account(ctx.account_id, ctx.account_name)


@lru_cache(maxsize=_SHARED)
def _account(account_id: str, name: str | None) -> Account:
    return Account(id=account_id, name=name)


def agent(ctx: Context, agent_id: str | None, name: str | None = None, version: object = None, *, field: str) -> Agent:
    found = agent_id or ctx.default_agent_id
    if not found:
        raise PayloadError([(field, "names no agent (set default_agent_id on the endpoint for such calls)")])
    alias, alias_name = ctx.agents.get(found, (None, None))
    parts = (alias or found, name or alias_name, None if version is None else str(version))
    shared = _agents.get(parts)  # looked up first: only a part kept was short, so _short runs on a miss only
    if shared is not None:
        return shared
    if _short(*parts):
        return _kept(_agents, parts, Agent(id=parts[0], name=parts[1], version=parts[2]))
    try:
        return Agent(id=parts[0], name=parts[1], version=parts[2])
    except ValidationError as exc:  # an id over 256 characters: the field that named it
        raise PayloadError([(field, f"the agent's {e['loc'][0]}: {e['msg']}") for e in exc.errors()]) from None


_agents: dict[tuple[str, str | None, str | None], Agent] = {}
_reasons: dict[tuple[str, str | None, EndReason | None], EndReasonInfo] = {}
_Part = TypeVar("_Part", Agent, EndReasonInfo)


def _kept(cache: dict[Any, _Part], key: Any, part: _Part) -> _Part:
    """`part`, kept in `cache` under `key`; a full cache is emptied first (at most _SHARED parts)."""
    if len(cache) >= _SHARED:
        cache.clear()
    cache[key] = part
    return part


def end_reason(platform: str, raw: str | None, default: EndReason | None = None) -> EndReasonInfo:
    key = (platform, raw, default)
    shared = _reasons.get(key)
    if shared is not None:
        return shared
    made = _end_reason(platform, raw, default)
    return _kept(_reasons, key, made) if _short(platform, raw) else made


def _end_reason(platform: str, raw: str | None, default: EndReason | None) -> EndReasonInfo:
    canonical = canonical_end_reason(platform, raw)
    if canonical is EndReason.UNKNOWN and default is not None:
        canonical = default
    return EndReasonInfo(canonical=canonical, raw=raw or None, source_platform=platform)


def status_for(reason: EndReason) -> str:
    """completed, not_connected or failed, from the end reason's outcome class."""
    return {"not_connected": "not_connected", "error": "failed"}.get(outcome_class(reason), "completed")


Scalar = str | int | float | bool | None
_SCALARS = (str, int, float, bool)  # a tuple built once: `str | int | ...` in isinstance() builds a union per call


def split_scalars(values: dict[str, Any] | None) -> tuple[dict[str, Scalar], dict[str, Any]]:
    """(flat scalars for `dynamic_variables`, the nested rest for `metadata`)."""
    flat: dict[str, Scalar] = {}
    rest: dict[str, Any] = {}
    for key, value in (values or {}).items():
        if value is None or isinstance(value, _SCALARS):
            flat[str(key)] = value
        else:
            rest[str(key)] = value
    return flat, rest


def times(started: datetime | None, ended: datetime | None, fallback: datetime) -> tuple[datetime, datetime, bool]:
    """(started_at, ended_at, times_estimated): a call the platform sent no times for (it never
    connected) starts and ends when it was reported, with a duration of 0."""
    if ended is None:
        moment = started or fallback
        return aware(moment), aware(moment), True
    if started is None:
        return aware(ended), aware(ended), True
    return aware(started), aware(ended), False


def dropped_empty(values: dict[str, Any]) -> dict[str, Any]:
    kept = {}
    for key, value in values.items():  # a loop, not a comprehension: its function call cost more (1-2 items)
        if value not in _EMPTY:
            kept[key] = value
    return kept


_EMPTY: tuple[Any, ...] = (None, "", [], {})  # built once, not a list and a dict per value
