"""Where the store is and how long it keeps rows; composed into the recorder's and the API's settings.

Environment (inside a service's settings): POSTCALL_DATABASE__URL, POSTCALL_DATABASE__RETENTION_DAYS, ...
"""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr, field_validator

DEFAULT_URL = "sqlite+aiosqlite:///postcall.db"
#: The longest retention (1,000 years): the horizon `retention_days` before now must be a date after year 1,
#: or every record the recorder reads fails on it. Longer than any store lives: "keep everything".
MAX_RETENTION_DAYS = 365_000


class DatabaseSettings(BaseModel):
    url: SecretStr = Field(
        SecretStr(DEFAULT_URL),
        description="SQLAlchemy URL: sqlite+aiosqlite:///path.db (default, a file beside the process) or "
        "postgresql+asyncpg://user:password@host/db (production; from the DATABASE_URL secret). "
        "postgresql:// and postgres:// are read as postgresql+asyncpg://.",
    )
    retention_days: float = Field(
        400.0,
        gt=0,
        le=MAX_RETENTION_DAYS,
        description="Rows older than this are pruned (independent of Kafka's retention); at most 365000 "
        "(1,000 years: keep everything).",
    )
    prune_interval_seconds: float = Field(3600.0, gt=0, description="How often the recorder runs the pruning job.")
    prune_batch: int = Field(5000, ge=1, description="Rows deleted per statement by the pruning job.")
    pool_size: int = Field(5, ge=1, le=100, description="PostgreSQL connections kept open per process.")
    migrate_on_start: bool = Field(True, description="Bring the schema to the newest revision at start (locked).")

    @field_validator("url", mode="before")
    @classmethod
    def _async_driver(cls, value: object) -> object:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(raw, str):
            return SecretStr(async_url(raw))
        return value


def async_url(url: str) -> str:
    """The async driver for a plain URL: postgres(ql):// -> postgresql+asyncpg://, sqlite:// -> +aiosqlite."""
    for plain in ("postgres://", "postgresql://"):
        if url.startswith(plain):
            return "postgresql+asyncpg://" + url[len(plain) :]
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url[len("sqlite://") :]
    return url
