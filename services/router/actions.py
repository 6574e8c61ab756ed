"""Action configurations, compiled once, that build one ActionRequested per fired action — or say why not.

`action_id` is uuid5(ACTION_NAMESPACE, "<conversation_id>/<agent>/<flow_id>/<flow_revision>/<action_index>"):
the same conversation, flow, flow revision (schemas.flow_revision: the flow and what it uses, not the
whole file) and action position always give the same id, which is the idempotency key end to end (the
dispatcher's ledger, the receiver's `webhook-id`). A deliberate re-delivery (`postcall reextract
--redeliver`) sends uuid5(ACTION_NAMESPACE, "<action_id>/content/<content_digest>/<source_event_id>") with
`supersedes`: an id per content and re-extraction, so a correction back to an earlier correction's content
is not the repeat of it receivers drop; only such an action carries its content digest (schemas.content):
the dispatcher computes the others'.

Skips, each with its reason in the decision trace: a disabled action, an action `when` that fails, an
email whose recipients all rendered empty or invalid, a schedule_call with no number to call, an http
request whose path renders empty or too long, an action whose record is over CONTENT_LIMIT.

Email recipients come only from: literal addresses; `{{customer_email}}`, which is the address of the
contact the event links (customer.contact_id), never an address the extractor heard; the extractor's
choice among a recipient route's own addresses (a model cannot invent a recipient; none accepted -> the
route's fallback); and, when the action lists `allowed_domains`, addresses rendered from other values,
kept only in those domains. The trace names each recipient's source and each address dropped.
"""

from __future__ import annotations

import hashlib
import re
import typing
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal, TypeVar
from urllib.parse import quote, unquote_to_bytes
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from schemas.agent_config import (
    E164,
    EMAIL_ADDRESS,
    HEADER_TEXT,
    Action,
    AppendRowAction,
    EmailAction,
    FieldSpec,
    HttpAction,
    RecipientKind,
    RecipientRoute,
    ScheduleCallAction,
    SlackAction,
    TaskAction,
    TeamAlertAction,
    TeamsAction,
    VarRef,
    WebhookAction,
    recipient_kind,
)
from schemas.content import content_digest
from schemas.events import (
    END_YEAR,
    FIRST_YEAR,
    HTTP_PATH_CHARS,
    ActionBase,
    CardField,
    ConversationExtracted,
    EmailRequested,
    HttpRequested,
    MessageCard,
    RowAppendRequested,
    ScheduleCallRequested,
    SlackRequested,
    TaskRequested,
    TeamAlertRequested,
    TeamsRequested,
    WebhookRequested,
)
from schemas.topics import READ_RECORD_BYTES, action_topic
from services.common import codec
from services.common.codec import CONTROL_CHARACTERS, DATETIME_JSON, pydantic_json, written_as_pydantic
from services.router.conditions import SHOWN_CHARS, Remembered, compile_condition
from services.router.scheduling import Schedule
from services.router.templates import JsonTemplate, Template
from services.router.variables import ConversationValues

ACTION_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:postcall:action-id")  # never change: every id depends on it
_NAMESPACE_BYTES = ACTION_NAMESPACE.bytes
# a hash object copied for each id: hashlib.sha1() looks the algorithm up in OpenSSL on every call
# (EVP_MD_fetch), which cost more than hashing an id's few dozen bytes
_NAMESPACE_SHA1 = hashlib.sha1(_NAMESPACE_BYTES, usedforsecurity=False)
SUBJECT_LIMIT = 250
HEADER_LIMIT = 1000  # characters of one rendered header value
CELL_LIMIT = 50_000  # characters in one Google Sheets cell
#: bytes of an action's record, its JSON as the router produces it (with_content, encode_action): it must be
#: one the dispatcher reads (READ_RECORD_BYTES, its default max_record_bytes) and the brokers take, headers
#: besides. A template that renders the transcript (3.5 MiB at most, MAX_EVENT_BYTES) in an email's text and
#: html, escaped, made a 15 MB record: over MAX_MESSAGE_BYTES the router's whole record was unproducible and
#: dead-lettered, under it the dispatcher dead-lettered the action as poison. Such an action is skipped with
#: its reason. (Until 2026-12-07 the bytes counted were the content's JSON alone, without ids and times:
#: a few hundred bytes fewer.)
CONTENT_LIMIT = READ_RECORD_BYTES - 64 * 1024

