"""Checks of meaning on a parsed agent file: the problems pydantic cannot see.

Each problem is `(location, message)`; the loader turns the location into `file:line: path`. Checked:
duplicate ids, operators valid for the field's type and values of the right type, fields that exist,
template variables that are defined (a `dyn_*` name is always defined: it makes the extractor extract
it), recipient routes that exist, time zones, and `matches` patterns that the linear-time engine accepts.

`matches` runs on RE2 (google-re2), whose matching time grows linearly with the input whatever the
pattern, so no pattern an agent author writes can hold the router's event loop: `(.|\\s)*refund` on a
long transcript costs what a plain search does. RE2 has no backreferences and no lookaround; a pattern
it cannot compile is refused at load (and by `postcall config validate`) with its file and line.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Iterator
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import re2

from schemas.agent_config import (
    CONVERSATION_FIELDS,
    EMAIL_ADDRESS,
    EXTRA_VARIABLES,
    SYSTEM_VARIABLES,
    Action,
    AgentFile,
    AllCondition,
    AnyCondition,
    AppendRowAction,
    Condition,
    ConfidenceCondition,
    EmailAction,
    FieldCondition,
    FieldSpec,
    Flow,
    HttpAction,
    NotCondition,
    ReviewCondition,
    ScheduleCallAction,
    SlackAction,
    TaskAction,
    TeamAlertAction,
    TeamsAction,
    TemplateSyntaxError,
    WebhookAction,
    recipient_kind,
    template_names,
)

Loc = tuple[int | str, ...]
_VALUE_NAME = re.compile(r"[A-Za-z0-9_-]+")  # what a template accepts after `platform.` (agent_config._NAME)
_DYN_NAME = re.compile(r"dyn_[a-z0-9_]*")  # the extractor fills it as a field of that name (FieldSpec.name)
Issue = tuple[Loc, str]

_TEXT = frozenset({"==", "!=", "in", "not_in", "exists", "contains", "matches"})
_ORDERED = frozenset({"==", "!=", "in", "not_in", ">", ">=", "<", "<=", "exists"})
OPS_BY_TYPE: dict[str, frozenset[str]] = {
    "string": _TEXT,
    "phone": _TEXT,
    "email": _TEXT,
    "enum": frozenset({"==", "!=", "in", "not_in", "exists"}),
    "number": _ORDERED,
    "integer": _ORDERED,
    "boolean": frozenset({"==", "!=", "exists"}),
    "date": _ORDERED - {"in", "not_in"},
    "datetime": _ORDERED - {"in", "not_in"},
    "time": _ORDERED - {"in", "not_in"},
    "any": _TEXT | _ORDERED,
}
MAX_PATTERN_LENGTH = 512
PATTERN_MEMORY_BYTES = 8 << 20  # RE2's own budget per compiled pattern; a pattern over it does not compile


def semantic_problems(cfg: AgentFile) -> Iterator[Issue]:
    fields = {f.name: f for f in cfg.extraction.fields}
    yield from _duplicates([f.name for f in cfg.extraction.fields], ("extraction", "fields"), "name", "field")
    for i, spec in enumerate(cfg.extraction.fields):
        if spec.type == "enum" and not spec.values:
            yield ("extraction", "fields", i, "values"), f"enum field {spec.name!r} needs `values`"
        elif spec.type != "enum" and spec.values is not None:  # ignored otherwise: the author meant an enum
            yield ("extraction", "fields", i, "values"), f"`values` is for enum fields; {spec.name!r} is {spec.type}"
    yield from _timezone(cfg.timezone, ("timezone",))
    yield from _duplicates([r.id for r in cfg.recipient_routes], ("recipient_routes",), "id", "recipient route")
    yield from _duplicates([f.id for f in cfg.flows], ("flows",), "id", "flow id")
    yield from _route_problems(cfg)
    routes = {r.id for r in cfg.recipient_routes}
    for i, flow in enumerate(cfg.flows):
        if flow.when is not None:
            yield from condition_problems(flow.when, ("flows", i, "when"), fields)
        for j, action in enumerate(flow.actions):
            yield from _action_problems(action, ("flows", i, "actions", j), fields, routes)


def _duplicates(names: list[str], loc: Loc, key: str, what: str) -> Iterator[Issue]:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            yield (*loc, i, key), f"duplicate {what} {name!r}"
        seen.add(name)


def _timezone(name: str, loc: Loc) -> Iterator[Issue]:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        yield loc, f"unknown time zone {name!r} (use an IANA name such as Europe/Berlin)"


# ── Conditions ────────────────────────────────────────────────────────────────────────────────────


def walk_conditions(cond: Condition | None) -> Iterator[Condition]:
    if cond is None:
        return
    yield cond
    if isinstance(cond, AllCondition | AnyCondition):
        for child in cond.all if isinstance(cond, AllCondition) else cond.any:
            yield from walk_conditions(child)
    elif isinstance(cond, NotCondition):
        yield from walk_conditions(cond.not_)


def condition_problems(cond: Condition, loc: Loc, fields: dict[str, FieldSpec]) -> Iterator[Issue]:
    if isinstance(cond, FieldCondition):
        yield from _field_condition(cond, loc, fields)
    elif isinstance(cond, AllCondition):
        for k, child in enumerate(cond.all):
            yield from condition_problems(child, (*loc, "all", k), fields)
    elif isinstance(cond, AnyCondition):
        for k, child in enumerate(cond.any):
            yield from condition_problems(child, (*loc, "any", k), fields)
    elif isinstance(cond, NotCondition):
        yield from condition_problems(cond.not_, (*loc, "not"), fields)
    elif isinstance(cond, ConfidenceCondition) and cond.confidence.field not in fields:
        yield (*loc, "confidence", "field"), _unknown_field(cond.confidence.field, fields)
    elif isinstance(cond, ReviewCondition) and cond.needs_review not in fields:
        yield (*loc, "needs_review"), _unknown_field(cond.needs_review, fields)


def field_type(name: str, fields: dict[str, FieldSpec]) -> tuple[str, tuple[str, ...] | None] | None:
    """(type, enum values) of what a `field:` condition names; None when nothing has that name."""
    if name in fields:
        spec = fields[name]
        return spec.type, tuple(spec.values) if spec.values else None
    if name in CONVERSATION_FIELDS:
        return CONVERSATION_FIELDS[name]
    if name.startswith(("dyn_", "dynamic_variables.", "platform.")):
        return "any", None
    return None


def _unknown_field(name: str, fields: dict[str, FieldSpec]) -> str:
    known = [*fields, *CONVERSATION_FIELDS]
    return f"unknown field {name!r}{_suggest(name, known)} (declare it under extraction.fields)"


def _field_condition(cond: FieldCondition, loc: Loc, fields: dict[str, FieldSpec]) -> Iterator[Issue]:
    problem = dotted_name_problem(cond.field) or dyn_name_problem(cond.field)
    if problem:
        yield (*loc, "field"), problem
        return
    typed = field_type(cond.field, fields)
    if typed is None:
        yield (*loc, "field"), _unknown_field(cond.field, fields)
        return
    ftype, values = typed
    if cond.op not in OPS_BY_TYPE[ftype]:
        yield (*loc, "op"), f"{cond.op!r} is not valid for {ftype} field {cond.field!r}"
        return
    if cond.op == "matches":
        problem = regex_problem(str(cond.value))
        if problem:
            yield (*loc, "value"), problem
        return
    if cond.op in (">", ">=", "<", "<=") and cond.value is None:
        yield (*loc, "value"), f"{cond.op!r} needs a value (null is never greater or smaller)"
        return
    if cond.op == "exists":
        return
    items = cond.value if isinstance(cond.value, list) else [cond.value]
    for k, item in enumerate(items):
        problem = value_problem(ftype, values, item)
        if problem:
            yield ((*loc, "value", k) if isinstance(cond.value, list) else (*loc, "value")), problem


def dotted_name_problem(name: str) -> str | None:
    """`platform.<name>` and `dynamic_variables.<name>` name one value, as a template would write it:
    `platform.` alone or `platform.a.b` (no nesting) reads nothing and would silently be null."""
    for prefix in ("platform.", "dynamic_variables."):
        if name.startswith(prefix) and not _VALUE_NAME.fullmatch(name.removeprefix(prefix)):
            return f"{name!r} names no single value: write {prefix}<name> (letters, digits, _ or -; no nesting)"
    return None


def dyn_name_problem(name: str) -> str | None:
    """A dyn_* name becomes a field the extractor asks for, and a field name is lower case: any other
    name would make every extraction of the agent fail."""
    if name.startswith("dyn_") and not _DYN_NAME.fullmatch(name):
        return f"{name!r}: a dyn_* name is lower-case letters, digits and _ (it is extracted as a field of that name)"
    return None


def value_problem(ftype: str, values: tuple[str, ...] | None, value: Any) -> str | None:
    if value is None or ftype == "any":
        return None
    ok = {
        "boolean": isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "enum": isinstance(value, str) and (values is None or value in values),
        "date": isinstance(value, str) and _is_iso(value, date),
        "datetime": isinstance(value, str) and _is_iso(value, datetime),
        "time": isinstance(value, str) and _is_iso(value, time) and time.fromisoformat(value).tzinfo is None,
    }.get(ftype, isinstance(value, str))
    if ok:
        return None
    if ftype == "enum" and values:
        return f"{value!r} is not one of the enum values {list(values)}"
    if ftype == "number" and isinstance(value, float):  # NaN or infinity: no extracted number compares with it
        return f"{value!r} is not a valid number value (a finite number)"
    if ftype == "time":  # a time of day with a UTC offset would never compare with the extracted one
        return f"{value!r} is not a valid time value (a time of day, HH:MM, without a UTC offset)"
    return f"{value!r} is not a valid {ftype} value"


def _is_iso(value: str, kind: type[date] | type[time]) -> bool:
    try:
        kind.fromisoformat(value)
    except ValueError:
        return False
    return True


def compile_pattern(pattern: str, ignore_case: bool = False) -> Any:
    """A `matches` pattern compiled by RE2 (linear time in the input); raises re2.error."""
    options = re2.Options()
    options.case_sensitive = not ignore_case
    options.max_mem = PATTERN_MEMORY_BYTES
    options.log_errors = False
    return re2.compile(pattern, options)


def regex_problem(pattern: str) -> str | None:
    """Why RE2 cannot run `pattern`, or None."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"pattern longer than {MAX_PATTERN_LENGTH} characters"
    try:
        compile_pattern(pattern)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        return (
            f"RE2 cannot compile this pattern: {reason} (`matches` uses RE2, which runs in linear time: "
            "no backreferences, no lookahead or lookbehind)"
        )
    return None


