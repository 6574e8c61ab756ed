"""Engines and migrations. One `Store` per process, opened once in the wiring (`async with Store.open(...)`).

SQLite runs in WAL mode (readers never wait for the recorder) with a busy timeout; the recorder's
engine starts its transactions with BEGIN IMMEDIATE so that a batch never fails half-way on a lock it
could not upgrade. Migrations run under a lock (a PostgreSQL advisory lock, a lock file beside a SQLite
database) so that the recorder and the API starting together migrate once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    InvalidRequestError,
    OperationalError,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from services.store.settings import DatabaseSettings

MIGRATION_LOCK_ID = 7_237_001  # pg_advisory_xact_lock key: "the postcall store is migrating"


class StoreError(Exception):
    """Raised when the store cannot be used as configured (unreachable, wrong schema revision)."""


class StoreUnavailable(StoreError, OSError):
    """Raised by `Store.read()` / `Store.write()` when no connection to the database can be made, and by
    `Store.open()` when a PostgreSQL store cannot be reached or used for now (`unreachable`). An OSError
    still, as the driver's own was: what treated that as the store being down (the recorder) still does."""


#: what `Store.open(wait=...)` calls while the store cannot be reached yet; it returns to try again, or raises
Wait = Callable[[StoreUnavailable], Awaitable[None]]


@dataclass
class Store:
    engine: AsyncEngine
    settings: DatabaseSettings

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, settings: DatabaseSettings, *, writer: bool = False, upgrade: bool = True, wait: Wait | None = None
    ) -> AsyncIterator[Store]:
        """Engine for `settings.url`, migrated (or checked) before use; disposed on exit. `upgrade=False`
        (the command line's store commands but `store migrate`): a store with no schema yet is created,
        one at an older revision is refused naming `postcall store migrate`, not upgraded (an operator's
        newer CLI pointed at a running store would otherwise migrate it outside a rollout, and the
        running version's pods would then refuse to restart). `wait` (a service at its start): called with
        the StoreUnavailable while the store cannot be reached, the migration or check tried again when it
        returns; without it that is raised. Every other StoreError is raised at once: waiting cannot fix it."""
        engine = make_engine(settings, writer=writer)
        store = cls(engine, settings)
        try:
            while True:
                try:
                    await store._prepare(upgrade)
                    break
                except StoreUnavailable as exc:
                    if wait is None:
                        raise
                    await wait(exc)
            yield store
        finally:
            await engine.dispose()

    async def _prepare(self, upgrade: bool) -> None:
        engine = self.engine
        try:
            if self.settings.migrate_on_start and (upgrade or await _no_schema(engine)):
                await migrate(engine)
            else:
                await check_revision(engine)
        except TypeError as exc:  # asyncpg's connect() refuses a URL query parameter it does not take
            unknown = _UNKNOWN_PARAMETER.search(str(exc))
            if unknown is None:
                raise
            raise StoreError(
                f"the database URL has a query parameter the driver does not take: {unknown[1]} "
                f"(the store at {safe_url(engine.url)})"
            ) from None

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with contextlib.AsyncExitStack() as stack:
            yield await self._connected(stack, self.engine.connect())

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """One transaction, committed on exit."""
        async with contextlib.AsyncExitStack() as stack:
            yield await self._connected(stack, self.engine.begin())

    async def _connected(
        self, stack: contextlib.AsyncExitStack, opening: contextlib.AbstractAsyncContextManager[AsyncConnection]
    ) -> AsyncConnection:
        """The connection, or StoreUnavailable when none can be made: asyncpg raises the socket's OSError
        (connection refused, a name that does not resolve, a connect timeout), which SQLAlchemy does not
        wrap as a DBAPIError as it wraps the database's own refusals."""
        try:
            return await stack.enter_async_context(opening)
        except OSError as exc:  # TimeoutError is one
            raise StoreUnavailable(f"cannot reach the store at {_safe_url(self.engine)}: {_short(exc)}") from exc


