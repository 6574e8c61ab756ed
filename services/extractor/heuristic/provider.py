"""The offline `heuristic` provider: real extraction without a model, from patterns and keywords.

Fields by type (fields.py: typed values; choices.py: enums and booleans; strings.py: text), dyn_*
variables by what their names say (dyn_appointment_date is a date), natural-language triggers by
keyword and concept overlap between the question and what the customer said (with negation: "no need
to call me back" answers "asked to be called back?" with no), dynamic recipients by overlap with each
rule's description, and an extractive summary: the customer's first request and the agent's outcome
sentence. Evidence is always the utterance a value came from, and confidence never exceeds 0.7. Pure
and synchronous: the handler runs it in a thread for long transcripts.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from schemas.agents import ExtractionSpec, RecipientRoute
from schemas.events import ExtractedValue, Extraction, Message, TriggerAnswer
from services.extractor.heuristic import choices, strings
from services.extractor.heuristic import fields as fx
from services.extractor.heuristic import lexicon as lx
from services.extractor.heuristic.fields import Context, Utterance, Want

PROVIDER = "heuristic"


def extract(spec: ExtractionSpec, messages: Sequence[Message], ended_at: datetime, country_code: str) -> Extraction:
    """Everything the spec asks for; `ended_at` must carry the conversation's time zone."""
    utts = fx.utterances(messages)
    kinds = Counter(f.type for f in spec.fields)
    ctx = Context(ref=ended_at, country_code=country_code, sole=frozenset(k for k, n in kinds.items() if n == 1))
    return Extraction(
        status="ok",
        provider=PROVIDER,
        config_revision=spec.config_revision,
        fields={
            f.name: find(Want.of(f.name, f.type, f.description, f.values or (), f.examples), utts, ctx)
            for f in spec.fields
        },
        dynamic={name: find(dyn_want(name), utts, ctx) for name in spec.dynamic_variables},
        triggers={t.id: answer_trigger(t.question, utts) for t in spec.triggers},
        recipients={r.id: choose_recipients(r, utts) for r in spec.recipient_routes},
        summary=summarize(utts) if spec.summary else None,
    )


def find(want: Want, utts: list[Utterance], ctx: Context) -> ExtractedValue:
    if want.kind in fx.FINDERS:
        return fx.typed(want, utts, ctx, want.kind)
    if want.kind in ("number", "integer"):
        return fx.number(want, utts, ctx, integer=want.kind == "integer")
    if want.kind == "boolean":
        return choices.boolean(want, utts)
    if want.kind == "enum":
        return choices.enum(want, utts)
    if want.kind == "summary":
        found = request(utts)
        return fx.NULL if found is None else fx.value(found[0], found[1], 0.5, 0)
    return strings.string(want, utts, ctx)


_DYN_KINDS: tuple[tuple[str, str], ...] = (
    (r"datetime|date_time|when", "datetime"), (r"date|day", "date"), (r"time", "time_text"), (r"email", "email"),
    (r"phone|mobile|cell|callback_number|contact_number", "phone"), (r"link|url|website", "url"),
    (r"(order|ticket|reference|confirmation|account|case)_(number|id|no)", "reference"),
    (r"severity|priority|urgency", "severity"), (r"sentiment|mood", "sentiment"),
    (r"topic|category|subject|type|area", "category"),
    (r"summary|issue|reason|problem|request|description", "summary"), (r"location|address|place", "location"),
    (r"name", "name"), (r"amount|budget|price|cost|count|quantity|seats|total", "number"),
)  # fmt: skip
_DYN_ENUMS = {
    "severity": ("critical", "high", "medium", "low"),
    "sentiment": ("positive", "neutral", "negative"),
    "category": tuple(lx.CATEGORY_WORDS),
}


def dyn_want(variable: str) -> Want:
    """dyn_appointment_date -> a date; dyn_severity -> one of critical/high/medium/low; else a string."""
    name = variable.removeprefix("dyn_")
    kind = next((k for pattern, k in _DYN_KINDS if re.search(pattern, name)), "string")
    if kind in _DYN_ENUMS:  # the description names the vocabulary (severity, sentiment, or none: categories)
        return Want.of(name, "enum", kind if kind != "category" else "", _DYN_ENUMS[kind])
    return Want.of(name, kind)


