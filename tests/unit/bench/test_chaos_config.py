"""The chaos run's services read a configuration folder without problems: only the agent, not the
destinations or the ingress endpoints beside it (each was reported at every start as a broken agent file)."""

from __future__ import annotations

from bench.chaos.__main__ import CONFIG_DIR
from schemas.agent_loader import load_catalog


def test_the_chaos_agents_folder_loads_without_problems() -> None:
    catalog = load_catalog(CONFIG_DIR)
    assert catalog.problems == ()
    assert catalog.lookup("chaos-line") is not None
