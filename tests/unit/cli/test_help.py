"""Every command's --help shows its own text: Typer renders help as rich markup, so a `[word]` in a
docstring or an option's help would vanish from the page an operator reads."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from schemas.routes import SERVICES
from services.cli.main import app


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    found = [(path, group)]
    for name, command in getattr(group, "commands", {}).items():
        found += _commands(command, (*path, name))
    return found


COMMANDS = _commands(typer.main.get_command(app))


def _texts(command: Any) -> list[str]:
    return [command.help or "", *(getattr(p, "help", None) or "" for p in command.params)]


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) or "postcall" for p, _ in COMMANDS])
def test_a_bracketed_word_in_a_help_text_is_shown(path: tuple[str, ...], command: Any) -> None:
    bracketed = {m for text in _texts(command) for m in re.findall(r"\[[^\]\s]+\]", text)}
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    shown = " ".join(result.output.split())
    assert [b for b in sorted(bracketed) if b not in shown] == []


@pytest.mark.parametrize("command", ["list", "replay"])
def test_dlq_service_help_names_every_service_with_a_dead_letter_topic(command: str) -> None:
    dlq: Any = dict(COMMANDS)[("dlq", command)]
    (help_text,) = [p.help for p in dlq.params if "--service" in p.opts]
    assert [s for s in SERVICES if s not in help_text] == [], help_text
