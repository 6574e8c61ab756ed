"""`python -m services.recorder` (and `services.api`) at start: a store that cannot be reached yet is waited
for, not ready meanwhile; a store it cannot use as configured is one line on stderr and exit 2."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from schemas.routes import registry
from schemas.topics import CONVERSATION_ENDED
from services.common.kafka import ensure_topics
from services.common.settings import KafkaSettings
from services.devkit.kafka import free_port
from services.devkit.postgres import PostgresServer
from services.store.db import Store
from services.store.settings import DatabaseSettings
from tests.support.calls import ended
from tests.support.http import answers
from tests.support.kafka import produce, unique
from tests.support.procs import Proc, start, until

ROOT = Path(__file__).resolve().parents[3]


def run_recorder(database_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "POSTCALL_DATABASE__URL": database_url,
        "POSTCALL_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "POSTCALL_RUNTIME__METRICS_PORT": "0",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "services.recorder"], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def logged(proc: Proc, line: str) -> bool:
    return line in proc.output()


def test_a_store_down_at_start_is_waited_for_not_ready_then_used(kafka: KafkaSettings, tmp_path: Path) -> None:
    """walk24: PostgreSQL stopped, a recorder or API started then exited 2 and crash-looped with the kubelet's
    back-off. Both now wait: /healthz ok, /readyz 503 saying so, a log line naming the store without its
    password; once the server answers they start, and the recorder records what the API then serves."""
    server = PostgresServer(port=free_port())  # not started yet: nothing listens on its port
    # trust authentication: the password is there to be hidden, not checked
    url = server.url("postgres").replace("//postgres@", "//postgres:s3cret-pw@")
    asyncio.run(ensure_topics(kafka, registry(), replication=1))
    metrics, api_port = free_port(), free_port()
    env = {"POSTCALL_DATABASE__URL": url, "POSTCALL_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers}
    recorder = start("services.recorder", {**env, "POSTCALL_RUNTIME__METRICS_PORT": str(metrics)}, work_dir=tmp_path)
    api = start("services.api", {**env, "POSTCALL_API__PORT": str(api_port)}, work_dir=tmp_path)
    bases = [(recorder, f"http://127.0.0.1:{metrics}"), (api, f"http://127.0.0.1:{api_port}")]
    try:
        for proc, base in bases:
            until(partial(answers, f"{base}/healthz", 200), proc, "alive while waiting")
            until(partial(logged, proc, "waiting for the store"), proc, "the wait logged")
            ready = httpx.get(f"{base}/readyz")
            assert ready.status_code == 503 and ready.text.startswith("not ready: waiting for the store"), ready.text
            assert httpx.get(f"{base}/api/v1/conversations").status_code == 503
        time.sleep(2)  # a few tries: still waiting, not exited
        assert recorder.alive() and api.alive()
        server.start()
        for proc, base in bases:
            until(partial(answers, f"{base}/readyz", 200), proc, "ready once the store answers")
        cid = unique("waited")
        asyncio.run(produce(kafka, CONVERSATION_ENDED, [(cid, ended(cid))]))
        stored = f"http://127.0.0.1:{api_port}/api/v1/conversations/{cid}"
        until(lambda: answers(stored, 200), api, "the conversation recorded and served")
    finally:
        for proc, _ in bases:
            proc.stop()
        server.stop()
    for proc, _ in bases:
        output = proc.output()
        assert "s3cret-pw" not in output
        assert "postgres:***@127.0.0.1" in output and "the store answers, starting" in output, output
        assert "Traceback" not in output, output


def test_a_stop_while_waiting_for_the_store_is_a_clean_exit(tmp_path: Path) -> None:
    metrics = free_port()
    url = f"postgresql://postcall:s3cret-pw@127.0.0.1:{free_port()}/postcall"
    env = {"POSTCALL_DATABASE__URL": url, "POSTCALL_RUNTIME__METRICS_PORT": str(metrics)}
    recorder = start(
        "services.recorder", {**env, "POSTCALL_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9"}, work_dir=tmp_path
    )
    try:
        until(lambda: answers(f"http://127.0.0.1:{metrics}/healthz", 200), recorder, "alive while waiting")
        started = time.monotonic()
        assert recorder.term(timeout=10) == 0
        assert time.monotonic() - started < 5
    finally:
        recorder.stop()
    assert "stopped while waiting for the store" in recorder.output(), recorder.output()
    assert "s3cret-pw" not in recorder.output() and "Traceback" not in recorder.output()


@pytest.mark.parametrize(
    ("url", "line"),
    [
        ("postgresql+psycopg2://postcall:s3cret-pw@127.0.0.1:9/postcall", "names the driver 'postgresql+psycopg2'"),
        ("mysql://postcall:s3cret-pw@127.0.0.1:9/postcall", "unsupported database 'mysql'"),
        ("postgresql://postcall:s3cret-pw@[::1/postcall", "the database URL is not a URL"),
        # the driver refuses its own parameter (asyncpg's ClientConfigurationError, an InterfaceError)
        ("postgresql://postcall:s3cret-pw@127.0.0.1:9/postcall?ssl=bogus", "`sslmode` parameter must be one of"),
    ],
    ids=["driver", "database", "url", "parameter"],
)
def test_a_database_url_it_cannot_use_is_one_line_and_exit_2_at_once(url: str, line: str) -> None:
    done = run_recorder(url)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert line in done.stderr.strip().splitlines()[-1], done.stderr
    assert "s3cret-pw" not in done.stderr


def test_a_database_the_server_does_not_have_is_one_line_and_exit_2_at_once(postgres_server: PostgresServer) -> None:
    """The server answers and refuses (3D000): a configuration to fix, not an outage to wait out."""
    done = run_recorder(postgres_server.url(unique("none").replace("-", "_")))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "cannot migrate the store at" in done.stderr and "does not exist" in done.stderr, done.stderr


async def test_a_schema_too_old_without_migrating_is_one_line_and_exit_2(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    async with Store.open(DatabaseSettings(url=url)) as store, store.write() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '0009'"))
    done = run_recorder(url, POSTCALL_DATABASE__MIGRATE_ON_START="false")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "at schema revision 0009, this version needs" in done.stderr.strip().splitlines()[-1]


async def test_a_store_a_newer_version_migrated_is_one_line_and_exit_2(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    async with Store.open(DatabaseSettings(url=url)) as store, store.write() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    done = run_recorder(url)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "schema revision 0099, newer than this version knows" in done.stderr.strip().splitlines()[-1]
