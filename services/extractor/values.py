"""Finding typed values in spoken text: phone numbers, emails, dates, times, numbers and URLs.

Every finder returns `Found(value, start, end)` spans so the heuristic provider can prefer the value
nearest to a field's keywords. Dates are resolved against the conversation's end in its own time
zone: "tomorrow", "next Tuesday" (the first Tuesday after that day), "March 14th" (the next 14 March
on or after that day), "in two weeks".
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Generic, TypeVar

from schemas.agent_config import E164, EMAIL_VALUE

T = TypeVar("T")


@dataclass(frozen=True)
class Found(Generic[T]):
    value: T
    start: int
    end: int


# ── numbers said as words ─────────────────────────────────────────────────────────────────────────

_UNIT_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen"
)
UNITS = {w: i for i, w in enumerate(_UNIT_WORDS.split(" "))}
TENS = {
    w: 10 * (i + 2)
    for i, w in enumerate(["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"])
}
SCALES = {"hundred": 100, "thousand": 1_000, "grand": 1_000, "k": 1_000, "million": 1_000_000, "m": 1_000_000}
_NUMBER_WORD = "|".join(sorted([*UNITS, *TENS, "hundred", "thousand", "million", "a"], key=len, reverse=True))
_WORDS_NUMBER = re.compile(rf"\b(?:{_NUMBER_WORD})(?:[\s-]+(?:and[\s-]+)?(?:{_NUMBER_WORD}))*\b", re.I)
_DIGITS_NUMBER = re.compile(
    r"(?<![\w.])\$?\s?(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?\s*(k|m|thousand|million|grand)?(?![\w])(?!\s*%)", re.I
)


def words_to_number(text: str) -> float | None:
    """'twenty five' -> 25, 'five thousand' -> 5000, 'a hundred' -> 100; None for no number."""
    total, current, seen = 0.0, 0.0, False
    for word in re.split(r"[\s-]+", text.lower()):
        if word in UNITS:
            current += UNITS[word]
        elif word in TENS:
            current += TENS[word]
        elif word == "a":
            current += 1 if not seen else 0
            continue
        elif word == "hundred":
            current = max(current, 1) * 100
        elif word in ("thousand", "million"):
            total += max(current, 1) * SCALES[word]
            current = 0
        elif word == "and":
            continue
        else:
            return None
        seen = True
    return total + current if seen else None


def find_numbers(text: str) -> list[Found[float]]:
    out: list[Found[float]] = []
    for m in _DIGITS_NUMBER.finditer(text):
        value = float(m.group(1).replace(",", "") + (m.group(2) or ""))
        if m.group(3):
            value *= SCALES[m.group(3).lower()]
        out.append(Found(value, m.start(), m.end()))
    for m in _WORDS_NUMBER.finditer(text):
        if m.group(0).lower() in ("a", "an"):
            continue
        spoken = words_to_number(m.group(0))
        if spoken is not None:
            out.append(Found(spoken, m.start(), m.end()))
    return sorted(out, key=lambda f: f.start)


# ── phone numbers ─────────────────────────────────────────────────────────────────────────────────

_DIGIT_WORDS = {**{w: str(i) for w, i in UNITS.items() if i < 10}, "oh": "0", "o": "0"}
_SPOKEN_DIGITS = re.compile(
    r"\b(?:(?:double\s+|triple\s+)?(?:zero|oh|one|two|three|four|five|six|seven|eight|nine)\b[\s,.-]*){7,}", re.I
)
_PHONE = re.compile(r"(?<![\w+])(?:\+|00)?\d[\d\s().-]{5,}\d(?![\w])")


def _spoken_to_digits(text: str) -> str:
    """'five five five, one two three four' -> '5551234 ' (spans then refer to the rewritten text)."""

    def digits(m: re.Match[str]) -> str:
        out, repeat = [], 1
        for word in re.findall(r"[a-z]+", m.group(0).lower()):
            if word in ("double", "triple"):
                repeat = 2 if word == "double" else 3
                continue
            out.append(_DIGIT_WORDS[word] * repeat)
            repeat = 1
        return "".join(out) + " "

    return _SPOKEN_DIGITS.sub(digits, text)


# an extension after the number ("x5", "ext. 12", "extension 9", "#204", RFC 3966's ";ext=5"): E.164 has none
_EXTENSION = re.compile(r"(?:;\s*ext\s*=|\bext(?:ension)?\b\.?|(?<=[\d\s])x\.?|#)\s*\d{1,7}\s*$", re.I)


def normalize_phone(raw: str, country_code: str = "1") -> str | None:
    """E.164 (+15551234567) or None when it cannot be a full phone number; an extension is left out."""
    raw = _EXTENSION.sub("", raw)
    # \d is any script's digit (Arabic-Indic, full-width): written in ASCII, as E.164 and the schema want
    digits = "".join(str(int(d)) for d in re.sub(r"\D", "", raw))
    international = raw.lstrip().startswith("+") or digits.startswith("00")
    if international:
        digits = digits[2:] if digits.startswith("00") else digits
    elif country_code == "1":
        if len(digits) == 11 and digits.startswith("1"):
            digits = digits[1:]
        if len(digits) != 10 or digits[0] in "01":
            return None
        digits = "1" + digits
    else:
        digits = country_code + digits.removeprefix("0")
    return f"+{digits}" if E164.fullmatch(f"+{digits}") else None


def find_phones(text: str, country_code: str = "1") -> list[Found[str]]:
    spoken = _spoken_to_digits(text) if _SPOKEN_DIGITS.search(text) else text
    out = []
    for m in _PHONE.finditer(spoken):
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", m.group(0).strip()):
            continue  # an ISO date, not a number
        phone = normalize_phone(m.group(0), country_code)
        if phone:
            out.append(Found(phone, m.start(), m.end()))
    return out


# ── emails and links ──────────────────────────────────────────────────────────────────────────────

# An email field's value (schemas' EMAIL_VALUE), found between word boundaries. Its parts are bounded:
# unbounded, a long run of "a.a.a..." or "x dot x dot ..." was scanned to its end from each of its words,
# quadratic in its length.
_EMAIL_IN_TEXT = re.compile(rf"\b{EMAIL_VALUE.pattern}\b")
_TLD = r"(?:com|org|net|io|co|ai|edu|gov|uk|de|fr|es|it|nl|ca|au|us|info|biz|me)"
# a part of the name said as a word, or spelled out letter by letter ("j o h n"), never from its middle
_SAID = r"(?:[a-z0-9](?:\s+[a-z0-9]\b){1,63}|[a-z0-9][a-z0-9._-]{0,63})"
_SPOKEN_EMAIL = re.compile(
    rf"(?<![\w'])({_SAID}(?:\s+(?:dot|underscore|dash|hyphen)\s+{_SAID}){{0,8}})\s+at\s+"
    rf"([a-z0-9-]{{1,63}}(?:(?:\s+dot\s+|\.)[a-z0-9-]{{1,63}}){{0,8}}(?:\s+dot\s+|\.){_TLD})\b",
    re.I,
)
_SPOKEN_SEPARATORS = {"dot": ".", "underscore": "_", "dash": "-", "hyphen": "-"}
URL = re.compile(r"\bhttps?://[^\s<>\"']+|\b(?:www\.)?[a-z0-9-]+\.(?:com|io|net|org|ai|co)/[^\s<>\"']*", re.I)


def find_emails(text: str) -> list[Found[str]]:
    out = [Found(m.group(0).lower(), m.start(), m.end()) for m in _EMAIL_IN_TEXT.finditer(text)]
    written = [f.start for f in out]  # in order, apart: the one a spoken address may start in is found by bisection
    ends = [f.end for f in out]
    for m in _SPOKEN_EMAIL.finditer(text):
        if (k := bisect_right(written, m.start())) and m.start() < ends[k - 1]:
            continue

        def join(part: str) -> str:  # the separators said, then the spaces between spelled letters
            said = re.sub(r"\s+(dot|underscore|dash|hyphen)\s+",
                          lambda s: _SPOKEN_SEPARATORS[s.group(1).lower()], part, flags=re.I)  # fmt: skip
            return re.sub(r"\s+", "", said)

        address = f"{join(m.group(1))}@{join(m.group(2))}".lower()
        if EMAIL_VALUE.fullmatch(address):
            out.append(Found(address, m.start(), m.end()))
    return sorted(out, key=lambda f: f.start)


def find_urls(text: str) -> list[Found[str]]:
    return [Found(m.group(0).rstrip(".,;)"), m.start(), m.end()) for m in URL.finditer(text)]


# ── dates and times ───────────────────────────────────────────────────────────────────────────────

MONTHS = {
    m: i + 1 for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])
}
WEEKDAYS = {d: i for i, d in enumerate(["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"])}
_MONTH = (
    r"(jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|"
    r"oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_ORD = r"(\d{1,2})(?:st|nd|rd|th)?"
_WEEKDAY = r"(monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
_ORDINALS = (
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth fourteenth "
    "fifteenth sixteenth seventeenth eighteenth nineteenth twentieth"
)
_ORDINAL_WORDS = {w: i + 1 for i, w in enumerate(_ORDINALS.split())}
_ORDINAL_WORDS.update({f"twenty{sep}{w}": 20 + i for w, i in list(_ORDINAL_WORDS.items())[:9] for sep in (" ", "-")})
_ORDINAL_WORDS.update({"thirtieth": 30, "thirty first": 31, "thirty-first": 31})
_ORD_WORD = "|".join(sorted(_ORDINAL_WORDS, key=len, reverse=True))
_NOT_A_DAY = (
    r"(?:times?|floor|one|person|people|call|attempt|request|try|item|option|place|row|grade|edition|ave|avenue|"
    r"st|street)\b"
)
_DATE_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("iso", re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")),
    # "Wednesday next week", "next week on Wednesday", "Wednesday of next week": that week's Wednesday
    ("weekday_next_week", re.compile(rf"\b{_WEEKDAY}\s+(?:of\s+)?next\s+week\b", re.I)),
    ("next_week_weekday", re.compile(rf"\bnext\s+week(?:'s|,)?\s+(?:on\s+)?{_WEEKDAY}\b", re.I)),
    ("month_day_words", re.compile(rf"\b{_MONTH}\s+(?:the\s+)?({_ORD_WORD})\b", re.I)),
    ("day_words_month", re.compile(rf"\b(?:the\s+)?({_ORD_WORD})\s+of\s+{_MONTH}", re.I)),
    ("month_day", re.compile(rf"\b{_MONTH}\s+(?:the\s+)?{_ORD}\b(?:,?\s+(\d{{4}}))?", re.I)),
    ("day_month", re.compile(rf"\b(?:the\s+)?{_ORD}\s+(?:of\s+)?{_MONTH}(?:,?\s+(\d{{4}}))?", re.I)),
    ("numeric", re.compile(r"\b(\d{1,2})/(\d{1,2})(?:/(\d{4}|\d{2}))?\b")),
    ("relative_day", re.compile(r"\b(the\s+day\s+after\s+tomorrow|tomorrow|today|tonight)\b", re.I)),
    ("in_n", re.compile(r"\bin\s+(a|an|one|two|three|four|five|six|seven|\d{1,2})\s+(days?|weeks?)\b", re.I)),
    ("next_week", re.compile(r"\b(next|this\s+coming)\s+week\b", re.I)),
    ("weekday", re.compile(rf"\b(?:(next|this|coming|on)\s+)?{_WEEKDAY}\b", re.I)),
    # "the 11th", "on the 1st", "the 2nd of this month", "the 3rd of next month"; spelled ordinals only
    # with "of this/next month" or after "on the" ("the first time" is no date)
    ("ordinal", re.compile(r"\b(?:on\s+)?(?:the\s+)?(\d{1,2})(?:st|nd|rd|th)\b(?:\s+of\s+(this|next)\s+month)?"
                           rf"(?!\s+{_NOT_A_DAY})", re.I)),
    ("ordinal_words", re.compile(rf"\b(?:on\s+the\s+({_ORD_WORD})\b(?:\s+of\s+(this|next)\s+month)?|"
                                 rf"the\s+({_ORD_WORD})\s+of\s+(this|next)\s+month)", re.I)),
]  # fmt: skip


def _month(name: str) -> int:
    return MONTHS[name[:3].lower()]


def _upcoming(ref: date, month: int, day: int) -> date | None:
    """The next month/day on or after ref (a follow-up date is in the future)."""
    try:
        candidate = date(ref.year, month, day)
        return candidate if candidate >= ref else date(ref.year + 1, month, day)
    except ValueError:
        return None


def _date_from(kind: str, m: re.Match[str], ref: date, day_first: bool) -> date | None:
    g = m.groups()
    try:
        if kind == "iso":
            return date(int(g[0]), int(g[1]), int(g[2]))
        if kind in ("month_day", "day_month"):
            month, day = (_month(g[0]), int(g[1])) if kind == "month_day" else (_month(g[1]), int(g[0]))
            return date(int(g[2]), month, day) if g[2] else _upcoming(ref, month, day)
        if kind in ("month_day_words", "day_words_month"):
            month_name, ordinal = (g[0], g[1]) if kind == "month_day_words" else (g[1], g[0])
            return _upcoming(ref, _month(month_name), _ORDINAL_WORDS[" ".join(ordinal.lower().split())])
        if kind in ("ordinal", "ordinal_words"):
            day_text, which = (g[0], g[1]) if kind == "ordinal" or g[0] else (g[2], g[3])
            day = int(day_text) if day_text.isdigit() else _ORDINAL_WORDS[" ".join(day_text.lower().split())]
            return _day_of_month(ref, day, (which or "").lower())
        if kind == "numeric":
            first, second = int(g[0]), int(g[1])
            month, day = (second, first) if day_first else (first, second)
            if not g[2]:
                return _upcoming(ref, month, day)
            return date(int(g[2]) + (2000 if len(g[2]) == 2 else 0), month, day)
    except ValueError:
        return None
    return _relative(kind, g, ref)


def _day_of_month(ref: date, day: int, which: str) -> date | None:
    """'the 11th' is this month's 11th, or next month's once it has passed; 'of next month' says so."""
    month, year = ref.month, ref.year
    if which == "next" or (not which and day < ref.day):
        month, year = (1, year + 1) if month == 12 else (month + 1, year)
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _relative(kind: str, g: tuple[str | None, ...], ref: date) -> date | None:
    word = (g[0] or "").lower()
    if kind == "relative_day":
        return ref + timedelta(days=2 if "after" in word else 1 if word == "tomorrow" else 0)
    if kind == "in_n":
        count = 1 if word in ("a", "an") else int(word) if word.isdigit() else UNITS[word]
        return ref + timedelta(days=count * (7 if (g[1] or "").lower().startswith("week") else 1))
    if kind == "next_week":
        return ref + timedelta(days=7 - ref.weekday())
    if kind in ("weekday_next_week", "next_week_weekday"):
        return ref + timedelta(days=7 - ref.weekday() + WEEKDAYS[word])
    if kind == "weekday":
        ahead = (WEEKDAYS[(g[1] or "").lower()] - ref.weekday()) % 7
        return ref + timedelta(days=ahead or 7)
    return None


def find_dates(text: str, ref: date, day_first: bool = False) -> list[Found[date]]:
    """Dates in text, resolved against `ref` (the conversation's last day, local time)."""
    out: list[Found[date]] = []
    # the characters taken and where dates begin, by position: a long message holds thousands of dates,
    # and comparing each with all found before was quadratic
    taken, begins = bytearray(len(text)), bytearray(len(text) + 4)
    for kind, pattern in _DATE_PATTERNS:
        for m in pattern.finditer(text):
            if taken.find(1, m.start(), m.end()) >= 0:
                continue  # "March 14th" is not also "14th March"
            if kind == "weekday" and (_dated(begins, m.end()) or (not m.group(1) and _is_habitual(text, m.start()))):
                continue
            value = _date_from(kind, m, ref, day_first)
            if value is not None:
                out.append(Found(value, m.start(), m.end()))
                taken[m.start() : m.end()] = b"\x01" * (m.end() - m.start())
                begins[m.start()] = 1
    return sorted(out, key=lambda f: f.start)


def _dated(begins: bytearray, end: int) -> bool:
    """'Thursday, March 19th': the weekday names a date found right after it."""
    return begins.find(1, end, end + 4) >= 0


def _is_habitual(text: str, start: int) -> bool:
    """'open Mondays', 'every Tuesday': a weekday that is not a date."""
    before = text[max(0, start - 7) : start].lower()
    word = text[start : start + 32].lower().split(" ", 1)[0]  # not the rest of the text: once per weekday
    return "every" in before or word.rstrip(".,?!").endswith("days")


_HOUR = r"(\d{1,2}|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)"
_PERIOD = r"(a\.?m\.?|p\.?m\.?|in the morning|in the afternoon|in the evening|at night|tonight|o'?clock)"
_TIME_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    # "half past 4 in the evening", "quarter to 6 pm", "quarter past eleven"
    ("past_to", re.compile(rf"\b(half|quarter|(?:\d{{1,2}}|ten|twenty|twenty[\s-]five)\s+minutes)\s+(past|after|to)\s+"
                           rf"{_HOUR}\b(?:\s*(?:o'?clock\s*)?{_PERIOD})?", re.I)),
    # "10:30 in the morning", "5 o'clock in the evening", "6 in the evening", "7 at night"
    ("spoken_period", re.compile(rf"\b{_HOUR}(?::([0-5]\d))?\s*(?:o'?clock\s+)?(in the morning|in the afternoon|"
                                 rf"in the evening|at night)\b", re.I)),
    ("ampm", re.compile(r"\b(\d{1,2})(?::(\d{2}))?\s*([ap])\.?\s?m\b\.?", re.I)),
    ("clock", re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)\b")),
    ("words", re.compile(r"\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)"
                         r"(?:\s+(thirty|fifteen|forty[\s-]five))?\s*(?:o'?clock)?\s*"
                         r"(a\.?m\.?|p\.?m\.?|in the morning|in the afternoon|in the evening|o'?clock)", re.I)),
    ("named", re.compile(r"\b(noon|midday|midnight)\b", re.I)),
]  # fmt: skip


