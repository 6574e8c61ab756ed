"""The heuristic provider's string fields: names, companies, addresses, links, case numbers, and the
sentence most about a field when nothing more specific fits."""

from __future__ import annotations

import re

from schemas.events import ExtractedValue
from services.extractor import values as vs
from services.extractor.heuristic import lexicon as lx
from services.extractor.heuristic.fields import (
    FINDERS,
    NULL,
    Context,
    Utterance,
    Want,
    question_part,
    relevance,
    typed,
    value,
)

_CAP = r"[A-Z][a-zA-Z'\-]*[a-z]"  # Tom, O'Brien, McDonald, Mary-Jane; not HVAC
_PERSON = rf"({_CAP}(?:\s+{_CAP}){{0,2}})"
_NAME = re.compile(
    rf"\b(?:[Mm]y name is|[Mm]y name's|[Tt]his is|I am|I'm|[Ii]t's|[Cc]all me)\s+{_PERSON}"
    rf"|^(?:Hi|Hello|Hey),?\s+{_PERSON}\s*(?:,|\.|$)"
)
_NAME_ANY_CASE = re.compile(r"\bmy name(?: is|'s)\s+([a-z'\-]+(?:\s+[a-z'\-]+)?)", re.I)
_ASKS_NAME = re.compile(r"your name|who am i speaking|who is calling|who's calling|who is this")
_NAME_REPLY = re.compile(rf"^(?:(?:It's|This is|Yes|Yeah|Sure|Hi)[,\s]+)*{_PERSON}\b")
_COMPANY = re.compile(
    rf"\b(?:from|with|at|work for|company is|calling from)\s+({_CAP}(?:\s+(?:{_CAP}|&|[A-Z]{{2,}}))*)"
    rf"|^(?:Hi|Hello|Hey),?\s+{_CAP}(?:\s+{_CAP})*,\s+({_CAP}(?:\s+(?:{_CAP}|&|[A-Z]{{2,}}))*)"
)
_ADDRESS = re.compile(
    r"\b\d{1,6}\s+(?:[A-Za-z]+\s){1,4}(?:street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|way|"
    r"court|ct|place|pl)\b\.?(?:,?\s+[A-Z][a-z]+)?",
    re.I,
)
NOT_NAMES = frozenset(lx.words("calling looking trying just here sorry good fine okay sure not interested"))


def _person(m: re.Match[str]) -> str | None:
    words = [w for w in (m.group(m.lastindex or 1) or "").split() if w.lower() not in lx.STOPWORDS]
    return " ".join(w[0].upper() + w[1:] for w in words) if words and words[0].lower() not in NOT_NAMES else None


def name(utts: list[Utterance]) -> ExtractedValue:
    """'my name is', 'this is', 'Hi, <Name>,' in what the customer says, or the reply to 'your name?'."""
    for pattern in (_NAME, _NAME_ANY_CASE):
        for i, u in enumerate(utts):
            if not u.customer:
                continue
            for m in pattern.finditer(u.text):
                if found := _person(m):
                    return value(found, u, 0.6, m.start())
            reply = _NAME_REPLY.match(u.text) if i > 0 and _ASKS_NAME.search(utts[i - 1].norm) else None
            if reply and (found := _person(reply)):
                return value(found, u, 0.55, reply.start())
    return NULL


def pattern_value(utts: list[Utterance], pattern: re.Pattern[str], confidence: float) -> ExtractedValue:
    for u in utts:
        if u.customer and (m := pattern.search(u.text)):
            found = next((g for g in m.groups() if g), m.group(0)) if m.groups() else m.group(0)
            return value(found.strip().rstrip("."), u, confidence, m.start())
    return NULL


def sentence(want: Want, utts: list[Utterance]) -> ExtractedValue:
    """The customer sentence that is most about the field (its concept phrases, then its keywords)."""
    concepts = lx.concepts_for(f"{want.name} {want.description}")
    best: tuple[float, Utterance] | None = None
    for u in utts:
        if u.customer and (r := relevance(want, u, concepts)) >= 0.5 and (best is None or r > best[0]):
            best = (r, u)
    if best is None:
        return NULL
    strength, u = best
    sentences = re.split(r"(?<=[.!?])\s+", u.text)
    about = [s for s in sentences if any(c.phrases.search(lx.normalize(s)) for c in concepts)]
    keyed = [s for s in sentences if any(k[:5] in s.lower() for k in want.keywords)]
    text = (about or keyed or [max(sentences, key=len)])[0][:200]
    return value(text, u, 0.3 + 0.3 * strength, u.text.find(text))


REFERENCE = re.compile(r"\b(?=[A-Z0-9-]*\d)(?=[A-Z0-9-]*[A-Z])[A-Z0-9][A-Z0-9-]{3,}\b|\b\d{5,}\b")
REFERENCE_NAME = re.compile(r"(order|ticket|reference|confirmation|account|case|booking|claim)_?(number|id|no|ref)")


