"""A real Apache Kafka broker (KRaft, combined controller+broker) fetched from Maven Central.

`fetch` runs `mvn dependency:copy-dependencies` on deploy/kafka/pom.xml into a git-ignored cache;
`KafkaCluster` formats storage, starts one or more nodes on free ports of 127.0.0.1, waits until the
cluster answers, and stops every node cleanly (or kills one, for chaos runs).

    python -m services.devkit.kafka fetch
    python -m services.devkit.kafka start --port 9092      # foreground until Ctrl-C
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
POM = ROOT / "deploy" / "kafka" / "pom.xml"
LOG4J = ROOT / "deploy" / "kafka" / "log4j2.properties"
CACHE = Path(os.environ.get("POSTCALL_KAFKA_CACHE", ROOT / ".cache" / "kafka"))


def kafka_version() -> str:
    text = POM.read_text()
    start = text.index("<kafka.version>") + len("<kafka.version>")
    return text[start : text.index("</kafka.version>")]


def libs_dir() -> Path:
    """A folder per Kafka version and pom: a pom that changes another jar (a log4j bump) is fetched anew, into a
    new folder, so a broker still running from the old one keeps its jars."""
    return CACHE / kafka_version() / hashlib.sha256(POM.read_bytes()).hexdigest()[:12] / "libs"


def fetch() -> Path:
    """Download the broker's jars once; later calls return the cached folder."""
    libs = libs_dir()
    marker = libs / ".complete"
    if marker.exists():
        return libs
    if shutil.which("mvn") is None:
        raise SystemExit("Maven (mvn) is needed to fetch the Kafka broker: apt-get install maven")
    tmp = libs.with_name("libs.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [
        "mvn",
        "-q",
        "-B",
        "--strict-checksums",  # Maven's default only warns (unseen under -q) when a jar's checksum differs
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={tmp}",
        "-DincludeScope=runtime",
    ]
    subprocess.run(cmd, check=True)
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    marker.touch()
    return libs


LOWEST_PORT = 15000


def free_port() -> int:
    """A port of 127.0.0.1 that nothing holds, for a server to bind a moment later. It is picked at random
    below the kernel's ephemeral range (net.ipv4.ip_local_port_range), not by binding port 0: a port from
    that range can become any outgoing connection's local port before the server binds it (a broker starts
    seconds later), and then the server fails with "Address already in use".

    Nor is it a port this machine's other processes were handed in the last PORT_HANDED_SECONDS (a shared
    list, PORTS_HANDED, under a lock): two test processes side by side (`make test` runs two pytest-xdist
    workers) could each pick the same unbound port and the second server to bind it failed."""
    with _ports_handed() as handed:
        below = _ephemeral_low()
        for _ in range(100 if below > LOWEST_PORT + 100 else 0):
            port = LOWEST_PORT + secrets.randbelow(below - LOWEST_PORT)
            if port in handed:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            handed[port] = time.time() + PORT_HANDED_SECONDS
            return port
        for _ in range(100):  # no room below the range: the kernel's, recorded too
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            if port not in handed:
                break
        handed[port] = time.time() + PORT_HANDED_SECONDS
        return port


PORTS_HANDED = Path(tempfile.gettempdir()) / f"postcall-ports-handed-{os.getuid()}"
PORT_HANDED_SECONDS = 120.0  # a server binds its port within this (a broker within seconds)


@contextlib.contextmanager
def _ports_handed() -> Iterator[dict[int, float]]:
    """The ports handed out lately on this machine (port -> until when), read and written under a lock; this
    process's own when the shared file is not ours alone (see _open_handed)."""
    import fcntl

    fd = _open_handed()
    if fd is None:
        now = time.time()
        for gone in [port for port, until in _HANDED_HERE.items() if until <= now]:
            del _HANDED_HERE[gone]
        yield _HANDED_HERE
        return
    with os.fdopen(fd, "r+", encoding="ascii") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
        now = time.time()
        handed: dict[int, float] = {}
        for line in f.read().split("\n"):
            port, _, until = line.partition(" ")
            with contextlib.suppress(ValueError):
                if float(until) > now:
                    handed[int(port)] = float(until)
        yield handed
        f.seek(0)
        f.truncate()
        f.write("".join(f"{port} {until}\n" for port, until in handed.items()))


