"""The agent configuration models (one YAML file per agent) and the template grammar.

One file per agent, optionally one per agent version (a file with `version: "3"` wins over the agent's
default file for conversations whose agent.version == "3"):

    agent: support-line
    timezone: Europe/Berlin           # how conversation_date / conversation_time are rendered
    fallback_text: "(not available)"  # what a missing template value renders as, unless `{{x | text}}`
    extraction: {fields: [{name: interest_level, type: enum, values: [high, low]}]}
    recipient_routes: [{id: complaints, rules: [{when: "...", to: [...]}], fallback: [...]}]
    flows:
      - id: crm-on-hangup
        when: {end_reason: [CUSTOMER_HANGUP]}     # no `when`: runs for every end reason
        actions: [{type: webhook, destination: crm, body: {ended: "{{conversation_date}}"}}]

Conditions are mappings named by their key: `end_reason`, `field`, `ai`, `always`, `all`, `any`, `not`,
`confidence`, `needs_review`. Templates are `{{name}}` and `{{name | fallback text}}`, nothing else.

Import from `schemas.agents`, which also re-exports the loader (`load_catalog`, `Catalog`, ...).
"""

from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import unquote

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from schemas.end_reasons import EndReason
from schemas.events import CARD_FIELDS, MAX_ID_LENGTH, ROW_VALUES, SHEET_NAME_CHARS

FieldType = Literal["string", "number", "integer", "boolean", "enum", "date", "datetime", "time", "phone", "email"]

# What a phone or an email field's value is, as the extractor gives it: the answer's validation, the
# pattern a grammar-constraining server (llama.cpp) compiles, the heuristic's finders and the router's
# check of a number to call are these two. Plain groups and bounded repeats only, so that each is also a
# JSON Schema pattern that server reads (it knows no (?:...) or \b). Every part of an email is bounded (a
# local part of at most 64 characters, a label 63). E.164's shortest numbers have seven digits (Niue, +683
# and four). An email recipient in the configuration is EMAIL_ADDRESS, below: any one plain address.
E164 = re.compile(r"\+[1-9][0-9]{6,14}")
EMAIL_VALUE = re.compile(
    r"[A-Za-z0-9_][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,24}"
)


class FieldSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    type: FieldType
    description: str = ""
    required: bool = False
    values: list[str] | None = Field(None, description="Allowed values of an enum field.")
    examples: list[str] = Field(default_factory=list)


class TriggerSpec(BaseModel):
    """A natural-language condition the extractor answers yes or no."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="Stable id the router looks the answer up by (hash of the question).")
    question: str


class RecipientRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    when: str = Field(description="Plain-language description of the calls this recipient should get.")
    to: list[str] = Field(min_length=1)


class RecipientRoute(BaseModel):
    """Seed 001's dynamic recipients: the AI picks among these rules; the fallback is used otherwise."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    rules: list[RecipientRule] = Field(min_length=1)
    fallback: list[str] = Field(min_length=1)


