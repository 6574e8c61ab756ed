"""The heuristic provider's enum and boolean fields.

An enum value scores the phrases that say it (its own name, the words the field's description gives
it, a vocabulary for what the field is about, longer phrases first so 'not interested' is not also
'interested'); a boolean is the latest decisive customer turn: a mention of the field's subject
(negated, or a negative phrase: no), or a yes/no reply to an agent question about it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from schemas.events import ExtractedValue
from services.extractor.heuristic import lexicon as lx
from services.extractor.heuristic.fields import NULL, Utterance, Want, keyword_strength, question_part, relevance, value


def enum(want: Want, utts: list[Utterance]) -> ExtractedValue:
    """Each allowed value scores its phrases (its name, the description's words for it, a lexicon);
    longer phrases first, so 'not interested' is not also 'interested'."""
    phrases = _enum_phrases(want)
    if not phrases:
        return NULL
    pattern = re.compile(r"\b(?:" + "|".join(_phrase_re(p) for p in phrases) + r")\b")
    hits: dict[str, list[tuple[int, Utterance, int]]] = {}
    for i, u in enumerate(utts):
        if not u.customer:
            continue
        for m in pattern.finditer(u.norm):
            negation_in_phrase = any(w in lx.NEGATORS for w in m.group(0).split())
            if not negation_in_phrase and lx.negated(u.norm, m.start()):
                continue
            hits.setdefault(_owner(m.group(0), phrases), []).append((i, u, m.start()))
    if not hits:
        return NULL
    # a tie goes to the value said first: a call's opening states its purpose
    chosen = max(hits, key=lambda v: (len(hits[v]), -hits[v][0][0]))
    _, u, start = hits[chosen][0]
    return value(chosen, u, 0.4 + 0.1 * len(hits[chosen]) - 0.1 * (len(hits) - 1), start)


CATCH_ALL = frozenset(("other", "unknown", "none", "n/a", "na", "unspecified", "not applicable"))


def _phrase_re(phrase: str) -> str:
    """A single word matches its inflections ('charges' ~ 'charged'); a phrase matches as written."""
    stem = lx.stem(phrase)
    if " " in phrase or len(stem) < 5:
        return re.escape(phrase)
    return re.escape(stem) + r"(?:e|s|es|ed|ing|ion|ions)?"


def _owner(said: str, phrases: dict[str, str]) -> str:
    if said in phrases:
        return phrases[said]
    return next(v for p, v in phrases.items() if re.fullmatch(_phrase_re(p), said))


def _enum_phrases(want: Want) -> dict[str, str]:
    """phrase -> allowed value."""
    out: dict[str, str] = {}
    lexicon = lx.enum_lexicon(f"{want.name} {want.description}", want.values)
    for v in want.values:
        spoken = lx.normalize(v.replace("_", " ").replace("-", " "))
        for phrase in lexicon.get(v, lexicon.get(spoken, ())):
            out.setdefault(phrase, v)
        for m in re.finditer(
            rf"\b{re.escape(spoken)}\b\s*(?:[:=(]|means|-|if)\s*([^;.)\n]+)", lx.normalize(want.description)
        ):
            for phrase in re.split(r",|\bor\b|\band\b|/", m.group(1)):
                if len(phrase.strip()) >= 3:
                    out.setdefault(phrase.strip(), v)
        if spoken not in CATCH_ALL:
            out.setdefault(spoken, v)
    out.pop("", None)  # a value with no words ('', '_') would match at every word boundary
    return dict(sorted(out.items(), key=lambda kv: len(kv[0]), reverse=True))


def boolean(want: Want, utts: list[Utterance]) -> ExtractedValue:
    """The latest decisive utterance: a customer mention (negated -> False), or a yes/no answer to an
    agent question about the field."""
    concepts = lx.concepts_for(f"{want.name} {want.description}")
    for i in range(len(utts) - 1, -1, -1):
        u = utts[i]
        if not u.customer:
            continue
        if (found := _mention(want, u, concepts)) is not None and not _inside_question(u.text, found[0], u.norm):
            start, strength, said = found
            negative = any(w in lx.NEGATORS for w in said.split()) or lx.negated(u.norm, start)
            return value(not negative, u, 0.35 + 0.3 * strength, start)
        if i > 0 and _asks(utts[i - 1]) and relevance(want, question_part(utts[i - 1]), concepts) >= 0.5:
            answer = lx.answer_polarity(u.text)
            if answer is not None:
                return value(answer, u, 0.65)
    return NULL


def _inside_question(text: str, start: int, norm: str) -> bool:
    """'Does it allow pets?': the customer asks about the subject, which states no value."""
    position = start * len(text) // max(len(norm), 1)  # norm and text differ little in length
    end = re.search(r"[.!?]", text[position:])
    return end is not None and end.group(0) == "?"


def _asks(u: Utterance) -> bool:
    return not u.customer and "?" in u.text


def _mention(want: Want, u: Utterance, concepts: Sequence[lx.Concept]) -> tuple[int, float, str] | None:
    """(where, strength, the words) of the field's subject in a customer turn."""
    for c in concepts:
        if m := c.phrases.search(u.norm):
            return m.start(), 0.9, m.group(0)
    strength = max((keyword_strength(u, g) * (0.8 if len(g) == 1 else 1.0) for g in want.groups), default=0.0)
    if strength >= 0.5:
        first = min((u.norm.find(k[:5]) for k in want.keywords if k[:5] in u.norm), default=0)
        return max(first, 0), strength, ""
    return None
