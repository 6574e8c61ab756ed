"""Conditions, compiled once per configuration revision into evaluators that explain themselves.

Every evaluator appends one ConditionResult per condition node (composites first, then their
children; children are all evaluated, so a trace shows every reason, not only the first). Semantics:

* `==` / `!=` compare with null: a missing field is null, `== null` passes for it, `!= "x"` passes
  for it. `in` / `not_in` likewise (`not_in` passes for null unless the list holds null). True is not
  1: booleans only equal booleans. `ignore_case` folds case for text.
* `>`, `>=`, `<`, `<=`, `contains` and `matches` fail on null. Numbers compare as numbers, date and
  datetime fields as dates; text values of number/boolean/date fields are coerced first. Untyped
  values (platform.*, dynamic_variables.*, dyn_*) compared with a number are read as a number when
  their text is a plain decimal ("8", "-2.5"): platforms send dynamic variables, and often their own
  analysis, as text. A bound written as decimal text (`value: "18"`) is that number as well.
* `matches` runs an RE2 pattern (linear time, never backtracking; checked at load time) on at most
  MATCH_INPUT_LIMIT characters of the value, so no condition can hold the event loop.
* When extraction failed, conditions on extracted values (fields, dyn_*, ai, confidence, needs_review)
  are *unknown*: false, with a reason that says so, and `not` of unknown is still false (a failed
  extraction never fires "the customer did not complain"). End-reason conditions still work, as do
  conditions on conversation.*, dynamic_variables.* and platform.*.

Each leaf also names what its result depends on (`Compiled.states`: the end reason, the field's value,
the trigger's answer...), so `Remembered` can keep a condition tree's results by those values and hand
out the same (frozen) ConditionResults again: most conversations of an agent end in a handful of ways,
and a record then costs a few attribute reads per flow instead of building its trace entries again.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, tzinfo
from typing import Any

import orjson

from schemas.agent_checks import compile_pattern, field_type
from schemas.agent_config import (
    AiCondition,
    AllCondition,
    AlwaysCondition,
    AnyCondition,
    Condition,
    ConfidenceCondition,
    EndReasonCondition,
    FieldCondition,
    FieldSpec,
    NotCondition,
    ReviewCondition,
)
from schemas.events import ConditionResult, ConversationExtracted
from services.router.variables import dynamic_variable, platform_value

MATCH_INPUT_LIMIT = 4096
SHOWN_CHARS = 1000  # characters of a text value a trace shows (_shown)
_DECIMAL = re.compile(r"[+-]?[0-9]{1,30}(?:\.[0-9]{1,30})?")


@dataclass(frozen=True, slots=True)
class Outcome:
    passed: bool
    unknown: bool = False  # could not be evaluated (failed extraction, unanswered trigger)


Evaluator = Callable[[ConversationExtracted, list[ConditionResult]], Outcome]
UNKNOWN = Outcome(False, True)
#: what a leaf's result depends on, read from a record; NO_STATE: this record's value is not remembered
#: (not a plain scalar, or long text), so the tree is evaluated as it is
State = Callable[[ConversationExtracted], Hashable]
NO_STATE: Hashable = object()
_LONGEST_REMEMBERED = 100  # characters of a text value; longer ones (free text) rarely come again
REMEMBERED_PER_TREE = 256  # outcomes kept per condition tree; when full it starts again


@dataclass(frozen=True, slots=True)
class Compiled:
    """A compiled condition: call it to evaluate; `states` are its leaves' state readers, in order, and
    `reads` names what each one reads (equal names: equal states of every record), so a reader of several
    trees reads each thing once."""

    evaluate: Evaluator
    states: tuple[State, ...]
    reads: tuple[Hashable, ...]

    def __call__(self, event: ConversationExtracted, out: list[ConditionResult]) -> Outcome:
        return self.evaluate(event, out)


def exact(value: Any) -> Hashable:
    """A scalar as a key that tells apart what renders differently (True/1/1.0, 0.0/-0.0); NO_STATE for
    anything else."""
    kind = type(value)
    if kind is str:
        return value if len(value) <= _LONGEST_REMEMBERED else NO_STATE
    if kind is float:
        return (float, value.hex())
    if value is None or kind is bool or kind is int:
        return (kind, value)
    return NO_STATE


_NONE = exact(None)


def _state(*parts: Hashable) -> Hashable:
    """A leaf's state of several parts: NO_STATE when any part is (the tree only looks at the top)."""
    return NO_STATE if any(part is NO_STATE for part in parts) else parts


