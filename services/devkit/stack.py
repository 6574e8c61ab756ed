"""Start the services as processes against one Kafka cluster (demo, chaos runs, end-to-end tests); the
recorder and the query API share a SQLite store in the run folder unless POSTCALL_DATABASE__URL says.

Each process is `python -m services.<name>` with POSTCALL_* settings in its environment and its JSON
log in the run folder, exactly as a Deployment would run it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.routes import SERVICES, route_of
from services.common.kafka import partitions_of
from services.common.settings import KafkaSettings
from services.devkit.children import die_with_parent
from services.devkit.kafka import ROOT, free_port


@dataclass
class ServiceProcess:
    name: str
    index: int
    env: dict[str, str]
    log: Path
    metrics_port: int
    popen: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    def start(self) -> None:
        handle = self.log.open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.name}"],
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,  # Ctrl-C reaches only the driver, which stops the services in order
            preexec_fn=die_with_parent,  # and a killed driver (no finally ran) leaves none running
        )

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill9(self) -> None:
        if self.alive():
            assert self.popen is not None
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    def terminate(self, timeout: float = 40) -> None:
        if not self.alive():
            return
        assert self.popen is not None
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()

    @property
    def label(self) -> str:
        return f"{self.name}-{self.index}"


@dataclass
class Stack:
    bootstrap: str
    run_dir: Path
    config_dir: Path = ROOT / "examples" / "agents"
    destinations_file: Path = ROOT / "examples" / "dispatcher" / "destinations.yaml"
    extra_env: dict[str, str] = field(default_factory=dict)
    static_membership: bool = False  # group_instance_id = <service>-<index>: a restart rejoins at once
    processes: list[ServiceProcess] = field(default_factory=list)

    def env(self, name: str, metrics_port: int) -> dict[str, str]:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "POSTCALL_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
            "POSTCALL_CONFIG_DIR": str(self.config_dir),
            "POSTCALL_DESTINATIONS_FILE": str(self.destinations_file),
            "POSTCALL_RUNTIME__METRICS_PORT": str(metrics_port),
            "POSTCALL_RUNTIME__METRICS_HOST": "127.0.0.1",
            "POSTCALL_DATABASE__URL": f"sqlite+aiosqlite:///{self.run_dir / 'store.db'}",
        }
        env.update(self.extra_env)
        env.update({k.split(":", 1)[1]: v for k, v in self.extra_env.items() if k.startswith(f"{name}:")})
        return {k: v for k, v in env.items() if ":" not in k}

    def start(self, instances: int = 1, services: tuple[str, ...] = SERVICES) -> Stack:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for name in services:
            for index in range(instances):
                port = free_port()
                env = self.env(name, port)
                if self.static_membership:
                    env["POSTCALL_RUNTIME__GROUP_INSTANCE_ID"] = f"{name}-{index}"
                proc = ServiceProcess(name, index, env, self.run_dir / f"{name}-{index}.log", port)
                proc.start()
                self.processes.append(proc)
        return self

    def start_ingress(self, port: int, endpoints_file: Path | None = None) -> ServiceProcess:
        """The webhook ingress on 127.0.0.1:`port`; by default with the demo endpoints (public demo secrets)."""
        from services.devkit.webhooks import DEMO_ENDPOINTS

        env = {
            **self.env("ingress", port),
            "POSTCALL_INGRESS__PORT": str(port),
            "POSTCALL_INGRESS__HOST": "127.0.0.1",
            "POSTCALL_INGRESS__ENDPOINTS_FILE": str(endpoints_file or DEMO_ENDPOINTS),
        }
        proc = ServiceProcess("ingress", 0, env, self.run_dir / "ingress-0.log", port)
        proc.start()
        self.processes.append(proc)
        return proc

    def start_api(self, port: int) -> ServiceProcess:
        """The query API (and the console) on 127.0.0.1:`port`, over the recorder's store; open on loopback."""
        env = {**self.env("api", port), "POSTCALL_API__PORT": str(port), "POSTCALL_API__HOST": "127.0.0.1"}
        proc = ServiceProcess("api", 0, env, self.run_dir / "api-0.log", port)
        proc.start()
        self.processes.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.processes:
            if proc.alive() and proc.popen is not None:
                proc.popen.send_signal(signal.SIGTERM)
        for proc in self.processes:
            proc.terminate()

    def dead(self) -> list[ServiceProcess]:
        return [p for p in self.processes if not p.alive()]


LOCAL_HOSTS = frozenset(("127.0.0.1", "localhost", "::1", "[::1]"))


async def skip_backlog(bootstrap: str, services: tuple[str, ...] = SERVICES, *, force: bool = False) -> int:
    """Commit each service's consumer group at the current end of every topic it consumes (inputs, retry
    tiers, replay topic): services started next on a shared broker (the test session's, a benchmark's)
    begin with what is published from now on, not with records other runs left unconsumed. Returns how many records
    were skipped. It moves the production group ids, so it refuses a cluster that is not on this machine
    unless `force`."""
    remote = [a for a in bootstrap.split(",") if a.strip().rsplit(":", 1)[0] not in LOCAL_HOSTS]
    if remote and not force:
        raise ValueError(
            f"skip_backlog would move the services' consumer groups past unread records on {', '.join(remote)}: "
            "refused for a broker that is not on this machine (force=True to insist)"
        )
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    skipped = 0
    for service in services:
        route = route_of(service)
        consumer = AIOKafkaConsumer(**kafka.client_options(), group_id=route.group_id, enable_auto_commit=False)
        parts = [
            TopicPartition(topic, p)
            for topic in (*route.input_topics, *route.retry_topics, *route.replay_topics)
            for p in await partitions_of(kafka, topic)
        ]
        await consumer.start()
        try:
            if not parts:
                continue
            consumer.assign(parts)
            ends = await consumer.end_offsets(parts)
            committed = {tp: await consumer.committed(tp) or 0 for tp in parts}
            skipped += sum(max(0, ends[tp] - committed[tp]) for tp in parts)
            await consumer.commit({tp: ends[tp] for tp in parts})
        finally:
            await consumer.stop()
    return skipped
