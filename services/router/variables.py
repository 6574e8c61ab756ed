"""Template variables of one conversation, looked up lazily and at most once per record.

* Seed 001's system variables, with its availability rules: `customer_number` and `to_number` only on
  phone calls; `customer_name` and `customer_email` only when the conversation is linked to a contact
  (customer.contact_id); `conversation_transcript` only when the event carries messages (the router
  never fetches a transcript_url), else its own fallback "(transcript not available)".
* Extras: end_reason, raw_end_reason, source_platform, agent_id, agent_version, account_id, channel,
  duration_seconds, recording_url, extraction_status.
* Extracted fields by name (`interest_level`) or as `fields.interest_level`; `dyn_*` from
  extraction.dynamic; `dynamic_variables.<name>` from the platform's own dynamic variables;
  `platform.<name>` from the platform's own analysis (`summary`, `successful`, `sentiment`, or a value
  it extracted), whatever the extraction's status.

A system variable wins over an extracted field of the same name while it is available; when it is not
(no contact linked), the extracted value is used (an agent that extracts `customer_name` gets the name
the caller said). Empty text counts as missing. With a failed extraction, extracted values are missing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

import orjson

from schemas.events import ConversationEnded, ConversationExtracted, Extraction, Message
from services.common import codec
from services.router.templates import Scalar

TRANSCRIPT_FALLBACK = "(transcript not available)"
_ROLES = {"agent": "Agent", "customer": "Customer", "human_agent": "Human agent"}
_ROLE_PREFIXES = {role: f"{label}: " for role, label in _ROLES.items()}

Resolver = Callable[["ConversationValues"], Scalar]
_RESOLVERS: dict[str, Resolver] = {}  # by name: names come from loaded templates and conditions (bounded)


class ConversationValues:
    # the record's parts, read once: every read of a pydantic model's attribute goes through BaseModel's
    # __getattr__ hook (an unspecialised lookup), a read of these slots does not
    __slots__ = ("_cache", "_fallback", "conversation", "event", "extraction", "ok", "tz")

    def __init__(self, event: ConversationExtracted, tz: ZoneInfo, fallback: str) -> None:
        self.event, self.tz, self._fallback = event, tz, fallback
        fields = event.__dict__
        self.conversation: ConversationEnded = fields["conversation"]
        self.extraction: Extraction = fields["extraction"]
        self.ok = self.extraction.status == "ok"  # the extraction succeeded: extracted values are known
        self._cache: dict[str, Scalar] = {}

    def get(self, name: str) -> Scalar:
        cache = self._cache
        if name in cache:
            return cache[name]
        resolver = _RESOLVERS.get(name)
        if resolver is None:
            resolver = _RESOLVERS[name] = _resolver(name)
        value = resolver(self)
        if isinstance(value, str) and (not value or value.isspace()):  # strip()'s whitespace, without a copy
            value = None
        cache[name] = value
        return value

    def default_fallback(self, name: str) -> str:
        return TRANSCRIPT_FALLBACK if name == "conversation_transcript" else self._fallback

    def field(self, name: str) -> Scalar:
        found = self.extraction.fields.get(name) if self.ok else None
        return found.value if found is not None else None


def _resolver(name: str) -> Resolver:
    """How a name is looked up, decided once per name (ConversationValues.get keeps them)."""
    system = SYSTEM.get(name)
    if system is not None:

        def system_or_field(v: ConversationValues) -> Scalar:
            value = system(v)
            return value if value is not None else v.field(name)

        return system_or_field
    if name.startswith("dyn_"):

        def dynamic(v: ConversationValues) -> Scalar:
            found = v.extraction.dynamic.get(name) if v.ok else None
            return found.value if found is not None else None

        return dynamic
    if name.startswith("fields."):
        field = name.removeprefix("fields.")
        return lambda v: v.field(field)
    if name.startswith("dynamic_variables."):
        key = name.removeprefix("dynamic_variables.")
        return lambda v: dynamic_variable(v.conversation, key)
    if name.startswith("platform."):
        attribute = name.removeprefix("platform.")
        return lambda v: platform_value(v.conversation, attribute)
    return lambda v: v.field(name)


PLATFORM_ATTRIBUTES = ("summary", "successful", "sentiment")


def platform_value(conversation: ConversationEnded, name: str) -> Scalar:
    """`platform.<name>`: the platform's summary, verdict or sentiment, else the value it extracted under
    that name (a nested value as JSON text); None when the platform sent no analysis or no such value."""
    analysis = conversation.platform_analysis
    if analysis is None:
        return None
    value = getattr(analysis, name) if name in PLATFORM_ATTRIBUTES else analysis.data.get(name)
    if value is None or isinstance(value, str | int | float | bool):
        return _writable(value)
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # an integer over 64 bits inside
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def dynamic_variable(conversation: ConversationEnded, name: str) -> Scalar:
    return _writable(conversation.dynamic_variables.get(name))


def _writable(value: Scalar) -> Scalar:
    """A platform's integer beyond what orjson writes (the router's traces and digests, the dispatcher's
    bodies) is its digits: an event published to Kafka may carry one, and pydantic reads it."""
    if type(value) is int and not -(2**63) <= value < 2**64:
        return str(value)
    return value


def transcript(messages: list[Message] | None) -> str | None:
    if not messages:
        return None
    roles = _ROLE_PREFIXES
    lines = []
    for message in messages:
        fields = message.__dict__  # one read of the model, not one per field (ConversationValues)
        prefix = roles.get(fields["role"])
        if prefix is not None:
            lines.append(prefix + fields["text"])
    return "\n".join(lines) or None


def duration_mmss(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 60:02d}:{whole % 60:02d}"


def _date(v: ConversationValues) -> str:
    """When the conversation started, strftime("%Y-%m-%d %H:%M:%S %Z") in a sixth of the time."""
    return _local(v.conversation.started_at, v)


def _end_date(v: ConversationValues) -> str:
    return _local(v.conversation.ended_at, v)


def _local(at: datetime, v: ConversationValues) -> str:
    """isoformat(" ", "seconds")[:19] and the zone's abbreviation, without isoformat's offset (the time
    zone asked twice) and format parsing: local years are 1969-2999 (a Timestamp's), four digits."""
    local = at.astimezone(v.tz)
    two = codec.TWO_DIGITS
    return (
        f"{local.year}-{two[local.month]}-{two[local.day]} "
        f"{two[local.hour]}:{two[local.minute]}:{two[local.second]} {local.tzname() or ''}"
    )


def _time(v: ConversationValues) -> str:
    return v.conversation.started_at.astimezone(v.tz).strftime("%I:%M %p").lstrip("0")


def _phone_only(value: str | None, v: ConversationValues) -> str | None:
    return value if v.conversation.channel == "phone" else None


def _contact_only(value: str | None, v: ConversationValues) -> str | None:
    return value if v.conversation.customer.contact_id else None


SYSTEM: dict[str, Resolver] = {
    "conversation_date": _date,
    "conversation_time": _time,
    "conversation_duration": lambda v: duration_mmss(v.conversation.duration),
    "conversation_status": lambda v: v.conversation.status.capitalize(),
    "conversation_direction": lambda v: v.conversation.direction.capitalize(),
    "conversation_summary": lambda v: v.extraction.summary,
    "conversation_transcript": lambda v: transcript(v.conversation.messages),
    "conversation_url": lambda v: v.conversation.conversation_url,
    "conversation_uuid": lambda v: v.conversation.conversation_id,
    "agent_name": lambda v: v.conversation.agent.name or v.conversation.agent.id,
    "account_name": lambda v: v.conversation.account.name,
    "customer_number": lambda v: _phone_only(v.conversation.customer.phone_number, v),
    "customer_name": lambda v: _contact_only(v.conversation.customer.name, v),
    "customer_email": lambda v: _contact_only(v.conversation.customer.email, v),
    "to_number": lambda v: _phone_only(v.conversation.to_number, v),
    "conversation_end_date": _end_date,
    "end_reason": lambda v: v.conversation.end_reason.canonical._value_,  # .value is a slower property
    "raw_end_reason": lambda v: v.conversation.end_reason.raw,
    "source_platform": lambda v: v.conversation.end_reason.source_platform,
    "agent_id": lambda v: v.conversation.agent.id,
    "agent_version": lambda v: v.conversation.agent.version,
    "account_id": lambda v: v.conversation.account.id,
    "channel": lambda v: v.conversation.channel,
    "duration_seconds": lambda v: v.conversation.duration,
    "recording_url": lambda v: v.conversation.recording_url,
    "extraction_status": lambda v: v.extraction.status,
}
