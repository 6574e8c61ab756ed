"""The heuristic provider's building blocks (utterances, what a field wants, relevance, evidence) and
its typed finders: phone, email, date, datetime, time, url and number fields.

A candidate value scores higher when the customer said it (not the agent), when its utterance names
the field's keywords, and when it answers an agent question that does. The best candidate wins (the
latest on a tie: people correct themselves). Confidence is the score, never above 0.7; a field with
no candidate is null.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Any, TypeVar

from schemas.events import ExtractedValue, Message
from services.extractor import values as vs
from services.extractor.heuristic import lexicon as lx

T = TypeVar("T")
MAX_CONFIDENCE = 0.7
EVIDENCE_CHARS = 300
TYPE_WORDS = frozenset(
    lx.words(
        "date time datetime number integer phone email format iso 8601 digit digits only string value values "
        "text boolean enum yes true false"
    )
)


@dataclass
class Utterance:
    index: int
    role: str
    text: str
    norm: str = ""
    stems: frozenset[str] = frozenset()
    found: dict[str, list[vs.Found[Any]]] = field(default_factory=dict)  # finder results by kind

    def __post_init__(self) -> None:
        self.norm = lx.normalize(self.text)
        self.stems = frozenset(lx.stem(w) for w in lx.tokens(self.text) if w not in lx.STOPWORDS)

    @property
    def customer(self) -> bool:
        return self.role == "customer"


def utterances(messages: Sequence[Message]) -> list[Utterance]:
    return [
        Utterance(i, m.role, m.text) for i, m in enumerate(messages) if m.role in ("customer", "agent", "human_agent")
    ]


@dataclass(frozen=True)
class Want:
    """What to find: a configured field, or a dyn_* variable with a kind guessed from its name."""

    name: str
    kind: str  # a FieldType, or time / summary / url / name / location (dyn_* only)
    description: str = ""
    values: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()
    keywords: tuple[str, ...] = field(default=())  # name and description stems
    groups: tuple[tuple[str, ...], ...] = field(default=())  # name stems; description stems

    @staticmethod
    def of(
        name: str, kind: str, description: str = "", values: Sequence[str] = (), examples: Sequence[str] = ()
    ) -> Want:
        own = lx.content_stems(name.replace("_", " "), drop=TYPE_WORDS)
        described = lx.content_stems(description, drop=TYPE_WORDS)
        words = tuple(dict.fromkeys([*own, *described]))
        groups = tuple(tuple(g) for g in (own, described) if g)
        return Want(name, kind, description, tuple(values), tuple(examples), words, groups)


@dataclass(frozen=True)
class Context:
    ref: datetime  # the conversation's end, in its own time zone
    country_code: str = "1"

    @property
    def day_first(self) -> bool:
        return self.country_code != "1"


def quote(u: Utterance, start: int | None = None) -> str:
    """The evidence: the utterance, or a window of it around `start` when it is long."""
    if len(u.text) <= EVIDENCE_CHARS:
        return u.text
    begin = max(0, min(start or 0, len(u.text)) - EVIDENCE_CHARS // 2)
    return u.text[begin : begin + EVIDENCE_CHARS]


def keyword_strength(u: Utterance, keywords: Sequence[str]) -> float:
    """Fraction of the keywords the utterance contains (by stem, or a long shared prefix); 0 unless at
    least two of them are there (one, for a single keyword): one common word proves nothing."""
    if not keywords:
        return 0.0
    hits = 0
    for k in keywords:
        if k in u.stems or (len(k) >= 5 and any(s.startswith(k[:5]) and lx.similar(k, s) for s in u.stems)):
            hits += 1
    return hits / len(keywords) if hits >= min(2, len(keywords)) else 0.0


def relevance(want: Want, u: Utterance, concepts: Sequence[lx.Concept]) -> float:
    """How much an utterance is about the field: a concept phrase, or its name's or its description's
    keywords (either group is enough)."""
    concept = any(c.phrases.search(u.norm) for c in concepts)
    return max([0.9 if concept else 0.0, *(keyword_strength(u, g) for g in want.groups)])


def question_part(u: Utterance) -> Utterance:
    """An agent turn's question sentences only: 'I'll call you back tomorrow. Anything else?' asks
    nothing about a callback."""
    asked = " ".join(s for s in re.split(r"(?<=[.!?])\s+", u.text) if s.rstrip().endswith("?"))
    return Utterance(u.index, u.role, asked)


def value(v: Any, u: Utterance, confidence: float, start: int | None = None) -> ExtractedValue:
    return ExtractedValue(value=v, evidence=quote(u, start), confidence=round(min(confidence, MAX_CONFIDENCE), 2))


NULL = ExtractedValue(value=None, evidence=None, confidence=None)


# ── typed values: phone, email, date, datetime, time, url, number ────────────────────────────────

Finder = Callable[[str, Context], list[vs.Found[Any]]]


def _fmt_time(t: time) -> str:
    return f"{(t.hour % 12) or 12}:{t.minute:02d} {'PM' if t.hour >= 12 else 'AM'}"


FINDERS: dict[str, Finder] = {
    "phone": lambda text, c: vs.find_phones(text, c.country_code),
    "email": lambda text, c: vs.find_emails(text),
    "date": lambda text, c: [vs.Found(f.value.isoformat(), f.start, f.end)
                             for f in vs.find_dates(text, c.ref.date(), c.day_first)],
    "datetime": lambda text, c: [vs.Found(f.value.isoformat(), f.start, f.end)
                                 for f in vs.find_datetimes(text, c.ref, c.day_first)],
    "time": lambda text, c: [vs.Found(f.value.isoformat("minutes"), f.start, f.end) for f in vs.find_times(text)],
    "time_text": lambda text, c: [vs.Found(_fmt_time(f.value), f.start, f.end) for f in vs.find_times(text)],
    "url": lambda text, c: vs.find_urls(text),
}  # fmt: skip


def find_in(u: Utterance, kind: str, ctx: Context) -> list[vs.Found[Any]]:
    """Finder results, computed once per utterance and kind (several fields share them)."""
    if kind not in u.found:
        u.found[kind] = FINDERS[kind](u.text, ctx) if _may_hold(kind, u.norm) else []
    return u.found[kind]


# A date or a time is only taken where the field's subject is talked about ("since this morning" is no
# follow-up date); a phone number the agent says is its own unless the field's subject is talked about.
NEEDS_CONTEXT = frozenset(("date", "datetime", "time", "time_text"))


def typed(want: Want, utts: list[Utterance], ctx: Context, kind: str) -> ExtractedValue:
    concepts = lx.concepts_for(f"{want.name} {want.description}")
    best: tuple[float, int, Any, Utterance, int] | None = None
    for i, u in enumerate(utts):
        if not (found := find_in(u, kind, ctx)):
            continue
        own = relevance(want, u, concepts) > 0
        asked = i > 0 and not utts[i - 1].customer and relevance(want, utts[i - 1], concepts) > 0
        if not (own or asked) and (kind in NEEDS_CONTEXT or (kind == "phone" and not u.customer)):
            continue
        score = (0.45 if u.customer else 0.35) + 0.15 * own + 0.1 * asked
        if best is None or (score, i) >= best[:2]:
            pick = _nearest_to_keyword(u, want, concepts, found) if own else found[0]
            best = (score, i, pick.value, u, pick.start)
    return NULL if best is None else value(best[2], best[3], best[0], best[4])


_DATE_HINT = re.compile(
    r"\d|\b(?:to(?:day|night|morrow)|week|mon|tue|wed|thu|fri|sat|sun|jan|feb|mar|apr|may|jun|jul|aug|sep|oct|"
    r"nov|dec|this (?:morning|afternoon|evening))"
)
_TIME_HINT = re.compile(r"\d|noon|midday|midnight|o'?clock|\b[ap]\.?m\b|morning|afternoon|evening")
_HINTS: dict[str, Callable[[str], bool]] = {
    "phone": lambda t: any(c.isdigit() for c in t) or " oh " in t or "five" in t or "nine" in t,
    "email": lambda t: "@" in t or " at " in t,
    "url": lambda t: "http" in t or "www" in t or "/" in t,
    "date": lambda t: _DATE_HINT.search(t) is not None,
    "datetime": lambda t: _TIME_HINT.search(t) is not None,
    "time": lambda t: _TIME_HINT.search(t) is not None,
    "time_text": lambda t: _TIME_HINT.search(t) is not None,
}


def _may_hold(kind: str, norm: str) -> bool:
    """Cheap pre-checks so a long transcript is not run through every regex."""
    return _HINTS[kind](norm) if kind in _HINTS else True


def number(want: Want, utts: list[Utterance], ctx: Context, integer: bool) -> ExtractedValue:
    """A number said near the field's keywords (same utterance, or the answer to a question about it);
    the customer's latest such number, else the agent's."""
    concepts = lx.concepts_for(f"{want.name} {want.description}")
    order = sorted(range(len(utts)), key=lambda i: (utts[i].customer, i), reverse=True)
    for i in order:
        u = utts[i]
        asked = i > 0 and not utts[i - 1].customer and relevance(want, utts[i - 1], concepts) >= 0.5
        if not (asked or relevance(want, u, concepts) >= 0.5):
            continue
        taken = [(f.start, f.end) for kind in ("phone", "date", "time") for f in find_in(u, kind, ctx)]
        found = [f for f in vs.find_numbers(u.text) if not any(a <= f.start < b for a, b in taken)]
        found = [f for f in found if not integer or f.value == int(f.value)]
        if found:
            pick = _nearest_to_keyword(u, want, concepts, found)
            v: float | int = int(pick.value) if integer or pick.value == int(pick.value) else pick.value
            return value(v, u, (0.5 if u.customer else 0.4) + 0.15 * asked, pick.start)
    return NULL


def _nearest_to_keyword(
    u: Utterance, want: Want, concepts: Sequence[lx.Concept], found: list[vs.Found[T]]
) -> vs.Found[T]:
    lowered = u.text.lower()
    spots = [m.start() for k in want.keywords for m in re.finditer(r"\b" + re.escape(k[:5]), lowered)]
    spots += [m.start() for c in concepts for m in c.phrases.finditer(lowered)]
    if not spots:
        return found[0]
    return min(found, key=lambda f: min(abs(f.start - s) for s in spots))