_HANDED_HERE: dict[int, float] = {}  # the fallback: ports this process handed out


def _open_handed() -> int | None:
    """PORTS_HANDED opened for reading and writing, made if missing (0600), or None when it is not a file of
    ours alone. It is in a folder every local user writes (/tmp): another user could make it first, as a
    symbolic or hard link to one of our files (which we would then truncate and write) or as a file of
    theirs (whose ports they choose); none is followed or used."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a FIFO's open
    try:
        fd = os.open(PORTS_HANDED, flags, 0o600)
    except OSError as exc:  # ELOOP: a symbolic link
        _not_ours(f"cannot be opened without following a link ({exc.strerror})")
        return None
    found = os.fstat(fd)
    if not stat.S_ISREG(found.st_mode) or found.st_uid != os.getuid() or found.st_nlink != 1:
        os.close(fd)
        _not_ours("is not a file of ours alone (another user's, a link, not a regular file)")
        return None
    if found.st_mode & 0o077:
        os.fchmod(fd, 0o600)  # ours, made by an earlier version with the umask's 0644
    return fd


@functools.cache  # once a process
def _not_ours(why: str) -> None:
    print(
        f"postcall devkit: {PORTS_HANDED} {why}; the ports handed out are not shared with other processes",
        file=sys.stderr,
    )


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


@dataclass
class KafkaNode:
    node_id: int
    port: int
    controller_port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "logs" / "server.log"


@dataclass
class KafkaCluster:
    """`size` combined KRaft nodes on 127.0.0.1; one node is the usual local broker."""

    size: int = 1
    ports: list[int] | None = None
    workdir: Path | None = None
    heap: str = "512m"
    nodes: list[KafkaNode] = field(default_factory=list)
    _own_workdir: bool = False

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(n.address for n in self.nodes)

    def start(self, timeout: float = 90.0) -> KafkaCluster:
        libs = fetch()
        if self.workdir is None:
            reap_orphans()
            self.workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
            self._own_workdir = True
            (self.workdir / "owner.pid").write_text(str(os.getpid()))
        ports = self.ports or [free_port() for _ in range(self.size)]
        self.nodes = [KafkaNode(i + 1, ports[i], free_port(), self.workdir / f"node-{i + 1}") for i in range(self.size)]
        try:
            cluster_id = _cluster_id()
            for node in self.nodes:
                self._format(libs, node, cluster_id)
            for node in self.nodes:
                self.start_node(node)
            wait_ready(self.bootstrap_servers, timeout, self)
        except BaseException:  # not ready in time, a node died, Ctrl-C: the brokers run in their own session
            for node in self.nodes:
                self.stop_node(node, kill=True)
            self.stop()
            raise
        return self

    def _properties(self, node: KafkaNode) -> Path:
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        rf = min(3, self.size)
        lines = {
            "process.roles": "broker,controller",
            "node.id": node.node_id,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": node.data_dir / "data",
            "num.partitions": 1,
            "default.replication.factor": rf,
            "min.insync.replicas": 2 if rf >= 3 else 1,
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": 10,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": 2 if rf >= 3 else 1,
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": 2 if rf >= 3 else 1,
            "group.initial.rebalance.delay.ms": 0,
            "auto.create.topics.enable": "false",
            "log.segment.bytes": 16 * 1024 * 1024,
        }
        node.data_dir.mkdir(parents=True, exist_ok=True)
        path = node.data_dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
        return path

    def _format(self, libs: Path, node: KafkaNode, cluster_id: str) -> None:
        props = self._properties(node)
        cmd = [*_java(libs, node), "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start_node(self, node: KafkaNode) -> None:
        props = node.data_dir / "server.properties"
        (node.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        out = (node.data_dir / "logs" / "stdout.log").open("ab")
        cmd = [*_java(fetch(), node, self.heap), "kafka.Kafka", str(props)]
        node.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        (node.data_dir / "broker.pid").write_text(str(node.process.pid))

    def stop_node(self, node: KafkaNode, kill: bool = False, timeout: float = 30.0) -> None:
        proc = node.process
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop(self) -> None:
        for node in self.nodes:
            self.stop_node(node)
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


WORKDIR_PREFIX = "postcall-kafka-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_broker_of(pid: int, workdir: Path) -> bool:
    """Only a Kafka broker started from this very folder is ever killed (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return "kafka.Kafka" in cmdline and str(workdir) in cmdline


def reap_orphans() -> list[int]:
    """Stop brokers left behind by a test session or demo that was killed before it could stop them
    (brokers run in their own session so that Ctrl-C reaches only the driver): a work folder whose
    owner process is gone has its brokers killed and is removed. Returns the pids it killed."""
    killed = []
    for workdir in Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*"):
        owner = workdir / "owner.pid"
        if not owner.is_file() or _alive(int(owner.read_text() or 0)):
            continue
        for pid_file in workdir.glob("node-*/broker.pid"):
            pid = int(pid_file.read_text() or 0)
            if pid and _alive(pid) and _is_broker_of(pid, workdir):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                    killed.append(pid)
        shutil.rmtree(workdir, ignore_errors=True)
    return killed


def _java(libs: Path, node: KafkaNode, heap: str = "256m") -> list[str]:
    return [
        "java",
        f"-Xmx{heap}",
        f"-Xms{heap}",
        "-XX:+UseG1GC",
        "-XX:TieredStopAtLevel=1",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG4J}",
        f"-Dkafka.logs.dir={node.data_dir / 'logs'}",
        "-cp",
        f"{libs}/*",
    ]


