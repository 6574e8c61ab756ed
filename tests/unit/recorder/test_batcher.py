"""Group commit without a database: batches, isolation of a refused record, an unreachable store."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from services.common.errors import DependencyUnavailable, PermanentError
from services.recorder.batcher import Batcher, unreachable
from services.store.rows import Rows


def rows(cid: str) -> Rows:
    return Rows(conversations=[{"conversation_id": cid}], conversation_ids={cid})


class FakeStore:
    def __init__(self, refuse: str | None = None, down: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.refuse, self.down = refuse, down

    async def write(self, batch: Rows) -> None:
        ids = [r["conversation_id"] for r in batch.conversations]
        if self.down:
            raise OperationalError("INSERT", {}, ConnectionRefusedError("connection refused"))
        if self.refuse in ids:
            raise IntegrityError("INSERT", {}, ValueError(f"bad value in {self.refuse}"))
        self.batches.append(ids)


async def test_records_in_flight_together_are_written_in_one_batch() -> None:
    store = FakeStore()
    async with Batcher(store.write, max_records=100, max_delay_seconds=0.01) as batcher:
        await asyncio.gather(*(batcher.add(rows(f"c{i}")) for i in range(50)))
    assert len(store.batches) == 1 and sorted(store.batches[0]) == sorted(f"c{i}" for i in range(50))


async def test_a_batch_is_never_larger_than_max_records() -> None:
    store = FakeStore()
    async with Batcher(store.write, max_records=10, max_delay_seconds=0.01) as batcher:
        await asyncio.gather(*(batcher.add(rows(f"c{i}")) for i in range(35)))
    assert [len(b) for b in store.batches] == [10, 10, 10, 5]


async def test_a_refused_record_fails_alone_and_the_others_are_written() -> None:
    store = FakeStore(refuse="c3")
    async with Batcher(store.write, max_records=100) as batcher:
        outcomes = await asyncio.gather(*(batcher.add(rows(f"c{i}")) for i in range(6)), return_exceptions=True)
    assert [type(o).__name__ for o in outcomes] == ["NoneType"] * 3 + ["PermanentError"] + ["NoneType"] * 2
    assert isinstance(outcomes[3], PermanentError) and "bad value in c3" in str(outcomes[3])
    assert sorted(i for b in store.batches for i in b) == ["c0", "c1", "c2", "c4", "c5"]


async def test_an_unreachable_store_pauses_every_record_in_the_batch() -> None:
    store = FakeStore(down=True)
    async with Batcher(store.write) as batcher:
        outcomes = await asyncio.gather(*(batcher.add(rows(f"c{i}")) for i in range(3)), return_exceptions=True)
    assert all(isinstance(o, DependencyUnavailable) and "connection refused" in str(o) for o in outcomes)


async def test_records_waiting_when_the_recorder_stops_stay_uncommitted() -> None:
    gate = asyncio.Event()

    async def slow(batch: Rows) -> None:
        await gate.wait()

    batcher = Batcher(slow, max_delay_seconds=0.0)
    await batcher.__aenter__()
    first = asyncio.create_task(batcher.add(rows("c1")))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(batcher.add(rows("c2")))
    await asyncio.sleep(0.01)
    await batcher.__aexit__()
    with pytest.raises(DependencyUnavailable):
        await second
    first.cancel()


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"SQLSTATE {sqlstate}")
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("sqlstate", "not_now"),
    [
        ("53100", True),  # disk full
        ("53300", True),  # too many connections
        ("57P03", True),  # the database system is starting up
        ("40P01", True),  # deadlock detected
        ("25006", True),  # read-only transaction (a standby after a failover)
        ("57014", False),  # a statement timeout: maybe this record's write
        ("22003", False),  # numeric value out of range: this record
        ("23505", False),
    ],
)
def test_postgresql_says_not_now_or_not_this_data_by_sqlstate(sqlstate: str, not_now: bool) -> None:
    assert unreachable(DBAPIError("INSERT", {}, _PgError(sqlstate))) is not_now


def _sqlite_error(*statements: str) -> BaseException:
    """The error SQLAlchemy raises for the last statement, on a real SQLite database."""
    engine = sqlalchemy.create_engine("sqlite://")
    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE t (n INTEGER)")
        conn.exec_driver_sql("INSERT INTO t VALUES (4611686018427387904), (4611686018427387904)")
        try:
            for statement in statements:
                conn.exec_driver_sql(statement)
        except sqlalchemy.exc.DBAPIError as exc:
            return exc
    raise AssertionError("no error")


def test_sqlites_integer_overflow_is_this_data_not_an_unreachable_store() -> None:
    # SQLite raises an overflowing SUM (two counts near 2**62) as an OperationalError, the class of its
    # "database is locked" and "unable to open": read as "store down", the recorder paused on it for good
    overflow = _sqlite_error("SELECT SUM(n) FROM t")
    assert isinstance(overflow, sqlalchemy.exc.OperationalError) and "integer overflow" in str(overflow)
    assert not unreachable(overflow)
    # the same class and code, not this data: a store not migrated yet waits for its migration
    assert unreachable(_sqlite_error("SELECT n FROM missing"))
