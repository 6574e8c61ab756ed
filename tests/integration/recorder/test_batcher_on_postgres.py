"""The group-commit batcher on a real PostgreSQL: a database that cannot take writes for a while pauses the
recorder (DependencyUnavailable, retried in place); only a record the database refuses is dead-lettered."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from schemas.topics import CONVERSATION_ENDED
from services.common.errors import DependencyUnavailable
from services.devkit.postgres import PostgresServer
from services.recorder.batcher import Batcher
from services.store import writer
from services.store.db import Store
from services.store.settings import DatabaseSettings
from tests.support.calls import ended, rows_of


async def test_a_database_that_turned_read_only_pauses_instead_of_dead_lettering(
    postgres_server: PostgresServer,
) -> None:
    """A failover leaves the pool on a standby (or the database is set read-only): every write fails with
    SQLSTATE 25006 for a while. That says nothing about the records: they wait, none is dead-lettered."""
    url = postgres_server.create_database("t_readonly")
    admin = create_async_engine(postgres_server.url())
    async with Store.open(DatabaseSettings(url=url), writer=True) as store:
        async with admin.begin() as conn:
            await conn.execute(text('ALTER DATABASE "t_readonly" SET default_transaction_read_only = on'))
        await admin.dispose()
        await store.engine.dispose()  # the next connection is read-only
        async with Batcher(lambda rows: writer.write(store, rows)) as batcher:
            records = [rows_of([(CONVERSATION_ENDED, ended(f"c{i}"))], first_offset=i) for i in range(3)]
            outcomes = await asyncio.gather(*(batcher.add(r) for r in records), return_exceptions=True)
    assert all(isinstance(o, DependencyUnavailable) for o in outcomes), outcomes
    assert "read-only" in str(outcomes[0])