Common = dict[str, Any]  # the ActionBase fields every action shares, in their declaration order
Result = tuple[ActionBase | None, str]  # the action, or None when skipped; the note or skip reason
Builder = Callable[[ConversationExtracted, ConversationValues, Common], Result]

M = TypeVar("M", bound=BaseModel)
A = TypeVar("A", bound=ActionBase)


# BaseModel's own slots, set through their descriptors: object.__setattr__ looks each one up first
_SET_DICT, _SET_FIELDS_SET, _SET_EXTRA, _SET_PRIVATE = (
    BaseModel.__dict__[name].__set__
    for name in ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__")
)


#: per model, the set of its field names that the models `built` with every field share as their fields set:
#: nothing adds another name to it in place (the models are frozen, so pydantic's setattr refuses;
#: model_copy copies the set before its update; with_content adds only fields, already in it)
_EVERY_FIELD: dict[type[BaseModel], set[str]] = {}


def built(model: type[M], fields: dict[str, Any]) -> M:
    """model_construct's effect with every field given, in declaration order, minus its per-field
    bookkeeping (which costs more than validating): for values whose validity is already known. Given
    every field, the model shares its fields set (_EVERY_FIELD) rather than make one (~10 per record)."""
    made = object.__new__(model)
    _SET_DICT(made, fields)
    every = _EVERY_FIELD.get(model)
    if every is None:
        every = _EVERY_FIELD[model] = set(model.model_fields)
    _SET_FIELDS_SET(made, every if len(fields) == len(every) else set(fields))
    _SET_EXTRA(made, None)
    _SET_PRIVATE(made, None)
    return made


# ── actions built without validating them again ───────────────────────────────────────────────────
# The engine makes every ActionBase field itself (`Common`): ids by uuid5, the validated record's ids,
# the configuration's ids and revisions, the action's index, and the clock's time, which
# CompiledAgent.route checks as a Timestamp does. What a builder adds is checked here by what its
# field accepts; an action passes on without validation only when every value is one its model keeps
# as it is. Anything else is validated by the model (which then refuses it, or keeps it), so an action
# is always what validating it would give (tests/unit/router/test_emitted.py compares both).


def _literal(model: type[BaseModel], name: str) -> frozenset[Any]:
    """The values a Literal (or optional Literal) field accepts."""
    annotation = model.model_fields[name].annotation
    options = (annotation,) if typing.get_origin(annotation) is Literal else typing.get_args(annotation)
    found: set[Any] = set()
    for arg in options:
        found |= (
            set(typing.get_args(arg)) if typing.get_origin(arg) is Literal else {None} if arg is type(None) else set()
        )
    assert found, f"{model.__name__}.{name} is not a Literal"
    return frozenset(found)


def _texts(value: Any) -> bool:
    return type(value) is list and all(type(item) is str for item in value)


def _text_map(value: Any) -> bool:
    return type(value) is dict and all(type(k) is str and type(v) is str for k, v in value.items())


def _timestamp(value: Any) -> bool:
    return type(value) is datetime and value.utcoffset() is not None and FIRST_YEAR <= value.year < END_YEAR


_CHECKED_CLOCK: list[Any] = [None]  # the clock time CompiledAgent.route checked last (a datetime never changes)


def checked_clock(now: datetime) -> None:
    """CompiledAgent.route found `now` what a Timestamp accepts: every action of its record carries this
    object as requested_at, and make() passes it without checking it again."""
    if type(now) is datetime:  # what _timestamp asks besides route's own check
        _CHECKED_CLOCK[0] = now


_WEBHOOK_METHODS = _literal(WebhookRequested, "method")
_HTTP_METHODS = _literal(HttpRequested, "method")
_SOURCES = _literal(EmailRequested, "recipients_source")
_SCHEDULE_SOURCES = _literal(ScheduleCallRequested, "schedule_source")
_PRIORITIES = _literal(TaskRequested, "priority")

