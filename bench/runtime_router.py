"""The router's consumer loop on our runtime: the same step as bench.faust_router, for the comparison.

    BENCH_BOOTSTRAP_SERVERS=... BENCH_GROUP=... BENCH_INPUT_TOPIC=... BENCH_OUTPUT_TOPIC=... \\
    python -m bench.runtime_router

Key ordering with max_in_flight = BENCH_CONCURRENCY; offsets, commits and producing are the runtime's
(commit only below the lowest unfinished offset). Exits on SIGTERM after draining.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from bench.stream_step import StreamBenchSettings, decide
from schemas.events import ConversationExtracted, DecisionTrace
from schemas.routes import Output, Route
from schemas.topics import Stream
from services.common import observability as jsonlog
from services.common.api import Context, Event, Service
from services.common.runtime import Runtime, serve
from services.common.settings import KafkaSettings, RuntimeSettings


class RouteHandler:
    def __init__(self, settings: StreamBenchSettings) -> None:
        self.settings = settings
        self.slow_ids = settings.slow()

    async def handle(self, event: ConversationExtracted, ctx: Context) -> Sequence[Event]:
        if event.event_id in self.slow_ids:
            await asyncio.sleep(self.settings.slow_seconds)
        return [decide(event)]


def build(settings: StreamBenchSettings) -> Runtime:
    runtime = RuntimeSettings(
        max_in_flight=settings.concurrency,
        ordering="key",
        metrics_port=0,
        retry_delays_seconds=[1.0],
        session_timeout_ms=int(settings.session_timeout_seconds * 1000),
    )
    route = Route(
        settings.group,
        "the router's step, for the comparison with faust",
        consumes=(Stream.plain(settings.input_topic, ConversationExtracted),),
        produces=(Output(Stream.plain(settings.output_topic, DecisionTrace), key="input"),),
        retry_delays_seconds=(1.0,),
    )
    kafka = KafkaSettings(bootstrap_servers=settings.bootstrap_servers)
    return Runtime(Service(route, RouteHandler(settings).handle), kafka=kafka, settings=runtime)


def main() -> None:
    settings = StreamBenchSettings()
    jsonlog.setup(settings.group)
    asyncio.run(serve(build(settings)))


if __name__ == "__main__":
    main()
