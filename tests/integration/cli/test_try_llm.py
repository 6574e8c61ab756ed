"""`postcall try` with the LLM configured as the extractor's is (POSTCALL_LLM__*): the real OpenAI client
talks to a real OpenAI-compatible HTTP server on 127.0.0.1; an unreachable endpoint exits 1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from schemas.agents import trigger_id
from services.cli.main import app
from tests.support.fake_llm import FakeLLM, Script
from tests.unit.router.support import write

ROOT = Path(__file__).resolve().parents[3]
CALLBACK = ROOT / "examples" / "conversations" / "0005-callback-request.json"
QUESTION = "Did the customer ask to be called back?"
AGENT = f"""
agent: support-line
extraction: {{fields: [{{name: severity, type: enum, values: [low, high]}}]}}
flows:
  - id: callback
    draft: true
    when: {{ai: "{QUESTION}"}}
    actions: [{{type: task, title: "Call back ({{{{severity}}}})"}}]
"""


@pytest.fixture
def llm(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLLM]:
    script = Script(fields={"severity": "high"}, triggers={trigger_id(QUESTION): True})
    with FakeLLM(script) as fake:
        monkeypatch.setenv("POSTCALL_LLM__BASE_URL", fake.base_url)
        monkeypatch.setenv("POSTCALL_LLM__REQUEST_TIMEOUT_SECONDS", "5")
        yield fake


def test_the_configured_llm_extracts_and_the_draft_flow_is_tried(llm: FakeLLM, tmp_path: Path) -> None:
    write(tmp_path, "support.yaml", AGENT)
    result = CliRunner().invoke(
        app, ["try", "-c", str(CALLBACK), "-a", str(tmp_path), "--json", "--expect", "callback"]
    )
    assert result.exit_code == 0, result.output
    out = orjson.loads(result.output)
    assert out["extraction"]["provider"] == "openai" and out["extraction"]["fields"]["severity"]["value"] == "high"
    assert [a["value"]["title"] for a in out["actions"]] == ["Call back (high)"]
    assert llm.count == 1  # one model call, as the extractor makes


def test_the_heuristic_can_be_forced_without_calling_the_model(llm: FakeLLM, tmp_path: Path) -> None:
    write(tmp_path, "support.yaml", AGENT)
    result = CliRunner().invoke(
        app, ["try", "-c", str(CALLBACK), "-a", str(tmp_path), "--json", "--provider", "heuristic"]
    )
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.output)["extraction"]["provider"] == "heuristic" and llm.count == 0


def test_an_unreachable_llm_exits_1_saying_extraction_did_not_finish(llm: FakeLLM, tmp_path: Path) -> None:
    write(tmp_path, "support.yaml", AGENT)
    llm.down()
    result = CliRunner().invoke(app, ["try", "-c", str(CALLBACK), "-a", str(tmp_path)])
    assert result.exit_code == 1 and "extraction did not finish" in result.output
