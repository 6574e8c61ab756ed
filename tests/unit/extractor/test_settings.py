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