def reference(want: Want, utts: list[Utterance]) -> ExtractedValue:
    """A case or order number (CASE-12345, 48213) said where the field's subject is talked about."""
    concepts = lx.concepts_for(want.name)
    for i, u in enumerate(utts):
        asked = i > 0 and utts[i - 1].customer != u.customer and relevance(want, utts[i - 1], concepts) > 0
        if (asked or relevance(want, u, concepts) > 0) and (m := REFERENCE.search(u.text)):
            return value(m.group(0), u, 0.55 if u.customer else 0.45, m.start())
    return NULL


def string(want: Want, utts: list[Utterance], ctx: Context) -> ExtractedValue:
    words = set(want.name.split("_"))
    examples = " ".join(want.examples)
    if want.kind == "name" or (words & {"name", "caller", "contact"} and not words & {"company", "business"}):
        return name(utts)
    if words & {"company", "business", "organization", "organisation", "employer"}:
        return pattern_value(utts, _COMPANY, 0.5)
    if want.kind == "location" or words & {"address", "location", "street"}:
        return pattern_value(utts, _ADDRESS, 0.55)
    if want.kind == "url" or words & {"link", "url", "website"} or vs.URL.search(examples):
        return typed(want, utts, ctx, "url")
    if want.kind == "reference" or REFERENCE_NAME.search(want.name):
        return reference(want, utts)
    for kind in ("email", "phone", "date"):
        if examples and FINDERS[kind](examples, ctx):
            return typed(want, utts, ctx, kind)
    if words & FREE_TEXT or want.kind == "summary":
        return sentence(want, utts)
    return entity(want, utts)


# fields whose value is a sentence; any other text field wants a name, a place, a title: never a sentence
FREE_TEXT = frozenset(lx.words(
    "summary reason description notes note issue problem request details detail comment comments feedback "
    "message question complaint topic subject explanation outcome resolution symptoms concern"
))  # fmt: skip
_PLACE_CUES = {
    "from": ("origin", "from", "departure", "leaving", "pickup", "start"),
    "to": ("destination", "to", "where", "arrival", "dropoff", "going"),
    "in|at|around|near": ("city", "location", "area", "where", "place", "town", "venue", "address"),
}
_PROPER = r"((?:[A-Z][\w'&.-]*|\d+[\w-]*)(?:\s+(?:of|the|de|la|and|&|on|upon)?\s*(?:[A-Z][\w'&.-]*|\d+[\w-]*))*)"
_SKIP = frozenset(lx.words(
    "i i'm i'd i'll i've hi hello hey yes yeah no okay ok sure please thanks thank can could would will "
    "what which where when how is are do does the a an my we our that this it it's monday tuesday wednesday "
    "thursday friday saturday sunday january february march april may june july august september october "
    "november december today tomorrow tonight next"
))  # fmt: skip


def _proper(text: str) -> list[tuple[int, str]]:
    """Capitalised phrases (names of places, people, venues, titles), without sentence-opening words."""
    out = []
    for m in re.finditer(_PROPER, text):
        words = m.group(1).split()
        while words and words[0].lower().strip(".,") in _SKIP:
            words = words[1:]
        while words and words[-1].lower().strip(".,") in _SKIP | {"of", "the", "and", "&", "on"}:
            words = words[:-1]
        phrase = " ".join(words).strip(".,")
        if phrase and not phrase.isdigit():
            out.append((m.start() + m.group(1).find(words[0]), phrase))
    return out


def entity(want: Want, utts: list[Utterance]) -> ExtractedValue:
    """A place after its preposition ('to Seattle' for a destination, 'in San Jose' for a city), or the
    customer's short answer to the agent's question about the field ('Which city?' 'San Jose.'). Else
    empty: a guess fires a wrong action."""
    concepts = lx.concepts_for(f"{want.name} {want.description}")
    words = set(want.name.split("_"))
    cues = [cue for cue, names in _PLACE_CUES.items() if words & set(names)]
    for i in range(len(utts) - 1, -1, -1):
        u = utts[i]
        if not u.customer:
            continue
        for cue in cues:
            if m := re.search(rf"\b(?:{cue})\s+{_PROPER}", u.text):
                found = _proper(m.group(1))
                if found and found[0][0] == 0:
                    return value(found[0][1], u, 0.5, m.start(1))
        asked = i > 0 and not utts[i - 1].customer and relevance(want, question_part(utts[i - 1]), concepts) >= 0.5
        if asked and len(u.text.split()) <= 8 and (names := _proper(u.text)):
            return value(names[-1][1], u, 0.45, names[-1][0])
    return NULL