# ── Actions and templates ─────────────────────────────────────────────────────────────────────────


def action_templates(action: Action) -> Iterator[tuple[Loc, str]]:
    """Every template string of an action, with its location inside the action."""
    if isinstance(action, EmailAction):
        yield from ((("to", k), t) for k, t in enumerate(action.to))
        yield ("subject",), action.subject
        yield ("body",), action.body
        if action.html is not None:
            yield ("html",), action.html
    elif isinstance(action, SlackAction | TeamsAction):
        yield ("text",), action.text
        yield from (((name,), t) for name, t in (("title", action.title), ("context", action.context)) if t)
        yield from ((("fields", k), t) for k, t in action.fields.items())
    elif isinstance(action, TaskAction):
        yield ("title",), action.title
        yield ("description",), action.description
    elif isinstance(action, TeamAlertAction):
        yield ("message",), action.message
    elif isinstance(action, WebhookAction):
        yield from _json_strings(action.body, ("body",))
    elif isinstance(action, AppendRowAction):
        yield from ((("columns", k), t) for k, t in enumerate(action.columns))
    elif isinstance(action, HttpAction):
        yield ("path",), action.path
        yield from ((("query", k), t) for k, t in action.query.items())
        yield from ((("headers", k), t) for k, t in action.headers.items())
        yield from _json_strings(action.body, ("body",))


