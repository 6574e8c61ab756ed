"""Rate-limited republishing with a progress bar: what `dlq replay`, `reextract`, `held release` and the
API's operations share.

A command line's republish (`on_signals`) stops between two records on Ctrl-C, SIGTERM or SIGHUP: the
record being sent and its follow-up (a dead letter's replay marker) are both acknowledged first, so none
is half sent (a replay without its marker would be replayed again by the next `dlq replay`), and
`Interrupted` says how many were. A second signal stops at once, as it did before. A signal the command
was started ignoring stays ignored (`nohup` makes a replay outlive the session that started it). A
server's republish (the API's operations) is stopped the same way by its `stop` event, set when the server
is asked to exit (`Stopped`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from aiokafka.errors import KafkaError
from rich.progress import Progress

from services.common import codec
from services.common.codec import Outgoing
from services.common.kafka import producer
from services.common.settings import KafkaSettings

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


async def republish(
    kafka: KafkaSettings,
    records: Sequence[Outgoing],
    rate: float,
    progress: Progress | None,
    label: str,
    on_signals: bool = False,
    stop: asyncio.Event | None = None,
) -> int:
    """Send one at a time, each acknowledged (acks=all) before the next, at most `rate` per second
    (0: no limit); returns how many were acknowledged (with their follow-up record, if any). With
    `on_signals` (a command line, never a server), a signal stops it between two records: Interrupted.
    `stop` set (a server shutting down) stops it between two records too: Stopped."""
    if stop is not None and stop.is_set():
        raise Stopped(0, len(records))
    p = producer(kafka)
    stopping = _Stop(stop)
    # watched from before the producer starts (it may wait seconds for the brokers): a signal then stops it
    # before the first record, and the caller releases what it holds (a store's claims) at once
    with stopping.watching() if on_signals else contextlib.nullcontext():
        try:
            await p.start()
        except KafkaError as exc:
            await p.stop()
            raise RepublishFailed(0, exc) from exc
        task = progress.add_task(label, total=len(records)) if progress is not None else None
        interval, next_at, done = 1.0 / rate if rate > 0 else 0.0, time.monotonic(), 0
        try:
            for r in records:
                await stopping.sleep(next_at - time.monotonic())
                if stopping.signum is not None:
                    raise Interrupted(done, len(records), stopping.signum)
                if stopping.stopped:
                    raise Stopped(done, len(records))
                next_at = max(next_at + interval, time.monotonic())
                await _send(p, r)
                done += 1
                if r.then is not None:
                    await _send(p, r.then)
                if progress is not None and task is not None:
                    progress.advance(task)
            return done
        except KafkaError as exc:
            raise RepublishFailed(done, exc) from exc
        finally:
            await p.stop()


class RepublishFailed(Exception):
    """Raised when Kafka failed part-way: `done` records were acknowledged before it did."""

    def __init__(self, done: int, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.done = done


class Stopped(Exception):
    """Raised when the caller's `stop` event stopped a republish between two records (a server asked to
    exit): `done` of `total` were acknowledged, each with its follow-up; the others were not sent."""

    def __init__(self, done: int, total: int, why: str = "stopped") -> None:
        super().__init__(f"{why} after {done} of {total}")
        self.done, self.total = done, total
        self.sent: list[str] = []  # what the caller names the `done` records by, if it does
        self.skipped: list[str] = []  # what the caller left out before sending (another replay held it), if it does


class Interrupted(Stopped):
    """Raised when a signal stopped a command line's republish between two records: `done` of `total`
    were acknowledged, each with its follow-up; the others were not sent."""

    def __init__(self, done: int, total: int, signum: int) -> None:
        super().__init__(done, total, signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # as a shell reports a command the signal ended


class _Stop:
    """The first signal asks to stop between two records (and wakes a rate limit's wait); our handlers are
    then taken away, so a second signal does what it does by default (Ctrl-C: KeyboardInterrupt)."""

    def __init__(self, event: asyncio.Event | None = None) -> None:
        self.signum: int | None = None
        self._event = event if event is not None else asyncio.Event()  # a server's: set when it is asked to exit
        self._before: dict[int, Any] = {}  # asyncio.run's own Ctrl-C handler (it cancels the main task)

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for s in SIGNALS:
            before = signal.getsignal(s)
            if before is signal.SIG_IGN:  # started ignoring it (nohup: SIGHUP): a stop nobody asked for
                continue
            self._before[s] = before
            loop.add_signal_handler(s, self._stop, s)
        try:
            yield
        finally:
            self._forget()

    def _stop(self, signum: int) -> None:
        self.signum = signum
        self._event.set()
        self._forget()
        print(
            f"\npostcall: {signal.Signals(signum).name}: stopping once the record being sent is acknowledged "
            "(again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    def _forget(self) -> None:
        loop = asyncio.get_running_loop()
        for s, before in self._before.items():
            loop.remove_signal_handler(s)
            signal.signal(s, before if before is not None else signal.SIG_DFL)
        self._before = {}

    @property
    def stopped(self) -> bool:
        return self._event.is_set()

    async def sleep(self, seconds: float) -> None:
        if seconds > 0 and not self._event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), seconds)


async def _send(p: Any, r: Outgoing) -> None:
    await (await p.send(r.topic, r.value, key=r.key, partition=r.partition, headers=codec.header_list(r.headers)))
