"""LlamaServer's process and folder handling, with a stand-in for llama-server (no build needed)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest

from services.devkit.llama import LlamaBuild, LlamaServer

HEALTHY = f"""#!{sys.executable}
import http.server, sys
port = int(sys.argv[sys.argv.index("--port") + 1])
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


def stand_in(tmp_path: Path, script: str) -> LlamaBuild:
    server = tmp_path / "llama-server"
    server.write_text(script)
    server.chmod(0o755)
    return LlamaBuild(server, tmp_path / "model.gguf")


@pytest.fixture
def tmp_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def test_the_log_folder_is_removed_when_the_server_stops(tmp_path: Path, tmp_root: Path) -> None:
    """Every LlamaServer left a /tmp/postcall-llama-* folder behind (76 of them on the test machine)."""
    with LlamaServer(stand_in(tmp_path, HEALTHY)) as server:
        assert server.popen is not None
        assert [p.name[:15] for p in tmp_root.iterdir()] == ["postcall-llama-"]
    assert server.popen.poll() is not None
    assert list(tmp_root.iterdir()) == []


def test_a_server_that_exits_at_start_leaves_no_folder(tmp_path: Path, tmp_root: Path) -> None:
    build = stand_in(tmp_path, "#!/bin/sh\necho 'error: unknown argument'\nexit 3\n")
    with pytest.raises(RuntimeError, match="exited with 3: error: unknown argument"):
        LlamaServer(build).start()
    assert list(tmp_root.iterdir()) == []