def _always(event: ConversationExtracted) -> Hashable:
    return ()


def _end_reason_state(event: ConversationExtracted) -> Hashable:
    # the value itself: .value is a Python-level property and a member's hash a Python-level __hash__
    return event.conversation.end_reason.canonical._value_


def _failed(event: ConversationExtracted) -> Hashable:
    return _state("failed", exact(event.extraction.reason))


class Remembered:
    """A condition tree whose results are kept by its leaves' states (the tree is a pure function of
    them): `entry(event)` gives (outcome, results, a slot for the caller's own derived value)."""

    __slots__ = ("_cache", "_states", "condition")

    def __init__(self, condition: Compiled) -> None:
        self.condition, self._states = condition, condition.states
        self._cache: dict[tuple[Hashable, ...], list[Any]] = {}

    def __call__(self, event: ConversationExtracted, out: list[ConditionResult]) -> Outcome:
        outcome, results, _ = self.entry(event)
        out.extend(results)
        return outcome  # type: ignore[no-any-return]

    def entry(self, event: ConversationExtracted) -> list[Any]:
        """[outcome, tuple of results, None or what the caller stored]; a fresh one when not remembered."""
        key = tuple([state(event) for state in self._states])  # each state is NO_STATE or all known
        found = self._cache.get(key)
        if found is not None:
            return found
        results: list[ConditionResult] = []
        entry = [self.condition(event, results), tuple(results), None]
        if NO_STATE not in key:  # identity test first: NO_STATE equals nothing else
            if len(self._cache) >= REMEMBERED_PER_TREE:
                self._cache.clear()
            self._cache[key] = entry
        return entry


def compile_condition(cond: Condition, path: str, fields: dict[str, FieldSpec], tz: tzinfo = UTC) -> Compiled:
    """`tz`: the agent's time zone, in which a date-time without a UTC offset is read (as schedule_call
    reads one), whether the extractor answered it or the author wrote it."""
    if isinstance(cond, AllCondition | AnyCondition):
        return _composite(cond, path, fields, tz)
    if isinstance(cond, NotCondition):
        return _negation(cond, path, fields, tz)
    if isinstance(cond, EndReasonCondition):
        return _end_reason(cond, path)
    if isinstance(cond, FieldCondition):
        return compile_field(cond, path, fields, tz)
    if isinstance(cond, AiCondition):
        return _ai(cond, path)
    if isinstance(cond, ConfidenceCondition | ReviewCondition):
        return _field_meta(cond, path)
    assert isinstance(cond, AlwaysCondition)

    def always(event: ConversationExtracted, out: list[ConditionResult]) -> Outcome:
        out.append(ConditionResult(path=path, kind="always", passed=True, expected=True, actual=True, reason="always"))
        return Outcome(True)

    return Compiled(always, (_always,), (_always,))


def _composite(cond: AllCondition | AnyCondition, path: str, fields: dict[str, FieldSpec], tz: tzinfo) -> Compiled:
    kind = "all" if isinstance(cond, AllCondition) else "any"
    items = cond.all if isinstance(cond, AllCondition) else cond.any
    children = [compile_condition(c, f"{path}.{kind}[{i}]", fields, tz) for i, c in enumerate(items)]

    def evaluate(event: ConversationExtracted, out: list[ConditionResult]) -> Outcome:
        slot = len(out)  # the composite goes before its children, once their results are known
        results = [child(event, out) for child in children]
        passed_count = sum(r.passed for r in results)
        known_false = any(not r.passed and not r.unknown for r in results)
        unknown = any(r.unknown for r in results)
        if kind == "all":  # three-valued: a known false decides; otherwise an unknown keeps it unknown
            outcome = Outcome(passed_count == len(results), unknown and not known_false)
        else:
            outcome = Outcome(passed_count > 0, unknown and passed_count == 0)
        reason = f"{passed_count} of {len(results)} passed; {kind} needs {'every one' if kind == 'all' else 'one'}"
        out.insert(
            slot,
            ConditionResult(
                path=path,
                kind=kind,
                passed=outcome.passed,
                expected=kind,
                actual=f"{passed_count}/{len(results)}",
                reason=reason,
            ),
        )
        return outcome

    return Compiled(
        evaluate,
        tuple(state for child in children for state in child.states),
        tuple(read for child in children for read in child.reads),
    )


