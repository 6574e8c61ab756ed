"""Words for the heuristic provider: a light stemmer, negation, yes/no answers, and concept phrases.

Concepts widen a question or a field description into what customers actually say: "Did the customer
ask to be called back?" is answered by "give me a ring tomorrow" as well as by "call me back".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def words(text: str) -> list[str]:
    """A word list written as one string (easier to read and edit than a list of quoted words)."""
    return text.split()


STOPWORDS = frozenset(
    words(
        "a an the and or but if of to in on at by for with from as is are was were be been being am do does did "
        "has have had this that these those it its it's i i'm me my we our you your he she they them their there "
        "what which who whom when where why how whether any anything some something all can could would should "
        "will shall may might must so than then too very just also about into over out up down off again only "
        "own same such no nor not yes please thanks thank hi hello okay ok um uh well"
    )
)
# Words every question or description has; they say nothing about the content.
QUESTION_WORDS = frozenset(
    words(
        "customer customers caller callers client clients user users person someone agent assistant bot ai "
        "ask asked asks asking request requested requests mention mentioned mentions express expressed "
        "expresses say said says tell told indicate indicated want wanted wants during conversation call's "
        "field value whether true false required needed need needs whole"
    )
)
NEGATORS = frozenset(
    words(
        "not no never don't dont do'nt won't wont wouldn't didn't doesn't isn't aren't wasn't weren't cannot "
        "can't without nothing neither nor nobody none shouldn't haven't hasn't"
    )
)


def normalize(text: str) -> str:
    return " ".join(text.replace("\u2019", "'").lower().split())


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(normalize(text))


@lru_cache(maxsize=65_536)
def stem(word: str) -> str:
    """'called'/'calling'/'calls' -> 'cal'; 'cancelled'/'cancellation' -> 'cancel'/'cancellat'."""
    w = word.lower().removesuffix("'s")
    for suffix, repl, keep in (("ies", "i", 3), ("ied", "i", 3), ("ing", "", 3), ("ed", "", 3), ("s", "", 3)):
        if w.endswith(suffix) and len(w) - len(suffix) >= keep and not w.endswith("ss"):
            w = w[: -len(suffix)] + repl
            break
    for suffix, repl, keep in (("ment", "", 4), ("ness", "", 3), ("ion", "", 4), ("ly", "", 4), ("e", "", 3),
                               ("y", "i", 3)):  # fmt: skip
        if w.endswith(suffix) and len(w) - len(suffix) >= keep:
            w = w[: -len(suffix)] + repl
            break
    if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "aeiou":
        w = w[:-1]
    return w


def similar(a: str, b: str) -> bool:
    """Same stem, or a long shared prefix ('dissatisfact' ~ 'dissatisfi', 'cancel' ~ 'cancellat')."""
    if a == b:
        return True
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n >= 5 and n >= min(len(a), len(b)) - 1


def content_stems(text: str, drop: frozenset[str] = frozenset()) -> list[str]:
    """Stems of the words that carry meaning, in order, without repeats."""
    out: list[str] = []
    for word in tokens(text):
        if word in STOPWORDS or word in QUESTION_WORDS or word in drop or len(word) < 3 or word.isdigit():
            continue
        s = stem(word)
        if s not in out:
            out.append(s)
    return out


_CLAUSE_END = re.compile(r"[.;!?,]|\bbut\b")
_CUT = re.compile(r"[^\w']")  # no word (nor 'but') runs across such a character: text after it reads alike


def negated(norm: str, start: int) -> bool:
    """A negator in the same clause, at most four words before position `start` of normalised text.
    Read from a window before `start`, widened until it holds the clause's start or its last four words:
    the whole text before every match was split, quadratic in one long utterance with many matches."""
    width = 64
    while True:
        lo = 0
        if start > 2 * width:
            last = None
            for last in _CUT.finditer(norm, start - 2 * width, start - width):  # noqa: B007 (the last one)
                pass
            if last is None:
                width *= 4
                continue
            lo = last.end()
        parts = _CLAUSE_END.split(norm[lo:start])
        words = _TOKEN.findall(parts[-1])[-4:]
        if lo == 0 or len(parts) > 1 or len(words) == 4:
            return any(w in NEGATORS for w in words)
        width *= 4


_YES = re.compile(
    r"^(?:(?:well|um|uh|oh|ah),?\s+)?(?:no problem|yes|yeah|yep|yup|sure|please|absolutely|definitely|"
    r"of course|correct|that's right|right|ok|okay|sounds good|that would be (?:great|good)|that'd be great|"
    r"go ahead|i would|i'd like|i do|i did|that works|perfect)\b"
)
_NO = re.compile(
    r"^(?:(?:well|um|uh|oh|ah),?\s+)?(?:no|nope|nah|not really|not now|not at the moment|not yet|"
    r"i don't think so|i'm good|i'm fine|i do not|i don't|never mind|don't)\b"
)


def answer_polarity(text: str) -> bool | None:
    """How a reply to a yes/no question starts: True, False, or None when it does not say."""
    norm = normalize(text)
    if _YES.match(norm):
        return True
    if _NO.match(norm):
        return False
    return None


@dataclass(frozen=True)
class Concept:
    name: str
    cues: re.Pattern[str]  # found in a question, description or field name: the concept applies
    phrases: re.Pattern[str]  # found in an utterance: the concept is present
    speaker: str = "customer"


def _concept(name: str, cues: str, phrases: str, speaker: str = "customer") -> Concept:
    cue_re = re.compile(r"\b(?:" + "|".join(c.strip() for c in cues.split("|")) + ")")
    alternatives = sorted((p.strip() for p in phrases.split("|")), key=len, reverse=True)
    phrase_re = re.compile(r"\b(?:" + "|".join(re.escape(p) for p in alternatives) + r")\b")
    return Concept(name, cue_re, phrase_re, speaker)


CONCEPTS = (
    _concept("callback", r"call\w* back|callback|call-back|follow\W?up|followed up|reach out|get back|contact|ring",
             "call me back|call back|callback|call-back|give me a call|give me a ring|ring me|get back to me|"
             "reach out|follow up|follow-up|call me tomorrow|call me later|call me next|contact me|touch base|"
             "call me on|call me at|check back|checked back|checking back|call you back"),
    _concept("dissatisfaction", r"dissatisf|unhappy|frustrat|upset|angry|complain|unsatisf|disappoint|negative",
             "unhappy|not happy|frustrated|frustrating|disappointed|disappointing|terrible|awful|horrible|"
             "ridiculous|angry|upset|unacceptable|worst|fed up|annoyed|furious|complain|complaint|"
             "dissatisfied|not satisfied|waste of time|sick of|tired of"),
    _concept("cancel", r"cancel|churn|quit|terminat|close (?:their|the|his|her) account|switch",
             "cancel|cancellation|close my account|terminate|switch to|switching to|go with another|"
             "take my business elsewhere|quit"),
    _concept("review", r"review|rating|yelp|trustpilot",
             "review|yelp|trustpilot|one star|1 star|bad rating|tell everyone|social media"),
    _concept("appointment", r"appointment|book|schedul|meeting|consultation|reserv",
             "appointment|book|booked|booking|schedule|scheduled|reserve|reservation|meeting|consultation|"
             "slot|come in"),
    _concept("demo", r"demo|demonstration|trial", "demo|demonstration|show me|walk me through|"
             "see how it works|trial"),
    _concept("order", r"order|purchas|buy|bought", "order|purchase|buy|checkout|place an order|i'll take|"
             "sign me up"),
    _concept("billing", r"bill|invoice|payment|charg|refund|pric",
             "bill|billing|invoice|charge|charged|payment|refund|overcharged|receipt|price|pricing|"
             "subscription fee|double charged|charged twice"),
    _concept("technical", r"technical|bug|error|outage|not working|broken|crash",
             "error|bug|crash|crashes|not working|doesn't work|does not work|stopped working|broken|outage|"
             "is down|went down|can't log in|cannot log in|won't load|keeps failing|glitch|stopped syncing|"
             "are gone|is gone|disappeared|missing|lost data|locked out|is locked"),
    _concept("escalation", r"escalat|manager|supervisor|human|speak to|talk to|management|real person",
             "speak to a manager|talk to a manager|your manager|a supervisor|escalate|speak to someone|"
             "speak to a person|talk to a person|real person|talk to someone|a human|live agent|"
             "put me through to someone"),
    _concept("positive", r"positive|compliment|praise|\bhappy|\bsatisf|pleased|feedback",
             "thank you so much|great service|excellent|amazing|love it|helpful|fantastic|wonderful|"
             "appreciate|really happy|very happy|satisfied|pleased"),
    _concept("resolution", r"resolv|fixed|solved|sorted",
             "that fixed it|that fixed|fixed it|that worked|works now|working now|is resolved|been resolved|"
             "problem solved|all set|that's all i needed|that makes sense|that did it|not resolved|"
             "still not working|still broken|didn't help|didn't fix|doesn't help"),
    _concept("urgency", r"urgen|emergenc|asap|immediate|critical|severe",
             "urgent|urgently|asap|immediately|right away|emergency|as soon as possible|critical|right now"),
    _concept("unanswered", r"couldn't answer|could not answer|unable to answer|did not know|didn't know|"
             r"unanswered|not able to answer|could not help|couldn't help",
             "i don't know|i'm not sure|i am not sure|i can't help|i cannot help|unable to answer|"
             "don't have that information|don't have access|let me check with|i'll have someone|"
             "not able to answer|i'm afraid i can't|i'm not able to|i am not able to|can't access|"
             "cannot access", speaker="agent"),
)  # fmt: skip


def concepts_for(text: str) -> list[Concept]:
    norm = normalize(text.replace("_", " "))
    return [c for c in CONCEPTS if c.cues.search(norm)]


# Enum vocabularies by what the field is about; a value name also matches itself.
ENUM_LEXICONS: dict[str, dict[str, tuple[str, ...]]] = {
    "interest": {
        "high": ("very interested", "definitely interested", "really interested", "sign me up", "let's do it",
                 "ready to", "love to", "i'm in", "sounds great", "when can we start", "i'll take it"),
        "medium": ("somewhat interested", "sounds interesting", "might be interested", "think about it",
                   "send me more information", "send me some information", "maybe"),
        "low": ("not really interested", "maybe later", "just looking", "not right now", "not a priority"),
        "none": ("not interested", "no interest", "remove me", "stop calling", "don't call me again",
                 "no more calls", "already signed with", "went with another", "happy with what we have",
                 "no, thanks", "no thanks"),
    },
    "sentiment": {
        "positive": ("thank you so much", "great", "excellent", "amazing", "love", "helpful", "happy", "perfect"),
        "negative": ("unhappy", "frustrated", "terrible", "awful", "angry", "upset", "ridiculous", "worst",
                     "disappointed", "unacceptable"),
        "neutral": ("okay", "fine", "alright"),
    },
    "severity": {
        "critical": ("down", "outage", "emergency", "nothing works", "can't work", "losing money", "critical",
                     "are gone", "is gone", "data loss", "lost data", "missing records", "safety"),
        "high": ("urgent", "asap", "as soon as possible", "right away", "immediately", "not working",
                 "serious problem", "stopped working", "stopped syncing"),
        "medium": ("annoying", "sometimes", "slow", "intermittent"),
        "low": ("minor", "no rush", "whenever", "not urgent", "just a question", "cosmetic"),
    },
}  # fmt: skip
ENUM_LEXICON_CUES = {"interest": r"interest", "sentiment": r"sentiment|mood|satisf|feeling|emotion",
                     "severity": r"severity|priority|urgen|impact"}  # fmt: skip


# Category names that agents use as enum values, whatever the field is called.
CATEGORY_WORDS: dict[str, tuple[str, ...]] = {
    "billing": ("invoice", "bill", "charge", "charged", "refund", "payment", "receipt", "price", "pricing",
                "subscription", "credit card", "overcharged"),
    "technical": ("app", "error", "bug", "crash", "not working", "stopped working", "syncing", "outage", "down",
                  "software", "dashboard", "website", "work orders", "reports"),
    "account": ("log in", "login", "password", "locked", "sign in", "plan", "upgrade", "downgrade", "seats",
                "my account", "username"),
    "warranty": ("warranty", "cracked", "broken screen", "replacement", "defective", "damaged", "repair"),
    "hardware": ("tablet", "device", "phone", "screen", "battery", "printer", "scanner"),
    "sales": ("demo", "pricing", "quote", "interested", "trial", "buy", "purchase"),
    "delivery": ("delivery", "shipping", "package", "tracking", "arrived", "shipment"),
    "cancellation": ("cancel", "cancellation", "close my account", "terminate"),
    "complaint": ("complaint", "unhappy", "frustrated", "unacceptable", "fed up"),
    "scheduling": ("appointment", "reschedule", "booking", "schedule", "visit"),
}  # fmt: skip


def enum_lexicon(field_text: str, values: tuple[str, ...] = ()) -> dict[str, tuple[str, ...]]:
    """Phrases per value: a vocabulary for what the field is about, else the category words of values
    that name a common category (billing, technical, account, ...)."""
    norm = normalize(field_text.replace("_", " "))
    for name, cue in ENUM_LEXICON_CUES.items():
        if re.search(cue, norm):
            return ENUM_LEXICONS[name]
    return {v: CATEGORY_WORDS[v.lower()] for v in values if v.lower() in CATEGORY_WORDS}