#: per action model: whether what its builder added (and the destination) is kept as it is by validation
#: (text checked inline, `type(v) is str`: a call of _text per field cost more than the rest of the test)
KEPT_AS_IS: dict[type[ActionBase], Callable[[dict[str, Any]], bool]] = {
    WebhookRequested: lambda f: type(f["destination"]) is str and f["method"] in _WEBHOOK_METHODS and "body" in f,
    HttpRequested: lambda f: (
        type(f["destination"]) is str
        and f["method"] in _HTTP_METHODS
        and type(f["path"]) is str
        and len(f["path"]) <= HTTP_PATH_CHARS
        and _text_map(f["query"])
        and _text_map(f["headers"])
        and "body" in f
        and (f["result_id_pointer"] is None or type(f["result_id_pointer"]) is str)
    ),
    EmailRequested: lambda f: (
        (f["destination"] is None or type(f["destination"]) is str)
        and _texts(f["to"])
        and len(f["to"]) >= 1
        and f["recipients_source"] in _SOURCES
        and type(f["subject"]) is str
        and type(f["text"]) is str
        and (f["html"] is None or type(f["html"]) is str)
    ),
    SlackRequested: lambda f: (
        type(f["destination"]) is str
        and type(f["text"]) is str
        and (f["channel"] is None or type(f["channel"]) is str)
        and (f["card"] is None or type(f["card"]) is MessageCard)
    ),
    TeamsRequested: lambda f: (
        type(f["destination"]) is str
        and type(f["text"]) is str
        and (f["card"] is None or type(f["card"]) is MessageCard)
    ),
    ScheduleCallRequested: lambda f: (
        (f["destination"] is None or type(f["destination"]) is str)
        and type(f["to_number"]) is str
        and (f["from_number"] is None or type(f["from_number"]) is str)
        and _timestamp(f["scheduled_at"])
        and f["schedule_source"] in _SCHEDULE_SOURCES
        and type(f["business_hours_applied"]) is bool
    ),
    TaskRequested: lambda f: (
        (f["destination"] is None or type(f["destination"]) is str)
        and type(f["title"]) is str
        and type(f["description"]) is str
        and f["priority"] in _PRIORITIES
        and (f["assignee"] is None or type(f["assignee"]) is str)
    ),
    TeamAlertRequested: lambda f: (
        (f["destination"] is None or type(f["destination"]) is str)
        and type(f["message"]) is str
        and type(f["everyone"]) is bool
        and _texts(f["teammates"])
    ),
    # RowAppendRequested (patterns, bounded lists of finite scalars) is validated as before
}
# what `built` leaves out of validation must not matter for these models
_UNVALIDATED: list[type[BaseModel]] = [*KEPT_AS_IS, MessageCard]
assert not any(
    m.__pydantic_post_init__
    or m.__private_attributes__
    or m.__pydantic_decorators__.model_validators
    or m.__new__ is not object.__new__
    for m in _UNVALIDATED
)
_SIZES = {model: len(model.model_fields) for model in KEPT_AS_IS}
_TYPES = {model: model.model_fields["type"].default for model in KEPT_AS_IS}


def make(model: type[A], common: Common, fields: dict[str, Any]) -> A:
    """model(**common, **fields), without validating again what validation would keep as it is.
    `fields`: every field the model adds to ActionBase but `type`, in declaration order."""
    values = {**common, "type": _TYPES.get(model), **fields}
    kept = KEPT_AS_IS.get(model)
    at = values["requested_at"]
    if (
        kept is not None
        and len(values) == _SIZES[model]
        and (at is _CHECKED_CLOCK[0] or _timestamp(at))
        and kept(values)
    ):
        return built(model, values)
    return model(**common, **fields)


def action_id(conversation_id: str, agent_id: str, flow_id: str, flow_revision: str, index: int) -> str:
    return uuid5(f"{conversation_id}/{agent_id}/{flow_id}/{flow_revision}/{index}")


_VARIANT = {f"{n:x}": f"{(n & 0x3) | 0x8:x}" for n in range(16)}


def uuid5(name: str) -> str:
    """str(uuid.uuid5(ACTION_NAMESPACE, name)), RFC 9562 section 5.5, without building a UUID object
    (a third of the time; every action needs one or two)."""
    sha = _NAMESPACE_SHA1.copy()
    sha.update(name.encode())
    h = sha.hexdigest()
    # the version nibble (hex digit 12) is 5; the variant's top bits of hex digit 16 are 10
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


