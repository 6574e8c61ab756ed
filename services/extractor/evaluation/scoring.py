"""How right an extraction is, per value, per field and overall.

One score in [0, 1] per (case, field):

    expected empty, answer empty        1  (the transcript supports no value and none was given)
    expected empty, a value given       0  (a false value: it fires a wrong action)
    expected a value, answer empty      0  (a miss)
    expected a value, a value given     exact for enums (case-insensitive), booleans and numbers;
                                        normalised for dates, date-times, times, phones and emails;
                                        token F1 for free text (the best over equivalent spellings)

Overall and per field:
    accuracy   the mean score over every (case, field), empty labels included;
    precision  the mean score over the values given (how far a given value can be trusted);
    recall     the mean score over the labelled values (how many of them were found);
    empty_baseline  the accuracy of an extractor that never answers, for scale.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any

from schemas.events import Extraction
from services.extractor.evaluation.cases import Case
from services.extractor.values import normalize_phone

_TOKEN = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def token_f1(expected: str, got: str) -> float:
    a, b = tokens(expected), tokens(got)
    if not a or not b:
        return float(a == b)
    common = sum((Counter(a) & Counter(b)).values())
    if common == 0:
        return 0.0
    p, r = common / len(b), common / len(a)
    return 2 * p * r / (p + r)


def _norm(kind: str, v: Any, country_code: str) -> Any:
    """The comparable form of a value of this type; None when it is not one."""
    if v is None:
        return None
    text = str(v).strip()
    try:
        if kind == "date":
            return date.fromisoformat(text[:10])
        if kind == "datetime":
            if len(text) == 10:  # a date alone stays a date (answer.py): it equals the same date, no time
                return date.fromisoformat(text)
            parsed = datetime.fromisoformat(text)
            return parsed if parsed.tzinfo else None
        if kind == "time":
            return time.fromisoformat(text).replace(second=0, microsecond=0)
        if kind in ("integer", "number"):
            if isinstance(v, bool):
                return None
            return float(text.replace(",", "").lstrip("$"))
    except ValueError:
        return None
    if kind == "boolean":
        return v if isinstance(v, bool) else {"true": True, "false": False}.get(text.lower())
    if kind == "phone":
        return normalize_phone(text, country_code)
    return text.lower()


def value_score(kind: str, expected: Sequence[Any], got: Any, country_code: str = "1") -> float:
    if not expected:
        return 1.0 if got is None else 0.0
    if got is None:
        return 0.0
    if kind == "string":
        return max(token_f1(str(e), str(got)) for e in expected)
    mine = _norm(kind, got, country_code)
    if mine is None:
        return 0.0
    for e in expected:
        theirs = _norm(kind, e, country_code)
        if theirs is None:
            continue
        if isinstance(mine, float) and isinstance(theirs, float):
            if math.isclose(mine, theirs, rel_tol=1e-6, abs_tol=1e-6):
                return 1.0
        elif mine == theirs:
            return 1.0
    return 0.0


@dataclass
class Tally:
    n: int = 0
    score: float = 0.0
    given: int = 0
    given_score: float = 0.0
    labelled: int = 0
    labelled_score: float = 0.0
    empty_labels: int = 0

    def add(self, s: float, expected: bool, given: bool) -> None:
        self.n += 1
        self.score += s
        if given:
            self.given += 1
            self.given_score += s
        if expected:
            self.labelled += 1
            self.labelled_score += s
        else:
            self.empty_labels += 1

    def as_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "accuracy": _ratio(self.score, self.n),
            "precision": _ratio(self.given_score, self.given),
            "recall": _ratio(self.labelled_score, self.labelled),
            "given": self.given,
            "labelled": self.labelled,
            "empty_baseline": _ratio(self.empty_labels, self.n),
        }


def _ratio(a: float, b: int) -> float | None:
    return round(a / b, 4) if b else None


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 1)


@dataclass
class Scorecard:
    fields: dict[str, Tally] = field(default_factory=dict)
    types: dict[str, Tally] = field(default_factory=dict)
    overall: Tally = field(default_factory=Tally)
    triggers_right: int = 0
    triggers: int = 0
    review_right: int = 0
    reviewed: int = 0
    failed: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    cases: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, case: Case, extraction: Extraction, latency_ms: float, country_code: str = "1") -> None:
        self.cases += 1
        self.latencies_ms.append(latency_ms)
        u = extraction.usage
        self.prompt_tokens += u.prompt_tokens
        self.completion_tokens += u.completion_tokens
        self.cached_tokens += u.cached_prompt_tokens
        self.cost_usd += u.cost_usd
        if extraction.status == "failed":
            self.failed += 1
            self.failures[(extraction.reason or "failed")[:120]] += 1
        types = {f.name: f.type for f in case.spec.fields}
        row: dict[str, Any] = {"id": case.id, "status": extraction.status, "fields": {}}
        for name, expected in case.expected.items():
            got = extraction.fields.get(name)
            value = got.value if got is not None else None
            s = value_score(types[name], expected, value, country_code)
            for tally in (self.fields.setdefault(name, Tally()), self.types.setdefault(types[name], Tally()),
                          self.overall):  # fmt: skip
                tally.add(s, bool(expected), value is not None)
            if value is not None and got is not None:  # was the review flag right about this value?
                self.reviewed += 1
                self.review_right += got.needs_review == (s < 1.0)
            if s < 1.0:
                row["fields"][name] = {"expected": list(expected), "got": value, "score": round(s, 3)}
        for trigger_id, want in case.triggers.items():
            answer = extraction.triggers.get(trigger_id)
            self.triggers += 1
            self.triggers_right += answer is not None and answer.answer == want
            if answer is None or answer.answer != want:
                row.setdefault("triggers", {})[trigger_id] = {"expected": want, "got": answer and answer.answer}
        self.rows.append(row)

    def as_json(self) -> dict[str, Any]:
        calls = max(self.cases, 1)
        return {
            "cases": self.cases,
            "failed": self.failed,
            "failures": dict(self.failures.most_common(10)),
            "overall": self.overall.as_json(),
            "by_type": {k: v.as_json() for k, v in sorted(self.types.items())},
            "fields": {k: v.as_json() for k, v in sorted(self.fields.items())},
            "triggers": {"n": self.triggers, "accuracy": _ratio(self.triggers_right, self.triggers)},
            "review_flag": {"n": self.reviewed, "accuracy": _ratio(self.review_right, self.reviewed)},
            "latency_ms": {"p50": _quantile(self.latencies_ms, 0.5), "p99": _quantile(self.latencies_ms, 0.99)},
            "per_call": {
                "prompt_tokens": round(self.prompt_tokens / calls, 1),
                "completion_tokens": round(self.completion_tokens / calls, 1),
                "cached_share": _ratio(self.cached_tokens, self.prompt_tokens),
                "cost_usd": round(self.cost_usd / calls, 8),
            },
        }


def compare(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Per field and overall, each metric before and after and the change (after - before)."""

    def delta(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any]:
        out = {}
        for metric in ("accuracy", "precision", "recall"):
            x, y = (a or {}).get(metric), (b or {}).get(metric)
            out[metric] = {"before": x, "after": y, "change": None if x is None or y is None else round(y - x, 4)}
        return out

    names = sorted(set(before.get("fields", {})) | set(after.get("fields", {})))
    return {
        "overall": delta(before.get("overall"), after.get("overall")),
        "fields": {n: delta(before["fields"].get(n), after["fields"].get(n)) for n in names},
        "triggers": {
            "before": before.get("triggers", {}).get("accuracy"),
            "after": after.get("triggers", {}).get("accuracy"),
        },
        "latency_ms": {"before": before.get("latency_ms"), "after": after.get("latency_ms")},
    }
