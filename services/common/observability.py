"""What a service shows of itself: JSON logs, Prometheus metrics, and the /metrics, /healthz, /readyz
endpoint.

Logs are JSON, one object per line, naming the conversation, topic, partition and offset being
handled. Metric names follow postcall_<noun>_<unit>; counters end in _total, durations in _seconds.
Service-specific metrics (LLM tokens, deliveries) live beside their service but register in the same
default registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import aiokafka  # noqa: F401  (its modules' loggers, for quiet_libraries)
import orjson
import prometheus_client.metrics
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

record_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("record_context", default=None)

_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


_MILLIS = tuple(f".{millis:03d}Z" for millis in range(1000))  # a time's end, by its milliseconds


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        self._second: tuple[int, str] = (-1, "")  # the last second formatted, as "YYYY-MM-DDTHH:MM:SS"

    def _ts(self, created: float, msecs: float) -> str:
        second, text = self._second
        if int(created) != second:  # formatted once per second: a busy service logs many per second
            second = int(created)
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, text)
        millis = int(msecs)
        return text + _MILLIS[millis] if 0 <= millis < 1000 else f"{text}.{millis:03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_")}
        exc = self.formatException(record.exc_info) if record.exc_info else None
        return self.line(record.created, record.msecs, record.levelname, record.name, record.getMessage(), fields, exc)

    def line(
        self,
        created: float,
        msecs: float,
        levelname: str,
        logger: str,
        message: str,
        fields: dict[str, Any],
        exc: str | None = None,
    ) -> str:
        """The JSON line of a record with these attributes and extra fields (`format`, `log_fields`)."""
        ts, level, context = self._ts(created, msecs), levelname.lower(), record_context.get()
        # a dict display, not update() calls: the same keys in the same order (a field named as one before
        # it takes that one's place), in one step
        out: dict[str, Any] = (
            {"ts": ts, "level": level, "service": self.service, "logger": logger, "msg": message, **context, **fields}
            if context
            else {"ts": ts, "level": level, "service": self.service, "logger": logger, "msg": message, **fields}
        )
        if exc:
            out["exc"] = exc
        return orjson.dumps(out, default=str).decode()


#: Libraries held at WARNING whatever the service's level: aiokafka is chatty; httpx's INFO line names
#: the request URL (a Slack webhook URL is a secret) and httpcore's DEBUG lines quote response headers,
#: which a receiver controls and may fill with the credentials we sent it.
QUIET_LIBRARIES = ("aiokafka", "httpx", "httpcore")


class RepeatFilter(logging.Filter):
    """Lets the first of a repeated line through, then at most one per `period_seconds`: during a broker
    outage aiokafka logs the same connection errors about ten times a second per pod, at ERROR (902
    "Unable connect to node with id 1" lines in a 20 s outage of tests/integration/runtime/test_probes.py).
    Lines repeat when they have the same logger, level, message template and arguments but the last (the
    error text, which may differ between attempts): "Unable connect to node with id %s: %s" is one line
    per node. A line let through after repeats carries `repeats_suppressed`, how many were not logged
    since the one before; the repeats after the last line shown are not counted anywhere."""

    def __init__(self, period_seconds: float = 60.0, max_keys: int = 1024) -> None:
        super().__init__()
        self.period_seconds = period_seconds
        self.max_keys = max_keys  # a message formatted before logging makes a key per text: start over
        self._shown: dict[tuple[str, int, str, str], tuple[float, int]] = {}  # -> (shown at, suppressed since)

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        key = (record.name, record.levelno, str(record.msg), repr(args[:-1]))
        shown = self._shown.get(key)
        if shown is not None and record.created - shown[0] < self.period_seconds:
            self._shown[key] = (shown[0], shown[1] + 1)
            return False
        if len(self._shown) >= self.max_keys:
            self._shown.clear()
        self._shown[key] = (record.created, 0)
        if shown is not None and shown[1]:
            record.repeats_suppressed = shown[1]
        return True


ON_A_REQUEST = "Exception in ASGI application"  # how uvicorn (and serving.py) log an app failing on a request


def traceback_without_text(exc: BaseException) -> str:
    """`exc`'s traceback (and those of the exceptions it was raised from or during) as logging writes it, with
    each exception's type but not its text: an error raised on a request's content may quote it (int(value),
    datetime.fromisoformat(value)), and a log line carries no request."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return "\n".join(
        "Traceback (most recent call last):\n"
        + "".join(traceback.format_tb(each.__traceback__))
        + f"{type(each).__module__}.{type(each).__qualname__} (its text left out)"
        for each in reversed(chain)
    )