def make_engine(settings: DatabaseSettings, *, writer: bool = False) -> AsyncEngine:
    try:
        url = make_url(settings.url.get_secret_value())
    except (ArgumentError, ValueError):  # not shown: a URL is where a password would be (ValueError: its port)
        raise StoreError(
            "the database URL is not a URL (sqlite:///path.db or postgresql://user:password@host/db)"
        ) from None
    backend = url.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise StoreError(f"unsupported database {backend!r}: use sqlite or postgresql")
    try:
        if backend == "postgresql":
            return create_async_engine(url, pool_size=settings.pool_size, max_overflow=2, pool_pre_ping=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})
    except (ImportError, ArgumentError, InvalidRequestError):  # a driver not installed, unknown, or not async
        raise StoreError(
            f"the database URL names the driver {url.drivername!r}, which this version cannot use: "
            f"{'postgresql+asyncpg:// (or postgresql://)' if backend == 'postgresql' else 'sqlite+aiosqlite://'}"
        ) from None
    event.listen(engine.sync_engine, "do_connect", _settled_sqlite_connect)
    _sqlite_pragmas(engine, immediate=writer)
    return engine


def _settled_sqlite_connect(_dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
    """SQLAlchemy's aiosqlite adapter connects with `async_creator_fn` when given one (same arguments)."""
    cparams["async_creator_fn"] = _aiosqlite_connect


async def _aiosqlite_connect(*args: Any, **kwargs: Any) -> aiosqlite.Connection:
    """aiosqlite.connect, but a connection that fails waits for its worker thread to end. aiosqlite stops
    that thread without waiting; the thread then hands the stop's result to this event loop, and when
    asyncio.run had closed the loop by then (a command whose store cannot be opened), the thread died on
    "Event loop is closed" with a traceback on stderr after the command's one-line error."""
    connection = aiosqlite.connect(*args, **kwargs)
    # before aiosqlite 0.22 (pyproject allows 0.20) the connection is its worker thread; since, it holds one
    worker: threading.Thread = connection if isinstance(connection, threading.Thread) else connection._thread
    worker.daemon = True  # as SQLAlchemy's adapter does: a process does not wait for its pool's threads
    try:
        return await connection
    except BaseException:
        await asyncio.to_thread(worker.join, 5)
        raise


def _sqlite_pragmas(engine: AsyncEngine, *, immediate: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (below)
        cursor = dbapi_connection.cursor()
        # case_sensitive_like: LIKE minds case as on PostgreSQL (SQLite's own ignores ASCII case)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000", "foreign_keys=ON",
                       "case_sensitive_like=ON"):  # fmt: skip
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()
        # SQLite's own lower() folds ASCII only ("Émile" stays); text search lower-cases both sides with it
        dbapi_connection.create_function("lower", 1, _lower, deterministic=True)

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


# ── migrations ─────────────────────────────────────────────────────────────────────────────────────


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", "services.store:migrations")
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """Upgrade to `revision` once, even when several processes start together."""
    try:
        # the lock file too: a folder that is a file, or cannot be written, is the store's problem to name
        with _sqlite_lock(engine):
            async with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_ID})
                await conn.run_sync(_upgrade, revision)
    except (OperationalError, DBAPIError, OSError) as exc:
        raise _refused(engine, exc, f"cannot migrate the store at {_safe_url(engine)}: {_short(exc)}") from None


def _upgrade(connection: Connection, revision: str) -> None:
    cfg = alembic_config()
    _refuse_unknown(MigrationContext.configure(connection).get_current_revision(), connection.engine.url)
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