class ExtractionSpec(BaseModel):
    """Everything one extraction request must fill for one agent configuration revision."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent_id: str
    config_revision: str
    provider: Literal["heuristic", "openai"] | None = Field(None, description="None: the service default.")
    model: str | None = None
    min_confidence: float = Field(0.5, ge=0, le=1)
    fields: list[FieldSpec] = Field(default_factory=list)
    dynamic_variables: list[str] = Field(default_factory=list, description="dyn_* names used by templates.")
    triggers: list[TriggerSpec] = Field(default_factory=list)
    recipient_routes: list[RecipientRoute] = Field(default_factory=list)
    summary: bool = True
    trust_platform: bool = Field(
        False, description="Take fields and the summary the voice platform's own analysis already holds."
    )


# ── Trigger ids and the template grammar ──────────────────────────────────────────────────────────


def trigger_id(question: str) -> str:
    """Stable id of an `ai:` question: case and whitespace do not change it; any other edit does."""
    normal = " ".join(question.split()).lower()
    return "trg_" + hashlib.sha256(normal.encode()).hexdigest()[:16]


class TemplateSyntaxError(ValueError):
    """Raised when a template is not plain text with `{{name}}` / `{{name | fallback}}` references."""


@dataclass(frozen=True)
class VarRef:
    name: str
    fallback: str | None  # None: no `| text` given (the agent's default fallback applies)


_TOKEN = re.compile(r"\{\{(.*?)\}\}", re.S)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)?")
DOTTED_PREFIXES = ("dynamic_variables.", "fields.", "platform.")


def parse_template(text: str) -> tuple[str | VarRef, ...]:
    """Split a template into literal text and variable references; refuses anything else."""
    if "{%" in text or "{#" in text:
        raise TemplateSyntaxError("'{%' and '{#' are not supported: templates have no tags, loops or comments")
    parts: list[str | VarRef] = []
    pos = 0
    for match in _TOKEN.finditer(text):
        if match.start() > pos:
            parts.append(text[pos : match.start()])
        parts.append(_parse_ref(match.group(1)))
        pos = match.end()
    rest = text[pos:]
    if "{{" in rest:
        raise TemplateSyntaxError("'{{' is not closed by '}}'")
    if rest:
        parts.append(rest)
    return tuple(parts)


def _parse_ref(inner: str) -> VarRef:
    name, bar, fallback = inner.partition("|")
    name = name.strip()
    if "{{" in inner or "{" in name or "}" in name:
        raise TemplateSyntaxError(f"nested braces in {{{{{inner}}}}}")
    if not _NAME.fullmatch(name) or "__" in name:
        raise TemplateSyntaxError(
            f"{{{{{inner.strip()}}}}} is not a variable name: templates allow only {{{{name}}}} and "
            "{{name | fallback text}} (no expressions, calls or attribute access)"
        )
    if "." in name and not name.startswith(DOTTED_PREFIXES):
        raise TemplateSyntaxError(
            f"'{name}': attribute access is not supported "
            "(only dynamic_variables.<name>, fields.<name> and platform.<name>)"
        )
    return VarRef(name, _fallback(name, fallback) if bar else None)


# Jinja's built-in filters: `{{x | upper}}` reads as a filter to anyone who knows Jinja, but here the text
# after `|` is the fallback. Such a fallback is refused rather than rendered as the word "upper".
JINJA_FILTERS = frozenset(
    [
        "abs",
        "attr",
        "batch",
        "capitalize",
        "center",
        "count",
        "d",
        "default",
        "dictsort",
        "e",
        "escape",
        "filesizeformat",
        "first",
        "float",
        "forceescape",
        "format",
        "groupby",
        "indent",
        "int",
        "items",
        "join",
        "last",
        "length",
        "list",
        "lower",
        "map",
        "max",
        "min",
        "pprint",
        "random",
        "reject",
        "rejectattr",
        "replace",
        "reverse",
        "round",
        "safe",
        "select",
        "selectattr",
        "slice",
        "sort",
        "string",
        "striptags",
        "sum",
        "title",
        "tojson",
        "trim",
        "truncate",
        "unique",
        "upper",
        "urlencode",
        "urlize",
        "wordcount",
        "wordwrap",
        "xmlattr",
    ]
)
_FILTER_CALL = re.compile(r"([A-Za-z_]+)\s*(\(.*\))?", re.S)


def _fallback(name: str, text: str) -> str:
    """The fallback text; "quoted" keeps any text (even a filter's name) literally."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    for part in text.split("|"):
        match = _FILTER_CALL.fullmatch(part.strip())
        if match and match.group(1) in JINJA_FILTERS:
            raise TemplateSyntaxError(
                f"{{{{{name} | {text}}}}}: templates have no filters; the text after '|' is the fallback shown "
                f'when {name} is missing. Write {{{{{name}}}}}, or quote a fallback: {{{{{name} | "{text}"}}}}'
            )
    return text


def template_names(text: str) -> list[str]:
    return [p.name for p in parse_template(text) if isinstance(p, VarRef)]


def _check_template(text: str) -> str:
    parse_template(text)  # raises TemplateSyntaxError (a ValueError): a pydantic error at its line
    return text


TemplateStr = Annotated[str, AfterValidator(_check_template)]

# Template variables, besides extracted fields (`name` or `fields.name`), `dyn_*`, `dynamic_variables.*`
# and `platform.*` (the voice platform's own analysis).
SYSTEM_VARIABLES: dict[str, str] = {
    "conversation_date": "When the conversation started: full date/time in 24-hour format, in the agent's timezone.",
    "conversation_time": "Time in 12-hour format.",
    "conversation_duration": "Duration in MM:SS format.",
    "conversation_status": "Status (Completed, Failed, ...).",
    "conversation_direction": "Inbound / Outbound.",
    "conversation_summary": "AI-generated summary.",
    "conversation_transcript": "Full transcript (only when the event carries messages).",
    "conversation_url": "Link to view the conversation.",
    "conversation_uuid": "Unique identifier (the conversation id).",
    "agent_name": "Name of the AI agent.",
    "account_name": "The account name.",
    "customer_number": "Customer phone number (phone calls only).",
    "customer_name": "Customer name (only when linked to a contact).",
    "customer_email": "Customer email (only when linked to a contact).",
    "to_number": "Called phone number (phone calls only).",
}
EXTRA_VARIABLES: dict[str, str] = {
    "conversation_end_date": "When the conversation ended, as conversation_date shows its start.",
    "end_reason": "Canonical end reason, e.g. CUSTOMER_HANGUP.",
    "raw_end_reason": "The platform's own end reason, verbatim.",
    "source_platform": "The platform that reported the end reason.",
    "agent_id": "Agent id.",
    "agent_version": "Agent version, when the platform sends one.",
    "account_id": "Account id.",
    "channel": "phone, web, chat, sms, other.",
    "duration_seconds": "Duration in seconds (a number in typed webhook values).",
    "recording_url": "Recording link.",
    "extraction_status": "ok or failed.",
}

# Conversation attributes a `field:` condition may test, beside the agent's extracted fields.
CONVERSATION_FIELDS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "conversation.duration_seconds": ("number", None),
    "conversation.direction": ("enum", ("inbound", "outbound")),
    "conversation.channel": ("enum", ("phone", "web", "chat", "sms", "other")),
    "conversation.status": ("string", None),
}


