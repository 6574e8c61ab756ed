"""Where a failed record goes next, and the headers it carries there.

A retryable failure on attempt N goes to retry tier N (a delay topic) with a due time; the runtime
never processes it before that time. After the last tier, or on a permanent error, the record goes
to the service's dead-letter topic with its original key and value and the headers of
schemas/headers.py. Headers of earlier hops are replaced, not repeated, so records do not grow.
"""

from __future__ import annotations

import email.utils
import random
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from schemas import headers as h
from services.common.errors import InvalidRecord, PermanentError, RetryableError

MAX_MESSAGE = 1000
RETRY_AFTER_STATUSES = frozenset({429, 503})  # RFC 9110 gives Retry-After a meaning on these (and 3xx)
_DELTA_SECONDS = re.compile(r"[0-9]{1,10}")  # ASCII digits: str.isdigit() also says yes to "²"
_HTTP_DATE_CHARS = 64


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


@dataclass(frozen=True)
class Failure:
    """One failed attempt of one record, with where it came from."""

    exc: BaseException
    attempt: int
    original_topic: str
    original_partition: int
    original_offset: int
    original_timestamp_ms: int
    headers: Mapping[str, str]


def category(exc: BaseException) -> str:
    if isinstance(exc, InvalidRecord):
        return h.CATEGORY_POISON
    if isinstance(exc, PermanentError):
        return h.CATEGORY_PERMANENT
    return h.CATEGORY_RETRIES_EXHAUSTED


def choose_tier(delays: list[float], attempt: int, retry_after: float | None) -> int:
    """The tier for a failure on `attempt` (1-based): normally tier `attempt`; when the remote asked
    for a longer wait than that tier's delay, the first later tier at least that long (or the last),
    so one record's long Retry-After never parks a short tier's partition behind it. The tier only
    chooses the delay: the attempt count still grows by one per real attempt."""
    tier = attempt
    if retry_after is None or tier > len(delays):
        return tier
    while tier < len(delays) and delays[tier - 1] < retry_after:
        tier += 1
    return tier


def tier_delay(delays: list[float], tier: int, jitter: float, retry_after: float | None, cap: float) -> float:
    """Seconds until a record in `tier` (1-based) is due: the tier's delay ± jitter, at least Retry-After."""
    base = delays[tier - 1]
    delay = base * (1 + random.uniform(-jitter, jitter)) if jitter else base
    if retry_after is not None:  # honoured, but never past the tier's own delay (see choose_tier)
        delay = max(delay, min(retry_after, cap, base * (1 + jitter)))
    return max(0.0, delay)


def is_retryable(exc: BaseException) -> bool:
    """Unknown exceptions are retryable (see services.common.errors); permanent ones are not."""
    return not isinstance(exc, PermanentError)


def _carried(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k not in h.HOP_HEADERS}


def retry_headers(f: Failure, due_at: float) -> dict[str, str]:
    out = _carried(f.headers)
    out.update(
        {
            h.RETRY_ATTEMPT: str(f.attempt + 1),
            h.RETRY_DUE_AT: f"{due_at:.3f}",
            h.RETRY_ORIGINAL_TOPIC: f.original_topic,
            h.RETRY_ORIGINAL_PARTITION: str(f.original_partition),
            h.RETRY_ORIGINAL_OFFSET: str(f.original_offset),
            h.RETRY_ORIGINAL_TIMESTAMP: str(f.original_timestamp_ms),
            h.RETRY_FIRST_FAILURE_AT: f.headers.get(h.RETRY_FIRST_FAILURE_AT, now_iso()),
            h.RETRY_LAST_ERROR: describe(f.exc),
        }
    )
    return out


def dead_letter_headers(f: Failure, *, service: str, version: str, group: str) -> dict[str, str]:
    out = _carried(f.headers)
    failed_at = now_iso()
    out.update(
        {
            h.DLQ_ORIGINAL_TOPIC: f.original_topic,
            h.DLQ_ORIGINAL_PARTITION: str(f.original_partition),
            h.DLQ_ORIGINAL_OFFSET: str(f.original_offset),
            h.DLQ_ORIGINAL_TIMESTAMP: str(f.original_timestamp_ms),
            h.DLQ_CONSUMER_GROUP: group,
            h.DLQ_SERVICE: service,
            h.DLQ_SERVICE_VERSION: version,
            h.DLQ_HOST: socket.gethostname(),
            h.DLQ_EXCEPTION_CLASS: f"{type(f.exc).__module__}.{type(f.exc).__qualname__}",
            h.DLQ_EXCEPTION_MESSAGE: describe(f.exc),
            h.DLQ_FAILURE_CATEGORY: category(f.exc),
            h.DLQ_ATTEMPTS: str(f.attempt),
            h.DLQ_FIRST_FAILURE_AT: f.headers.get(h.RETRY_FIRST_FAILURE_AT, failed_at),
            h.DLQ_LAST_FAILURE_AT: failed_at,
        }
    )
    return out


def parse_retry_after(status: int, headers: Mapping[str, str], cap: float, now: datetime | None = None) -> float | None:
    """Seconds a 429 or 503 answer asks us to wait, at most `cap`; None on any other status, or when the
    header is absent or unreadable. The one parser of a remote's Retry-After (webhooks, Slack, the LLM).

    `Retry-After` is delta-seconds in ASCII digits or an HTTP date; `retry-after-ms` (sent by OpenAI-
    compatible servers) is milliseconds in ASCII digits and wins when both are readable. The header is
    the remote's text: anything else (`²`, 400 digits, a negative number, garbage) is unreadable, never
    an error, so an answer's Retry-After can never change what its status means.
    """
    if status not in RETRY_AFTER_STATUSES:
        return None
    millis = (headers.get("retry-after-ms") or "").strip()
    if _DELTA_SECONDS.fullmatch(millis):
        return min(int(millis) / 1000, cap)
    text = (headers.get("retry-after") or "").strip()
    if _DELTA_SECONDS.fullmatch(text):
        return min(float(text), cap)
    if not text or len(text) > _HTTP_DATE_CHARS or not text.isascii():
        return None
    try:
        when = email.utils.parsedate_to_datetime(text)
        wait = (when if when.tzinfo else when.replace(tzinfo=UTC)) - (now or datetime.now(UTC))
        return min(max(0.0, wait.total_seconds()), cap)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def retry_after_of(exc: BaseException) -> float | None:
    return exc.retry_after if isinstance(exc, RetryableError) else None


def due_time_of(headers: Mapping[str, str]) -> float:
    try:
        return float(headers.get(h.RETRY_DUE_AT, "0"))
    except ValueError:
        return 0.0


def wall_clock() -> float:
    return time.time()
