"""JSON logs, one object per line, naming the conversation, topic, partition and offset being handled."""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from typing import Any

import orjson

record_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("record_context", default=None)

_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
            **(record_context.get() or {}),
        }
        out.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_")})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


#: Libraries held at WARNING whatever the service's level: aiokafka is chatty; httpx's INFO line names
#: the request URL (a Slack webhook URL is a secret) and httpcore's DEBUG lines quote response headers,
#: which a receiver controls and may fill with the credentials we sent it.
QUIET_LIBRARIES = ("aiokafka", "httpx", "httpcore")


def setup(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet_libraries()


def quiet_libraries() -> None:
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