# ── Conditions ────────────────────────────────────────────────────────────────────────────────────


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _known_end_reason(name: str) -> str:
    if name not in EndReason.__members__:
        close = difflib.get_close_matches(name.upper(), list(EndReason.__members__), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(EndReason.__members__)}"
        raise ValueError(f"unknown end reason {name!r} ({hint})")
    return name


EndReasonName = Annotated[str, AfterValidator(_known_end_reason)]
Scalar = str | int | float | bool | None
Op = Literal["==", "!=", "in", "not_in", ">", ">=", "<", "<=", "exists", "contains", "matches"]


class EndReasonSet(_Cfg):
    in_: list[EndReasonName] | None = Field(None, alias="in", min_length=1)
    not_in: list[EndReasonName] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> EndReasonSet:
        if (self.in_ is None) == (self.not_in is None):
            raise ValueError("give exactly one of `in` and `not_in`")
        return self


def _end_reason_shorthand(value: Any) -> Any:
    if isinstance(value, str):
        return {"in": [value]}
    return {"in": value} if isinstance(value, list) else value


class EndReasonCondition(_Cfg):
    """`{end_reason: CUSTOMER_HANGUP}`, `{end_reason: [A, B]}` or `{end_reason: {not_in: [A]}}`."""

    end_reason: Annotated[EndReasonSet, BeforeValidator(_end_reason_shorthand)]


class FieldCondition(_Cfg):
    """`{field: interest_level, op: "==", value: high}`; a missing or null value is null."""

    field: str
    op: Op
    value: Scalar | list[Scalar] = None
    ignore_case: bool = Field(False, description="For ==, !=, in, not_in, contains and matches on text.")

    @model_validator(mode="after")
    def _value_shape(self) -> FieldCondition:
        is_list = isinstance(self.value, list)
        if self.op in ("in", "not_in") and not is_list:
            raise ValueError(f"`{self.op}` needs a list value")
        if self.op not in ("in", "not_in") and is_list:
            raise ValueError(f"`{self.op}` needs a single value, not a list")
        if self.op == "exists" and not isinstance(self.value, bool | None):
            raise ValueError("`exists` takes value true (default) or false")
        if self.op in ("contains", "matches") and not isinstance(self.value, str):
            raise ValueError(f"`{self.op}` needs a text value")
        return self


class AiCondition(_Cfg):
    """A yes/no question the extractor answers from the transcript (seed 001's trigger)."""

    ai: str = Field(min_length=3)
    min_confidence: float | None = Field(None, ge=0, le=1)

    @property
    def trigger_id(self) -> str:
        return trigger_id(self.ai)


class AlwaysCondition(_Cfg):
    always: Literal[True]


