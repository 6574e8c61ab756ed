"""A small service on the real runtime, for tests that need a separate process (kill -9, SIGTERM).

    python -m tests.support.worker   (settings from the environment, see WorkerSettings)

Each input {"id", "sleep", "fail", "permanent"} sleeps, may fail its first `fail` attempts, and emits
{"id", "attempt", "pid"} to the output topic.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Sequence

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.routes import Output, Route
from schemas.topics import Stream
from services.common import observability as jsonlog
from services.common.api import Context, Deferred, Event, PermanentError, RetryableError, Service
from services.common.runtime import Runtime, serve
from services.common.settings import KafkaSettings, RuntimeSettings


class Job(BaseModel):
    id: str
    sleep: float = 0.0
    fail: int = 0
    permanent: bool = False
    defer: int = 0  # raise Deferred this many times first (in this process)
    retry_after: float | None = None  # the Retry-After a failure asks for


class Done(BaseModel):
    id: str
    attempt: int
    pid: int
    event_id: str = ""


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WORKER_", env_nested_delimiter="__")

    kafka: KafkaSettings = Field(description="Kafka connection.")
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings, description="Runtime settings.")
    service: str = Field("worker", description="Service name (retry and dead-letter topic names).")
    input_topic: str = Field(description="Topic to consume.")
    output_topic: str = Field(description="Topic to produce to.")
    slow_ids: list[str] = Field(default_factory=list, description="Ids that sleep `slow_seconds` in this run.")
    slow_seconds: float = Field(60.0, description="How long a slow id sleeps.")


class JobHandler:
    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.deferred: Counter[str] = Counter()

    async def handle(self, job: Job, ctx: Context) -> Sequence[Event]:
        sleep = self.settings.slow_seconds if job.id in self.settings.slow_ids else job.sleep
        if sleep:
            await asyncio.sleep(sleep)
        if self.deferred[job.id] < job.defer:
            self.deferred[job.id] += 1
            raise Deferred(f"job {job.id} deferred")
        if job.permanent:
            raise PermanentError(f"job {job.id} is permanently broken")
        if ctx.attempt <= job.fail:
            raise RetryableError(f"job {job.id} failed attempt {ctx.attempt}", retry_after=job.retry_after)
        done = Done(id=job.id, attempt=ctx.attempt, pid=os.getpid(), event_id=f"{job.id}-{ctx.attempt}")
        return [done]


def route(settings: WorkerSettings) -> Route:
    """Job in, Done out (keyed like its input); as many retry tiers as the settings have delays."""
    return Route(
        settings.service,
        "a test worker",
        consumes=(Stream.plain(settings.input_topic, Job),),
        produces=(Output(Stream.plain(settings.output_topic, Done), key="input"),),
        retry_delays_seconds=tuple(settings.runtime.retry_delays_seconds),
    )


def build(settings: WorkerSettings) -> Runtime:
    service = Service(route(settings), JobHandler(settings).handle)
    return Runtime(service, kafka=settings.kafka, settings=settings.runtime)


def main() -> None:
    settings = WorkerSettings()
    jsonlog.setup("worker")
    asyncio.run(serve(build(settings)))


if __name__ == "__main__":
    main()