class TextlessTracebacks(logging.Filter):
    """On uvicorn's logger: the exception of an app that failed on a request ("Exception in ASGI
    application", uvicorn's and serving.py's) is logged as `exc`, its traceback without its text
    (`traceback_without_text`), not as logging's traceback, which ends with the text. Its other lines keep
    theirs: a failure of the app's start ("Exception in 'lifespan' protocol") names what it could not reach."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None and str(record.msg).startswith(ON_A_REQUEST):
            record.exc = traceback_without_text(record.exc_info[1])
            record.exc_info = record.exc_text = None
        return True


def textless_tracebacks() -> None:
    """Puts TextlessTracebacks on uvicorn's error logger once (observability.setup)."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, TextlessTracebacks) for f in logger.filters):
        logger.addFilter(TextlessTracebacks())


class CoalescingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler for a busy asyncio service: the lines logged on the event loop's thread during one
    turn of the loop are written together when the turn ends (one write and flush instead of one per
    line: a line per request was the largest part of logging's cost in the ingress's profile). A line
    logged where no loop runs, and a WARNING or worse anywhere, is written at once, after those still
    held, so the order stays. INFO and DEBUG lines a turn held are lost only if the process is killed
    (SIGKILL, OOM, os._exit, a crash in C) before the turn ends, and wait while a turn blocks;
    logging.shutdown() (at a normal exit) flushes them."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._held: list[str] = []
        self._flush_on: asyncio.AbstractEventLoop | None = None  # the loop a flush is scheduled on

    def emit(self, record: logging.LogRecord) -> None:  # called with the handler's lock held
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.hold(line, record.levelno, record)

    def hold(self, line: str, levelno: int, record: logging.LogRecord | None = None) -> None:
        """Write a formatted line as emit() does (with the handler's lock held)."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        self._held.append(line)
        if loop is None or levelno >= logging.WARNING:
            self._write_held(record)
        elif self._flush_on is not loop:  # (a loop closed before its turn ended: this one flushes it all)
            self._flush_on = loop
            loop.call_soon(self.flush)

    def flush(self) -> None:
        with self.lock or contextlib.nullcontext():
            self._flush_on = None
            self._write_held(None)

    def _write_held(self, record: logging.LogRecord | None) -> None:
        if not self._held:
            return
        text = "\n".join(self._held) + "\n"
        self._held.clear()
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:
            self.handleError(record or logging.makeLogRecord({"msg": "held log lines"}))


def log_fields(logger: logging.Logger, level: int, message: str, fields: dict[str, Any]) -> None:
    """`logger.log(level, message, extra=fields)` for a line per request: when the one handler the record
    would reach is setup()'s CoalescingStreamHandler with its JsonFormatter (no filters on the way), the
    same line is formatted and held without a LogRecord and the logging module's dispatch (about a tenth
    of the cost of an ingress request went to its log line); with any other handler, filter or level,
    through `logger.log` itself. `message` is final (no %-arguments); `fields` are names a LogRecord
    does not have and that do not start with "_" (the formatter leaves those out): a LogRecord's own name
    goes through logging, which refuses it. test_json_log.py compares the two paths' lines."""
    if not logger.isEnabledFor(level):
        return
    handler = _sole_json_handler(logger, level)
    if (
        handler is None
        or not _plain_names(fields)
        or type(logger) is not logging.Logger  # a Logger class or record factory of someone else's
        or logging.getLogRecordFactory() is not logging.LogRecord
    ):
        logger.log(level, message, extra=fields)
        return
    formatter: JsonFormatter = handler.formatter  # type: ignore[assignment]
    created, msecs = _record_time()
    try:
        line = formatter.line(created, msecs, logging.getLevelName(level), logger.name, message, fields)
    except Exception:  # what orjson cannot write: logging reports it through handleError, never raises
        logger.log(level, message, extra=fields)
        return
    with handler.lock or contextlib.nullcontext():
        handler.hold(line, level)


