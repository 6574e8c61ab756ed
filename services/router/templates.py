"""Safe template rendering: `{{name}}` and `{{name | fallback text}}` substitution, nothing else.

Templates are parsed once, when a configuration is loaded (schemas.agent_config.parse_template), into
literal text and variable references. Rendering concatenates literals and looked-up values in one
pass: no expressions, no attribute access, no code, and a value is never rendered again, so a
transcript that contains `{{...}}` stays literal text. A missing value renders the reference's own
fallback (`| text`), else the agent's default fallback text; it never raises.

In JSON webhook bodies a string that is exactly one reference (`"{{interest_level}}"`) renders as the
typed value (number, boolean or null); when the value is missing it renders the reference's fallback
text if it has one, else JSON null. Every other string renders as text.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

from schemas.agent_config import VarRef, parse_template

Scalar = str | int | float | bool | None


class Values(Protocol):
    """Where references are looked up; None means missing (renders the fallback)."""

    def get(self, name: str) -> Scalar: ...

    def default_fallback(self, name: str) -> str: ...


def text_of(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def slack_escape(text: str) -> str:
    """Slack's own rule for text in messages: only &, < and > are control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True, slots=True)
class Template:
    source: str
    parts: tuple[str | VarRef, ...]
    #: render(values) with no escape and no fallback of the caller's, made once (_plain_render)
    _plain: Callable[[Values], str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_plain", _plain_render(self.parts))

    @classmethod
    def compile(cls, text: str) -> Template:
        return cls(text, parse_template(text))

    @property
    def is_literal(self) -> bool:
        """It holds no reference: it renders its own text whatever the record (render_plain)."""
        return all(isinstance(p, str) for p in self.parts)

    def render_plain(self) -> str:
        """A literal template's text."""
        assert self.is_literal
        return "".join(p for p in self.parts if isinstance(p, str))

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parts if isinstance(p, VarRef)]

    def render(self, values: Values, escape: Callable[[str], str] | None = None, fallback: str | None = None) -> str:
        """`fallback` overrides the default fallback text (e.g. "" for email recipients)."""
        if escape is None and fallback is None:
            return self._plain(values)
        if len(self.parts) == 1 and isinstance(self.parts[0], str):
            return self.parts[0]
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = values.get(part.name)
            if value is None:
                text = part.fallback if part.fallback is not None else fallback
                text = values.default_fallback(part.name) if text is None else text
            else:
                text = text_of(value)
            out.append(escape(text) if escape else text)
        return "".join(out)

    def render_html(self, values: Values) -> str:
        """Literal text is the author's HTML; every value and fallback is escaped."""
        return self.render(values, escape=html.escape)

    def render_slack(self, values: Values) -> str:
        """Literal text is the author's Slack markup (`<!here>`, `<https://x|link>`); every value and
        fallback is escaped, so a caller's `<!channel>` or `<https://evil|https://good>` arrives as text."""
        return self.render(values, escape=slack_escape)

    def render_path(self, values: Values) -> tuple[str, list[str]]:
        """A URL path: literal text is the author's; every value (or explicit `| fallback`) is
        percent-encoded whole, '/', '?', '#', '%' and '.' included, so it stays inside its segment. The
        second item names the references that rendered empty with no fallback of their own: the caller
        skips the request rather than send `/cases/` (the collection) for `/cases/{{case_id}}`."""
        out: list[str] = []
        empty: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = values.get(part.name)
            text = text_of(value) if value is not None else (part.fallback or "")
            if not text.strip():
                empty.append(part.name)
            out.append(quote(text, safe="").replace(".", "%2E"))
        return "".join(out), empty

    def render_typed(self, values: Values) -> Any:
        """A template that is exactly one reference renders its typed value; others render text."""
        if len(self.parts) == 1 and isinstance(self.parts[0], VarRef):
            ref = self.parts[0]
            value = values.get(ref.name)
            if value is None:
                return ref.fallback  # None (JSON null) unless the template gave a fallback
            return value
        return self.render(values)


def _plain_render(parts: tuple[str | VarRef, ...]) -> Callable[[Values], str]:
    """Template.render(values) for these parts, with what does not depend on the record decided here."""
    if len(parts) == 1 and isinstance(parts[0], str):
        text = parts[0]
        return lambda values: text
    # (literal text, or None and the reference's name and own fallback)
    plan = tuple((p, "", None) if isinstance(p, str) else (None, p.name, p.fallback) for p in parts)

    def render(values: Values) -> str:
        out: list[str] = []
        for literal, name, fallback in plan:
            if literal is not None:
                out.append(literal)
                continue
            value = values.get(name)
            if value is None:
                out.append(fallback if fallback is not None else values.default_fallback(name))
            else:
                out.append(value if type(value) is str else text_of(value))
        return "".join(out)

    return render


Render = Callable[[Values], Any]


class JsonTemplate:
    """A JSON body whose every string is a template; keys and non-string values are kept as they are.
    Compiled into one function per node, so rendering a record does no type dispatch."""

    def __init__(self, body: Any) -> None:
        self.render: Render = self._compile(body)

    @classmethod
    def _compile(cls, node: Any) -> Render:
        if isinstance(node, str):
            template = Template.compile(node)
            if len(template.parts) == 1 and isinstance(template.parts[0], VarRef):
                name, fallback = template.parts[0].name, template.parts[0].fallback  # render_typed, inlined

                def typed(values: Values) -> Any:
                    value = values.get(name)
                    return fallback if value is None else value

                return typed
            return template.render_typed
        if isinstance(node, dict):
            items = [(str(k), cls._compile(v)) for k, v in node.items()]

            def render_dict(values: Values) -> dict[str, Any]:
                out = {}  # a loop: a comprehension would be a second function call
                for k, render in items:
                    out[k] = render(values)
                return out

            return render_dict
        if isinstance(node, list):
            renders = [cls._compile(v) for v in node]
            return lambda values: [render(values) for render in renders]
        return lambda values: node
