"""The ledger's index of completed action ids: a SQLite file, so the dispatcher's memory does not grow
with the number of ids.

A Python set held every id of the results topic's 30 days in memory, about 124 MiB per million: at two
actions a second for a month it filled the pod's limit, and the restart after the OOM kill read it all
again. Here an id is 16 bytes on disk (a canonical UUID's own bytes, as the router's action ids are,
else a BLAKE2b-128 digest of the text): exact, no false positives. Memory is SQLite's page cache
(CACHE_MIB) whatever the count; a check is a B-tree lookup per generation, mostly in that cache.

Generations bound the file to what the topic holds: an id goes to the table of its result's time bucket
(BUCKET_DAYS wide), and a table whose whole bucket is older than the topic's retention is dropped at
once (`expire`), never deleted row by row. A done action id is done whatever results partition it was
read from, so the key is the id alone; the per-partition counts are for the metric (an id done again in
a later bucket, as a skipped repeat weeks on, counts twice until its older bucket goes).

Beside the ids, per action, the content digest last delivered (`content`): a deliberate re-delivery
(`supersedes`) goes out only when its content differs from that. Same generations, newest first.

The file is a cache of Kafka, which stays the truth: created empty at each start (the ledger reads the
topic again) in `directory` (a disk-backed volume in Kubernetes, not the memory-backed /tmp), written
without journal or fsync, deleted on close.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import time
import uuid
from collections import Counter
from pathlib import Path

CACHE_MIB = 16
DAY_MS = 86_400_000
BUCKET_DAYS = 7
FILE_PREFIX = "postcall-ledger-"
# The file is this connection's alone (a new name per start, deleted on close): it keeps its lock for good.
# In the default mode every statement took and released a file lock and read the file's header to see
# whether another connection had changed it (fcntl and pread calls): a check, a record and a read-back cost
# 12, 22 and 32 us of CPU instead of 3.5, 8 and 15 (/tmp/dispfast/mb_index2.py).
PRIVATE = ("locking_mode = EXCLUSIVE",)


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def key(action_id: str) -> bytes:
    """16 bytes per id: the UUID itself when the id is a canonical UUID, else a digest of the text."""
    if _CANONICAL_UUID.fullmatch(action_id):
        return bytes.fromhex(action_id.replace("-", ""))
    return hashlib.blake2b(action_id.encode(), digest_size=16, person=b"postcall-ledger").digest()


class DoneIndex:
    """Completed action ids, on disk. Not thread-safe: the event loop's only."""

    def __init__(self, directory: Path | None = None, retention_ms: int = 30 * DAY_MS) -> None:
        self.path: Path | None = None
        self.retention_ms = retention_ms
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            for stale in directory.glob(f"{FILE_PREFIX}*"):  # a killed process's file: Kafka is the truth
                stale.unlink(missing_ok=True)
            self.path = directory / f"{FILE_PREFIX}{uuid.uuid4().hex[:12]}.sqlite3"
        # "" is SQLite's private temporary on-disk database (in its temp directory), deleted on close
        self._db = sqlite3.connect(str(self.path) if self.path else "", isolation_level=None)
        for pragma in ("journal_mode = OFF", "synchronous = OFF", f"cache_size = -{CACHE_MIB * 1024}", *PRIVATE):
            self._db.execute(f"PRAGMA {pragma}")  # a cache: a crash loses nothing Kafka does not hold
        self._buckets: list[int] = []  # newest first: a repeat is usually recent
        self._lookups: list[str] = []  # the id lookup of each bucket's table, in the same order
        self._counts: Counter[tuple[int, int]] = Counter()  # (bucket, partition) -> ids

    def __contains__(self, action_id: str) -> bool:
        row = (key(action_id),)
        execute = self._db.execute
        # statements made once, in a loop, not any() over a generator: twice per delivery (-11 K Ir each)
        for lookup in self._lookups:  # noqa: SIM110
            if execute(lookup, row).fetchone() is not None:
                return True
        return False

    def content(self, action_id: str) -> tuple[str, float | None] | None:
        """The content digest last delivered for an action (under its own id or a superseding one), and when
        the correction that delivered it was written (epoch seconds; None: not known or not a correction)."""
        k = key(action_id)
        for b in self._buckets:
            query = f"SELECT digest, requested FROM content_{b} WHERE id = ?"  # noqa: S608
            row = self._db.execute(query, (k,)).fetchone()
            if row is not None:
                return str(row[0]), None if row[1] is None else float(row[1])
        return None

    def set_content(self, items: list[tuple[str, str, int | None, float | None]]) -> None:
        """(action id, digest delivered, result timestamp or None: now, when the correction that delivered it
        was written or None), in delivery order: the last digest wins; the time kept is the newest given for
        the action, as a correction older than one already seen (its retry, skipped as content unchanged)
        must not make a correction between the two look newer than what was delivered."""
        if not items:
            return
        now = int(time.time() * 1000)
        self._db.execute("BEGIN")
        try:
            for action_id, digest, at, given in items:
                requested = given
                if given is not None and (known := self.content(action_id)) is not None and known[1] is not None:
                    requested = max(given, known[1])  # a read only for a correction's: originals' are None
                bucket = (now if at is None else at) // (BUCKET_DAYS * DAY_MS)
                self._table(bucket)
                self._db.execute(
                    f"INSERT OR REPLACE INTO content_{bucket} VALUES (?, ?, ?)",  # noqa: S608
                    (key(action_id), digest, requested),
                )
        finally:
            self._db.execute("COMMIT")

    def add(self, partition: int, action_ids: list[str], at_ms: list[int | None] | None = None) -> None:
        """Record ids as done, in one transaction; `at_ms`: their results' timestamps (None: now)."""
        if not action_ids:
            return
        now = int(time.time() * 1000)
        stamps = at_ms if at_ms is not None else [None] * len(action_ids)
        by_bucket: dict[int, list[tuple[bytes]]] = {}
        for action_id, at in zip(action_ids, stamps, strict=True):
            by_bucket.setdefault((now if at is None else at) // (BUCKET_DAYS * DAY_MS), []).append((key(action_id),))
        one = len(action_ids) == 1  # one statement is its own transaction (the dispatcher's own result)
        if not one:
            self._db.execute("BEGIN")
        try:
            for bucket, rows in by_bucket.items():
                before = self._db.total_changes
                self._db.executemany(f"INSERT OR IGNORE INTO {self._table(bucket)} VALUES (?)", rows)  # noqa: S608
                self._counts[bucket, partition] += self._db.total_changes - before
        finally:
            if not one:
                self._db.execute("COMMIT")

    def expire(self, now_ms: int | None = None) -> int:
        """Drop the generations whose whole bucket is older than the retention; how many ids went."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        oldest_kept = (now - self.retention_ms) // (BUCKET_DAYS * DAY_MS)
        gone = 0
        for bucket in [b for b in self._buckets if b < oldest_kept]:
            self._db.execute(f"DROP TABLE done_{bucket}")
            self._db.execute(f"DROP TABLE content_{bucket}")
            self._buckets.remove(bucket)
            self._lookups = _lookups(self._buckets)
            for counted in [c for c in self._counts if c[0] == bucket]:
                gone += self._counts.pop(counted)
        return gone

    def count(self, partition: int | None = None) -> int:
        return sum(n for (_, p), n in self._counts.items() if partition is None or p == partition)

    def size_bytes(self) -> int:
        """The index's size on disk: the pages in use."""
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * self._db.execute("PRAGMA page_size").fetchone()[0])

    def close(self) -> None:
        self._db.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)

    def _table(self, bucket: int) -> str:
        if bucket not in self._buckets:
            self._db.execute(f"CREATE TABLE done_{bucket} (id BLOB PRIMARY KEY) WITHOUT ROWID")
            self._db.execute(
                f"CREATE TABLE content_{bucket} (id BLOB PRIMARY KEY, digest TEXT, requested REAL) WITHOUT ROWID"
            )
            self._buckets = sorted([*self._buckets, bucket], reverse=True)
            self._lookups = _lookups(self._buckets)
        return f"done_{bucket}"


def _lookups(buckets: list[int]) -> list[str]:
    return [f"SELECT 1 FROM done_{b} WHERE id = ?" for b in buckets]  # noqa: S608
