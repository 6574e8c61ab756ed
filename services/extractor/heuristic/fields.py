"""The heuristic provider's building blocks (utterances, what a field wants, relevance, evidence) and
its typed finders: phone, email, date, datetime, time, url and number fields.

A candidate value scores higher when the customer said it (not the agent), when its utterance names
the field's keywords, and when it answers an agent question that does. The best candidate wins (the
latest on a tie: people correct themselves). Confidence is the score, never above 0.7; a field with
no candidate is null.
"""

from __future__ import annotations

import re
from bisect import bisect_left
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
    sole: frozenset[str] = frozenset()  # the value kinds exactly one field of the spec has

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


# "no wait, Friday", "actually the 7th", "make it 7 pm instead": what follows replaces what came before
CORRECTION = re.compile(
    r"\b(?:actually|no,? wait|wait,? no|sorry|i mean|rather|instead|make it|change (?:it|that) to|scratch that|"
    r"on second thought|let'?s say|better)\b",
    re.I,
)
_AGREES = re.compile(r"^\W*(?:yes|yeah|yep|yup|correct|right|exactly|perfect|sounds good|that works|"
                     r"that'?s (?:right|correct|perfect)|works for me)\b", re.I)  # fmt: skip


def agreed(utts: list[Utterance], i: int) -> bool:
    """The customer's next turn agrees with what the agent said in turn i. Only the next utterance can
    be that turn (copying the rest of the transcript to look further, for each turn, was quadratic)."""
    after = utts[i + 1] if i + 1 < len(utts) else None
    return (
        after is not None
        and after.customer
        and after.index == utts[i].index + 1
        and _AGREES.match(after.text) is not None
    )


def pick(u: Utterance, want: Want, concepts: Sequence[lx.Concept], found: list[vs.Found[T]], own: bool) -> vs.Found[T]:
    """Which of an utterance's values: the one after a correction ('the 1st... actually the 7th'), else
    the one nearest the field's words, else the first."""
    if len(found) > 1:
        first, last = min(f.start for f in found), max(f.start for f in found)
        for cue in CORRECTION.finditer(u.text):  # a value before the cue and one after it
            if first < cue.start() and last >= cue.end():
                return next(f for f in found if f.start >= cue.end())
    return _nearest_to_keyword(u, want, concepts, found) if own else found[0]


_PAST = re.compile(r"\b(?:since|last|ago|was|were|had|did|back on|before|used to)\s+(?:\w+\s+){0,2}$", re.I)


def typed(want: Want, utts: list[Utterance], ctx: Context, kind: str) -> ExtractedValue:
    """The customer's latest value of the kind said about the field (in the same turn, or answering the
    agent's question about it, or correcting a value just said, or one the agent repeats while talking
    about the field); the agent's own only when the customer says it too or agrees. A date or time
    needs the field's subject nearby unless the spec has one field of that kind; a value that cannot be
    tied to the field is left empty."""
    concepts = lx.concepts_for(f"{want.name} {want.description}")
    sole = want.kind in ctx.sole
    rows = []
    for i, u in enumerate(utts):
        if found := [f for f in find_in(u, kind, ctx) if not (kind in NEEDS_CONTEXT and _past(u.text, f.start))]:
            own = relevance(want, u, concepts) > 0
            asked = i > 0 and not utts[i - 1].customer and relevance(want, utts[i - 1], concepts) > 0
            rows.append((i, u, found, own, asked))
    said = {f.value for _, u, found, _, _ in rows if u.customer for f in found}
    confirmed = {f.value for _, u, found, own, asked in rows if not u.customer and (own or asked) for f in found}
    best: tuple[tuple[int, int, int], float, Any, Utterance, int] | None = None
    previous_tied = -10
    for i, u, found, own, asked in rows:
        corrects = CORRECTION.search(u.text) is not None and i - previous_tied <= 2
        echoed = u.customer and any(f.value in confirmed for f in found)
        tied = own or asked or corrects or echoed
        backed = tied and (agreed(utts, i) or any(f.value in said for f in found))
        if not u.customer and not backed and (kind in NEEDS_CONTEXT or not tied):
            continue
        if not tied and (kind in NEEDS_CONTEXT or kind == "phone") and not (sole and u.customer):
            continue
        if tied:
            previous_tied = i
        score = (0.45 if u.customer else 0.35) + 0.15 * own + 0.1 * (asked or corrects or echoed)
        rank = (int(u.customer), int(tied), i)  # the customer's word, tied to the field, the latest
        if best is None or rank > best[0]:
            choice = pick(u, want, concepts, found, own)
            if echoed and not (own or asked or corrects):
                choice = next(f for f in found if f.value in confirmed)
            best = (rank, score, choice.value, u, choice.start)
    return NULL if best is None else value(best[2], best[3], best[1], best[4])


