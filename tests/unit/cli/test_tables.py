"""Tables that name things an operator copies into the next command (topic names, conversation and event
ids) print them whole in an 80-column terminal or a pipe, never cut to `postcall.…`."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from typer.testing import CliRunner

from schemas.routes import registry
from services.cli import reextract
from services.cli.main import app
from services.cli.reextract import Chosen


def test_topics_list_prints_every_topic_name_whole_in_80_columns() -> None:
    out = CliRunner().invoke(app, ["topics", "list"], env={"COLUMNS": "80"})
    assert out.exit_code == 0, out.output
    assert max(map(len, out.output.splitlines())) <= 80
    for topic in registry():
        assert topic.name in out.output
    assert "…" not in out.output


def test_reextract_prints_conversation_and_event_ids_whole_in_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.StringIO()
    monkeypatch.setattr(reextract, "console", Console(file=buffer, width=80, color_system=None))
    ids = [("conv-2026-0006-complaint-threatens-cancel", "vapi:8c2f4a1e-3b7d-4f0e-9a61-5d2c7e9b1a04")]
    reextract._table([Chosen(2, 3, 0, c.encode(), b"{}", {}, e, c, "support-line") for c, e in ids])
    assert ids[0][0] in buffer.getvalue()  # whole, on one line: what --ids takes
    assert "…" not in buffer.getvalue()  # the event id and the time fold, nothing is cut


def test_reextract_names_the_ids_that_matched_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--ids` with a typo reported "0 conversation(s) ..." without saying which id found nothing."""
    found = Chosen(2, 3, 0, b"conv-1", b"{}", {}, "evt-1", "conv-1", "support-line")

    async def select(*args: object) -> list[Chosen]:
        return [found]

    monkeypatch.setattr(reextract, "select", select)
    out = CliRunner().invoke(
        app,
        ["reextract", "--ids", "conv-1,conv-typo,evt-gone", "--dry-run", "--source", "topic"],
        env={"COLUMNS": "200"},
    )
    assert out.exit_code == 0, out.output
    assert "no conversation on postcall.conversation-ended.v1 matches --ids conv-typo, evt-gone" in out.output
    assert "1 conversation(s) would be republished" in out.output
