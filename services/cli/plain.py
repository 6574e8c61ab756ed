"""Kafka data on an operator's terminal: plain text, never markup, every control character visible.

A key, a header or a value is whatever some producer wrote. Printed as rich markup, `conv-[/]` crashes
the command and `[link=...]` forges a link; printed raw, ESC starts a terminal escape sequence (an
OSC-8 link whose text lies about its target, a clear-screen that hides the rows above) and U+202E
reverses the rest of the line. So every value read from Kafka reaches the console through `plain()`: a
rich Text (never parsed as markup) with control and format characters written as `\\x1b`, `\\u202e`.
"""

from __future__ import annotations

import unicodedata

from rich.text import Text

_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})  # controls, format (bidi), separators


def escape_controls(text: str) -> str:
    """`text` with each control, format or unassigned character as a Python-style escape."""
    if text.isprintable():  # the common case, and fast: no character to escape
        return text
    return "".join(_escaped(c) if unicodedata.category(c) in _HIDDEN else c for c in text)


def _escaped(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def plain(value: str | bytes | None, style: str = "") -> Text:
    """A value from Kafka as Text: bytes decoded as UTF-8 (invalid bytes replaced), controls escaped."""
    if value is None:
        return Text("", style=style)
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return Text(escape_controls(text), style=style)


def plain_lines(text: str) -> Text:
    """Several lines (pretty-printed JSON): each line escaped, the line breaks kept."""
    return Text("\n".join(escape_controls(line) for line in text.split("\n")))