_PLAIN: set[tuple[str, ...]] = set()  # the field names of lines already found plain (a caller's few sets)


def _plain_names(fields: dict[str, Any]) -> bool:
    """No field is a LogRecord's own name or starts with "_" (which the formatter leaves out of the line).
    A caller logs the same few sets of names line after line: each set is checked once and remembered
    (the check was a tenth of the cost of a line), a bounded number of them."""
    names = tuple(fields)
    if names in _PLAIN:
        return True
    if not _RESERVED.isdisjoint(names) or any(name[:1] == "_" for name in names):
        return False
    if len(_PLAIN) < 256:
        _PLAIN.add(names)
    return True


if sys.version_info >= (3, 13):  # LogRecord's clock from 3.13 (gh-102402): nanoseconds

    def _record_time() -> tuple[float, float]:
        """(created, msecs) as the running Python's LogRecord computes them."""
        ns = time.time_ns()
        created, msecs = ns / 1e9, (ns % 1_000_000_000) // 1_000_000 + 0.0
        if msecs == 999.0 and int(created) != ns // 1_000_000_000:  # created rounded up a second (gh-120683)
            msecs = 0.0
        return created, msecs

else:

    def _record_time() -> tuple[float, float]:
        """(created, msecs) as the running Python's LogRecord computes them."""
        created = time.time()
        return created, int((created - int(created)) * 1000) + 0.0


def _sole_json_handler(logger: logging.Logger, level: int) -> CoalescingStreamHandler | None:
    """The handler a record of `logger` at `level` would reach, if it is the only one, a
    CoalescingStreamHandler with a JsonFormatter and no filters, and the logger has no filters
    (Logger.handle and Logger.callHandlers: an ancestor's filters do not apply, its handlers do)."""
    if logger.disabled or logger.filters:
        return None
    found: logging.Handler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if level >= handler.level:
                if found is not None:
                    return None
                found = handler
        if not current.propagate:
            break
        current = current.parent
    if type(found) is CoalescingStreamHandler and not found.filters and type(found.formatter) is JsonFormatter:
        return found
    return None


def setup(service: str, level: str = "INFO", coalesce: bool = False) -> None:
    """JSON lines on stderr from the root logger. `coalesce`: a turn of the event loop writes its lines
    at once (CoalescingStreamHandler), for a service that logs a line per request."""
    # The formatter writes none of the caller's file, line, function, thread or process: the logging
    # module need not find them for every record (the logging HOWTO's "Optimization" section)
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = CoalescingStreamHandler(sys.stderr) if coalesce else logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet_libraries()
    textless_tracebacks()


def quiet_libraries() -> None:
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    # a logger's filters see only its own records, not its children's: every aiokafka module's logger
    # (all exist once the package is imported, at the top of this module) gets the one filter
    repeats = RepeatFilter()
    for name in list(logging.Logger.manager.loggerDict):
        logger = logging.getLogger(name) if name.split(".")[0] == "aiokafka" else None
        if logger is not None and not any(isinstance(f, RepeatFilter) for f in logger.filters):
            logger.addFilter(repeats)