def _cluster_id() -> str:
    import base64

    while True:  # an id starting with "-" would be read as an option by the storage tool
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if cluster_id[0].isalnum():
            return cluster_id


def wait_ready(bootstrap: str, timeout: float, cluster: KafkaCluster | None = None) -> None:
    """Block until the cluster answers a metadata request with every broker registered."""
    deadline = time.monotonic() + timeout
    expected = len(bootstrap.split(","))
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # aiokafka logs "Unable connect" until the broker listens
    try:
        _wait(bootstrap, deadline, expected, timeout, cluster)
    finally:
        quiet.setLevel(level)


def _wait(bootstrap: str, deadline: float, expected: int, timeout: float, cluster: KafkaCluster | None) -> None:
    last: Exception | None = None
    while time.monotonic() < deadline:
        for node in cluster.nodes if cluster else []:
            if node.process is not None and node.process.poll() is not None:
                tail = node.log_file.read_text()[-2000:] if node.log_file.exists() else ""
                raise RuntimeError(f"Kafka node {node.node_id} exited with {node.process.returncode}\n{tail}")
        try:
            if asyncio.run(_broker_count(bootstrap)) >= expected:
                return
        except Exception as exc:  # the broker is still starting; any failure means "not yet"
            last = exc
        time.sleep(0.5)
    raise TimeoutError(f"Kafka at {bootstrap} did not answer within {timeout:.0f}s: {last!r}")


async def _broker_count(bootstrap: str) -> int:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        return len(cluster["brokers"])
    finally:
        await admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.devkit.kafka", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="download the broker jars from Maven Central (cached)")
    start = sub.add_parser("start", help="start a broker in the foreground until Ctrl-C")
    start.add_argument("--port", type=int, default=9092)
    start.add_argument("--nodes", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "fetch":
        print(f"kafka {kafka_version()} jars in {fetch()}")
        return 0
    ports = [args.port + i for i in range(args.nodes)]
    cluster = KafkaCluster(size=args.nodes, ports=ports, workdir=ROOT / ".cache" / "kafka-data")
    shutil.rmtree(ROOT / ".cache" / "kafka-data", ignore_errors=True)
    # SIGTERM stops the brokers as Ctrl-C does: they run in their own session, so a launcher that died
    # of the signal would leave them running (a handler, not a blocked mask: the brokers would inherit it).
    # SIGINT explicitly too: started in the background by a non-interactive shell (`make run &`, a script),
    # Python inherits SIGINT ignored and installs no handler of its own, so Ctrl-C's signal did nothing
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        cluster.start()
        print(f"kafka ready at {cluster.bootstrap_servers} (Ctrl-C or SIGTERM stops it)", flush=True)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):  # a second signal must not cut the stop short
            signal.signal(signum, signal.SIG_IGN)
        cluster.stop()
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