# ── triggers and recipients ───────────────────────────────────────────────────────────────────────

_AGENT_SUBJECT = re.compile(r"^(?:did|does|was|has|had|could|couldn't|is) (?:the |our )?(?:agent|assistant|bot|ai)\b")
Evidence = tuple[float, int, bool, Utterance, str]  # strength, index, answer, utterance, what matched


GENERIC = frozenset(lx.stem(w) for w in lx.words(
    "time date day days today week thing things call phone number name way issue problem question help "
    "information later soon get make specific someone something them"))  # fmt: skip


def _alternatives(text: str) -> list[list[str]]:
    """'frustration, unhappiness or a threat to cancel' -> three keyword sets; any one is enough. A set
    of generic words only ('... for a specific date or time') proves nothing on its own."""
    out = []
    for seg in re.split(r",|;|/|\bor\b", text.lower()):
        kws = lx.content_stems(seg)
        if kws and not all(k in GENERIC for k in kws):
            out.append(kws)
    return out


# the agent saying it did what the customer asked: "I've booked your consultation for Monday"
_CONFIRMED = re.compile(
    r"\b(?:i've|i have|we've|we have|i'll|we'll|i will|we will)\s+(?:\w+\s+){0,2}?"
    r"(?:booked|scheduled|confirmed|set up|arranged|requested|request|reserved)\b"
)
_THE_CALL = re.compile(r"\b(?:the|this|that|a|their|his|her) (?:phone )?(?:call|conversation)\b")


def _match(u: Utterance, concepts: list[lx.Concept], alternatives: list[list[str]]) -> tuple[float, int, str] | None:
    """(strength, where, what) of the best concept phrase or keyword alternative in one utterance."""
    best: tuple[float, int, str] | None = None
    for c in concepts:
        if m := c.phrases.search(u.norm):
            best = (0.9, m.start(), m.group(0))
            break
    for kws in alternatives:
        s = fx.keyword_strength(u, kws) * (1.0 if len(kws) >= 2 else 0.8)
        if s >= 0.5 and (best is None or s > best[0]):
            words = [w for w in lx.tokens(u.text) if any(lx.similar(lx.stem(w), k) for k in kws)]
            best = (s, max(0, u.norm.find(words[0])) if words else 0, " ".join(words))
    return best


def _evidence(text: str, utts: list[Utterance], speaker: str) -> list[Evidence]:
    """Utterances of `speaker` that match (negated ones answer no), and, for the customer, yes/no
    replies to an agent question that matches."""
    concepts = lx.concepts_for(text)
    alternatives = _alternatives(_THE_CALL.sub(" ", text))
    found: list[Evidence] = []
    for i, u in enumerate(utts):
        if (match := _match(u, concepts, alternatives)) is None:
            continue
        strength, start, matched = match
        if u.customer == (speaker == "customer"):
            found.append((strength, i, not lx.negated(u.norm, start), u, f"said '{matched}'"))
        elif speaker == "customer" and _CONFIRMED.search(u.norm):
            found.append((strength * 0.8, i, True, u, f"confirmed '{matched}'"))
        elif speaker == "customer" and "?" in u.text and i + 1 < len(utts) and utts[i + 1].customer:
            if _match(fx.question_part(u), concepts, alternatives) is None:
                continue
            reply = lx.answer_polarity(utts[i + 1].text)
            if reply is not None:
                what = f"answered {'yes' if reply else 'no'} to the agent's question about '{matched}'"
                found.append((strength * 0.9, i + 1, reply, utts[i + 1], what))
    return found


