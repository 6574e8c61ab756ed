"""`python -m services.recorder` (or `postcall run recorder`): settings -> store (migrated; waited for while
it cannot be reached, services.store.starting) -> batcher -> handler -> Runtime, with the retention job beside it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator

from services.common import observability as plog
from services.common.runtime import Runtime, serve
from services.common.settings import run_service
from services.recorder.batcher import Batcher, max_wait
from services.recorder.handler import Recorder
from services.recorder.metrics import PRUNED
from services.recorder.settings import RecorderSettings
from services.store import prune, starting, writer
from services.store.db import Store, StoreError
from services.store.settings import DatabaseSettings

log = logging.getLogger("postcall.recorder")


async def main() -> None:
    settings = RecorderSettings()
    plog.setup("recorder", settings.log_level)
    try:
        await record(settings)
    except starting.StoppedWaiting:
        log.info("stopped while waiting for the store")
    except StoreError as exc:  # a configuration or schema revision this version cannot use
        print(f"postcall recorder: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


async def record(settings: RecorderSettings) -> None:
    runtime = settings.runtime
    async with (
        starting.opened(settings.database, host=runtime.metrics_host, port=runtime.metrics_port, writer=True) as store,
        Batcher(
            lambda rows: writer.write(store, rows),
            **settings.batch.model_dump(),
            max_wait_seconds=max_wait(settings.runtime),
        ) as batcher,
        pruning(store, settings.database),
    ):
        recorder = Recorder(batcher, settings.database.retention_days)
        await serve(Runtime(recorder.service(), kafka=settings.kafka, settings=settings.runtime))


@contextlib.asynccontextmanager
async def pruning(store: Store, settings: DatabaseSettings) -> AsyncIterator[None]:
    """The retention job, every prune_interval_seconds (the first run at start)."""

    async def loop() -> None:
        while True:
            try:
                deleted = await prune.prune(store, settings.retention_days, settings.prune_batch)
            except Exception:  # the store may be down for a while: try again next time
                log.exception("pruning failed")
            else:
                for table, count in deleted.items():
                    PRUNED.labels(table).inc(count)
                if any(deleted.values()):
                    log.info("pruned", extra={"deleted": deleted, "retention_days": settings.retention_days})
            await asyncio.sleep(settings.prune_interval_seconds)

    task = asyncio.create_task(loop(), name="recorder-pruning")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def start(label: str = "recorder") -> int:
    """Run until stopped; a setting the environment gets wrong is named on stderr (exit 2)."""
    return run_service(label, main, RecorderSettings)


if __name__ == "__main__":
    sys.exit(start())
