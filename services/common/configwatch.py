"""The agent configuration folder, watched: reloaded without a restart, the last good state kept.

Shared by the router (compiled agents) and the extractor (extraction specs). The folder is polled; a
change in any YAML file's mtime, size or inode (a Kubernetes ConfigMap update swaps a symlink; a git
pull rewrites files) reloads it. Unchanged files keep their parsed form (same content hash, same
revision); a file that became bad keeps its last good revision (the loader's rule) and its problems are
logged once per change; a folder that cannot be read at all keeps the whole last good state.

What a service derives from an agent's configuration is derived here, at load time, once per revision
(never per record), and published together with its catalog in one assignment: a lookup never pairs
one catalog with another's derived objects.

With `trial=True` (a dry run: `postcall try`, the console's "Try a flow") the catalog is the folder's
`Catalog.trial()`: drafts as if published. A live service never sets it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Self, TypeVar

from prometheus_client import Counter, Gauge

from schemas.agent_config import AgentConfig
from schemas.agent_loader import Catalog, ConfigError, load_catalog

Fingerprint = tuple[tuple[str, int, int, int], ...]
D = TypeVar("D")


def fingerprint(directory: Path) -> Fingerprint:
    """Cheap change detection: (path, mtime_ns, size, inode) of every configuration file."""
    out = []
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).parts
        if path.suffix in (".yaml", ".yml") and not any(p.startswith(".") for p in rel):
            with contextlib.suppress(OSError):
                st = path.stat()
                out.append((str(path), st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


@dataclass(frozen=True)
class ReloadMetrics:
    """The service's own series, named by the service (dashboards and alerts read them by name)."""

    reloads: Counter  # labelled by result: ok, problems, error
    problems: Gauge
    agents: Gauge


class ConfigWatcher(Generic[D]):
    """The folder's catalog and, per agent configuration, `derive(config)`; `lookup` gives the latter."""

    def __init__(
        self,
        directory: Path,
        derive: Callable[[AgentConfig], D],
        metrics: ReloadMetrics,
        log: logging.Logger,
        *,
        trial: bool = False,
    ) -> None:
        self.directory = directory
        self.trial = trial
        self._derive = derive
        self._metrics = metrics
        self._log = log
        self._fingerprint = fingerprint(directory)
        self._state: tuple[Catalog, dict[str, D]] = (self._load(None), {})
        self._install(self._state[0])

    def _load(self, previous: Catalog | None) -> Catalog:
        catalog = load_catalog(self.directory, previous=previous)  # a trial catalog keeps the folder's files
        return catalog.trial() if self.trial else catalog

    @property
    def catalog(self) -> Catalog:
        return self._state[0]

    def lookup(self, agent_id: str, version: str | None) -> D | None:
        catalog, derived = self._state
        config = catalog.lookup(agent_id, version)
        return derived.get(config.revision) if config is not None else None

    def is_broken(self, agent_id: str) -> bool:
        """A file names this agent but has problems and no last good configuration."""
        return self._state[0].is_broken(agent_id)

    def reload_if_changed(self) -> bool:
        """Reload when the folder changed; True when it did. Never raises: the last good state stays."""
        current = fingerprint(self.directory)
        if current == self._fingerprint:
            return False
        self._fingerprint = current
        try:
            catalog = self._load(self.catalog)
        except (ConfigError, OSError) as exc:
            self._metrics.reloads.labels("error").inc()
            self._log.error(
                "configuration folder unreadable; keeping the last good configuration", extra={"error": str(exc)}
            )
            return False
        self._install(catalog)
        return True

    def _install(self, catalog: Catalog) -> None:
        previous = self._state[1]
        derived = {c.revision: previous.get(c.revision) or self._derive(c) for c in catalog.configs.values()}
        self._state = (catalog, derived)
        if self.trial:
            return  # a dry run's catalog is not the service's: no reload metrics, no log lines
        problems = catalog.problems
        for problem in problems:
            self._log.error("configuration problem: %s", problem, extra={"problem": str(problem)})
        self._metrics.reloads.labels("problems" if problems else "ok").inc()
        self._metrics.problems.set(len(problems))
        self._metrics.agents.set(len(catalog.configs))
        revisions = {f"{a}@{v}" if v else a: c.revision for (a, v), c in catalog.configs.items()}
        self._log.info("configuration loaded", extra={"directory": str(self.directory), "revisions": revisions})

    @contextlib.asynccontextmanager
    async def watching(self, interval_seconds: float) -> AsyncIterator[Self]:
        """Poll for changes in the background while the block runs."""
        task = asyncio.create_task(self._watch(interval_seconds), name="config-reload")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self, interval_seconds: float) -> None:
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                await asyncio.to_thread(self.reload_if_changed)
            except Exception:  # a reload bug must not stop the service working with the last good configuration
                self._log.exception("configuration reload failed")
