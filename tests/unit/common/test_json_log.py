"""The JSON log line: its fields, whatever second it is written in (the time text is kept per second)."""

from __future__ import annotations

import asyncio
import io
import logging
import subprocess
import sys
import time
from typing import Any

import aiokafka  # noqa: F401  (its modules' loggers)
import orjson
import pytest

from services.common import observability


def line(formatter: observability.JsonFormatter, created: float, **extra: object) -> dict[str, object]:
    record = logging.LogRecord("services.ingress", logging.INFO, __file__, 1, "webhook %s", ("published",), None)
    record.created, record.msecs = created, (created - int(created)) * 1000
    record.__dict__.update(extra)
    parsed: dict[str, object] = orjson.loads(formatter.format(record))
    return parsed


def test_a_line_names_time_level_service_logger_message_and_the_extra_fields() -> None:
    formatter = observability.JsonFormatter("ingress")
    token = observability.record_context.set({"topic": "t", "partition": 2})
    try:
        got = line(formatter, 1772812800.25, outcome="published", status=200)
    finally:
        observability.record_context.reset(token)
    assert got == {
        "ts": "2026-03-06T16:00:00.250Z",
        "level": "info",
        "service": "ingress",
        "logger": "services.ingress",
        "msg": "webhook published",
        "topic": "t",
        "partition": 2,
        "outcome": "published",
        "status": 200,
    }


@pytest.mark.parametrize(
    ("created", "ts"),
    [
        (1772812800.875, "2026-03-06T16:00:00.875Z"),
        (1772812801.0, "2026-03-06T16:00:01.000Z"),
        (1772812801.5, "2026-03-06T16:00:01.500Z"),
        (1772812800.5, "2026-03-06T16:00:00.500Z"),  # back in time (another thread's older record)
        (1772899200.125, "2026-03-07T16:00:00.125Z"),
    ],
)
def test_the_time_is_right_from_second_to_second(created: float, ts: str) -> None:
    formatter = observability.JsonFormatter("ingress")
    line(formatter, 1772812800.0)
    assert line(formatter, created)["ts"] == ts