class ConfidenceTest(_Cfg):
    field: str
    op: Literal["==", "!=", ">", ">=", "<", "<="]
    value: float = Field(ge=0, le=1)


class ConfidenceCondition(_Cfg):
    """`{confidence: {field: x, op: ">=", value: 0.8}}`: the extractor's confidence in a field."""

    confidence: ConfidenceTest


class ReviewCondition(_Cfg):
    """`{needs_review: x}`: passes when the extractor flagged field x for human review."""

    needs_review: str


class AllCondition(_Cfg):
    all: list[Condition] = Field(min_length=1)


class AnyCondition(_Cfg):
    any: list[Condition] = Field(min_length=1)


class NotCondition(_Cfg):
    not_: Condition = Field(alias="not")


CONDITION_KINDS: dict[str, type[_Cfg]] = {
    "end_reason": EndReasonCondition,
    "field": FieldCondition,
    "ai": AiCondition,
    "always": AlwaysCondition,
    "all": AllCondition,
    "any": AnyCondition,
    "not": NotCondition,
    "confidence": ConfidenceCondition,
    "needs_review": ReviewCondition,
}
_KIND_OF_TYPE = {cls: kind for kind, cls in CONDITION_KINDS.items()}


def condition_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return next((k for k in CONDITION_KINDS if k in value), None)
    return _KIND_OF_TYPE.get(type(value))


Condition = Annotated[
    Annotated[EndReasonCondition, Tag("end_reason")]
    | Annotated[FieldCondition, Tag("field")]
    | Annotated[AiCondition, Tag("ai")]
    | Annotated[AlwaysCondition, Tag("always")]
    | Annotated[AllCondition, Tag("all")]
    | Annotated[AnyCondition, Tag("any")]
    | Annotated[NotCondition, Tag("not")]
    | Annotated[ConfidenceCondition, Tag("confidence")]
    | Annotated[ReviewCondition, Tag("needs_review")],
    Discriminator(
        condition_kind,
        custom_error_type="unknown_condition",
        custom_error_message=f"a condition is a mapping with one of: {', '.join(CONDITION_KINDS)}",
    ),
]


# ── Actions ───────────────────────────────────────────────────────────────────────────────────────


class _Action(_Cfg):
    id: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9_-]*$", description="Name for overrides/traces.")
    enabled: bool = True
    when: Condition | None = Field(None, description="Optional per-action condition (Call2Me style).")
    destination: str | None = Field(None, description="A destination named in the dispatcher's config.")


class WebhookAction(_Action):
    type: Literal["webhook"]
    destination: str
    method: Literal["POST", "PUT", "PATCH"] | None = Field(
        None, description="HTTP method; None: the destination's configured method (POST unless it says otherwise)."
    )
    body: Any = Field(None, description="JSON body; every string in it is a template. None: default body.")


HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
HEADER_TEXT = re.compile(r"[\x20-\x7e]*")  # printable ASCII: what a header value carries
#: set by the dispatcher or the destination: a flow cannot set them; credentials live in the destinations file
FLOW_RESERVED_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "host", "content-length", "transfer-encoding",
     "connection", "content-type", "idempotency-key", "webhook-id", "webhook-timestamp", "webhook-signature",
     "accept-encoding", "user-agent", "x-api-key", "api-key", "postcall-supersedes"}
)  # fmt: skip


def _path_template(text: str) -> str:
    """The literal text of a path is the author's: ASCII, no fragment, no way out of the prefix."""
    literal = "".join(p for p in parse_template(text) if isinstance(p, str))
    if text and not text.startswith(("/", "?")):
        raise ValueError("a path starts with '/' or '?' (it is appended to the destination's URL)")
    if text.startswith("//") or "://" in literal:
        raise ValueError("a path cannot name a host: the destination's URL fixes the origin")
    if not re.fullmatch(r"[\x21-\x7e]*", literal) or "#" in literal or "\\" in literal:
        raise ValueError("the literal text of a path is printable ASCII without spaces, '#' or '\\' (write %XX)")
    segments = literal.split("?", 1)[0].split("/")
    if any(dot_segment(unquote(seg)) for seg in segments):  # the dispatcher refuses them at run (decoded)
        raise ValueError("a path cannot contain '.' or '..' segments (nor '%2e%2e', '..;' and the like)")
    return text


def dot_segment(segment: str) -> bool:
    """'.' or '..' (decoded) as a server may read it: servlet containers drop ';' parameters
    ('..;jsessionid=1'), some a NUL or whitespace after it."""
    return segment.partition(";")[0].strip("\x00 \t") in (".", "..")


