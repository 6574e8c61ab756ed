"""`python -m services.recorder` when its store cannot be used: one line on stderr and exit 2, as the API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from services.store.db import Store
from services.store.settings import DatabaseSettings

ROOT = Path(__file__).resolve().parents[3]


def run_recorder(database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "POSTCALL_DATABASE__URL": database_url, "POSTCALL_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9"}
    return subprocess.run(
        [sys.executable, "-m", "services.recorder"], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_a_store_it_cannot_reach_is_one_line_and_exit_2() -> None:
    done = run_recorder("postgresql://postcall:s3cret@127.0.0.1:9/none")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("postcall recorder: cannot migrate the store at")
    assert "s3cret" not in done.stderr


async def test_a_store_a_newer_version_migrated_is_one_line_and_exit_2(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    async with Store.open(DatabaseSettings(url=url)) as store, store.write() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    done = run_recorder(url)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "schema revision 0099, newer than this version knows" in done.stderr.strip().splitlines()[-1]
