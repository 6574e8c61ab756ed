"""Bytes on the wire <-> events: JSON values (pydantic), CloudEvents Kafka-binding headers, and the one
shape of a record to produce (`Outgoing`)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

from schemas import headers as h
from services.common.errors import InvalidRecord

Decoder = Callable[[bytes], Any]


@dataclass(slots=True)
class Outgoing:
    """A record to produce: outputs, retry-tier copies, dead letters, replays. (Not frozen: a frozen
    dataclass's __init__ costs three times as much, and every output of every record is one.)"""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Mapping[str, str]
    partition: int | None = None  # None: Kafka's partitioner over the key
    event: BaseModel | None = None  # the event it encodes (None for copies of an input)
    then: Outgoing | None = None  # sent once this one is acknowledged (a dead letter's replay marker)


def decoder(model: Any) -> Decoder:
    """bytes -> event for a stream's model: pydantic's JSON validation; `bytes` means the raw value."""
    if model is bytes:
        return raw
    adapter = model if isinstance(model, TypeAdapter) else TypeAdapter(model)
    validate: Decoder = adapter.validator.validate_json  # pydantic-core's, without TypeAdapter's wrapper
    return validate


def raw(value: bytes) -> bytes:
    """A `bytes` stream's decoder: the value as read (None too: a dead letter whose value was dropped)."""
    return value


def decode(decode_value: Decoder, value: bytes | None, max_bytes: int) -> Any:
    """Validate a record's value; InvalidRecord (poison) with a short, clear reason when it does not fit."""
    if value is None:
        if decode_value is raw:
            return None
        raise InvalidRecord("record has no value (tombstone)")
    if len(value) > max_bytes:
        raise InvalidRecord(f"record is {len(value)} bytes, over the {max_bytes}-byte limit")
    try:
        return decode_value(value)
    except ValidationError as exc:
        raise InvalidRecord(summarize(exc)) from None


def summarize(exc: ValidationError, limit: int = 3) -> str:
    errors = exc.errors(include_url=False)
    if errors and errors[0]["type"] == "json_invalid":
        return f"not valid JSON: {errors[0]['msg']}"
    parts = []
    for err in errors[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - limit
    return "schema violation: " + "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


Encoder = Callable[[Any], bytes]
_encoders: dict[type, Encoder] = {}


def register_encoder(model: type[BaseModel], encoder: Encoder) -> None:
    """A faster way to the same bytes for one model class (a service's own, e.g. the router's trace,
    whose parts repeat from record to record). It must return exactly what `to_json` returns."""
    _encoders[model] = encoder


def encode(value: BaseModel) -> bytes:
    """model_dump_json() as bytes, straight from pydantic-core (model_dump_json decodes them to str)."""
    special = _encoders.get(type(value))
    if special is not None:
        return special(value)
    return pydantic_json(value)


def pydantic_json(model: BaseModel) -> bytes:
    encoded: bytes = model.__pydantic_serializer__.to_json(model)
    return encoded


# ── the same bytes, written by orjson (an encoder's way: the router's actions and traces, the ingress's event)
# pydantic-core writes a model's fields in the order of its __dict__, as orjson writes a dict, and text,
# booleans, integers up to 64 bits, floats, None, lists, tuples and dicts with text keys byte for byte
# as orjson does (tests/unit/router/test_emitted.py, tests/unit/ingress/test_encode_event.py). With these
# options orjson hands what it would write its own way to `default`, which refuses it: a time (pydantic
# writes UTC as `Z`), a subclass of text, numbers, lists or dicts (an enum of text, say), a dataclass; it
# refuses by itself a model, bytes, a set, a non-text key, an integer over 64 bits and a lone surrogate.
# A refused value makes the record pydantic's JSON.
WRITTEN_AS_PYDANTIC_DOES = (
    orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATACLASS
)
#: a time as pydantic's JSON writes it (`mode="json"`): what an encoder puts in place of a datetime field
DATETIME_JSON = TypeAdapter(datetime).serializer.to_python


def _refused(value: Any) -> Any:
    """orjson's `default` for WRITTEN_AS_PYDANTIC_DOES: orjson then raises JSONEncodeError."""
    raise TypeError(f"{type(value).__name__} is written by pydantic")


def written_as_pydantic(fields: dict[str, Any], model: BaseModel) -> bytes:
    """orjson's JSON of `fields` (the model's, made ready), or pydantic's own JSON of `model` when a value is
    one orjson would write its own way (WRITTEN_AS_PYDANTIC_DOES)."""
    try:
        return orjson.dumps(fields, default=_refused, option=WRITTEN_AS_PYDANTIC_DOES)
    except orjson.JSONEncodeError:
        return pydantic_json(model)


_last_iso: tuple[int, str, bytes, tuple[str, bytes]] = (0, "", b"", (h.CE_TIME, b""))
#: "00" to "99": a time written from its fields (the ingress's ce_time, the router's dates), cheaper than
#: datetime.isoformat() or strftime() on a record's path
TWO_DIGITS = tuple(f"{n:02d}" for n in range(100))
#: C0 and C1 control characters and DEL: none belongs in a one-line text such as a mail's Subject
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def now_iso() -> str:
    """UTC now, RFC 3339 with milliseconds; formatted once per millisecond (it is on every record's path)."""
    return _now()[1]


def _now() -> tuple[int, str, bytes, tuple[str, bytes]]:
    """(ms, now_iso(), its bytes, the ce_time header of them), made once per millisecond."""
    global _last_iso
    ms = time.time_ns() // 1_000_000
    if _last_iso[0] != ms:
        stamp = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        encoded = stamp.encode()
        _last_iso = (ms, stamp, encoded, (h.CE_TIME, encoded))
    return _last_iso


_id_fields: dict[type[BaseModel], str] = {}  # a model's ce_id_field, by model


def own_event_id(value: BaseModel) -> str | None:
    """The event's own id: the field its model names in `ce_id_field` (event_id; an action command's
    action_id), or None. An action's result names its action_id but is not the action: one action has a
    result per attempt (and a skipped duplicate), each a CloudEvent of its own, which a consumer may drop
    as a repeat if they shared source and id."""
    found = value.__dict__.get(ce_id_field(type(value)))  # a model's field values
    return found if isinstance(found, str) else None


def ce_id_field(kind: type[BaseModel]) -> str:
    """The name of the field a model's events carry their CloudEvents id in (`ce_id_field`, else event_id)."""
    field = _id_fields.get(kind)
    if field is None:  # once per model: getattr on a name the class lacks costs pydantic's slow __getattr__
        field = _id_fields[kind] = getattr(kind, "ce_id_field", "event_id")
    return field


def event_id_of(value: BaseModel, fallback: str | None = None) -> str:
    """The event's own id; else `fallback` (the runtime's: the input record's coordinates, attempt and
    the output's index, stable when the input is handled again); else a random one."""
    found = own_event_id(value)
    return found if found is not None else fallback or str(uuid.uuid4())


class WireHeaders(Mapping[str, str]):
    """Headers encoded for Kafka where they are made, read like any header mapping (a value is decoded
    when asked for); `header_list` hands `wire` to the producer as it is. The runtime's outputs carry
    them: encoding each header of each output again at the producer cost more than making them."""

    __slots__ = ("wire",)

    def __init__(self, wire: list[tuple[str, bytes]]) -> None:
        self.wire = wire

    def __getitem__(self, key: str) -> str:
        for name, value in self.wire:
            if name == key:
                return value.decode()
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self.wire)

    def __len__(self) -> int:
        return len(self.wire)

    def __repr__(self) -> str:
        return f"WireHeaders({dict(self)!r})"


Constant = list[tuple[str, bytes]]  # the encoded headers that depend on the stream and service only
_constants: dict[tuple[str, str], Constant] = {}  # by (ce_type, service)


# headers every JSON CloudEvent carries the same of, encoded once (the ingress's publisher uses them too)
SPECVERSION_HEADER = (h.CE_SPECVERSION, h.CE_SPECVERSION_VALUE.encode())
CONTENT_TYPE_HEADER = (h.CONTENT_TYPE, h.JSON_CONTENT_TYPE.encode())


def cloudevent_constant(ce_type: str, service: str) -> Constant:
    """ce_type, ce_source and ce_specversion of a stream's events from a service, encoded once."""
    constant = _constants.get((ce_type, service))
    if constant is None:
        constant = _constants[(ce_type, service)] = [
            (h.CE_TYPE, ce_type.encode()),
            (h.CE_SOURCE, f"/postcall/{service}".encode()),
            SPECVERSION_HEADER,
        ]
    return constant


def cloudevent_wire(
    ce_id: str, ce_type: str, service: str, subject: str | None, extra: list[tuple[str, bytes]] | None = None
) -> WireHeaders:
    """Binary-mode CloudEvents headers (ce_type from the event's stream), encoded; `extra` follows them."""
    encoded = subject.encode() if subject else None
    return wire_headers(ce_id, cloudevent_constant(ce_type, service), encoded, extra)


def wire_headers(
    ce_id: str, constant: Constant, subject: bytes | None, extra: list[tuple[str, bytes]] | None = None
) -> WireHeaders:
    """cloudevent_wire() with the stream's constant headers (cloudevent_constant) and the subject encoded:
    the runtime keeps both per output stream and encodes an output's key once, for the record and this."""
    wire = [(h.CE_ID, ce_id.encode()), *constant, _now()[3], CONTENT_TYPE_HEADER]
    if subject:
        wire.append((h.CE_SUBJECT, subject))
    if extra:
        wire += extra
    return WireHeaders(wire)


def cloudevent_headers(
    value: BaseModel, ce_type: str, service: str, subject: str | None, fallback_id: str | None = None
) -> dict[str, str]:
    """Binary-mode CloudEvents headers (ce_type from the event's stream), as text."""
    return dict(cloudevent_wire(event_id_of(value, fallback_id), ce_type, service, subject))


def header_dict(raw: Any) -> dict[str, str]:
    if not raw:
        return {}
    try:
        return {k: v.decode("utf-8", "replace") for k, v in raw}  # values are bytes from every client
    except AttributeError:
        return {k: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for k, v in raw}


def header_list(headers: Mapping[str, str]) -> list[tuple[str, bytes]]:
    if type(headers) is WireHeaders:
        return headers.wire
    return [(k, v.encode()) for k, v in headers.items()]