def answer_trigger(question: str, utts: list[Utterance]) -> TriggerAnswer:
    """Yes when an utterance matches the question (strongest, then latest); no when it is negated or
    nothing matches. Confidence follows the strength of the match."""
    agent_concept = any(c.speaker == "agent" for c in lx.concepts_for(question))
    speaker = "agent" if agent_concept or _AGENT_SUBJECT.search(lx.normalize(question)) else "customer"
    found = _evidence(question, utts, speaker)
    if not found:
        who = "the agent" if speaker == "agent" else "the customer"
        return TriggerAnswer(question=question, answer=False, confidence=0.5,
                             rationale=f"Nothing {who} said matches the question.")  # fmt: skip
    strength, _, answer, u, what = max(found, key=lambda e: (e[0], e[1]))
    negated = "" if answer or what.startswith("answered") else ", negated"
    return TriggerAnswer(
        question=question,
        answer=answer,
        evidence=fx.quote(u),
        confidence=round(min(fx.MAX_CONFIDENCE, (0.35 if answer else 0.3) + 0.35 * strength), 2),
        rationale=f"The {u.role} {what}{negated} (message {u.index}).",
    )


def choose_recipients(route: RecipientRoute, utts: list[Utterance]) -> list[str]:
    """The rule whose description the customer's words match best; the fallback when none does."""
    best, chosen = 0.0, route.fallback
    for rule in route.rules:
        strength = max((e[0] for e in _evidence(rule.when, utts, "customer") if e[2]), default=0.0)
        if strength > best:
            best, chosen = strength, rule.to
    return list(chosen)


# ── summary ───────────────────────────────────────────────────────────────────────────────────────

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_GREETING = re.compile(r"^(?:(?:hi|hello|hey|yeah|yes|oh|okay|good (?:morning|afternoon|evening))\b[\s,.!]*)+", re.I)
_SELF_INTRO = re.compile(r"^(?:this is|my name is|my name's|it's|i'm|i am)\s+[A-Z]", re.I)
_DONE = re.compile(  # what was done or agreed
    r"\b(?:booked|scheduled|confirmed|to confirm|refund\w*|cancel\w*|transferr\w*|escalat\w*|created|"
    r"ticket|call you back|resolved|sent|is now|has been|have been)\b"
)
_WILL = re.compile(r"\b(?:i'll|i will|we'll|we will|you'll|you will|won't|someone will|i've|we've|done)\b")
REQUEST_CHARS = 220


def _is_intro(sentence: str) -> bool:
    """'Hi, this is Maria Gonzalez from Gonzalez Plumbing.', 'Kevin O'Brien, O'Brien HVAC.', 'Yeah, hi.'"""
    rest = _GREETING.sub("", sentence).strip()
    words = rest.split()
    if not words:
        return True
    if len(words) > 14:
        return False
    return bool(_SELF_INTRO.match(rest)) or sum(w[0].isupper() for w in words) >= max(2, len(words) - 1)


def request(utts: list[Utterance]) -> tuple[str, Utterance] | None:
    """What the customer wanted: their first sentences after greetings and introductions."""
    out, first = "", None
    for u in utts:
        if not u.customer:
            continue
        for said in _SENTENCE.split(" ".join(u.text.split())):
            sentence = _GREETING.sub("", said).strip()
            if not sentence or (not out and _is_intro(sentence)) or len(out) + len(sentence) > REQUEST_CHARS:
                continue
            sentence = sentence[0].upper() + sentence[1:]
            out, first = f"{out} {sentence}".strip(), first or u
        if len(out) >= 60:
            break
    return (out, first) if first is not None else None


def _outcome(utts: list[Utterance], after: int) -> str | None:
    """The agent's last statement of what was done or agreed (not a question, not a bare 'Done.')."""
    for cue in (_DONE, _WILL):
        for u in reversed(utts[after + 1 :]):
            if u.customer:
                continue
            for sentence in reversed(_SENTENCE.split(" ".join(u.text.split()))):
                if not sentence.endswith("?") and len(sentence.split()) >= 4 and cue.search(lx.normalize(sentence)):
                    return sentence[:REQUEST_CHARS]
    return None


def summarize(utts: list[Utterance]) -> str | None:
    """'Customer: <request>. Outcome: <the agent's last outcome sentence>.' (extractive)."""
    found = request(utts)
    if found is None:
        return None
    text, u = found
    outcome = _outcome(utts, utts.index(u))
    return f"Customer: {text}" + (f" Outcome: {outcome}" if outcome else "")
