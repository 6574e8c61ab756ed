"""Errors decide a record's fate; the handler raises, the runtime acts.

    PostcallError
     ├── RetryableError          may succeed later: retry tiers (delay topics), then the dead-letter topic
     │    ├── DependencyUnavailable   a dependency is down: pause consumption and retry in place;
     │    │                            never dead-lettered (the topic is the queue)
     │    └── Deferred                 not attempted (a saturated destination): the first retry tier,
     │                                 without counting an attempt
     └── PermanentError          will never succeed: dead-letter topic at once
          └── InvalidRecord       the bytes are not JSON or do not fit the schema (poison)

Unknown exceptions (anything else a handler raises) are treated as RetryableError: a bug or an
unmapped vendor error gets the retry tiers and then lands in the dead-letter topic with its class and
message, so nothing is lost and nothing loops forever. Vendor errors are mapped at the edge
(see `classify_http_status`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.common.runtime import Emit


class PostcallError(Exception):
    """Base of every error whose type decides what happens to the record."""

    category = "error"

    def __init__(self, message: str, *, emit: Sequence[Emit] = ()) -> None:
        super().__init__(message)
        #: Records produced together with the error's outcome (e.g. a `failed` extraction result).
        self.emit: tuple[Emit, ...] = tuple(emit)


class RetryableError(PostcallError):
    """Raised when a later attempt may succeed: timeouts, 5xx, 429, connection errors."""

    category = "retryable"

    def __init__(self, message: str, *, retry_after: float | None = None, emit: Sequence[Emit] = ()) -> None:
        super().__init__(message, emit=emit)
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
    """Raised when a record's bytes cannot be decoded or validated against the topic's schema."""

    category = "poison"


def classify_http_status(status: int, retry_after: float | None = None) -> PostcallError | None:
    """None for 2xx; a retryable error for 408, 425, 429 and 5xx; permanent for 3xx and other 4xx."""
    if 200 <= status < 300:
        return None
    if status in (408, 425, 429) or status >= 500:
        return RetryableError(f"HTTP {status}", retry_after=retry_after)
    if 300 <= status < 400:
        return PermanentError(f"HTTP {status}: redirects are not followed; update the destination URL")
    return PermanentError(f"HTTP {status}")