def test_setup_writes_the_same_fields_without_the_callers_location(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing"):
        monkeypatch.setattr(logging, name, getattr(logging, name))  # restored after the test
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    observability.setup("ingress")
    out = io.StringIO()
    root.handlers[0].setStream(out)  # type: ignore[attr-defined]
    logging.getLogger("services.ingress").info("webhook %s", "published", extra={"event_id": "e1"})
    got = orjson.loads(out.getvalue())
    assert set(got) == {"ts", "level", "service", "logger", "msg", "event_id"}
    assert (got["msg"], got["service"], got["event_id"]) == ("webhook published", "ingress", "e1")


def aiokafka_error(logger: str, node: int, created: float, error: str = "Connect call failed") -> logging.LogRecord:
    message = "Unable connect to node with id %s: %s"
    record = logging.LogRecord(logger, logging.ERROR, "client.py", 1, message, (node, error), None)
    record.created = created
    return record


def test_setup_lets_the_first_of_aiokafkas_repeated_errors_through_not_ten_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broker outage: aiokafka logs the same ERROR lines about ten times a second per pod, for as long
    as it lasts. The first of each is shown (which node, which error), its repeats are not."""
    for name in ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing"):
        monkeypatch.setattr(logging, name, getattr(logging, name))
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    for name in [n for n in logging.Logger.manager.loggerDict if n.split(".")[0] == "aiokafka"]:
        monkeypatch.setattr(logging.getLogger(name), "filters", list(logging.getLogger(name).filters))
    observability.setup("router")
    out = io.StringIO()
    root.handlers[0].setStream(out)  # type: ignore[attr-defined]
    for attempt in range(200):
        logging.getLogger("aiokafka").error("Unable connect to node with id %s: %s", 1, f"attempt {attempt}")
        logging.getLogger("aiokafka").error("Unable to update metadata from %s", [1])
        logging.getLogger("aiokafka.consumer.group_coordinator").error("Group Coordinator Request failed: %s", "x")
    logging.getLogger("aiokafka").error("Unable connect to node with id %s: %s", 2, "refused")
    logging.getLogger("services.router").error("dead-lettered")
    logging.getLogger("services.router").error("dead-lettered")  # ours are not filtered

    got = [orjson.loads(text)["msg"] for text in out.getvalue().splitlines()]
    assert got == [
        "Unable connect to node with id 1: attempt 0",
        "Unable to update metadata from [1]",
        "Group Coordinator Request failed: x",
        "Unable connect to node with id 2: refused",
        "dead-lettered",
        "dead-lettered",
    ]


def test_a_repeated_line_is_let_through_again_after_the_period_with_the_count_not_logged() -> None:
    repeats = observability.RepeatFilter(period_seconds=60)
    assert repeats.filter(aiokafka_error("aiokafka", 1, created=1000.0))
    assert not any(repeats.filter(aiokafka_error("aiokafka", 1, created=1000.0 + t / 10)) for t in range(1, 500))
    assert repeats.filter(aiokafka_error("aiokafka", 3, created=1010.0))  # another node: another line
    assert repeats.filter(aiokafka_error("aiokafka.conn", 1, created=1010.0))  # another logger
    again = aiokafka_error("aiokafka", 1, created=1060.0, error="timed out")
    assert repeats.filter(again)
    assert again.repeats_suppressed == 499  # type: ignore[attr-defined]
    assert not repeats.filter(aiokafka_error("aiokafka", 1, created=1061.0))
    later = aiokafka_error("aiokafka", 1, created=1200.0)
    assert repeats.filter(later) and later.repeats_suppressed == 1  # type: ignore[attr-defined]
    alone = aiokafka_error("aiokafka", 1, created=1300.0)
    assert repeats.filter(alone) and not hasattr(alone, "repeats_suppressed")


class Stream:
    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> None:
        self.writes.append(text)

    def flush(self) -> None:
        pass


def coalescing() -> tuple[logging.Logger, Stream, observability.CoalescingStreamHandler]:
    stream = Stream()
    handler = observability.CoalescingStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"test.coalescing.{id(stream)}")
    logger.propagate, logger.handlers, logger.level = False, [handler], logging.INFO
    return logger, stream, handler


def test_the_lines_of_one_loop_turn_are_written_together_in_order_at_its_end() -> None:
    logger, stream, _ = coalescing()

    async def turn() -> list[str]:
        logger.info("one")
        logger.info("two")
        held = list(stream.writes)
        await asyncio.sleep(0)  # the turn ends
        return held

    assert asyncio.run(turn()) == []
    assert stream.writes == ["one\ntwo\n"]


def test_a_line_without_a_running_loop_is_written_at_once_after_the_held_ones() -> None:
    logger, stream, handler = coalescing()
    logger.info("now")
    assert stream.writes == ["now\n"]
    loop = asyncio.new_event_loop()
    loop.call_soon(lambda: (logger.info("held by a loop that stops before its turn ends"), loop.stop()))
    loop.run_forever()  # stop(): the flush scheduled in that turn never runs
    loop.close()
    assert stream.writes == ["now\n"]
    logger.info("next")
    assert stream.writes == ["now\n", "held by a loop that stops before its turn ends\nnext\n"]

    async def another_loop() -> None:
        logger.info("on another loop")

    loop = asyncio.new_event_loop()
    loop.call_soon(lambda: (logger.info("held again"), loop.stop()))
    loop.run_forever()
    loop.close()
    asyncio.run(another_loop())  # a new loop's turn writes what the closed one held, first
    assert stream.writes[-1] == "held again\non another loop\n"
    logger.info("last")
    handler.flush()  # what logging.shutdown() does at exit (here the line was written at once already)
    assert stream.writes[-1] == "last\n"


def test_a_warning_is_written_at_once_after_the_lines_held_before_it() -> None:
    logger, stream, _ = coalescing()

    async def turn() -> list[str]:
        logger.info("one")
        logger.warning("trouble")
        written = list(stream.writes)
        logger.info("after")
        await asyncio.sleep(0)
        return written

    assert asyncio.run(turn()) == ["one\ntrouble\n"]
    assert stream.writes == ["one\ntrouble\n", "after\n"]


def test_a_line_held_when_the_process_exits_normally_is_written_at_exit() -> None:
    """logging.shutdown() at interpreter exit flushes what the last turn held (here the turn ends with
    SystemExit, so the loop never reaches the flush it scheduled)."""
    script = (
        "import asyncio, logging, sys\n"
        "from services.common import observability\n"
        "h = observability.CoalescingStreamHandler(sys.stderr)\n"
        "logging.getLogger().addHandler(h); logging.getLogger().setLevel(logging.INFO)\n"
        "async def main():\n"
        "    logging.getLogger('t').info('the last line')\n"
        "    sys.exit(3)\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert done.stderr == "the last line\n"


def json_logger(name: str) -> tuple[logging.Logger, Stream, observability.CoalescingStreamHandler]:
    stream = Stream()
    handler = observability.CoalescingStreamHandler(stream)
    handler.setFormatter(observability.JsonFormatter("ingress"))
    parent = logging.getLogger(name)
    parent.propagate, parent.handlers, parent.level = False, [handler], logging.INFO
    return logging.getLogger(f"{name}.child"), stream, handler


@pytest.mark.parametrize("level", [logging.INFO, logging.WARNING])
def test_log_fields_writes_the_line_logger_log_writes(monkeypatch: pytest.MonkeyPatch, level: int) -> None:
    """The direct path (no LogRecord) and logging's own give the same line, held or written alike."""
    logger, stream, _ = json_logger(f"test.fields.{level}")
    fields = {"source": "retell", "outcome": "published", "status": 200, "ms": 1.5, "event_id": 'é\n"x'}
    for now in (1764950400.0, 1764950400.9995, 1764950461.25):
        monkeypatch.setattr(time, "time", lambda now=now: now)
        monkeypatch.setattr(time, "time_ns", lambda now=now: int(now * 1e9))  # LogRecord's clock from 3.13

        async def turn() -> None:
            logger.log(level, "webhook published", extra=fields)
            observability.log_fields(logger, level, "webhook published", fields)
            token = observability.record_context.set({"conversation_id": "c1"})
            logger.log(level, "webhook published", extra=fields)
            observability.log_fields(logger, level, "webhook published", fields)
            observability.record_context.reset(token)

        stream.writes.clear()
        asyncio.run(turn())
        lines = "".join(stream.writes).splitlines()
        assert len(lines) == 4 and lines[0] == lines[1] and lines[2] == lines[3], lines
        assert orjson.loads(lines[3])["conversation_id"] == "c1"
        assert len(stream.writes) == (1 if level == logging.INFO else 4)  # held to the turn's end, or at once


def test_log_fields_goes_through_logging_when_another_handler_or_a_filter_is_on_the_way() -> None:
    logger, stream, handler = json_logger("test.fields.other")
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    observability.log_fields(logger, logging.INFO, "direct", {"a": 1})
    assert not seen and orjson.loads(stream.writes[-1])["a"] == 1
    logger.addHandler(Keep())
    observability.log_fields(logger, logging.INFO, "both", {"a": 2})
    assert [r.getMessage() for r in seen] == ["both"] and orjson.loads(stream.writes[-1])["msg"] == "both"
    logger.handlers.clear()
    logger.addFilter(lambda r: r.getMessage() != "filtered")
    observability.log_fields(logger, logging.INFO, "filtered", {"a": 3})
    assert orjson.loads(stream.writes[-1])["msg"] == "both"  # the logger's filter dropped it
    logger.filters.clear()
    handler.setLevel(logging.WARNING)
    observability.log_fields(logger, logging.INFO, "under the handler's level", {"a": 4})
    observability.log_fields(logger, logging.DEBUG, "under the logger's level", {"a": 5})
    assert orjson.loads(stream.writes[-1])["msg"] == "both"


def test_log_fields_refuses_a_log_records_own_name_as_logging_does() -> None:
    logger, stream, _ = json_logger("test.fields.reserved")
    with pytest.raises(KeyError):
        logger.info("x", extra={"name": "mine"})
    with pytest.raises(KeyError):
        observability.log_fields(logger, logging.INFO, "x", {"name": "mine"})
    assert not stream.writes


def test_log_fields_writes_what_logging_writes_for_hidden_fields_unwritable_values_and_others_records(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the direct path would differ from logging's (a field starting with "_", which the formatter
    leaves out; a value orjson cannot write, which logging reports instead of raising; a record factory
    adding fields), it goes through logging (review5 L1-L3)."""
    logger, stream, handler = json_logger("test.fields.differ")
    monkeypatch.setattr(handler, "handleError", lambda record: stream.writes.append("(reported)\n"))

    async def turn() -> None:
        observability.log_fields(logger, logging.WARNING, "hidden", {"_token": "secret", "a": 1})
        observability.log_fields(logger, logging.WARNING, "too big", {"n": 2**70})

    asyncio.run(turn())
    assert "secret" not in "".join(stream.writes) and orjson.loads(stream.writes[0])["a"] == 1
    assert stream.writes[1:] == ["(reported)\n"]
    original = logging.getLogRecordFactory()

    def traced(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = original(*args, **kwargs)
        record.trace_id = "abc"
        return record

    monkeypatch.setattr(logging, "_logRecordFactory", traced)
    stream.writes.clear()
    observability.log_fields(logger, logging.WARNING, "traced", {"a": 2})
    assert orjson.loads(stream.writes[0])["trace_id"] == "abc"


@pytest.mark.parametrize("msecs", [0.0, 7.9, 999.99, 1000.0, 1234.0, -1.0])
def test_the_milliseconds_are_written_as_the_format_spec_writes_them(msecs: float) -> None:
    formatter = observability.JsonFormatter("ingress")
    assert formatter._ts(1772812800.0, msecs) == f"2026-03-06T16:00:00.{int(msecs):03d}Z"
