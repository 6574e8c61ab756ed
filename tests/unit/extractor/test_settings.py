"""The extractor's settings: what is refused at start, and how it is named."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.common.settings import settings_problems
from services.extractor.settings import ExtractorSettings


@pytest.mark.parametrize(
    "key",
    ["sk-live-abc123\n", "sk-live-abc123\r\n", " sk-live-abc123", "sk-live\u200babc123", "sk-live-abc123é", "sk live"],
    ids=["newline", "crlf", "space-before", "zero-width-space", "non-ascii", "space-inside"],
)
def test_an_api_key_no_http_header_can_carry_is_refused_at_start_without_quoting_it(key: str, tmp_path: Path) -> None:
    """A Secret made from a file keeps the file's last newline, and a key copied from a page may hold a
    zero-width space. Before: such a key loaded, and every chat request failed in the client before it was
    sent ('Connection error.' for a newline, UnicodeEncodeError for a non-ASCII character): the circuit
    opened and extraction paused for good on an endpoint that was up, with nothing naming the key."""
    with pytest.raises(ValidationError) as caught:
        ExtractorSettings(config_dir=tmp_path, llm={"base_url": "http://llm:8080/v1", "api_key": key})
    [line] = settings_problems(caught.value, model=ExtractorSettings)
    assert line.startswith("POSTCALL_LLM__API_KEY: ") and "HTTP header" in line, line
    assert "live" not in line


def test_an_api_key_of_printable_characters_loads(tmp_path: Path) -> None:
    key = "sk-proj-AbC_12-x.y~z+/="
    settings = ExtractorSettings(config_dir=tmp_path, llm={"api_key": key})
    assert settings.llm.api_key is not None and settings.llm.api_key.get_secret_value() == key


async def _served(runtime: object) -> None:
    raise AssertionError("the extractor started consuming")


def test_model_calls_that_cannot_finish_within_the_handler_timeout_are_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A record may take an answer and its repair round (each up to request_timeout_seconds), a transcript
    fetch and a token count, inside runtime.handler_timeout_seconds. Before: a request timeout of 100 s
    against the 120 s handler started, and every record that needed a repair round was stopped by the
    handler's timeout mid-repair, retried through its tiers (a billed answer each time), then dead-lettered."""
    from services.extractor import __main__ as extractor_main

    monkeypatch.setattr(extractor_main, "serve", _served)
    for name, value in {
        "POSTCALL_CONFIG_DIR": str(tmp_path),
        "POSTCALL_LLM__BASE_URL": "http://127.0.0.1:1/v1",
        "POSTCALL_LLM__REQUEST_TIMEOUT_SECONDS": "100",
    }.items():
        monkeypatch.setenv(name, value)
    assert extractor_main.start() == 2
    err = capsys.readouterr().err
    assert "POSTCALL_LLM__REQUEST_TIMEOUT_SECONDS" in err and "POSTCALL_RUNTIME__HANDLER_TIMEOUT_SECONDS" in err, err
    assert "215 s" in err, err  # 2 x 100 + 10 (the transcript fetch) + 5 (a token count)


def test_the_default_timings_and_the_local_demos_fit_within_the_handler_timeout(tmp_path: Path) -> None:
    default = ExtractorSettings(config_dir=tmp_path, llm={"base_url": "http://llm:8080/v1"})
    assert default.timing_problem() is None
    local = ExtractorSettings(  # services/devkit/demo.py's `make run LLM=local`
        config_dir=tmp_path,
        llm={"base_url": "http://llm:8080/v1", "request_timeout_seconds": 280},
        runtime={"handler_timeout_seconds": 600},
    )
    assert local.timing_problem() is None
    heuristic = ExtractorSettings(config_dir=tmp_path, llm={"request_timeout_seconds": 300})
    assert heuristic.timing_problem() is None  # no model is called


@pytest.mark.parametrize(
    "model", ["", " ", "gpt-4o-mini\n", " gpt-4o-mini"], ids=["empty", "blank", "newline", "space"]
)
def test_a_default_model_that_is_empty_or_padded_is_refused_at_start(model: str, tmp_path: Path) -> None:
    """POSTCALL_LLM__MODEL set but empty (a template's missing value) or with a file's newline: it loaded,
    and every request named a model no endpoint serves: refused as invalid (a configuration error on every
    record, each failed and dead-lettered) or a 404 (the circuit open, extraction paused)."""
    with pytest.raises(ValidationError) as caught:
        ExtractorSettings(config_dir=tmp_path, llm={"model": model})
    [line] = settings_problems(caught.value, model=ExtractorSettings)
    assert line.startswith("POSTCALL_LLM__MODEL: ") and "model name" in line, line