def _json_pointer(text: str) -> str:
    if text and not text.startswith("/"):
        raise ValueError("a JSON pointer (RFC 6901) is empty or starts with '/', e.g. /id or /data/0/id")
    if re.search(r"~(?![01])", text):
        raise ValueError("in a JSON pointer '~' is written ~0 and '/' inside a name ~1")
    return text


class HttpAction(_Action):
    """A request to any API through an `http` destination: the destination fixes the origin, the path
    prefix and the credentials; the flow chooses the method, the rest of the path, the query, headers
    and the body, and where the id of what was created or updated sits in the answer."""

    type: Literal["http"]
    destination: str
    method: HttpMethod = "POST"
    path: Annotated[str, AfterValidator(_path_template)] = Field(
        "",
        description="Appended to the destination's URL, e.g. /cases/{{dynamic_variables.case_id}}; each "
        "substituted value is percent-encoded, and an empty one skips the action.",
    )
    query: dict[str, TemplateStr] = Field(default_factory=dict, description="Query parameters (templates).")
    headers: dict[str, TemplateStr] = Field(
        default_factory=dict, description="Extra headers (templates); credentials belong in the destination."
    )
    body: Any = Field(None, description="JSON body; every string in it is a template. None: no body.")
    result_id_pointer: Annotated[str, AfterValidator(_json_pointer)] | None = Field(
        None, description="JSON pointer to the id in the answer (e.g. /id), reported as the action's result_id."
    )

    @field_validator("headers")
    @classmethod
    def _header_names(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, text in headers.items():
            if not HEADER_NAME.fullmatch(name):
                raise ValueError(f"header {name!r}: a header name is letters, digits and !#$%&'*+.^_`|~- only")
            # the author's text is sent as it is (values are percent-encoded: router.actions.header_text);
            # the dispatcher refuses a request whose header holds a control or non-ASCII character
            literal = " ".join("".join(p for p in parse_template(text) if isinstance(p, str)).split())
            if not HEADER_TEXT.fullmatch(literal):
                raise ValueError(
                    f"header {name!r}: its text holds a control or non-ASCII character, which no HTTP header "
                    "carries (a value substituted into it is percent-encoded; write the text in ASCII)"
                )
            if name.lower() in FLOW_RESERVED_HEADERS:
                raise ValueError(
                    f"header {name!r} cannot be set by a flow: credentials go in the destination (auth: or "
                    "headers: with secret_env/secret_file), the others are set by the dispatcher"
                )
        return headers

    @model_validator(mode="after")
    def _body_fits_method(self) -> HttpAction:
        if self.method == "GET" and self.body is not None:
            raise ValueError("a GET request has no body: remove `body` or use another method")
        return self


def column_number(letters: str) -> int:
    """A1 column letters as a number: A = 1, Z = 26, AA = 27."""
    number = 0
    for char in letters:
        number = number * 26 + ord(char) - 64
    return number


class AppendRowAction(_Action):
    """A row appended to a Google Sheet through a `google_sheets` destination: the columns (templates)
    from column A, and the action_id in an id column (hide it in the sheet), read before appending so a
    retried action never adds a second row."""

    type: Literal["append_row"]
    destination: str
    spreadsheet_id: str = Field(
        pattern=r"^[A-Za-z0-9_-]{10,200}$",
        description="The id in the sheet's URL: docs.google.com/spreadsheets/d/<id>/edit. Fixed, not a template.",
    )
    sheet: str = Field(
        min_length=1,
        max_length=SHEET_NAME_CHARS,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="The sheet (tab) name. Fixed.",
    )
    columns: list[TemplateStr] = Field(
        min_length=1,
        max_length=ROW_VALUES,
        description="One template per column from A; a lone {{name}} keeps its type.",
    )
    id_column: str | None = Field(
        None, pattern=r"^[A-Z]{1,3}$", description="Column letters for the action_id; default: after the columns."
    )

    @model_validator(mode="after")
    def _id_column_after_the_values(self) -> AppendRowAction:
        if self.id_column is not None and column_number(self.id_column) <= len(self.columns):
            raise ValueError(
                f"id_column {self.id_column} would overwrite column {self.id_column} of the row: "
                f"choose a column after the {len(self.columns)} columns"
            )
        return self


RecipientKind = Literal["fixed", "contact", "rendered"]
#: one plain address, what an email recipient must be: no display name, no list, no spaces
EMAIL_ADDRESS = re.compile(r"[^@\s<>()\[\],;:\"]+@[^@\s<>()\[\],;:\"]+")
Domain = Annotated[
    str, Field(max_length=253, pattern=r"^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$")
]


def recipient_kind(text: str) -> RecipientKind:
    """Where an email recipient in `to` comes from: a literal address (fixed), exactly
    `{{customer_email}}` (the contact-linked address the event carries), or anything else rendered from
    values a caller can influence (dyn_*, extracted fields, dynamic_variables), which needs
    `allowed_domains`."""
    parts = parse_template(text)
    refs = [p for p in parts if isinstance(p, VarRef)]
    if not refs:
        return "fixed"
    literal = "".join(p for p in parts if isinstance(p, str))
    return "contact" if len(refs) == 1 and refs[0].name == "customer_email" and not literal.strip() else "rendered"


class EmailAction(_Action):
    type: Literal["email"]
    to: list[TemplateStr] = Field(
        default_factory=list,
        description="Recipients: literal addresses, `{{customer_email}}` (the contact-linked address), or "
        "templates rendered from other values, which need `allowed_domains`.",
    )
    recipients: str | None = Field(None, description="Dynamic recipients: a recipient route id.")
    allowed_domains: list[Domain] = Field(
        default_factory=list,
        description="Domains a recipient rendered from a template may be in (exact match, any case); "
        "an address elsewhere is dropped and the drop is traced. Without it such templates are refused.",
    )
    subject: TemplateStr
    body: TemplateStr
    html: TemplateStr | None = Field(None, description="Optional HTML body; values are HTML-escaped.")

    @model_validator(mode="after")
    def _has_recipients(self) -> EmailAction:
        if not self.to and self.recipients is None:
            raise ValueError("an email needs recipients: set `to` (fixed) or `recipients` (a route id)")
        return self


class _CardAction(_Action):
    """A chat message: its text, and optionally a card (a header, labelled fields, a context line and a
    link button to the call's console page); with any of those, Slack gets Block Kit and Teams an
    Adaptive Card laid out the same way."""

    destination: str
    text: TemplateStr
    title: TemplateStr | None = Field(None, description="A header line (Slack: at most 150 characters shown).")
    fields: dict[str, TemplateStr] = Field(
        default_factory=dict,
        max_length=CARD_FIELDS,
        description="Label -> template, shown as labelled values in order.",
    )
    context: TemplateStr | None = Field(None, description="A small line at the bottom, e.g. the agent and time.")
    button: str | None = Field(
        None,
        min_length=1,
        max_length=75,
        description="Label of a link button to the call's console page (the dispatcher's console_base_url); "
        "not shown when the dispatcher has none.",
    )

    @property
    def has_card(self) -> bool:
        return bool(self.title or self.fields or self.context or self.button)


class SlackAction(_CardAction):
    type: Literal["slack"]
    channel: str | None = Field(
        None,
        pattern=r"^[#@]?[A-Za-z0-9][A-Za-z0-9._-]{0,79}$",
        description="Bot-token destinations: the channel (name or id); fixed, never a template. None: the "
        "destination's channel.",
    )


class TeamsAction(_CardAction):
    """Microsoft Teams through an incoming webhook (a Workflows or connector URL): an Adaptive Card."""

    type: Literal["teams"]


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WORKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri")
ClockTime = Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]


