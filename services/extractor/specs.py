"""Agent configuration -> ExtractionSpec, reloaded without a restart.

The polling, the last-good rule (a file that became bad keeps its last good revision) and the reload
metrics are services.common.config's, shared with the router; what is the extractor's is deriving
each agent's spec, once per revision at load time, never per record.
"""

from __future__ import annotations

import logging
from pathlib import Path

from schemas.agents import ExtractionSpec, extraction_spec
from schemas.events import ConversationEnded
from services.common.config import ConfigWatcher, ReloadMetrics
from services.common.errors import RetryableError
from services.extractor import metrics

log = logging.getLogger("postcall.extractor.config")
RELOAD_METRICS = ReloadMetrics(
    metrics.CONFIG_RELOADS, metrics.CONFIG_PROBLEMS, metrics.CONFIG_AGENTS, metrics.CONFIG_RELOAD_FAILED
)


class SpecSource(ConfigWatcher[ExtractionSpec]):
    """`spec_for(event)`: the spec of the event's agent (and version), None for an unknown agent;
    RetryableError while the agent's only file has problems."""

    def __init__(self, directory: Path, *, trial: bool = False) -> None:
        super().__init__(directory, extraction_spec, RELOAD_METRICS, log, trial=trial)

    def __call__(self, event: ConversationEnded) -> ExtractionSpec | None:
        spec = self.lookup(event.agent.id, event.agent.version)
        if spec is None and self.is_broken(event.agent.id):
            # as in the router: the retry tiers give someone time to fix the file
            raise RetryableError(f"configuration for agent {event.agent.id} has problems and no good revision")
        return spec