def _business_hour(hour: int) -> int:
    """A bare 'three o'clock' in a business call is 15:00; 8-11 stay in the morning."""
    return hour + 12 if 1 <= hour <= 7 else hour


def _hour(word: str) -> int:
    return int(word) if word.isdigit() else UNITS[word.lower()]


def _afternoon(period: str, hour: int) -> int:
    """The 24-hour clock hour of 'hour' said with a period ('pm', 'in the evening'); a bare hour is
    read as business hours."""
    p = period.lower().replace(".", "").replace(" ", "")
    if p.startswith("p") or "afternoon" in p or "evening" in p or "night" in p:
        return hour % 12 + 12
    if p.startswith("a") or "morning" in p:
        return hour % 12
    return _business_hour(hour) % 24


def _time_from(kind: str, m: re.Match[str]) -> time | None:
    g = m.groups()
    if kind == "past_to":
        hour = _hour(g[2])
        amount = g[0].lower()
        minutes = 30 if amount == "half" else 15 if amount == "quarter" else _minutes(amount)
        if not 1 <= hour <= 12 or minutes is None:
            return None
        total = _afternoon(g[3] or "", hour) * 60 + (minutes if g[1].lower() in ("past", "after") else -minutes)
        return time((total // 60) % 24, total % 60)
    if kind == "spoken_period":
        hour, minute = _hour(g[0]), int(g[1] or 0)
        return time(_afternoon(g[2], hour), minute) if 1 <= hour <= 12 else None
    if kind == "named":
        return time(0, 0) if g[0].lower() == "midnight" else time(12, 0)
    if kind == "clock":  # "1:30" in a booking is 13:30; "10:30" and "16:30" are what they say
        hour = int(g[0])
        return time(_business_hour(hour) if len(g[0]) == 1 or hour < 10 else hour, int(g[1]))
    if kind == "ampm":
        hour, minute, pm = int(g[0]), int(g[1] or 0), g[2].lower() == "p"
    else:
        hour = UNITS.get(g[0].lower(), 0)
        minute = {"thirty": 30, "fifteen": 15}.get((g[1] or "").lower(), 45 if g[1] else 0)
        suffix = g[2].lower().replace(".", "")
        if "clock" in suffix:
            return time(_business_hour(hour) % 24, minute)
        pm = suffix.startswith("p") or "afternoon" in suffix or "evening" in suffix
    if not 1 <= hour <= 12 or minute > 59:
        return None
    return time(hour % 12 + (12 if pm else 0), minute)


def _minutes(amount: str) -> int | None:
    words = amount.replace("minutes", "").strip()
    return int(words) if words.isdigit() else (None if (n := words_to_number(words)) is None else int(n))


def find_times(text: str) -> list[Found[time]]:
    out: list[Found[time]] = []
    taken = bytearray(len(text))  # the characters in a time found already (as in find_dates)
    for kind, pattern in _TIME_PATTERNS:
        for m in pattern.finditer(text):
            if taken[m.start()]:
                continue
            value = _time_from(kind, m)
            if value is not None:
                out.append(Found(value, m.start(), m.end()))
                taken[m.start() : m.end()] = b"\x01" * (m.end() - m.start())
    return sorted(out, key=lambda f: f.start)


PAIRING_CHARS = 40  # a date and a time further apart than this are not one moment


def find_datetimes(text: str, ref: datetime, day_first: bool = False) -> list[Found[datetime]]:
    """A time with the nearest date close to it; in an utterance without dates, a time alone is its
    next occurrence ("call me at 3 pm")."""
    dates = find_dates(text, ref.date(), day_first)  # by start, disjoint
    starts, longest = [d.start for d in dates], max((d.end - d.start for d in dates), default=0)
    out = []
    for t in find_times(text):
        # only dates starting within reach are compared: all of them for each time was quadratic
        reach = dates[
            bisect_left(starts, t.start - PAIRING_CHARS - longest) : bisect_right(starts, t.end + PAIRING_CHARS)
        ]
        near = [d for d in reach if min(abs(d.end - t.start), abs(t.end - d.start)) <= PAIRING_CHARS]
        if near:
            d = min(near, key=lambda f: min(abs(f.end - t.start), abs(t.end - f.start)))
            moment = datetime.combine(d.value, t.value, ref.tzinfo)
            out.append(Found(moment, min(d.start, t.start), max(d.end, t.end)))
        elif not dates:
            moment = datetime.combine(ref.date(), t.value, ref.tzinfo)
            out.append(Found(moment if moment > ref else moment + timedelta(days=1), t.start, t.end))
    return out