def _refuse_unknown(found: str | None, url: Any) -> None:
    """A revision this version has no migration for was written by a newer one (a rolling deploy, a rollback)."""
    known = {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if found is not None and found not in known:
        raise StoreError(
            f"the store at {safe_url(url)} is at schema revision {found}, newer than "
            f"this version knows (its newest is {head_revision()}): run the version that migrated it, or newer"
        )


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


async def _no_schema(engine: AsyncEngine) -> bool:
    """Nothing migrated it yet (False as well when it cannot be read: check_revision says why)."""
    try:
        return await current_revision(engine) is None
    except (OperationalError, DBAPIError, OSError):
        return False


async def check_revision(engine: AsyncEngine) -> None:
    try:
        found = await current_revision(engine)
    except (OperationalError, DBAPIError, OSError) as exc:
        raise _refused(engine, exc, f"cannot reach the store at {_safe_url(engine)}: {_short(exc)}") from None
    _refuse_unknown(found, engine.url)
    if found != head_revision():
        raise StoreError(
            f"the store at {_safe_url(engine)} is at schema revision {found or 'none'}, this version needs "
            f"{head_revision()}: run `postcall store migrate`"
        )


@contextlib.contextmanager
def _sqlite_lock(engine: AsyncEngine) -> Iterator[None]:
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    path = Path(database).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.migrate-lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _refused(engine: AsyncEngine, exc: BaseException, message: str) -> StoreError:
    """StoreUnavailable when a PostgreSQL server cannot be reached or used for now (`unreachable`: a service
    starting waits for it); otherwise StoreError, refused at once (a password or database it refuses). A
    SQLite store is a file beside the process: one it cannot open is a configuration to fix, never waited for."""
    if engine.dialect.name == "postgresql" and unreachable(exc) and not _driver_refused_url(exc):
        return StoreUnavailable(message)
    return StoreError(message)


def _driver_refused_url(exc: BaseException) -> bool:
    """asyncpg refused a connection parameter of the URL (`?ssl=bogus`): its ClientConfigurationError reaches
    us as an InterfaceError, which `unreachable` counts as the database being away; no wait fixes it."""
    from asyncpg.exceptions import ClientConfigurationError  # here: a SQLite store never loads the driver

    seen: BaseException | None = exc
    for _ in range(4):  # SQLAlchemy's error -> the adapted DBAPI error (orig) -> asyncpg's (its cause)
        if seen is None or isinstance(seen, ClientConfigurationError):
            return seen is not None
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


# PostgreSQL SQLSTATEs that say "not now" rather than "not this data" (asyncpg's arrive as a plain
# DBAPIError): connection (08), a transaction rolled back by a conflict (40: serialization, deadlock),
# insufficient resources (53: disk full, too many connections), operator intervention (57: shutting down,
# starting up; not 57014, a statement timeout, which one record's write may cause), system errors (58),
# a read-only transaction (25006: a standby after a failover), a lock not available (55P03)
_NOT_NOW_CLASSES = ("08", "40", "53", "57", "58")
_NOT_NOW_STATES = frozenset({"25006", "55P03"})


def unreachable(exc: BaseException) -> bool:
    """The database is down, unreachable or cannot take writes for now (not: it refused this data, this
    user's password, or has no such database). A name that does not resolve is "for now" too: in a cluster
    it is as often DNS or a failover moving the name as a typo, and a typo shows in the reason logged."""
    if isinstance(exc, OperationalError) and _sqlite_refused_data(exc):
        return False
    if isinstance(exc, OperationalError | InterfaceError | DisconnectionError | OSError | TimeoutError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    state = str(getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None) or "")
    not_now = (state.startswith(_NOT_NOW_CLASSES) and state != "57014") or state in _NOT_NOW_STATES
    return exc.connection_invalidated or not_now


def _sqlite_refused_data(exc: OperationalError) -> bool:
    """SQLite reports an overflowing integer sum as an OperationalError with the generic code SQLITE_ERROR,
    as it does a missing table; only its message says the data is at fault."""
    orig = exc.orig
    return getattr(orig, "sqlite_errorname", None) == "SQLITE_ERROR" and str(orig) == "integer overflow"


def _safe_url(engine: AsyncEngine) -> str:
    return safe_url(engine.url)


_SECRET_QUERY = re.compile(r"pass|secret|token", re.I)
_UNKNOWN_PARAMETER = re.compile(r"unexpected keyword argument '(\w{1,64})'")


def safe_url(url: URL) -> str:
    """The URL to show: its password hidden, and so the value of a query parameter that may hold one
    (asyncpg, like libpq, takes `?password=`)."""
    hidden = {name: "redacted" for name in url.query if _SECRET_QUERY.search(name)}
    return url.update_query_dict(hidden).render_as_string(hide_password=True)


def _short(exc: BaseException) -> str:
    """The driver's message without SQLAlchemy's statement dump and background link."""
    cause = getattr(exc, "orig", None) or exc
    return " ".join(str(cause).split())[:300]


async def wait_until_reachable(settings: DatabaseSettings, timeout: float) -> None:
    """For start-up ordering in tests and `make run`: poll until a connection opens."""
    engine = make_engine(settings)
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                async with engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
                return
            except (OperationalError, DBAPIError, OSError):
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await engine.dispose()
