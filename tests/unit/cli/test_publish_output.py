"""`postcall publish` prints a payload's ids and the paths of its problems, which come from whoever wrote
the payload (a vendor's webhook saved to a file): each control character is shown escaped, never sent to
the terminal, where ESC starts a sequence (an OSC-8 link whose text lies about its target, a screen clear)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from services.cli import publish
from services.cli.main import app
from services.devkit.kafka import ROOT
from services.ingress.publisher import Published

LINK = "\x1b]8;;https://evil.example/\x07support\x1b]8;;\x07"


def conversation(tmp_path: Path, **changes: Any) -> str:
    event = orjson.loads((ROOT / "examples" / "conversations" / "0007-appointment-booked.json").read_bytes())
    path = tmp_path / "conversation.json"
    path.write_bytes(orjson.dumps(event | changes))
    return str(path)


def test_the_published_ids_are_printed_with_their_control_characters_escaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def published(event: Any, *_: Any) -> Published:
        return Published(event.event_id, event.conversation_id, "postcall.conversation-ended.v1", 0, 7)

    monkeypatch.setattr(publish, "_publish", published)
    done = CliRunner().invoke(app, ["publish", conversation(tmp_path, event_id=f"evt-{LINK}")])
    assert done.exit_code == 0, done.output
    assert "\x1b" not in done.output and "\x07" not in done.output, repr(done.output)
    assert "evt-\\x1b]8;;https://evil.example/\\x07support" in done.output


def test_a_problems_path_from_the_payloads_keys_is_printed_with_its_control_characters_escaped(
    tmp_path: Path,
) -> None:
    done = CliRunner().invoke(app, ["publish", conversation(tmp_path, dynamic_variables={LINK: [1]})])
    assert done.exit_code == 2, done.output
    assert "\x1b" not in done.output and "\x07" not in done.output, repr(done.output)
    assert "dynamic_variables.\\x1b]8;;https://evil.example/\\x07support" in done.output
