"""A real PostgreSQL server from Debian's `postgresql` package, for tests and benchmarks: `initdb` in a
temporary folder, `postgres` on a free port of 127.0.0.1 (trust authentication, nothing listens
elsewhere), stopped and removed afterwards. A server left behind by a killed session is stopped at the
next start (owner pid in its folder, checked against /proc), as the local Kafka broker does.

initdb refuses to run as root; as root the server runs as the `postgres` system user the package creates.

    python -m services.devkit.postgres           # foreground until Ctrl-C, prints the URL
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.devkit.kafka import _alive, free_port

WORKDIR_PREFIX = "postcall-pg-"
SEARCH = ("/usr/lib/postgresql",)


class PostgresUnavailable(RuntimeError):
    """Raised when PostgreSQL's server programs are not installed (scripts/ensure-tools.sh installs them)."""


def bindir() -> Path:
    """The newest installed server's bin folder (Debian: /usr/lib/postgresql/<major>/bin)."""
    found = sorted(
        (p for root in SEARCH for p in Path(root).glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1]
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise PostgresUnavailable("PostgreSQL is not installed: run scripts/ensure-tools.sh (Debian package postgresql)")


def available() -> bool:
    try:
        bindir()
    except PostgresUnavailable:
        return False
    return True


@dataclass
class PostgresServer:
    port: int = 0
    fast: bool = True  # fsync off: for tests; benchmarks keep the durable defaults
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX)))
    process: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 60) -> PostgresServer:
        reap_orphans()
        try:
            return self._start(timeout)
        except BaseException:  # initdb failed, not installed, Ctrl-C: no server and no folder left behind
            self.stop()
            raise

    def _start(self, timeout: float) -> PostgresServer:
        bin_ = bindir()
        (self.workdir / "owner.pid").write_text(str(os.getpid()))
        user = _run_as()
        if user is not None:
            os.chown(self.workdir, user.pw_uid, user.pw_gid)
        self.port = self.port or free_port()
        _run([str(bin_ / "initdb"), "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8",
              "--locale=C.UTF-8", "--no-sync"], user)  # fmt: skip
        options = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.workdir),
            "max_connections": "100",
            "shared_buffers": "128MB",
        }
        if self.fast:
            options.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        args = [str(bin_ / "postgres"), "-D", str(self.data_dir)]
        for name, value in options.items():
            args += ["-c", f"{name}={value}"]
        log = (self.workdir / "server.log").open("ab")
        self.process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **_as_user(user)
        )
        self._wait(bin_, timeout)
        return self

    def _wait(self, bin_: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"postgres exited at start:\n{self.log_tail()}")
            ready = subprocess.run(
                [str(bin_ / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
                capture_output=True,
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"postgres did not accept connections within {timeout:.0f}s")

    def create_database(self, name: str) -> str:
        """A fresh database on this server; returns its URL."""
        bin_ = bindir()
        _run([str(bin_ / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name], None)
        return self.url(name)

    def log_tail(self, lines: int = 30) -> str:
        path = self.workdir / "server.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # "fast" shutdown: roll back and exit
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def _run_as() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable("running as root and there is no `postgres` user to run the server as") from None


def _as_user(user: pwd.struct_passwd | None) -> dict[str, Any]:
    return {} if user is None else {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _run(args: list[str], user: pwd.struct_passwd | None) -> None:
    done = subprocess.run(args, capture_output=True, check=False, **_as_user(user))
    if done.returncode != 0:
        raise RuntimeError(f"{Path(args[0]).name} failed: {done.stderr.decode(errors='replace').strip()}")


def _is_postgres_of(pid: int, data_dir: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return "postgres" in cmdline and str(data_dir) in cmdline


def reap_orphans() -> list[int]:
    """Stop servers whose owner (a killed test session or benchmark) is gone; remove their folders."""
    stopped = []
    for workdir in Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*"):
        owner = workdir / "owner.pid"
        with contextlib.suppress(OSError, ValueError):
            if not owner.is_file() or _alive(int(owner.read_text() or 0)):
                continue
            pid_file = workdir / "data" / "postmaster.pid"
            pid = int(pid_file.read_text().split("\n", 1)[0]) if pid_file.is_file() else 0
            if pid and _alive(pid) and _is_postgres_of(pid, workdir / "data"):
                os.kill(pid, signal.SIGINT)
                stopped.append(pid)
                for _ in range(100):
                    if not _alive(pid):
                        break
                    time.sleep(0.1)
            shutil.rmtree(workdir, ignore_errors=True)
    return stopped


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.devkit.postgres", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    stop = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    with PostgresServer(port=args.port, fast=False) as server:
        print(server.url(), flush=True)
        signal.sigwait(stop)


if __name__ == "__main__":
    main()
