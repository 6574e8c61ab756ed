"""`python -m services.dispatcher`: settings -> destinations -> the destination state shared with the other
replicas (read whole before any action) -> HTTP clients, SMTP pools and the ledger's results reader,
opened once -> ledger -> handler -> runtime, consuming every action topic until SIGTERM."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from schemas.topics import ACTION_RESULT_STREAM
from services.common import observability as plog
from services.common import starting
from services.common.runtime import Runtime, serve
from services.common.settings import run_service
from services.dispatcher import destinations
from services.dispatcher.delivery import HttpOptions, HttpSender, open_clients
from services.dispatcher.executors import Executors
from services.dispatcher.handler import Dispatcher
from services.dispatcher.ledger import Ledger
from services.dispatcher.ledger_index import DoneIndex
from services.dispatcher.ledger_reader import ResultsReader
from services.dispatcher.registry import Registry
from services.dispatcher.settings import DispatcherSettings
from services.dispatcher.shared import SharedState
from services.dispatcher.smtp import SmtpPool

log = logging.getLogger("postcall.dispatcher")


@asynccontextmanager
async def open_executors(settings: DispatcherSettings, registry: Registry) -> AsyncIterator[Executors]:
    """Every executor, with the clients and connections they share; closed on exit."""
    async with AsyncExitStack() as stack:
        clients = await stack.enter_async_context(open_clients(registry, settings.user_agent))
        options = HttpOptions(
            settings.retry_after_floor_seconds, settings.runtime.retry_after_cap_seconds, settings.user_agent
        )
        http = HttpSender(registry, clients, options)
        pools = {d.name: SmtpPool(d, registry.timeout(d)) for d in registry.smtp()}
        for pool in pools.values():
            stack.push_async_callback(pool.aclose)
        yield Executors.build(registry, http, pools, settings.default_email_destination, settings.console_base_url)


def build_registry(settings: DispatcherSettings) -> Registry:
    """The destinations; a bad file stops the start with every problem as `file:line: path: message`."""
    try:
        loaded = destinations.load(settings.destinations_file, attempt_bound=settings.attempt_bound)
    except destinations.ConfigError as exc:
        log.error("destinations file invalid", extra={"problems": str(exc).splitlines()})
        raise SystemExit(f"dispatcher: cannot start, destinations:\n{exc}") from None
    default = settings.default_email_destination
    if default is not None and not isinstance(loaded.get(default), destinations.SmtpDestination):
        # read only when an email names no destination: each such email would be dead-lettered
        raise SystemExit(
            f"dispatcher: cannot start: default_email_destination {default!r} is not an smtp destination in "
            f"{settings.destinations_file}"
        )
    return Registry(
        loaded,
        default_timeout=settings.default_timeout_seconds,
        max_wait_seconds=settings.max_wait_seconds,
        smtp_timeout=settings.smtp_deadline,
    )


async def main() -> None:
    settings = DispatcherSettings()
    plog.setup("dispatcher", settings.log_level)
    registry = build_registry(settings)
    host, port = settings.runtime.metrics_host, settings.runtime.metrics_port
    if not await starting.kafka_or_stop(settings.kafka, host=host, port=port):  # before the shared state's reads
        return
    retention = ACTION_RESULT_STREAM.retention_ms
    shared = SharedState(settings.kafka, registry, settings.runtime.group_instance_id)
    async with shared, open_executors(settings, registry) as executors, ResultsReader(settings.kafka) as reader:
        registry.attach(shared)
        ledger = Ledger(reader, index=DoneIndex(settings.ledger_dir, retention_ms=retention))
        service = Dispatcher(executors, ledger, registry.pressure).service()
        runtime = Runtime(service, kafka=settings.kafka, settings=settings.runtime, group_id=settings.group_id)
        try:
            await serve(runtime)
        finally:
            ledger.close()


def start(label: str = "dispatcher") -> int:
    """Run until stopped; a setting the environment gets wrong is named on stderr (exit 2)."""
    return run_service(label, main, DispatcherSettings)


if __name__ == "__main__":
    sys.exit(start())