class BusinessHours(_Cfg):
    timezone: str = "UTC"
    days: list[Weekday] = Field(default_factory=lambda: list(WORKDAYS), min_length=1)
    start: ClockTime = "09:00"
    end: ClockTime = "17:00"

    @model_validator(mode="after")
    def _start_before_end(self) -> BusinessHours:
        if self.start >= self.end:
            raise ValueError("business hours `start` must be before `end`")
        return self


class ScheduleCallAction(_Action):
    type: Literal["schedule_call"]
    use_field: str | None = Field(None, description="Extracted date/datetime field giving the call time.")
    fallback_delay_minutes: int = Field(1440, ge=0, le=525_600)
    from_number: str | None = Field(None, description="The number to call from, E.164 (+13125550100).")
    to_field: str | None = Field(None, description="Extracted phone field; default: the customer's number.")
    business_hours: BusinessHours | None = None

    @field_validator("from_number")
    @classmethod
    def _e164(cls, value: str | None) -> str | None:
        if value is not None and not E164.fullmatch(value):
            raise ValueError(f"{value!r} is not a phone number in E.164 form (+ and 7 to 15 digits)")
        return value


def _priority(value: Any) -> Any:
    return value.capitalize() if isinstance(value, str) else value


class TaskAction(_Action):
    type: Literal["task"]
    title: TemplateStr
    description: TemplateStr = ""
    priority: Annotated[Literal["Low", "Medium", "High", "Urgent"], BeforeValidator(_priority)] = "Medium"
    assignee: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        # one line, no space around it: \S alone took a control character at either end (NUL, ESC, DEL)
        pattern=r"^[^\s\x00-\x1f\x7f](?:[^\x00-\x1f\x7f\x85\u2028\u2029]*[^\s\x00-\x1f\x7f])?$",
        description="Who the task is for: a console user's name (an API token's name), as the inbox's assignee "
        "filter shows it. Plain text, not a template: a caller cannot choose who gets the task. None: "
        "unassigned until someone assigns it in the console.",
    )

    @field_validator("assignee")
    @classmethod
    def _not_a_template(cls, value: str | None) -> str | None:
        if value is not None and "{{" in value:
            raise ValueError(
                "an assignee is plain text, not a template: what a caller says must not choose who gets the task "
                "(use a flow's `when` to pick between tasks with different assignees)"
            )
        return value