def _last_text(write: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    """`write(at)`, the last `at`'s text kept (by identity: it holds that object, so no other takes its id):
    a record's outputs write the same time object several times."""
    last: list[Any] = [None, None]

    def text(at: Any) -> str | None:
        if at is not last[0]:
            last[:] = at, write(at)
        written: str | None = last[1]
        return written

    return text


def _utc_json(at: Any) -> str | None:
    """A datetime as pydantic's JSON mode writes it, None for anything else; for a time in UTC that is
    `isoformat()` with Z for +00:00."""
    return DATETIME_JSON(at, mode="json") if type(at) is datetime else None


#: a schedule_call's scheduled_at: written by the encoder and the trace's note, and a date's call time is
#: the same object from record to record (scheduling.Schedule keeps it)
_scheduled_json = _last_text(_utc_json)


# The fields of an action the router builds that pydantic's JSON mode always writes as something else than
# orjson would (encode_action). Any other field's value that orjson would write its own way (a date a YAML
# `body` holds, say) makes encode_action write the whole action as pydantic does (codec.written_as_pydantic's
# fall-back; tests/unit/router/test_emitted.py).
_TO_JSON: dict[type[ActionBase], dict[str, Callable[[Any], Any]]] = {
    ScheduleCallRequested: {"scheduled_at": _scheduled_json},
    SlackRequested: {"card": lambda v: None if v is None else v.__pydantic_serializer__.to_python(v, mode="json")},
    TeamsRequested: {"card": lambda v: None if v is None else v.__pydantic_serializer__.to_python(v, mode="json")},
}
_CONVERTED = {m: tuple(converts.items()) for m, converts in _TO_JSON.items()}


def with_content(action: ActionBase, redeliver: bool) -> int:
    """On a deliberate re-delivery, give the action its content digest and the id of its content in this
    re-extraction that supersedes the action's own id (the dispatcher sends it only when the content
    changed since the last delivery for it). Not the content's id alone: an action corrected to B, then
    to C, then back to B would go out under the first correction's id again, which receivers drop as a
    repeat, so their upsert would keep C. The source event (the re-extraction's ConversationExtracted) is
    new for each `reextract` run and the same when the router reads its record again; an ordinary
    action carries no digest (the dispatcher computes it: schemas.content). Returns the bytes of the
    action's record (CONTENT_LIMIT), which encode_action then writes without writing them again.

    The action is completed in place, as model_copy(update=...) would copy it: call it only on an action
    just built for this record, that nothing else holds yet."""
    if redeliver:
        digest = content_digest(action)
        update = {
            "content_digest": digest,
            "action_id": uuid5(f"{action.action_id}/content/{digest}/{action.source_event_id}"),
            "supersedes": action.action_id,
        }
        # a frozen model refuses setattr, not its own field values
        action.__dict__.update(update)
        action.__pydantic_fields_set__.update(update)
    encoded = _encode(action)
    if len(encoded) <= MEASURED_BYTES:
        if len(_MEASURED) >= MEASURED_KEPT:
            _MEASURED.clear()
        _MEASURED[id(action)] = (action, encoded)
    return len(encoded)


# ── encoding an action (services.common.codec.written_as_pydantic: orjson, the bytes pydantic writes) ──
#: A Timestamp field's value as pydantic's JSON writes it (None: not a datetime); the last one is kept, for a
#: record's trace and actions all carry the clock's one time
time_json = _last_text(_utc_json)


#: each action's record as with_content measured it, by identity, until encode_action hands it to the runtime,
#: which encodes a record's outputs as soon as its handler returns: written once. An action never encoded
#: (routed by `postcall try`, say) stays until MEASURED_KEPT are kept, then all are dropped; a record over
#: MEASURED_BYTES (rare: a long value rendered into it) is written again rather than kept.
_MEASURED: dict[int, tuple[ActionBase, bytes]] = {}
MEASURED_KEPT = 64
MEASURED_BYTES = 64 * 1024


def encode_action(action: ActionBase) -> bytes:
    """pydantic's `to_json(action)`, the same bytes: the record with_content measured, else written now."""
    measured = _MEASURED.pop(id(action), None)
    if measured is not None and measured[0] is action:
        return measured[1]
    return _encode(action)


def _encode(action: ActionBase) -> bytes:
    """pydantic's `to_json(action)`, the same bytes, written by orjson from the action's fields (fewer
    than half the instructions: pydantic's serializer checks each field against its type and infers the
    type of every value in `body`). Its times (requested_at, scheduled_at) and card are written as
    pydantic's JSON mode makes them; anything orjson would write its own way (codec.WRITTEN_AS_PYDANTIC_DOES)
    makes the action pydantic's JSON."""
    fields = action.__dict__.copy()
    at = time_json(fields["requested_at"])
    if at is None:
        return pydantic_json(action)
    fields["requested_at"] = at
    for key, convert in _CONVERTED.get(type(action), ()):
        fields[key] = convert(fields[key])
    return written_as_pydantic(fields, action)


_ENCODED: list[type[ActionBase]] = [*KEPT_AS_IS, RowAppendRequested]  # every action the router builds
for _model in _ENCODED:
    codec.register_encoder(_model, encode_action)


class CompiledAction:
    def __init__(
        self, index: int, config: Action, fields: dict[str, FieldSpec], routes: dict[str, RecipientRoute], tz: ZoneInfo
    ) -> None:
        self.index, self.config, self.type = index, config, config.type
        self.path = f"actions[{index}]"  # where its outcome sits in the trace
        self.planned, self.skipped = (config.type, "planned"), (config.type, "skipped")  # its metric's labels
        self.topic = action_topic(config.type)
        self.enabled = config.enabled
        self.destination = config.destination
        self.when = (
            Remembered(compile_condition(config.when, f"actions[{index}].when", fields, tz)) if config.when else None
        )
        self.build: Builder = _builder(config, routes, tz)


def _builder(config: Action, routes: dict[str, RecipientRoute], tz: ZoneInfo) -> Builder:
    if isinstance(config, WebhookAction):
        return _webhook(config)
    if isinstance(config, HttpAction):
        return _http(config)
    if isinstance(config, AppendRowAction):
        return _append_row(config)
    if isinstance(config, EmailAction):
        return _email(config, routes.get(config.recipients) if config.recipients else None)
    if isinstance(config, SlackAction | TeamsAction):
        return _chat(config)
    if isinstance(config, ScheduleCallAction):
        return _schedule_call(config, tz)
    if isinstance(config, TaskAction):
        return _task(config)
    assert isinstance(config, TeamAlertAction)
    message, mates = Template.compile(config.message), list(config.teammates)
    return lambda e, v, c: (
        make(TeamAlertRequested, c, {"message": message.render(v), "everyone": not mates, "teammates": list(mates)}),
        "to everyone" if not mates else f"to {', '.join(mates)}",
    )


def one_line(text: str, limit: int = SUBJECT_LIMIT) -> str:
    """Subjects and titles: no line breaks (no header injection) nor other control characters (a NUL went
    into the mail's Subject as it was: SMTP forbids it, an ESC starts a terminal sequence), no RFC 2047
    encoded word (the opening '=?' written '= ?': a mail client and the dispatcher's EmailMessage decode
    one, =?utf-8?q?=0D=0A?= to a line break, and the dispatcher refuses such an email), bounded length."""
    if not text.isprintable():
        text = CONTROL_CHARACTERS.sub(" ", text)
    if "=?" in text:
        text = text.replace("=?", "= ?")
    return " ".join(text.split())[:limit]


_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")
_CUT_ESCAPE = re.compile(r"%[0-9A-F]?\Z")
_LAST_ESCAPES = re.compile(r"(?:%[0-9A-F]{2})+\Z")


def header_text(text: str) -> str:
    """A value (or fallback) in a header: line breaks and other whitespace as one space, and a character
    a header cannot carry (control, non-ASCII) percent-encoded as its UTF-8 bytes, so "José" arrives as
    "Jos%C3%A9". Printable ASCII is kept as it is. Before, the dispatcher refused the whole request for
    one such character (PermanentError: a caller's name, an agent's fallback text "(nicht verfügbar)")."""
    text = " ".join(text.split())
    return text if HEADER_TEXT.fullmatch(text) else quote(text, safe=_HEADER_SAFE, errors="replace")


def header_value(template: Template, values: ConversationValues) -> str:
    """A flow's header rendered (its literal text is printable ASCII: checked at load), within HEADER_LIMIT
    characters and never ending in half a percent-escape."""
    whole = " ".join(template.render(values, escape=header_text).split())  # one_line, before its cut
    if len(whole) <= HEADER_LIMIT:
        return whole
    cut = _CUT_ESCAPE.sub("", whole[:HEADER_LIMIT])
    escapes = _LAST_ESCAPES.search(cut)  # the UTF-8 bytes they encode may end inside a character
    if escapes is None:
        return cut
    whole_characters = unquote_to_bytes(escapes.group()).decode("utf-8", "ignore").encode()
    return cut[: escapes.start() + 3 * len(whole_characters)]


def _webhook(config: WebhookAction) -> Builder:
    body = JsonTemplate(config.body) if config.body is not None else None
    note = f"{config.method or 'POST'} {config.destination}"

    def build(event: ConversationExtracted, values: ConversationValues, common: Common) -> Result:
        rendered = body.render(values) if body is not None else default_body(event)
        # no method unless the flow set one: the dispatcher then uses the destination's configured method
        return make(WebhookRequested, common, {"method": config.method, "body": rendered}), note

    return build


def _http(config: HttpAction) -> Builder:
    path = Template.compile(config.path)
    query = {name: Template.compile(t) for name, t in config.query.items()}
    headers = {name: Template.compile(t) for name, t in config.headers.items()}
    body = JsonTemplate(config.body) if config.body is not None else None

    def build(event: ConversationExtracted, values: ConversationValues, common: Common) -> Result:
        rendered, empty = path.render_path(values)
        if empty:
            names = ", ".join(f"{{{{{name}}}}}" for name in empty)
            return None, f"skipped: {names} is empty, so the path would not name one record"
        if len(rendered) > HTTP_PATH_CHARS:  # a platform's value has no length bound; the command would be refused
            return None, f"skipped: the path would be {len(rendered)} characters, over {HTTP_PATH_CHARS}"
        action = make(
            HttpRequested,
            common,
            {
                "method": config.method,
                "path": rendered,
                "query": {name: t.render(values) for name, t in query.items()},
                "headers": {name: header_value(t, values) for name, t in headers.items()},
                "body": body.render(values) if body is not None else None,
                "result_id_pointer": config.result_id_pointer,
            },
        )
        return action, f"{config.method} {config.destination} {rendered or '/'}"

    return build


def _append_row(config: AppendRowAction) -> Builder:
    columns = [Template.compile(t) for t in config.columns]

    def build(event: ConversationExtracted, values: ConversationValues, common: Common) -> Result:
        row = [_cell(t.render_typed(values)) for t in columns]
        action = RowAppendRequested(
            **common, spreadsheet_id=config.spreadsheet_id, sheet=config.sheet, values=row, id_column=config.id_column
        )
        return action, f"1 row of {len(row)} columns to {config.sheet!r} in {config.spreadsheet_id}"

    return build


def _cell(value: Any) -> Any:
    """Google Sheets holds at most 50,000 characters in a cell."""
    return value[:CELL_LIMIT] if isinstance(value, str) else value


def default_body(event: ConversationExtracted) -> dict[str, Any]:
    """What a webhook without `body` posts: the conversation's outcome and the extraction result."""
    conv, ext = event.conversation, event.extraction
    return {
        "conversation_id": conv.conversation_id,
        "agent_id": conv.agent.id,
        "end_reason": conv.end_reason.canonical.value,
        "raw_end_reason": conv.end_reason.raw,
        "direction": conv.direction,
        "started_at": conv.started_at.isoformat(),
        "ended_at": conv.ended_at.isoformat(),
        "duration_seconds": conv.duration,
        "extraction_status": ext.status,
        "summary": ext.summary,
        "fields": {name: v.value for name, v in ext.fields.items()},
        "dynamic": {name: v.value for name, v in ext.dynamic.items()},
        "conversation_url": conv.conversation_url,
    }


def _chat(config: SlackAction | TeamsAction) -> Builder:
    """Slack: every value escaped for Slack (the author's own markup kept); Teams: values as they are,
    carried only in Adaptive Card elements that are never parsed as Markdown (the dispatcher's card)."""
    slack = isinstance(config, SlackAction)
    text, title, context = (
        Template.compile(t) if t is not None else None for t in (config.text, config.title, config.context)
    )
    fields = [(label, Template.compile(t)) for label, t in config.fields.items()]
    has_card = config.has_card

    def build(event: ConversationExtracted, values: ConversationValues, common: Common) -> Result:
        def render(template: Template | None) -> str | None:
            if template is None:
                return None
            return template.render_slack(values) if slack else template.render(values)

        card = None
        if has_card:
            shown = [CardField(label=label, value=render(t) or "") for label, t in fields]
            card = MessageCard(title=render(title), fields=shown, context=render(context), button=config.button)
        if isinstance(config, SlackAction):
            action: ActionBase = make(
                SlackRequested, common, {"text": render(text) or "", "channel": config.channel, "card": card}
            )
            where = f" to {config.channel}" if config.channel else ""
        else:
            action, where = make(TeamsRequested, common, {"text": render(text) or "", "card": card}), ""
        return action, ("Block Kit" if slack else "Adaptive Card") + where if card else where.strip()

    return build


def _email(config: EmailAction, route: RecipientRoute | None) -> Builder:
    domains = frozenset(d.lower() for d in config.allowed_domains)
    entries = []
    for text in config.to:
        kind, template = recipient_kind(text), Template.compile(text)
        # a literal address is checked once, here: its outcome never depends on the record
        fixed = _recipient(kind, template, None, None, domains) if kind == "fixed" else None
        entries.append((kind, template, fixed))
    allowed = {a.lower() for rule in route.rules for a in rule.to} if route is not None else set()
    subject, body = Template.compile(config.subject), Template.compile(config.body)
    page = Template.compile(config.html) if config.html is not None else None
    # what never depends on the record, decided once: literal addresses (the recipients and the trace's
    # note, when the action has no route), a subject without references, the route's labels
    literal = all(fixed is not None for _, _, fixed in entries)
    fixed_picked, fixed_notes = _picked(entries, None, None, domains) if literal else ({}, [])
    fixed_note = _recipients_note(fixed_picked, fixed_notes) if literal and route is None and fixed_picked else None
    fixed_subject = one_line(subject.render_plain()) if subject.is_literal else None
    labels = {s: f"route {route.id!r}: " + ("the extractor's choice" if s == "dynamic" else "its fallback") for s in (
        "dynamic", "fallback")} if route is not None else {}  # fmt: skip

    def build(event: ConversationExtracted, values: ConversationValues, common: Common) -> Result:
        if literal:
            picked, notes = fixed_picked.copy(), fixed_notes.copy()
        else:
            picked, notes = _picked(entries, event, values, domains)
        source: Literal["fixed", "dynamic", "fallback"] = "fixed"
        if route is not None:
            chosen, source, why = _route_recipients(route, values, allowed)
            label = labels[source]
            picked.update({a: label for a in chosen if a.lower() not in {p.lower() for p in picked}})
            notes.append(why)
        if not picked:
            return None, "skipped: no valid recipients (" + "; ".join(notes or ["no recipients"]) + ")"
        action = make(
            EmailRequested,
            common,
            {
                "to": list(picked),
                "recipients_source": source,
                "subject": fixed_subject if fixed_subject is not None else one_line(subject.render(values)),
                "text": body.render(values),
                "html": page.render_html(values) if page else None,
            },
        )
        return action, fixed_note if fixed_note is not None else _recipients_note(picked, notes)

    return build


def _picked(
    entries: list[tuple[RecipientKind, Template, tuple[str, str, str] | None]],
    event: ConversationExtracted | None,
    values: ConversationValues | None,
    domains: frozenset[str],
) -> tuple[dict[str, str], list[str]]:
    """The action's own recipients (address -> where it came from, for the trace), and why any was dropped."""
    picked: dict[str, str] = {}
    notes: list[str] = []
    for kind, template, fixed in entries:
        address, origin, why = fixed or _recipient(kind, template, event, values, domains)
        if why:
            notes.append(why)
        elif address.lower() not in {a.lower() for a in picked}:
            picked[address] = origin
    return picked, notes


def _recipients_note(picked: dict[str, str], notes: list[str]) -> str:
    named = ", ".join(f"{a} ({where})" for a, where in picked.items())
    return "; ".join([f"to {named}", *notes])


def _recipient(
    kind: RecipientKind,
    template: Template,
    event: ConversationExtracted | None,
    values: ConversationValues | None,
    domains: frozenset[str],
) -> tuple[str, str, str]:
    """(address, its source, "") or ("", "", why it was dropped). A fixed one needs no record."""
    if kind == "fixed":
        address, source = template.source.strip(), "fixed"
    elif event is None or values is None:
        raise ValueError(f"a {kind} recipient is rendered from a record")
    elif kind == "contact":
        customer = event.conversation.customer
        ref = template.parts[0] if isinstance(template.parts[0], VarRef) else None
        if customer.contact_id and customer.email:
            address, source = customer.email.strip(), "the customer's contact"
        elif ref is not None and ref.fallback:
            address, source = ref.fallback.strip(), "the fallback of {{customer_email}}"
        else:
            # never an extracted "customer_email": the caller could say any address
            why = "no contact linked" if not customer.contact_id else "the linked contact has no email"
            return "", "", f"{{{{customer_email}}}} is empty: {why}"
    else:
        address, source = template.render(values, fallback="").strip(), f"rendered from {template.source}"
        if not address:
            return "", "", f"{template.source} rendered empty"
        domain = address.rpartition("@")[2].lower()
        if EMAIL_ADDRESS.fullmatch(address) and domain not in domains:
            return (
                "",
                "",
                f"dropped {_clip(address)!r} from {template.source}: {_clip(domain)} is not in allowed_domains",
            )
    # an encoded word (RFC 2047 allows none in an address) decodes in the To: header: to a line break, say
    if not EMAIL_ADDRESS.fullmatch(address) or "=?" in address:
        return "", "", f"dropped invalid recipient {_clip(address)!r} ({source})"
    return address, source, ""


def _clip(text: str) -> str:
    """A rendered value in a trace's note: a platform's value may be megabytes (conditions._shown)."""
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}… ({len(text):,} characters)"


