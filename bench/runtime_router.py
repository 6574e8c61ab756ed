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
from schemas.events import ConversationExtracted
from services.common import logging as jsonlog
from services.common.runtime import Emit, RecordContext, Runtime, serve
from services.common.settings import KafkaSettings, RuntimeSettings


class RouteHandler:
    def __init__(self, settings: StreamBenchSettings) -> None:
        self.settings = settings
        self.slow_ids = settings.slow()

    async def __call__(self, event: ConversationExtracted, ctx: RecordContext) -> Sequence[Emit]:
        if event.event_id in self.slow_ids:
            await asyncio.sleep(self.settings.slow_seconds)
        return [Emit(self.settings.output_topic, decide(event))]


def build(settings: StreamBenchSettings) -> Runtime[ConversationExtracted]:
    runtime = RuntimeSettings(
        max_in_flight=settings.concurrency,
        ordering="key",
        metrics_port=0,
        retry_delays_seconds=[1.0],
        session_timeout_ms=10_000,
    )
    return Runtime(
        service=settings.group,
        kafka=KafkaSettings(bootstrap_servers=settings.bootstrap_servers),
        runtime=runtime,
        topics=[settings.input_topic],
        input_type=ConversationExtracted,
        handler=RouteHandler(settings),
    )


def main() -> None:
    settings = StreamBenchSettings()
    jsonlog.setup(settings.group)
    asyncio.run(serve(build(settings)))


if __name__ == "__main__":
    main()