def _negation(cond: NotCondition, path: str, fields: dict[str, FieldSpec], tz: tzinfo) -> Compiled:
    child = compile_condition(cond.not_, f"{path}.not", fields, tz)

    def evaluate(event: ConversationExtracted, out: list[ConditionResult]) -> Outcome:
        slot = len(out)
        inner = child(event, out)
        if inner.unknown:
            outcome, reason = UNKNOWN, "the inner condition could not be evaluated, so `not` does not pass either"
        else:
            outcome = Outcome(not inner.passed)
            reason = f"inner condition {'passed' if inner.passed else 'failed'}"
        result = ConditionResult(
            path=path, kind="not", passed=outcome.passed, expected=False, actual=inner.passed, reason=reason
        )
        out.insert(slot, result)
        return outcome

    return Compiled(evaluate, child.states, child.reads)


def _end_reason(cond: EndReasonCondition, path: str) -> Compiled:
    spec = cond.end_reason
    negate = spec.not_in is not None
    names = frozenset(spec.not_in if spec.not_in is not None else spec.in_ or [])
    listed = sorted(names)
    expected = {"not_in" if negate else "in": listed}

    def evaluate(event: ConversationExtracted, out: list[ConditionResult]) -> Outcome:
        actual = event.conversation.end_reason.canonical.value
        passed = (actual in names) != negate
        verb = ("is not in" if negate else "is in") if passed else ("is in" if negate else "is not in")
        out.append(
            ConditionResult(
                path=path,
                kind="end_reason",
                passed=passed,
                expected=expected,
                actual=actual,
                reason=f"end reason {actual} {verb} {listed}",
            )
        )
        return Outcome(passed)

    return Compiled(evaluate, (_end_reason_state,), (_end_reason_state,))


