"""The one YAML reader of configuration files (agent files, the destinations file).

An agent author writes these files, and the router re-reads them on every change, so the reader refuses
what YAML can do beyond plain data, each with its line:

* aliases and anchors (`&a`, `*a`, `<<: *a`): a 345-byte file of nested aliases expands to a million
  nodes; configuration never needs them;
* tags other than the core schema's (`!!binary`, `!!omap`, `!!set`, `!!timestamp`, `!custom`): they
  build objects the validators do not expect;
* more than MAX_DEPTH levels of nesting (the composer recurses) or MAX_NODES nodes;
* half of a character written as a UTF-16 escape ("\\ud83d" alone: a lone surrogate, which no UTF-8
  writer takes); a pair ("\\ud83d\\ude00") is read as the character it writes;
* a decimal integer longer than Python reads from text (sys.get_int_max_str_digits: int() raised
  ValueError out of the constructor, which the router's start and reload did not expect).

Every error is a YamlProblem with a 1-based line, never another exception.
"""

from __future__ import annotations

import difflib
import re
import sys
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Tag
from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer, ComposerError, MaxDepthExceededError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent, ScalarEvent
from ruamel.yaml.reader import ReaderError

MAX_DEPTH = 64
MAX_NODES = 100_000
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_DECIMAL_INT = re.compile(r"[-+]?[0-9_]+")  # what ruamel's int constructor reads with int(text)
CORE_TAGS = frozenset(f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map"))


class YamlProblem(ValueError):
    """Raised when a configuration file is not YAML this project reads; `line` is 1-based."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"{line}: {message}")
        self.line, self.message = line, message


class _PlainDataComposer(Composer):
    """ruamel's composer, refusing aliases, anchors, non-core tags and too many nodes."""

    nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        if isinstance(event, AliasEvent):
            raise ComposerError(None, None, "aliases (*name) are not allowed in configuration", event.start_mark)
        if event.anchor is not None:
            raise ComposerError(None, None, "anchors (&name) are not allowed in configuration", event.start_mark)
        tag = getattr(event, "tag", None)
        if tag is not None and str(tag) not in CORE_TAGS:
            shown = str(tag).replace("tag:yaml.org,2002:", "!!")
            raise ComposerError(None, None, f"the tag {shown} is not allowed in configuration", event.start_mark)
        if (
            isinstance(event, ScalarEvent)
            and not event.style  # plain: a quoted scalar is text
            and len(event.value) > sys.get_int_max_str_digits() > 0
            and _DECIMAL_INT.fullmatch(event.value)
            and sum(c != "_" for c in event.value.lstrip("+-")) > sys.get_int_max_str_digits()
        ):
            limit = sys.get_int_max_str_digits()
            raise ComposerError(None, None, f"an integer of more than {limit} digits", event.start_mark)
        if isinstance(event, ScalarEvent) and _SURROGATE.search(event.value):
            event.value = _joined(event.value, event.start_mark)
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ComposerError(None, None, f"more than {MAX_NODES} values", event.start_mark)
        return super().compose_node(parent, index)


def _joined(value: str, mark: Any) -> str:
    """A double-quoted scalar's UTF-16 escapes as the characters they write: ruamel reads "\\ud83d\\ude00"
    as two surrogates, which no UTF-8 writer takes (orjson, hashing a flow's revision, raised TypeError:
    the router could not start). A pair is its character; half of one is refused."""
    joined = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    lone = _SURROGATE.search(joined)
    if lone is not None:
        raise ComposerError(
            None,
            None,
            f"\\u{ord(lone.group()):04x} is half of a character (a UTF-16 surrogate): write the character "
            "itself, its two \\u escapes together, or one \\U escape (\\U0001F600)",
            mark,
        )
    return joined


def read_yaml(data: str | bytes) -> Any:
    """The document as ruamel round-trip nodes (they keep line numbers); YamlProblem when it is not
    plain YAML data."""
    yaml = YAML(typ="rt")
    yaml.Composer = _PlainDataComposer
    yaml.max_depth = MAX_DEPTH
    try:
        return yaml.load(data)
    except MaxDepthExceededError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        raise YamlProblem(line, f"nested deeper than {MAX_DEPTH} levels") from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise YamlProblem(mark.line + 1 if mark else 1, str(exc.problem or exc.context)) from None
    except ReaderError as exc:
        raw = data.encode() if isinstance(data, str) else data
        line = raw[: max(exc.position, 0)].count(b"\n") + 1
        raise YamlProblem(line, f"not UTF-8 text ({exc.reason})") from None
    except YAMLError as exc:
        raise YamlProblem(1, type(exc).__name__) from None
    except RecursionError:
        raise YamlProblem(1, f"nested deeper than {MAX_DEPTH} levels") from None


# ── Unknown keys ──────────────────────────────────────────────────────────────────────────────────


def unknown_key(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """pydantic's extra_forbidden at `loc` (its own location, union tags included) as a message naming the
    key allowed there that it may have meant: `unknown field 'priorty' (did you mean 'priority'?)`."""
    close = difflib.get_close_matches(str(loc[-1]), keys_at(model, loc[:-1]), n=1)
    return f"unknown field {loc[-1]!r}" + (f" (did you mean {close[0]!r}?)" if close else "")


def misspelt_tag(error: Any) -> tuple[str, str] | None:
    """pydantic's union_tag_not_found (a tagged union's mapping without its tag key: `platform`, `kind`, an
    action's `type`) as (the key written, its message) when the mapping has a key close to the tag key:
    `platfrom: vapi` is `unknown field 'platfrom' (did you mean 'platform'?)`, not only the missing tag.
    The error must carry its input (only the mapping's keys are read, never a value)."""
    written = error.get("input")
    if error.get("type") != "union_tag_not_found" or not isinstance(written, dict):
        return None
    tag = str(error.get("ctx", {}).get("discriminator", "")).strip("'")
    close = difflib.get_close_matches(tag, [k for k in written if isinstance(k, str) and k != tag], n=1)
    return (close[0], f"unknown field {close[0]!r} (did you mean {tag!r}?)") if close else None


def keys_at(model: Any, loc: tuple[int | str, ...]) -> list[str]:
    """The keys a file may write where pydantic's `loc` (union tags included) ends, following `model`'s
    fields, lists, mappings and unions. Empty where the walk cannot follow `loc`."""
    node: Any = model
    for key in loc:
        node = _step(node, key)
        if node is None:
            return []
    node = _unwrapped(node)
    if get_origin(node) in (Union, types.UnionType):  # `X | None`
        present = [m for m in get_args(node) if m is not type(None)]
        node = _unwrapped(present[0]) if len(present) == 1 else None
    if isinstance(node, type) and issubclass(node, BaseModel):
        return [f.alias or name for name, f in node.model_fields.items()]
    return []


def _unwrapped(kind: Any) -> Any:
    while get_origin(kind) is Annotated:
        kind = get_args(kind)[0]
    return kind


def _step(kind: Any, key: int | str) -> Any:
    kind = _unwrapped(kind)
    origin = get_origin(kind)
    if origin in (Union, types.UnionType):
        members = get_args(kind)
        tagged = next((m for m in members if _tagged(m, key)), None)
        if tagged is not None:
            return tagged
        present = [m for m in members if m is not type(None)]
        return _step(present[0], key) if len(present) == 1 else None  # `X | None`
    if origin is list and isinstance(key, int):
        return get_args(kind)[0]
    if origin is dict:
        return get_args(kind)[1]
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return next((f.annotation for name, f in kind.model_fields.items() if key in (name, f.alias)), None)
    return None


# a smart union's member in an error location: `HeaderSecret`, or wrapped by its model validators
# `function-after[_one_source(), HeaderSecret]` (before, wrap and plain validators alike)
_MEMBER = re.compile(r"^(?:function-(?:after|before|wrap|plain)\[.*, )+(\w+)\]+$")


def _tagged(member: Any, key: int | str) -> bool:
    """Whether a location's `key` is the tag that names this union member: a `Tag` (a condition kind), or
    the value of its discriminating literal field (an action's `type`, a destination's `kind`)."""
    tags = get_args(member)[1:] if get_origin(member) is Annotated else ()
    if any(isinstance(t, Tag) and t.tag == key for t in tags):
        return True
    inner = _unwrapped(member)
    if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
        return False
    if isinstance(key, str) and _MEMBER.sub(r"\1", key) == inner.__name__:
        return True  # an untagged (smart) union names a model member by its class, inside its validators
    return any(
        get_origin(f.annotation) is Literal and key in get_args(f.annotation) for f in inner.model_fields.values()
    )