RECORDS_CONSUMED = Counter("postcall_records_consumed_total", "Records taken from Kafka.", ["service", "topic"])
RECORDS_PROCESSED = Counter(
    "postcall_records_processed_total",
    "Records finished, by outcome: ok, retried, dead_lettered, internal_error; and unavailable: records that "
    "waited for an unavailable dependency, each counted once, at its first wait (it finishes later as one of "
    "the others).",
    ["service", "outcome"],
)
RECORDS_PRODUCED = Counter(
    "postcall_records_produced_total", "Records produced and acknowledged.", ["service", "topic"]
)
HANDLER_DURATION = Histogram(
    "postcall_handler_duration_seconds",
    "Time a handler took for one record.",
    ["service"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
IN_FLIGHT = Gauge("postcall_in_flight_records", "Records taken from Kafka and not finished.", ["service"])
CONSUMER_LAG = Gauge(
    "postcall_consumer_lag_records",
    "Per partition held, from its assignment on: log end offset minus the next offset this consumer will commit "
    "(before its first record, the offset it was assigned at); no series while no "
    "broker answers (the lag is unknown then).",
    ["service", "topic", "partition"],
)
PAUSED_PARTITIONS = Gauge("postcall_paused_partitions", "Partitions paused right now.", ["service"])
RETRIES = Counter("postcall_retries_total", "Records sent to a retry tier.", ["service", "tier"])
DEAD_LETTERS = Counter("postcall_dead_letters_total", "Records sent to the dead-letter topic.", ["service", "category"])
COMMITS = Counter("postcall_commits_total", "Offset commits, by result.", ["service", "result"])
REBALANCES = Counter("postcall_rebalances_total", "Partitions revoked or assigned.", ["service", "kind"])
DEPENDENCY_PAUSED = Gauge(
    "postcall_dependency_paused", "1 while consumption is paused for an unavailable dependency.", ["service"]
)


def created_sample(at: float) -> float | None:
    """A series' `_created` sample, unless prometheus_client.disable_created_metrics() was called."""
    return at if getattr(prometheus_client.metrics, "_use_created", True) else None


class Counts(Collector):
    """A counter family in plain ints read at scrape time: `inc(labels)` adds one to the series of that
    tuple of label values (made at 0 by `labels`, or at its first inc), and a caller that knows its series
    may add to `values[labels]` itself; collect() exports them as a prometheus Counter does. A prometheus
    Counter's inc() checks its labels and takes a lock on every call; here every update and every scrape
    run on the service's one event loop thread, so none is seen half done (the ingress's requests, the
    router's flows and actions)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry | None = REGISTRY,
        series: Iterable[tuple[str, ...]] = (),
    ) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self.values: dict[tuple[str, ...], int] = {}
        self._created: dict[tuple[str, ...], float] = {}
        for values in series:  # made at 0 now: shown before anything is counted
            self.labels(*values)
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> None:
        """The series of these label values, at 0 if it is new."""
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes the labels {self.labelnames}, got {values}")
        if values not in self.values:
            self._created[values] = time.time()
            self.values[values] = 0

    def inc(self, labels: tuple[str, ...]) -> None:
        if labels in self.values:
            self.values[labels] += 1
        else:
            self.labels(*labels)
            self.values[labels] = 1

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in list(self.values.items()):
            family.add_metric(labels, value, created=created_sample(self._created[labels]))
        yield family

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)


class HealthServer:
    """A tiny HTTP/1.1 server: GET /metrics, /healthz (`alive`: the process works), /readyz (`ready`)."""

    def __init__(self, host: str, port: int, ready: Callable[[], bool], alive: Callable[[], bool]) -> None:
        self.host, self.port = host, port
        self._ready, self._alive = ready, alive
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            path = request.split(b" ", 2)[1].decode() if request.count(b" ") >= 2 else "/"
            status, ctype, body = self._respond(path.split("?", 1)[0])
            head = f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            writer.write(head.encode() + b"Connection: close\r\n\r\n" + body)
            await writer.drain()
        writer.close()

    def _respond(self, path: str) -> tuple[str, str, bytes]:
        if path == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest()
        if path in ("/healthz", "/readyz"):
            ok = self._alive() if path == "/healthz" else self._ready()
            return ("200 OK" if ok else "503 Service Unavailable"), "text/plain", b"ok\n" if ok else b"not ready\n"
        return "404 Not Found", "text/plain", b"not found\n"