def _ai(cond: AiCondition, path: str) -> Compiled:
    trigger, question, minimum = cond.trigger_id, cond.ai, cond.min_confidence

    def evaluate(event: ConversationExtracted, out: list[ConditionResult]) -> Outcome:
        def record(outcome: Outcome, actual: Any, reason: str) -> Outcome:
            out.append(
                ConditionResult(
                    path=path,
                    kind="ai",
                    passed=outcome.passed,
                    expected={"question": question, "answer": True},
                    actual=actual,
                    reason=reason,
                )
            )
            return outcome

        extraction = event.extraction
        if extraction.status != "ok":
            return record(UNKNOWN, None, f"extraction failed ({extraction.reason or 'no reason given'})")
        answer = extraction.triggers.get(trigger)
        if answer is None:
            return record(
                UNKNOWN,
                None,
                f"trigger {trigger} was not answered by the extractor "
                f"(extraction used revision {extraction.config_revision})",
            )
        if answer.answer and minimum is not None and (answer.confidence or 0.0) < minimum:
            return record(
                Outcome(False),
                answer.answer,
                f"answered yes with confidence {answer.confidence}, under min_confidence {minimum}",
            )
        why = f"the extractor answered {'yes' if answer.answer else 'no'}"
        why += f": {answer.rationale}" if answer.rationale else ""
        return record(Outcome(answer.answer), answer.answer, why)

    def state(event: ConversationExtracted) -> Hashable:
        # each model's fields through its __dict__, read once: every read of a pydantic model's attribute
        # goes through BaseModel's __getattr__ hook (not specialised, several lookups), a dict's item does not
        extraction = event.extraction.__dict__
        if extraction["status"] != "ok":
            return _failed(event)
        found = extraction["triggers"].get(trigger)
        if found is None:
            return _state("unanswered", exact(extraction["config_revision"]))
        answer = found.__dict__
        confidence, rationale = answer["confidence"], answer["rationale"]
        if confidence is None and type(rationale) is str and len(rationale) <= _LONGEST_REMEMBERED:
            return (answer["answer"], _NONE, rationale)  # what the line below gives, for the usual answer
        return _state(answer["answer"], exact(confidence), exact(rationale))

    return Compiled(evaluate, (state,), (("ai", trigger),))


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def _field_meta(cond: ConfidenceCondition | ReviewCondition, path: str) -> Compiled:
    if isinstance(cond, ConfidenceCondition):
        name, kind, test = cond.confidence.field, "confidence", cond.confidence
        expected: Any = {"op": test.op, "value": test.value}
        check: Callable[[Any], bool] = lambda v: v is not None and _compare(test.op, v, test.value)  # noqa: E731
    else:
        name, kind, expected = cond.needs_review, "needs_review", True
        check = lambda v: v is True  # noqa: E731

    def evaluate(event: ConversationExtracted, out: list[ConditionResult]) -> Outcome:
        extraction = event.extraction
        if extraction.status != "ok":
            out.append(
                ConditionResult(
                    path=path,
                    kind=kind,
                    passed=False,
                    expected=expected,
                    reason=f"extraction failed ({extraction.reason or 'no reason given'})",
                )
            )
            return UNKNOWN
        found = extraction.fields.get(name)
        actual = None if found is None else (found.confidence if kind == "confidence" else found.needs_review)
        passed = check(actual)
        reason = f"{kind} of {name!r} is {actual!r}" if found is not None else f"field {name!r} was not extracted"
        out.append(
            ConditionResult(path=path, kind=kind, passed=passed, expected=expected, actual=actual, reason=reason)
        )
        return Outcome(passed)

    def state(event: ConversationExtracted) -> Hashable:
        extraction = event.extraction
        if extraction.status != "ok":
            return _failed(event)
        found = extraction.fields.get(name)
        if found is None:
            return "absent"
        return exact(found.confidence if kind == "confidence" else found.needs_review)

    return Compiled(evaluate, (state,), ((kind, name),))


# ── Field conditions ──────────────────────────────────────────────────────────────────────────────


def compile_field(cond: FieldCondition, path: str, fields: dict[str, FieldSpec], tz: tzinfo = UTC) -> Compiled:
    ftype = (field_type(cond.field, fields) or ("any", None))[0]
    read = _reader(cond.field)
    needs_extraction = not cond.field.startswith(("conversation.", "dynamic_variables.", "platform."))
    test = _test(cond, ftype, tz)
    expected = {"op": cond.op, "value": cond.value}

    def evaluate(event: ConversationExtracted, out: list[ConditionResult]) -> Outcome:
        if needs_extraction and event.extraction.status != "ok":
            reason = f"extraction failed ({event.extraction.reason or 'no reason given'}); field conditions are false"
            out.append(ConditionResult(path=path, kind="field", passed=False, expected=expected, reason=reason))
            return UNKNOWN
        actual = coerce(ftype, read(event), tz)
        passed = test(actual)
        shown = _shown(actual)
        reason = f"{cond.field} = {_json(shown)}; {cond.op} {_json(cond.value)} is {'true' if passed else 'false'}"
        out.append(
            ConditionResult(path=path, kind="field", passed=passed, expected=expected, actual=shown, reason=reason)
        )
        return Outcome(passed)

    if needs_extraction:  # an extracted value: _reader's `extracted` inlined, on the extraction read once
        name, values = cond.field, "dynamic" if cond.field.startswith("dyn_") else "fields"

        def state(event: ConversationExtracted) -> Hashable:
            extraction = event.extraction.__dict__  # as the ai state reads it
            if extraction["status"] != "ok":
                return _failed(event)
            found = extraction[values].get(name)
            value = None if found is None else found.value
            return value if type(value) is str and len(value) <= _LONGEST_REMEMBERED else exact(value)

    else:

        def state(event: ConversationExtracted) -> Hashable:
            value = read(event)
            return value if type(value) is str and len(value) <= _LONGEST_REMEMBERED else exact(value)

    return Compiled(evaluate, (state,), (("field", cond.field),))


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def _shown(value: Any) -> Any:
    """A value as the trace shows it (`actual`, and in the reason): a long text cut at SHOWN_CHARS. A
    platform's summary or dynamic variable may be megabytes, and every condition on it carried it twice:
    four conditions on a 3.5 MB summary made a 31 MB trace, which no broker takes (the router's record
    was unproducible, dead-lettered with every action of the conversation)."""
    if isinstance(value, date):
        return value.isoformat()
    if type(value) is str and len(value) > SHOWN_CHARS:
        return f"{value[:SHOWN_CHARS]}… ({len(value):,} characters)"
    return value


