"""Options every command shares: where Kafka is."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Annotated

import typer
from aiokafka.errors import KafkaConnectionError

from schemas.events import MAX_ID_LENGTH
from services.common.settings import KafkaSettings

Bootstrap = Annotated[
    str | None,
    typer.Option("--bootstrap", "-b", help="Kafka bootstrap servers (default: POSTCALL_KAFKA__BOOTSTRAP_SERVERS)."),
]


def kafka_settings(bootstrap: str | None) -> KafkaSettings:
    """KafkaSettings from --bootstrap, else from POSTCALL_KAFKA__* environment variables."""
    from pydantic_settings import BaseSettings, SettingsConfigDict

    class _Env(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="POSTCALL_", env_nested_delimiter="__", extra="ignore")
        kafka: KafkaSettings = KafkaSettings()

    kafka = _Env().kafka
    if bootstrap:
        kafka = kafka.model_copy(update={"bootstrap_servers": bootstrap})
    elif not os.environ.get("POSTCALL_KAFKA__BOOTSTRAP_SERVERS"):
        kafka = kafka.model_copy(update={"bootstrap_servers": "127.0.0.1:9092"})
    _used.append(kafka.bootstrap_servers)
    return kafka


_used: list[str] = []  # the brokers this command was pointed at, for the error when they do not answer


def kafka_unreachable(exc: BaseException) -> str:
    """One line: which brokers did not answer, why, and how to point the command elsewhere."""
    where = _used[-1] if _used else os.environ.get("POSTCALL_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    cause = getattr(exc, "__cause__", None) or exc
    reason = "no broker answered" if isinstance(cause, KafkaConnectionError) else " ".join(str(exc).split())
    return (
        f"cannot reach Kafka at {where} ({reason}); start it (make kafka) or point at it with "
        "--bootstrap HOST:PORT or POSTCALL_KAFKA__BOOTSTRAP_SERVERS"
    )


def aware(t: datetime) -> datetime:
    """A --since or --until given without a UTC offset is in UTC, as the options' help says."""
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def contract_id(value: str | None) -> str | None:
    """A typer callback for an option that becomes an account or agent id: the contract's 1 to 256
    characters, refused as a usage error rather than failing in the mapping (or published as is)."""
    if value is not None and not 1 <= len(value) <= MAX_ID_LENGTH:
        raise typer.BadParameter(f"an id is 1 to {MAX_ID_LENGTH} characters, not {len(value)}")
    return value
