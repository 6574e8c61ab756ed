"""The shared configuration watcher: derived once per revision, reused across reloads, the last good
state kept; the metrics go to the series the service passes."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge

from schemas.agent_config import AgentConfig
from services.common.config import ConfigWatcher, ReloadMetrics, fingerprint

AGENTS = Path(__file__).resolve().parents[3] / "examples" / "agents"


def metrics() -> tuple[ReloadMetrics, CollectorRegistry]:
    registry = CollectorRegistry()
    return ReloadMetrics(
        Counter("t_reloads_total", "r", ["result"], registry=registry),
        Gauge("t_problems", "p", registry=registry),
        Gauge("t_agents", "a", registry=registry),
        Gauge("t_reload_failed", "f", registry=registry),
    ), registry


def watcher(folder: Path, derived: list[str]) -> tuple[ConfigWatcher[str], CollectorRegistry]:
    def derive(config: AgentConfig) -> str:
        derived.append(config.revision)
        return f"{config.agent}:{config.revision}"

    m, registry = metrics()
    return ConfigWatcher(folder, derive, m, logging.getLogger("t")), registry


def test_each_revision_is_derived_once_and_an_unchanged_file_keeps_its_derived_object(tmp_path: Path) -> None:
    folder = shutil.copytree(AGENTS, tmp_path / "agents")
    derived: list[str] = []
    w, registry = watcher(folder, derived)
    assert len(derived) == len(w.catalog.configs) and len(set(derived)) == len(derived)
    sales = w.lookup("sales-line", None)
    support = w.lookup("support-line", None)
    path = folder / "support-line.yaml"
    path.write_text(path.read_text().replace("min_confidence: 0.6", "min_confidence: 0.8"))
    os.utime(path, ns=(1, 1))
    count = len(derived)
    assert w.reload_if_changed()
    assert len(derived) == count + 1  # only the changed file's agent
    assert w.lookup("sales-line", None) is sales and w.lookup("support-line", None) != support
    assert registry.get_sample_value("t_reloads_total", {"result": "ok"}) == 2
    assert registry.get_sample_value("t_agents") == len(w.catalog.configs)


def test_hidden_and_non_yaml_files_are_not_watched(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("x")
    (tmp_path / "b.yml").write_text("x")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "c.yaml").write_text("x")
    assert [Path(entry[0]).name for entry in fingerprint(tmp_path)] == ["a.yaml", "b.yml"]


def test_a_reload_that_raises_keeps_the_last_good_state_and_says_so_in_metrics(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Deriving a changed file's revision raised (a bug), or the folder went away: the service goes on
    with the last good configuration, the reload counts as an error and the failed gauge (what the
    PostcallAgentConfigReloadFailed alert reads) stays 1 until a reload loads again."""
    folder = shutil.copytree(AGENTS, tmp_path / "agents")
    broken = [False]

    def derive(config: AgentConfig) -> str:
        if broken[0] and config.agent == "support-line":
            raise RuntimeError("derive bug")
        return f"{config.agent}:{config.revision}"

    m, registry = metrics()
    w = ConfigWatcher(folder, derive, m, logging.getLogger("t"))
    support = w.lookup("support-line", None)
    path = folder / "support-line.yaml"
    broken[0] = True
    path.write_text(path.read_text().replace("min_confidence: 0.6", "min_confidence: 0.8"))
    os.utime(path, ns=(1, 1))

    assert not w.reload_if_changed()
    assert w.lookup("support-line", None) == support
    assert registry.get_sample_value("t_reloads_total", {"result": "error"}) == 1
    assert registry.get_sample_value("t_reload_failed") == 1
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "configuration reload failed; keeping the last good configuration"
    ]
    assert not w.reload_if_changed()  # unchanged since: not tried again, still failed
    assert registry.get_sample_value("t_reload_failed") == 1

    broken[0] = False
    os.utime(path, ns=(2, 2))
    assert w.reload_if_changed() and w.lookup("support-line", None) != support
    assert registry.get_sample_value("t_reload_failed") == 0

    shutil.rmtree(folder)
    assert not w.reload_if_changed()
    assert w.lookup("support-line", None) is not None
    assert registry.get_sample_value("t_reloads_total", {"result": "error"}) == 2
    assert registry.get_sample_value("t_reload_failed") == 1
