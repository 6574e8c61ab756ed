"""Recorder settings, read once in the wiring (environment: POSTCALL_DATABASE__URL, POSTCALL_KAFKA__..., ...)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field

from schemas.routes import RECORDER, Route
from services.common.settings import ServiceSettings
from services.recorder.batcher import DEFAULT_MAX_BYTES_WAITING
from services.store.settings import DatabaseSettings


class BatchSettings(BaseModel):
    max_records: int = Field(1000, ge=1, le=100_000, description="Most Kafka records written in one transaction.")
    max_delay_seconds: float = Field(
        0.02, ge=0, le=5, description="How long a batch waits for more records in flight before it is written."
    )
    max_bytes_waiting: int = Field(
        DEFAULT_MAX_BYTES_WAITING,
        ge=1024 * 1024,
        description="Bytes of records (encoded events, dead-letter values) waiting for the store at most: above "
        "it the recorder takes no new records until some are written (a backlog of large conversations "
        "otherwise fills the window of 2000 at several times their size in memory).",
    )


class RecorderSettings(ServiceSettings):
    route: ClassVar[Route | None] = RECORDER

    database: DatabaseSettings = Field(
        default_factory=DatabaseSettings,
        description="The store: POSTCALL_DATABASE__URL (SQLite file by default; PostgreSQL in production), retention.",
    )
    batch: BatchSettings = Field(default_factory=BatchSettings, description="Group commit.")
