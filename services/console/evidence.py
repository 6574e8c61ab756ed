"""Evidence quotes found in the transcript, rendered as escaped HTML with `<mark>` around each quote.

The extractor keeps a quote when it appears in the transcript compared case- and whitespace-insensitively
(parts joined by an ellipsis each appear; services/extractor/review.py); the same comparison finds it
here, in each message. Every piece of text is escaped; the only markup is ours: `<mark class="ev"
data-ev="0 2">` where the numbers index the quotes (never a field name from the record, so nothing from
Kafka reaches an attribute or a CSS selector unescaped).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from markupsafe import Markup, escape

_ELLIPSIS = re.compile(r"\.\.\.|\u2026")
_QUOTES = "\"'\u201c\u201d\u2018\u2019 "
_APOSTROPHE = re.escape("'")
MAX_QUOTE_CHARS = 2_000  # a longer "quote" is not a quote; it is not searched for


@dataclass(frozen=True)
class Located:
    """Where quote `index` was found: (message position, start, end) per part; empty when nowhere."""

    index: int
    spans: tuple[tuple[int, int, int], ...]


def pattern(part: str) -> re.Pattern[str] | None:
    words = part.strip(_QUOTES).split()
    if not words:
        return None
    escaped = (re.escape(w.replace("\u2019", "'")).replace(_APOSTROPHE, "['\u2019]") for w in words)
    return re.compile(r"\s+".join(escaped), re.IGNORECASE)


def locate(quotes: Sequence[str | None], texts: Sequence[str]) -> list[Located]:
    out = []
    for index, quote in enumerate(quotes):
        spans: list[tuple[int, int, int]] = []
        if quote and len(quote) <= MAX_QUOTE_CHARS:
            for part in _ELLIPSIS.split(quote):
                found = _first(pattern(part), texts)
                if found is not None:
                    spans.append(found)
        out.append(Located(index, tuple(spans)))
    return out


def _first(regex: re.Pattern[str] | None, texts: Sequence[str]) -> tuple[int, int, int] | None:
    if regex is None:
        return None
    for position, text in enumerate(texts):
        match = regex.search(text)
        if match:
            return position, match.start(), match.end()
    return None


def highlight(texts: Sequence[str], located: Sequence[Located]) -> list[Markup]:
    """Each message's text, escaped, with every located quote wrapped in `<mark>`."""
    by_message: dict[int, list[tuple[int, int, int]]] = {}
    for found in located:
        for position, start, end in found.spans:
            by_message.setdefault(position, []).append((start, end, found.index))
    return [_marked(text, by_message.get(i, [])) for i, text in enumerate(texts)]


def _marked(text: str, spans: list[tuple[int, int, int]]) -> Markup:
    if not spans:
        return escape(text)
    cuts = sorted({0, len(text), *(s for s, _, _ in spans), *(e for _, e, _ in spans)})
    pieces: list[Markup] = []
    for start, end in pairwise(cuts):
        covering = sorted({i for s, e, i in spans if s <= start and end <= e})
        piece = escape(text[start:end])
        if covering:
            ids = " ".join(map(str, covering))
            piece = Markup('<mark class="ev" data-ev="{}">{}</mark>').format(ids, piece)
        pieces.append(piece)
    return Markup("").join(pieces)