def _reader(name: str) -> Callable[[ConversationExtracted], Any]:
    if name.startswith("conversation."):
        attr = name.removeprefix("conversation.")
        return lambda e: e.conversation.duration if attr == "duration_seconds" else getattr(e.conversation, attr)
    if name.startswith("dynamic_variables."):
        key = name.removeprefix("dynamic_variables.")
        return lambda e: dynamic_variable(e.conversation, key)
    if name.startswith("platform."):
        attribute = name.removeprefix("platform.")
        return lambda e: platform_value(e.conversation, attribute)

    dynamic = name.startswith("dyn_")

    def extracted(e: ConversationExtracted) -> Any:
        found = (e.extraction.dynamic if dynamic else e.extraction.fields).get(name)
        return None if found is None else found.value

    return extracted


def _test(cond: FieldCondition, ftype: str, tz: tzinfo) -> Callable[[Any], bool]:
    op, fold = cond.op, cond.ignore_case
    if op in ("in", "not_in", "==", "!="):
        options = [coerce(ftype, v, tz) for v in (cond.value if isinstance(cond.value, list) else [cond.value])]
        negate = op in ("!=", "not_in")
        return lambda a: any(_equal(a, o, fold) for o in options) != negate
    if op == "exists":
        wanted = cond.value is not False
        return lambda a: (a is not None) == wanted
    if op == "contains":
        needle = str(cond.value).casefold() if fold else str(cond.value)
        return lambda a: isinstance(a, str) and needle in (a.casefold() if fold else a)
    if op == "matches":
        pattern = compile_pattern(str(cond.value), ignore_case=fold)
        return lambda a: isinstance(a, str) and pattern.search(a[:MATCH_INPUT_LIMIT]) is not None
    bound = coerce(ftype, cond.value, tz)
    if ftype == "any":  # a quoted "18" is the number too: as text, "9" >= "18" would pass
        bound = _decimal(bound)
        if isinstance(bound, int | float) and not isinstance(bound, bool):
            return lambda a: a is not None and _compare(op, _decimal(a), bound)
    return lambda a: a is not None and _compare(op, a, bound)


def _decimal(value: Any) -> Any:
    """An untyped value's plain decimal text as a number; anything else unchanged (and not comparable)."""
    if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        return float(value)
    return value


def _equal(a: Any, b: Any, fold: bool) -> bool:
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    if fold and isinstance(a, str) and isinstance(b, str):
        return a.casefold() == b.casefold()
    return bool(a == b)


def _compare(op: str, a: Any, b: Any) -> bool:
    try:
        return _COMPARE[op](a, b) if not isinstance(a, bool) else False
    except TypeError:
        return False  # e.g. text against a number: not comparable, so the condition does not pass


def coerce(ftype: str, value: Any, tz: tzinfo = UTC) -> Any:
    """Text values of typed fields become their type (extractors are typed; this is a safety net); a
    date-time without a UTC offset is in `tz`, the agent's time zone."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        if ftype in ("number", "integer"):
            return float(text)
        if ftype == "date":
            return date.fromisoformat(text[:10])
        if ftype == "time":  # a time of day; with a UTC offset it stays text (no trace can print that time)
            parsed_time = time.fromisoformat(text)
            return parsed_time if parsed_time.tzinfo is None else value
        if ftype == "datetime":
            parsed = datetime.fromisoformat(text)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)
    except ValueError:
        return value
    if ftype == "boolean" and text.lower() in ("true", "false", "yes", "no"):
        return text.lower() in ("true", "yes")
    return value
