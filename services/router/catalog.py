"""The live configuration: the loaded catalog and its compiled agents, reloaded without a restart.

The polling, the last-good rule and the reload metrics are services.common.config's (shared with
the extractor); what is the router's is compiling each agent, once per revision, at load time, never
per record.
"""

from __future__ import annotations

import logging
from pathlib import Path

from services.common.config import ConfigWatcher, ReloadMetrics
from services.router import metrics
from services.router.engine import CompiledAgent

log = logging.getLogger("postcall.router.config")
RELOAD_METRICS = ReloadMetrics(
    metrics.CONFIG_RELOADS, metrics.CONFIG_PROBLEMS, metrics.CONFIG_AGENTS, metrics.CONFIG_RELOAD_FAILED
)


class CatalogHolder(ConfigWatcher[CompiledAgent]):
    """`lookup(agent_id, version)`: the compiled agent, None when no configuration names it."""

    def __init__(self, directory: Path, default_fallback: str, *, trial: bool = False) -> None:
        self.default_fallback = default_fallback
        derive = lambda config: CompiledAgent(config, default_fallback)  # noqa: E731
        super().__init__(directory, derive, RELOAD_METRICS, log, trial=trial)
