"""Alembic environment: migrations run on a connection handed over by services.store.db.migrate (the
programmatic, async-friendly way), or, for `alembic` on the command line, on POSTCALL_DATABASE__URL."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import Connection

from services.store.models import Base
from services.store.settings import DEFAULT_URL, DatabaseSettings


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # ALTER TABLE on SQLite is a table copy
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _standalone() -> None:
    from services.store.db import make_engine

    url = os.environ.get("POSTCALL_DATABASE__URL", DEFAULT_URL)
    engine = make_engine(DatabaseSettings.model_validate({"url": url}))

    async def go() -> None:
        async with engine.begin() as conn:
            await conn.run_sync(_run)
        await engine.dispose()

    asyncio.run(go())


connection = context.config.attributes.get("connection")
if connection is None:
    _standalone()
else:
    _run(connection)
