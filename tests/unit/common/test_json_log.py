"""The JSON log line: its fields, whatever second it is written in (the time text is kept per second)."""

from __future__ import annotations

import io
import logging

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
