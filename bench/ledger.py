"""The dispatcher's memory with 10 million completed action ids in its idempotency ledger, against the
pod's memory limit; the old in-memory set measured in the same run as the baseline.

Each side runs in a fresh interpreter (`python -m bench.ledger child ...`) that imports the dispatcher
as `python -m services.dispatcher` does, then restores the real `Ledger` from a results "partition
reader" that yields N ActionCompleted records (12 partitions, uuid5 action ids, real JSON values, made
one at a time so the input never sits in memory). Measured from /proc/self/status: VmRSS after the
restore and VmHWM (the peak), plus the restore rate, the time of a check for a present and an absent
id, and the index file's size. The broker is not involved: the ledger's reader is the only Kafka part,
and its cost is the same for both sides.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.context import BenchContext
from bench.measure import check_line, info_line, ratio_line
from bench.memory import K8S_BASE, k8s_memory, parse_status

PARTITIONS = 12
ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:postcall:bench-ledger")


@dataclass
class _Record:
    offset: int
    value: bytes
    timestamp: int


def action_id(i: int) -> str:
    return str(uuid.uuid5(NAMESPACE, str(i)))


def result_value(i: int) -> bytes:
    return orjson.dumps(
        {
            "action_id": action_id(i),
            "conversation_id": f"conv-{i // 3}",
            "type": "webhook",
            "destination": "crm",
            "outcome": "delivered",
            "attempts": 1,
            "status_code": 200,
            "latency_ms": 41.7,
            "error": None,
            "completed_at": "2026-03-01T12:00:00.000000Z",
        }
    )


def reader_of(total: int) -> Any:
    now = int(time.time() * 1000)

    async def read(topic: str, partition: int, from_offset: int | None) -> AsyncIterator[_Record]:
        count = len(range(partition, total, PARTITIONS))
        for offset in range(from_offset or 0, count):
            yield _Record(offset, result_value(partition + offset * PARTITIONS), now)
            if offset % 10_000 == 0:
                await asyncio.sleep(0)

    return read


class _SetLedger:
    """The ledger's old store, for the baseline: one Python set of id strings per partition."""

    def __init__(self, reader: Any) -> None:
        self._reader, self.done = reader, [set[str]() for _ in range(PARTITIONS)]

    async def restore(self, assigned: list[tuple[str, int]]) -> None:
        for _, p in assigned:
            async for r in self._reader("results", p, None):
                result = orjson.loads(r.value)
                if result["outcome"] == "delivered":
                    self.done[p].add(result["action_id"])

    async def is_done(self, partition: int, aid: str) -> bool:
        return aid in self.done[partition]


def _status() -> dict[str, float]:
    return parse_status(_text(Path("/proc/self/status")))


def _text(path: Path) -> str:
    return path.read_text()


async def _child(total: int, store: str, directory: Path) -> dict[str, Any]:
    import services.dispatcher.__main__  # noqa: F401  (the dispatcher's imports: its real baseline)
    from services.dispatcher.ledger import Ledger
    from services.dispatcher.ledger_index import DoneIndex

    base = _status()["VmRSS"]
    reader = reader_of(total)
    index = DoneIndex(directory) if store == "index" else None
    ledger: Any = Ledger(reader, index=index) if index is not None else _SetLedger(reader)
    started = time.perf_counter()
    if index is not None:
        await ledger.restore([("postcall.actions.webhook.v1", p) for p in range(PARTITIONS)])
        await asyncio.gather(*(ledger.is_done(p, "warm-up") for p in range(PARTITIONS)))  # waits for the reads
    else:
        await ledger.restore([("results", p) for p in range(PARTITIONS)])
    restore_s = time.perf_counter() - started
    probes = 2_000
    present = [(i % PARTITIONS, action_id(i)) for i in range(0, total, max(1, total // probes))]
    absent = [str(uuid.uuid4()) for _ in range(probes)]
    started = time.perf_counter()
    found = [await ledger.is_done(p, aid) for p, aid in present]
    hit_us = (time.perf_counter() - started) / len(found) * 1e6
    started = time.perf_counter()
    missing = [await ledger.is_done(0, aid) for aid in absent]  # each also waits for a catch-up read
    miss_us = (time.perf_counter() - started) / probes * 1e6
    status = _status()
    return {
        "store": store,
        "ids": total,
        "all_found": all(found) and not any(missing),
        "rss_before_mib": base,
        "rss_mib": status["VmRSS"],
        "hwm_mib": status["VmHWM"],
        "restore_s": restore_s,
        "hit_us": hit_us,
        "miss_us": miss_us,
        "file_mib": index.size_bytes() / 2**20 if index is not None else 0.0,
    }


async def _measure(total: int, store: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as directory:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.ledger", "child", str(total), store, directory,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"ledger child ({store}) exited {proc.returncode}")
    result: dict[str, Any] = orjson.loads(out.splitlines()[-1])
    return result


async def run(ctx: BenchContext) -> dict[str, Any]:
    total = ctx.scaled(10_000_000, 1_000_000)
    _, limit = k8s_memory(_text(K8S_BASE / "dispatcher.yaml"))
    index = await _measure(total, "index")
    old = await _measure(total, "set")
    millions = total / 1e6
    per_id = index["file_mib"] * 2**20 / total
    return {
        "summary": [
            check_line(
                f"dispatcher RSS with {millions:g}M ids in the ledger within its {limit:.0f} MiB limit",
                index["hwm_mib"] < limit,
                f"peak {index['hwm_mib']:.0f} MiB, {index['rss_mib']:.0f} MiB after the restore",
            ),
            ratio_line(
                f"ledger index, RSS at {millions:g}M ids",
                index["rss_mib"],
                "the old in-memory set",
                old["rss_mib"],
                unit="MiB",
            ),
            check_line("every id found, no absent id found (both stores)", index["all_found"] and old["all_found"]),
            info_line(
                "ledger index on disk",
                f"{index['file_mib']:.0f} MiB ({per_id:.0f} bytes per id); restore {total / index['restore_s']:,.0f} "
                f"ids/s vs {total / old['restore_s']:,.0f} for the set",
            ),
            info_line(
                "ledger check",
                f"present {index['hit_us']:.1f} us, absent {index['miss_us']:.1f} us "
                f"(set: {old['hit_us']:.2f} / {old['miss_us']:.2f} us)",
            ),
        ],
        "charts": [
            {
                "id": "rss",
                "kind": "bar",
                "title": f"Dispatcher memory with {millions:g}M ledger ids (MiB)",
                "ylabel": "MiB",
                "categories": ["index (on disk)", "set (in memory)", "pod limit"],
                "series": {
                    "after restore (VmRSS)": [index["rss_mib"], old["rss_mib"], limit],
                    "peak (VmHWM)": [index["hwm_mib"], old["hwm_mib"], limit],
                },
            }
        ],
        "data": {"index": index, "set": old, "limit_mib": limit},
        "notes": [
            "Each store in a fresh interpreter that imports the dispatcher; the ledger restored from a reader "
            "yielding ActionCompleted JSON records (no broker). The index's memory is SQLite's 16 MiB page cache; "
            "its ids are in a file on the pod's `ledger` volume. The set is the ledger's store before issue 12."
        ],
    }


def _main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["child"])
    parser.add_argument("ids", type=int)
    parser.add_argument("store", choices=["index", "set"])
    parser.add_argument("directory", type=Path)
    args = parser.parse_args()
    print(orjson.dumps(asyncio.run(_child(args.ids, args.store, args.directory))).decode())


if __name__ == "__main__":
    _main()
