"""Every exception of the runtime, in one tree; a handler raises, the type decides the record's fate.

    PostcallError
     ├── RetryableError          may succeed later: retry tiers (delay topics), then the dead-letter topic
     │    ├── DependencyUnavailable   a dependency is down: pause consumption and retry in place;
     │    │                            never dead-lettered (the topic is the queue)
     │    └── Deferred                 not attempted (a saturated destination): the first retry tier,
     │                                 without counting an attempt
     └── PermanentError          will never succeed: dead-letter topic at once
          ├── InvalidRecord       the bytes are not JSON or do not fit the topic's model (poison)
          ├── UndeclaredEvent     the handler returned an event its route has no output for (a bug)
          └── Unproducible        an output cannot be written: too large, not authorized

    Stopped                       (runtime-internal, never seen by a handler) the record's partition
                                  was revoked or the service is stopping: leave it uncommitted
    StartRefused                  (runtime-internal, at start) the cluster is not as the route needs:
                                  one line and exit 2 (settings.run_service), not a traceback

Unknown exceptions (anything else a handler raises) are treated as RetryableError: a bug or an
unmapped vendor error gets the retry tiers and then lands in the dead-letter topic with its class and
message, so nothing is lost and nothing loops forever. Vendor errors are mapped at the edge
(`classify_http_status`, and `parse_retry_after`, the one reader of a remote's Retry-After). A remote's
text kept in an error goes through `redact` first: a receiver or gateway may echo the credentials we sent.

Errors are plain data (a message, a category, a Retry-After). What a failed record additionally
produces (a `failed` extraction, a `dead_lettered` action result) is decided by the service's one
failure hook (services.common.api.FailureHook), never carried by the error.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

RETRY_AFTER_STATUSES = frozenset({429, 503})  # RFC 9110 gives Retry-After a meaning on these (and 3xx)
_DELTA_SECONDS = re.compile(r"[0-9]{1,10}")  # ASCII digits: str.isdigit() also says yes to "²"
_HTTP_DATE_CHARS = 64
REDACT_MIN_CHARS = 4  # shorter values ("1", "on") would only blank out ordinary words


class PostcallError(Exception):
    """Base of every error whose type decides what happens to the record."""

    category = "error"


class RetryableError(PostcallError):
    """Raised when a later attempt may succeed: timeouts, 5xx, 429, connection errors."""

    category = "retryable"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        #: Seconds the remote asked us to wait (Retry-After); the tier delay is at least this.
        self.retry_after = retry_after


class DependencyUnavailable(RetryableError):
    """Raised when a dependency is down as a whole (an open circuit): pause, do not dead-letter."""

    category = "unavailable"


class Deferred(RetryableError):
    """Raised when the work was not even attempted because a local limit is saturated; it waits in
    the first retry tier and comes back with the same attempt number."""

    category = "deferred"


class PermanentError(PostcallError):
    """Raised when no retry can help: a 4xx, a refusal, a configuration that does not exist."""

    category = "permanent"


class InvalidRecord(PermanentError):
    """Raised when a record's bytes cannot be decoded or validated against the topic's model."""

    category = "poison"


class UndeclaredEvent(PermanentError):
    """Raised when a handler returns an event whose class no output of its route declares."""


class Unproducible(PermanentError):
    """Raised when Kafka refuses an output for good (record too large, not authorized)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause


class StartRefused(RuntimeError):
    """Raised at start when the cluster is not as the route needs (a topic missing, an output with fewer
    partitions than an input): one line on stderr and exit 2 from the service's process (run_service), as a
    settings problem is, not a traceback whose last line is the reason. Here, not in the runtime, so that
    settings (which the runtime imports) can name it without an import circle."""


class Stopped(Exception):
    """Raised inside the runtime when a record's partition was revoked or the service is stopping."""


def classify_http_status(status: int, retry_after: float | None = None) -> PostcallError | None:
    """None for 2xx; a retryable error for 408, 425, 429 and 5xx; permanent for 3xx and other 4xx."""
    if 200 <= status < 300:
        return None
    if status in (408, 425, 429) or status >= 500:
        return RetryableError(f"HTTP {status}", retry_after=retry_after)
    if 300 <= status < 400:
        return PermanentError(f"HTTP {status}: redirects are not followed; update the destination URL")
    return PermanentError(f"HTTP {status}")


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


REDACTED = "[redacted]"


def redact(text: str, secrets: Iterable[str], limit: int | None = None) -> str:
    """`text` with every one of `secrets` replaced by [redacted]; with `limit`, cut to at most that many
    characters after redacting, then also redacting a secret's start left at the cut. At most `limit`
    also then: the text goes into bounded fields (ActionCompleted's response_excerpt and result_id), and a
    longer one would fail the result of a request that was sent."""
    ordered = [s for s in sorted(secrets, key=len, reverse=True) if len(s) >= REDACT_MIN_CHARS]
    for secret in ordered:
        text = text.replace(secret, REDACTED)
    if limit is None or len(text) <= limit:
        return text
    text = text[:limit]
    cut = _secret_start(text, ordered)
    if not cut:
        return text
    # the marker may be longer than the start it replaces: what is before it gives way
    text = text[: max(0, min(len(text) - cut, limit - len(REDACTED)))]
    while cut := _secret_start(text, ordered):  # the new end may hold another secret's start
        text = text[:-cut]
    return text + REDACTED[:limit]


def _secret_start(text: str, secrets: Iterable[str]) -> int:
    """How many characters at the end of `text` are the start of one of `secrets` (0: none)."""
    for secret in secrets:
        cut = next((k for k in range(len(secret) - 1, REDACT_MIN_CHARS - 1, -1) if text.endswith(secret[:k])), 0)
        if cut:
            return cut
    return 0
