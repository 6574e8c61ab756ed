"""A service's store at its start (the recorder, the API): waited for while it cannot be reached yet.

A rollout or a restart during a database outage (PostgreSQL restarting, a failover, a network policy being
applied) exited 2 at start ("cannot migrate the store at ...") and crash-looped with the kubelet's back-off
(up to five minutes between tries) long after the database answered again. A PostgreSQL store that cannot
be reached or used for now (services.store.db.unreachable: a connection refused or timed out, a name that
does not resolve, a server starting up or shutting down, too many connections, a read-only standby) is
tried again after 1 s, then twice as long each time up to 30 s, one log line a try. Meanwhile the
service's port answers /healthz ok (alive: a restart would not help), /readyz 503 saying what it waits
for, /metrics, and anything else 503 (services.common.starting, as for Kafka). Every other problem is
refused at once as before, one line and exit 2 (services.store.db.StoreError): a URL that is not one, a
driver this version cannot use or a parameter it refuses, a password or database the server refuses, a
schema too old (migrate_on_start off) or too new.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from services.common.starting import StoppedWaiting, Waiting
from services.store.db import Store
from services.store.settings import DatabaseSettings

__all__ = ["StoppedWaiting", "opened"]


@contextlib.asynccontextmanager
async def opened(settings: DatabaseSettings, *, host: str, port: int, writer: bool = False) -> AsyncIterator[Store]:
    """`Store.open(settings)`, waiting while the store cannot be reached yet, with `host:port` (the service's
    own port, 0: none) answering probes until it can; the port is free again before the store is yielded.
    Each try's reason names the store by its URL without the password (db.safe_url)."""
    waiting = Waiting(
        "the store", host, port, waiting_line="waiting for the store", answered_line="the store answers, starting"
    )
    async with contextlib.AsyncExitStack() as stack:
        try:
            store = await stack.enter_async_context(Store.open(settings, writer=writer, wait=waiting))
        finally:
            await waiting.end()
        if waiting.stopped:  # during the last try, which then succeeded: the stop still stands
            raise StoppedWaiting
        yield store