def _json_strings(node: Any, loc: Loc) -> Iterator[tuple[Loc, str]]:
    if isinstance(node, str):
        yield loc, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _json_strings(value, (*loc, str(key)))
    elif isinstance(node, list):
        for k, value in enumerate(node):
            yield from _json_strings(value, (*loc, k))


def template_strings(flows: Iterable[Flow]) -> Iterator[str]:
    for flow in flows:
        for action in flow.actions:
            if action.enabled:
                yield from (text for _, text in action_templates(action))


def enabled_conditions(flow: Flow) -> Iterator[Condition]:
    """Every condition node of a flow and of its enabled actions."""
    yield from walk_conditions(flow.when)
    for action in flow.actions:
        if action.enabled:
            yield from walk_conditions(action.when)


def variable_problem(name: str, fields: dict[str, FieldSpec]) -> str | None:
    if name in SYSTEM_VARIABLES or name in EXTRA_VARIABLES or name in fields:
        return None
    if name.startswith("dyn_"):
        return dyn_name_problem(name)
    if name.startswith(("dynamic_variables.", "platform.")):
        return None
    if name.startswith("fields.") and name.removeprefix("fields.") in fields:
        return None
    known = [*SYSTEM_VARIABLES, *EXTRA_VARIABLES, *fields]
    return f"template names undefined variable {name!r}{_suggest(name, known)}"


