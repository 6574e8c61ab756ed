"""Route one conversation through an agent configuration written in a test, as the router does: the
file is loaded by the project's loader (a problem fails the test) and the actions are built by the
router's own engine."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from schemas.agent_loader import load_catalog
from schemas.events import ActionBase, ConversationExtracted, DecisionTrace
from services.router.engine import CompiledAgent


def route(folder: Path, agent_yaml: str, event: ConversationExtracted) -> tuple[DecisionTrace, list[ActionBase]]:
    agents = folder / "agents"  # a folder of its own: the test may write other YAML files beside it
    agents.mkdir(parents=True, exist_ok=True)
    (agents / "agent.yaml").write_text(agent_yaml)
    catalog = load_catalog(agents)
    assert not catalog.problems, [str(p) for p in catalog.problems]
    [config] = catalog.configs.values()
    return CompiledAgent(config, "(not available)").route(event, datetime.now(UTC))
