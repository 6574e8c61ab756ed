"""The test PostgreSQL server's helpers that need no server."""

from __future__ import annotations

import pytest

from services.devkit import postgres
from services.devkit.postgres import PostgresServer, PostgresUnavailable


def test_a_start_that_fails_leaves_no_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    """The folder made for the server stayed in the temporary folder when the start failed (here: PostgreSQL not
    installed), with no owner.pid, so no later reap removed it."""

    def missing() -> None:
        raise PostgresUnavailable("PostgreSQL is not installed")

    monkeypatch.setattr(postgres, "bindir", missing)
    server = PostgresServer()
    with pytest.raises(PostgresUnavailable):
        server.start()
    assert not server.workdir.exists()