def _past(text: str, start: int) -> bool:
    """'since Monday', 'we had it on the 3rd': a date in the past is no appointment or follow-up."""
    return _PAST.search(text[max(0, start - 24) : start]) is not None


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


# matched at a number's end (pattern.match(text, pos): the rest of a long utterance is never copied per number)
_MONEY_OR_MEASURE = re.compile(
    r"\s*(?:dollars?|bucks|usd|euros?|pounds?|cents?|percent|%|per\s+(?:cent|hour|month|user|year)|a\s+month|"
    r"an?\s+hour|/\s*(?:mo|month|hr|hour|user))\b",
    re.I,
)
_STARS = re.compile(r"[\s-]*stars?\b", re.I)
_WORD_AFTER = re.compile(r"[\s-]*([a-z]+)", re.I)


def number(want: Want, utts: list[Utterance], ctx: Context, integer: bool) -> ExtractedValue:
    """A number said near the field's keywords (same utterance, or the answer to a question about it):
    the customer's latest such number, else one the agent said and the customer agreed to. Clock times,
    dates, phone numbers and amounts of money are not counts."""
    concepts = lx.concepts_for(f"{want.name} {want.description}")
    money = bool(re.search(r"amount|price|cost|budget|fare|fee|balance|total|salary|pay", want.name))
    order = sorted(range(len(utts)), key=lambda i: (utts[i].customer, i), reverse=True)
    for i in order:
        u = utts[i]
        asked = i > 0 and not utts[i - 1].customer and relevance(want, utts[i - 1], concepts) >= 0.5
        if not u.customer and not agreed(utts, i):
            continue
        taken = [f for kind in ("phone", "date", "time") for f in find_in(u, kind, ctx)]
        found = _untaken(vs.find_numbers(u.text), taken)
        if not (asked or relevance(want, u, concepts) >= 0.5):  # else only "4 people" for a count of people
            found = [f for f in found if _counts(want, u.text, f.end)]
        if not money:
            found = [f for f in found if not _is_money(u.text, f)]
        if "year" in want.name:
            found = [f for f in found if 1900 <= f.value <= 2100]
        if not re.search(r"star|rating", want.name):  # "a 4-star hotel for 2 rooms": 4 is no room count
            found = [f for f in found if not _STARS.match(u.text, f.end)]
        # a 400-digit number is an infinite float, and over 64 bits no record downstream can write it
        found = [f for f in found if abs(f.value) < 2**63 and (not integer or f.value == int(f.value))]
        if found:
            chosen = pick(u, want, concepts, found, True)
            v: float | int = int(chosen.value) if integer or chosen.value == int(chosen.value) else chosen.value
            return value(v, u, (0.5 if u.customer else 0.4) + 0.15 * asked, chosen.start)
    return NULL


def _untaken(numbers: list[vs.Found[float]], taken: list[vs.Found[Any]]) -> list[vs.Found[float]]:
    """The numbers that start outside every span taken by a phone, date or time (marked by position: a
    test against each span was quadratic in a long utterance full of both)."""
    if not taken:
        return numbers
    covered = bytearray(max(f.end for f in taken))
    for f in taken:
        covered[f.start : f.end] = b"\x01" * (f.end - f.start)
    return [f for f in numbers if f.start >= len(covered) or not covered[f.start]]


def _counts(want: Want, text: str, end: int) -> bool:
    """The number (ending at `end`) is followed by what the field counts: '4 people' for party_size."""
    m = _WORD_AFTER.match(text, end)
    return m is not None and lx.stem(m.group(1).lower()) in want.keywords


def _is_money(text: str, f: vs.Found[float]) -> bool:
    return "$" in text[max(0, f.start - 2) : f.start + 1] or _MONEY_OR_MEASURE.match(text, f.end) is not None


def _nearest_to_keyword(
    u: Utterance, want: Want, concepts: Sequence[lx.Concept], found: list[vs.Found[T]]
) -> vs.Found[T]:
    lowered = u.text.lower()
    spots = [m.start() for k in want.keywords for m in re.finditer(r"\b" + re.escape(k[:5]), lowered)]
    spots += [m.start() for c in concepts for m in c.phrases.finditer(lowered)]
    if not spots:
        return found[0]
    spots.sort()

    def distance(f: vs.Found[T]) -> int:  # to the nearest spot, by bisection (each spot for each value: quadratic)
        k = bisect_left(spots, f.start)
        if k == len(spots):
            return f.start - spots[k - 1]
        return min(spots[k] - f.start, f.start - spots[k - 1]) if k else spots[k] - f.start

    return min(found, key=distance)
