"""`postcall eval`'s wiring of the extractor (scoring itself: tests/unit/extractor/evaluation)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from services.cli import evaluate
from services.extractor import __main__ as extractor_main
from services.extractor.settings import ExtractorSettings


class Wired(Exception):
    pass


def test_the_local_model_is_given_time_for_the_calls_queued_ahead_on_its_one_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """llama-server runs one slot and answers in half a minute or more: with the extractor's default 45 s
    request timeout, `postcall eval --provider local --limit 6 --concurrency 6` failed 5 of 6 calls
    (LLM timeout, then the circuit open)."""
    seen: list[ExtractorSettings] = []

    @contextlib.contextmanager
    def endpoint(*_: Any) -> Iterator[tuple[str, str]]:
        yield "http://127.0.0.1:9/v1", "smollm2-135m-instruct"

    @contextlib.asynccontextmanager
    async def provider(settings: ExtractorSettings) -> AsyncIterator[None]:
        seen.append(settings)
        raise Wired
        yield

    monkeypatch.setattr(evaluate, "_endpoint", endpoint)
    monkeypatch.setattr(extractor_main, "open_provider", provider)
    with pytest.raises(Wired):
        asyncio.run(evaluate._run([], "local", None, None, 6))
    assert seen[0].llm.request_timeout_seconds >= 6 * 240


def test_a_dataset_that_cannot_be_read_is_one_line_whatever_its_path_holds(tmp_path: Any) -> None:
    """The reason was printed as rich markup: a path holding `[/]` (or a line of the file quoted in the
    reason) raised MarkupError, a traceback and exit 1, instead of the reason and exit 2."""
    from typer.testing import CliRunner

    from services.cli.main import app

    folder = tmp_path / "labels[" / "]"  # labels[/]
    folder.mkdir(parents=True)
    (folder / "calls.jsonl").write_text("{\n")
    done = CliRunner().invoke(app, ["eval", str(folder / "calls.jsonl"), "--format", "postcall"])
    assert done.exit_code == 2, done.output
    assert done.exception is None or isinstance(done.exception, SystemExit), repr(done.exception)
    assert "labels[/]/calls.jsonl" in done.output.replace("\n", ""), done.output