class TeamAlertAction(_Action):
    type: Literal["team_alert"]
    message: TemplateStr
    teammates: list[str] = Field(default_factory=list, description="Empty: everyone.")


Action = Annotated[
    WebhookAction
    | HttpAction
    | AppendRowAction
    | EmailAction
    | SlackAction
    | TeamsAction
    | ScheduleCallAction
    | TaskAction
    | TeamAlertAction,
    Field(discriminator="type"),
]


# ── Flows and agents ──────────────────────────────────────────────────────────────────────────────


class Flow(_Cfg):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    description: str = ""
    enabled: bool = True
    draft: bool = Field(
        False, description="A draft is validated and can be tried, but never runs on live traffic; publish: remove it."
    )
    use_template: str | None = Field(None, description="The library template this flow was built from.")
    when: Condition | None = Field(None, description="None: the flow runs for every conversation.")
    actions: list[Action] = Field(min_length=1)
    on_extraction_failure: Literal["hold", "run"] = Field(
        "hold",
        description="A flow that uses the extraction (fields, ai triggers, dyn_*, the summary) when extraction "
        "failed: hold it, nothing sent, until a later extraction succeeds (default); or run it with what there is.",
    )


class ExtractionConfig(_Cfg):
    provider: Literal["heuristic", "openai"] | None = None
    model: str | None = None
    min_confidence: float = Field(0.5, ge=0, le=1)
    summary: bool = True
    trust_platform: bool = Field(
        False,
        description="Take a field's value from the voice platform's own analysis when it holds one under the "
        "field's name and of its type (and the platform's summary): the provider fills only the rest.",
    )
    fields: list[FieldSpec] = Field(default_factory=list)


class AgentFile(_Cfg):
    """What one YAML file holds."""

    agent: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    version: str | None = None
    draft: bool = Field(
        False,
        description="A draft file is validated and can be tried (`postcall try`, the console), but never serves "
        "live traffic; it may sit beside the agent's published file. Publish: remove the mark.",
    )
    description: str = ""
    timezone: str = "UTC"
    fallback_text: str | None = Field(None, description="None: the router's default fallback text.")
    extraction: ExtractionConfig = ExtractionConfig()
    recipient_routes: list[RecipientRoute] = Field(default_factory=list)
    flows: list[Flow] = Field(default_factory=list)

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


class AgentConfig(AgentFile):
    """A loaded file: its content plus where it came from and its revision (content hash)."""

    revision: str
    source: str

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.extraction.fields if f.name == name), None)


for _model in (
    AllCondition,
    AnyCondition,
    NotCondition,
    _Action,
    WebhookAction,
    HttpAction,
    AppendRowAction,
    EmailAction,
    _CardAction,
    SlackAction,
    TeamsAction,
    ScheduleCallAction,
    TaskAction,
    TeamAlertAction,
    Flow,
    AgentFile,
    AgentConfig,
):
    _model.model_rebuild()
