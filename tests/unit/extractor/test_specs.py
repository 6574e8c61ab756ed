"""Agent configuration -> ExtractionSpec: lookup by agent and version, unknown and broken agents, reload
(the last good revision on a bad edit or an unreadable folder, reload metrics, the background watch)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from schemas.events import Agent
from services.common.errors import RetryableError
from services.extractor.specs import SpecSource
from tests.unit.extractor.conftest import EXAMPLES, conversation

AGENTS = EXAMPLES.parent / "agents"
RELOADS = "postcall_extractor_config_reloads_total"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    shutil.copytree(AGENTS, tmp_path / "agents")
    return tmp_path / "agents"


def test_the_spec_of_the_conversation_agent(folder: Path) -> None:
    spec = SpecSource(folder)(conversation("0005"))
    assert spec is not None and spec.agent_id == "support-line"
    assert {f.name for f in spec.fields} >= {"issue_category", "resolved", "severity", "case_id"}
    assert any("called back" in t.question for t in spec.triggers)
    assert spec.recipient_routes and spec.recipient_routes[0].id == "complaints"


def test_an_unknown_agent_has_no_spec(folder: Path) -> None:
    event = conversation("0005").model_copy(update={"agent": Agent(id="ghost")})
    assert SpecSource(folder)(event) is None


def test_an_agent_whose_only_file_is_broken_is_retried(folder: Path) -> None:
    (folder / "broken.yaml").write_text("agent: broken-line\nextraction:\n  fields:\n    - {name: X, type: nope}\n")
    event = conversation("0005").model_copy(update={"agent": Agent(id="broken-line")})
    with pytest.raises(RetryableError, match="broken-line"):
        SpecSource(folder)(event)


def test_a_changed_file_is_reloaded_with_a_new_revision(folder: Path) -> None:
    source = SpecSource(folder)
    before = source(conversation("0005"))
    assert before is not None and source(conversation("0005")) is before  # derived once per revision
    path = folder / "support-line.yaml"
    path.write_text(path.read_text().replace("min_confidence: 0.6", "min_confidence: 0.8"))
    os.utime(path, ns=(1, 1))  # a different mtime even on a coarse clock
    assert source.reload_if_changed()
    after = source(conversation("0005"))
    assert after is not None and after.min_confidence == 0.8
    assert after.config_revision != before.config_revision
    assert not source.reload_if_changed()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_bad_edit_keeps_the_last_good_spec_and_the_reload_metrics_say_so(folder: Path) -> None:
    source = SpecSource(folder)
    before = source(conversation("0005"))
    ok, problems = sample(RELOADS, result="ok"), sample(RELOADS, result="problems")
    path = folder / "support-line.yaml"
    path.write_text(path.read_text().replace("min_confidence: 0.6", "min_confidence: seven"))
    os.utime(path, ns=(1, 1))
    assert source.reload_if_changed()
    assert source(conversation("0005")) is before  # the last good revision, not a spec of the bad file
    assert sample(RELOADS, result="problems") == problems + 1 and sample(RELOADS, result="ok") == ok
    assert sample("postcall_extractor_config_problems") >= 1
    assert sample("postcall_extractor_config_agents") == len(source.catalog.configs)


def test_an_unreadable_folder_keeps_the_last_good_configuration_and_counts_an_error(folder: Path) -> None:
    source = SpecSource(folder)
    before = source(conversation("0005"))
    errors = sample(RELOADS, result="error")
    shutil.rmtree(folder)
    assert not source.reload_if_changed()
    assert source(conversation("0005")) is before
    assert sample(RELOADS, result="error") == errors + 1


async def test_watching_reloads_in_the_background_at_the_interval(folder: Path) -> None:
    source = SpecSource(folder)
    path = folder / "support-line.yaml"
    async with source.watching(0.05):
        path.write_text(path.read_text().replace("min_confidence: 0.6", "min_confidence: 0.8"))
        os.utime(path, ns=(1, 1))
        for _ in range(200):  # up to 10 s; done at the first poll after the change
            spec = source(conversation("0005"))
            if spec is not None and spec.min_confidence == 0.8:
                break
            await asyncio.sleep(0.05)
    spec = source(conversation("0005"))
    assert spec is not None and spec.min_confidence == 0.8
