"""The router's consumer loop as a faust-streaming agent (for the comparison in bench.faust_compare only).

    BENCH_BOOTSTRAP_SERVERS=... BENCH_GROUP=... BENCH_INPUT_TOPIC=... BENCH_OUTPUT_TOPIC=... \\
    BENCH_WEB_PORT=... BENCH_DATADIR=... python -m bench.faust_router worker -l warning

An agent with `concurrency` actors reads ConversationExtracted records, runs bench.stream_step.decide
and sends the DecisionTrace to the output topic; records whose id is in BENCH_SLOW_IDS sleep first.
Offsets are faust's: an event is acked when its actor moves on to the next one, and acked offsets
are committed every broker_commit_interval (2.8 s) — the behaviour issue #606 is about.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust

from bench.stream_step import StreamBenchSettings, decide
from schemas.events import ConversationExtracted
from services.common.runtime import tune_gc

settings = StreamBenchSettings()

app = faust.App(
    settings.group,
    broker=f"kafka://{settings.bootstrap_servers}",
    web_host="127.0.0.1",
    web_port=settings.web_port or 6066,
    datadir=settings.datadir or None,
    store="memory://",
    consumer_auto_offset_reset="earliest",
    producer_acks=-1,
    topic_replication_factor=1,
    topic_partitions=1,
    # as the runtime's in this comparison: a kill -9 is noticed in 10 s, not 60
    broker_session_timeout=settings.session_timeout_seconds,
)
source = app.topic(settings.input_topic, key_serializer="raw", value_serializer="raw")
sink = app.topic(settings.output_topic, key_serializer="raw", value_serializer="raw")
slow_ids = settings.slow()


@app.agent(source, concurrency=settings.concurrency)
async def route(stream: Any) -> None:
    async for key, value in stream.items():
        event = ConversationExtracted.model_validate_json(value)
        if event.event_id in slow_ids:
            await asyncio.sleep(settings.slow_seconds)
        trace = decide(event)
        await sink.send(key=key, value=trace.model_dump_json().encode())


if __name__ == "__main__":
    tune_gc()  # the same GC setting the runtime's serve() applies to bench.runtime_router
    app.main()