def _action_problems(action: Action, loc: Loc, fields: dict[str, FieldSpec], routes: set[str]) -> Iterator[Issue]:
    if action.when is not None:
        yield from condition_problems(action.when, (*loc, "when"), fields)
    for sub, text in action_templates(action):
        try:
            names = template_names(text)
        except TemplateSyntaxError as exc:
            yield (*loc, *sub), str(exc)
            continue
        for name in names:
            problem = variable_problem(name, fields)
            if problem:
                yield (*loc, *sub), problem
    if isinstance(action, EmailAction):
        yield from _recipient_problems(action, loc)
    if isinstance(action, EmailAction) and action.recipients is not None and action.recipients not in routes:
        yield (
            (*loc, "recipients"),
            f"unknown recipient route {action.recipients!r}{_suggest(action.recipients, routes)}",
        )
    if isinstance(action, ScheduleCallAction):
        yield from _schedule_problems(action, loc, fields)


def _not_an_address(address: str) -> str | None:
    if EMAIL_ADDRESS.fullmatch(address):
        return None
    return f"{address!r} is not an email address (write one plain address per item: name@company.com)"


def _route_problems(cfg: AgentFile) -> Iterator[Issue]:
    """A route's addresses are sent as they are written: one that is not an address would fail every email."""
    for i, route in enumerate(cfg.recipient_routes):
        for k, rule in enumerate(route.rules):
            for m, address in enumerate(rule.to):
                if problem := _not_an_address(address):
                    yield ("recipient_routes", i, "rules", k, "to", m), problem
        for m, address in enumerate(route.fallback):
            if problem := _not_an_address(address):
                yield ("recipient_routes", i, "fallback", m), problem


def _recipient_problems(action: EmailAction, loc: Loc) -> Iterator[Issue]:
    for k, text in enumerate(action.to):
        try:
            kind = recipient_kind(text)
        except TemplateSyntaxError:
            continue  # reported with the other template problems
        if kind == "fixed" and (problem := _not_an_address(text.strip())):
            yield (*loc, "to", k), problem  # the router would drop it from every email
        elif kind == "rendered" and not action.allowed_domains:
            yield (
                (*loc, "to", k),
                (
                    f"recipient {text!r} is rendered from values a caller can influence; an email goes only to "
                    "literal addresses, {{customer_email}} (the contact-linked address) or a recipient route, unless "
                    "the action lists `allowed_domains` (then only addresses in those domains are kept)"
                ),
            )


def recipient_warnings(flows: Iterable[Flow]) -> Iterator[Issue]:
    """Email actions whose recipient list can render empty at run time (the email is then skipped)."""
    for i, flow in enumerate(flows):
        for j, action in enumerate(flow.actions):
            if not (isinstance(action, EmailAction) and action.enabled) or action.recipients is not None:
                continue
            try:
                kinds = [recipient_kind(text) for text in action.to]
            except TemplateSyntaxError:
                continue
            if "fixed" in kinds or not kinds:
                continue
            why = (
                "{{customer_email}} is empty when no contact is linked (customer.contact_id)"
                if "contact" in kinds
                else "a rendered address is dropped when it is empty, invalid or outside allowed_domains"
            )
            yield (
                ("flows", i, "actions", j, "to"),
                (
                    f"the recipient list can be empty at run time: {why}; the email is then skipped "
                    "(add a literal address or a recipient route to always send it)"
                ),
            )


def _schedule_problems(action: ScheduleCallAction, loc: Loc, fields: dict[str, FieldSpec]) -> Iterator[Issue]:
    for key, name, types in (
        ("use_field", action.use_field, ("date", "datetime", "string")),
        ("to_field", action.to_field, ("phone", "string")),
    ):
        if name is None:
            continue
        if name not in fields:
            yield (*loc, key), _unknown_field(name, fields)
        elif fields[name].type not in types:
            yield (*loc, key), f"{key} needs a {' or '.join(types)} field; {name!r} is {fields[name].type}"
    if action.business_hours is not None:
        yield from _timezone(action.business_hours.timezone, (*loc, "business_hours", "timezone"))


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