def _route_recipients(
    route: RecipientRoute, values: ConversationValues, allowed: set[str]
) -> tuple[list[str], Literal["dynamic", "fallback"], str]:
    """`allowed`: the route's own addresses, lower-cased (computed once per configuration)."""
    if not values.ok:
        return list(route.fallback), "fallback", f"route {route.id!r}: extraction failed, using its fallback"
    chosen = values.extraction.__dict__["recipients"].get(route.id, [])
    picked = [a for a in chosen if a.lower() in allowed]
    if picked:
        return picked, "dynamic", f"route {route.id!r}: the extractor chose {', '.join(picked)}"
    why = "chose no address of its rules" if not chosen else f"chose {chosen}, none of them in its rules"
    return list(route.fallback), "fallback", f"route {route.id!r}: the extractor {why}, using its fallback"


def _schedule_call(config: ScheduleCallAction, tz: ZoneInfo) -> Builder:
    schedule = Schedule(config, tz)
    use_field, to_field, from_number = config.use_field, config.to_field, config.from_number

    def build(event: ConversationExtracted, values: ConversationValues, common: Common) -> Result:
        heard = values.field(to_field) if to_field else None
        number = heard.strip() if isinstance(heard, str) else None
        note = ""
        if number and not E164.fullmatch(number):  # a string field may hold anything the caller said
            number, note = None, f"; {to_field} holds no E.164 number: the customer's is called"
        number = number or event.conversation.customer.phone_number
        if not number:
            return None, "skipped: no number to call (the customer has no phone number)"
        when = schedule(event, values.field(use_field) if use_field is not None else None)
        action = make(
            ScheduleCallRequested,
            common,
            {
                "to_number": number,
                "from_number": from_number,
                "scheduled_at": when.at,
                "schedule_source": when.source,
                "business_hours_applied": when.business_hours_applied,
            },
        )
        return action, f"call {number} at {_scheduled_json(when.at)} ({when.note}){note}"

    return build


def _task(config: TaskAction) -> Builder:
    title, description = Template.compile(config.title), Template.compile(config.description)

    def build(event: ConversationExtracted, values: ConversationValues, common: Common) -> Result:
        action = make(
            TaskRequested,
            common,
            {
                "title": one_line(title.render(values)),
                "description": description.render(values),
                "priority": config.priority,
                "assignee": config.assignee,
            },
        )
        return action, f"{config.priority} priority" + (f", for {config.assignee}" if config.assignee else "")

    return build
