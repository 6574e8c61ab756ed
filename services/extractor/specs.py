"""Agent configuration -> ExtractionSpec, reloaded without a restart.

The folder is polled; a change in any YAML file's mtime, size or inode (a ConfigMap symlink swap, a
git pull) reloads the catalog. A file that became bad keeps its last good revision (the loader's
rule); specs are derived once per revision, never per record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from schemas.agents import Catalog, ConfigError, ExtractionSpec, extraction_spec, load_catalog
from schemas.events import ConversationEnded
from services.common.errors import RetryableError

log = logging.getLogger("postcall.extractor.config")


def fingerprint(directory: Path) -> tuple[tuple[str, int, int, int], ...]:
    out = []
    for path in sorted(directory.rglob("*.y*ml")):
        if not any(part.startswith(".") for part in path.relative_to(directory).parts):
            with contextlib.suppress(OSError):
                st = path.stat()
                out.append((str(path), st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


class SpecSource:
    """`spec_for(event)`: the spec of the event's agent (and version), None for an unknown agent;
    RetryableError while the agent's only file has problems."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fingerprint = fingerprint(directory)
        self.catalog: Catalog = load_catalog(directory)
        self._specs: dict[tuple[str, str], ExtractionSpec] = {}
        self._log_loaded()

    def __call__(self, event: ConversationEnded) -> ExtractionSpec | None:
        config = self.catalog.lookup(event.agent.id, event.agent.version)
        if config is None:
            if self.catalog.is_broken(event.agent.id):
                # as in the router: the retry tiers give someone time to fix the file
                raise RetryableError(f"configuration for agent {event.agent.id} has problems and no good revision")
            return None
        key = (config.agent, config.revision)
        if (spec := self._specs.get(key)) is None:
            spec = self._specs[key] = extraction_spec(config)
        return spec

    def reload_if_changed(self) -> bool:
        """True when the folder changed and was reloaded; never raises (the last good state stays)."""
        current = fingerprint(self.directory)
        if current == self._fingerprint:
            return False
        self._fingerprint = current
        try:
            catalog = load_catalog(self.directory, previous=self.catalog)
        except (ConfigError, OSError) as exc:
            log.error("configuration folder unreadable; keeping the last good one", extra={"error": str(exc)})
            return False
        revisions = {c.revision for c in catalog.configs.values()}
        self.catalog = catalog
        self._specs = {k: v for k, v in self._specs.items() if k[1] in revisions}
        self._log_loaded()
        return True

    def _log_loaded(self) -> None:
        for problem in self.catalog.problems:
            log.error("configuration problem", extra={"problem": str(problem)})
        revisions = {f"{a}@{v}" if v else a: c.revision for (a, v), c in self.catalog.configs.items()}
        log.info("configuration loaded", extra={"directory": str(self.directory), "revisions": revisions})

    @contextlib.asynccontextmanager
    async def watching(self, interval_seconds: float) -> AsyncIterator[SpecSource]:
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
            except Exception:  # a reload bug must not stop extraction with the last good configuration
                log.exception("configuration reload failed")
