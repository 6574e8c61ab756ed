from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from services.api.app import create_app
from services.api.settings import ApiSettings
from services.common.settings import KafkaSettings
from services.devkit.kafka import free_port
from services.store.db import Store, make_engine
from services.store.settings import DatabaseSettings
from tests.support.procs import Proc, start


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    async with Store.open(DatabaseSettings(url=database_url), writer=True) as opened:
        yield opened


def client_for(store: Store, token: str | None = None, **settings: object) -> httpx.AsyncClient:
    app = create_app(ApiSettings.model_validate({"database": {"url": "sqlite://"}, **settings}), store=store)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost", headers=headers)


def unreachable_store() -> Store:
    """A PostgreSQL store whose server is gone: nothing listens on its port (a restart, a failover)."""
    url = f"postgresql+asyncpg://postcall:secret-pw@127.0.0.1:{free_port()}/postcall"
    return Store(make_engine(DatabaseSettings(url=url)), DatabaseSettings(url=url))


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(store) as c:
        yield c


@contextlib.contextmanager
def serving_api(database_url: str, kafka: KafkaSettings) -> Iterator[tuple[Proc, str]]:
    """`python -m services.api` on the store (and the session's broker), ready: the process and its base URL."""
    port = free_port()
    env = {
        "POSTCALL_DATABASE__URL": database_url,
        "POSTCALL_API__PORT": str(port),
        "POSTCALL_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
    }
    server = start("services.api", env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.alive() and time.monotonic() < deadline, server.output()
            time.sleep(0.2)
        yield server, base
    finally:
        server.stop()


@pytest.fixture
def api_process(database_url: str, kafka: KafkaSettings) -> Iterator[str]:
    """`python -m services.api` on the test's store (and the session's broker): its base URL."""
    with serving_api(database_url, kafka) as (_, base):
        yield base
