"""The live configuration: the loaded catalog, compiled agents, and reloading without a restart.

The folder is polled every few seconds; a change in any file's mtime, size or inode (a Kubernetes
ConfigMap update swaps a symlink; a git pull rewrites files) triggers a reload. Unchanged files keep
their compiled form (same content hash, same revision); a file that became bad keeps its last good
revision and its problems are logged, once per change. Compiling happens here, at load time, never
per record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from schemas.agent_loader import Catalog, ConfigError, load_catalog
from services.router import metrics
from services.router.engine import CompiledAgent

log = logging.getLogger("postcall.router.config")

Fingerprint = tuple[tuple[str, int, int, int], ...]


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


class CatalogHolder:
    def __init__(self, directory: Path, default_fallback: str) -> None:
        self.directory = directory
        self.default_fallback = default_fallback
        self._fingerprint = fingerprint(directory)
        # one tuple, replaced in one assignment: a lookup never sees a catalog with another's compiled agents
        self._state: tuple[Catalog, dict[str, CompiledAgent]] = (load_catalog(directory), {})
        self._install(self._state[0])

    @property
    def catalog(self) -> Catalog:
        return self._state[0]

    def lookup(self, agent_id: str, version: str | None) -> CompiledAgent | None:
        catalog, compiled = self._state
        config = catalog.lookup(agent_id, version)
        return compiled.get(config.revision) if config is not None else None

    def is_broken(self, agent_id: str) -> bool:
        return self._state[0].is_broken(agent_id)

    def reload_if_changed(self) -> bool:
        """Reload when the folder changed; True when it did. Never raises: the last good state stays."""
        current = fingerprint(self.directory)
        if current == self._fingerprint:
            return False
        self._fingerprint = current
        try:
            catalog = load_catalog(self.directory, previous=self.catalog)
        except (ConfigError, OSError) as exc:
            metrics.CONFIG_RELOADS.labels("error").inc()
            log.error("configuration folder unreadable; keeping the last good configuration", extra={"error": str(exc)})
            return False
        self._install(catalog)
        return True

    def _install(self, catalog: Catalog) -> None:
        previous = self._state[1]
        compiled = {
            c.revision: previous.get(c.revision) or CompiledAgent(c, self.default_fallback)
            for c in catalog.configs.values()
        }
        self._state = (catalog, compiled)
        problems = catalog.problems
        for problem in problems:
            log.error("configuration problem: %s", problem, extra={"problem": str(problem)})
        metrics.CONFIG_RELOADS.labels("problems" if problems else "ok").inc()
        metrics.CONFIG_PROBLEMS.set(len(problems))
        metrics.CONFIG_AGENTS.set(len(catalog.configs))
        revisions = {f"{a}@{v}" if v else a: c.revision for (a, v), c in catalog.configs.items()}
        log.info("configuration loaded", extra={"directory": str(self.directory), "revisions": revisions})

    @contextlib.asynccontextmanager
    async def watching(self, interval_seconds: float) -> AsyncIterator[CatalogHolder]:
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
            except Exception:  # a reload bug must not stop routing with the last good configuration
                log.exception("configuration reload failed")
