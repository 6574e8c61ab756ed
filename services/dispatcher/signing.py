"""Standard Webhooks signatures (symmetric v1): `webhook-id`, `webhook-timestamp`, `webhook-signature`.

The signed content is `{webhook-id}.{webhook-timestamp}.{raw body}`, HMAC-SHA256 with the destination's
`whsec_` secret, base64-encoded and prefixed `v1,`: computed by the reference library (`standardwebhooks`).
This module adds what the library leaves to its caller: a secret is checked at load (base64, 24..64
bytes, an error that never quotes it); with several secrets (rotation) every secret signs and the
signatures are space-separated, so a receiver holding either the old or the new secret verifies; and
verification treats garbage in the sender's headers as a failed check, never an error.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
MIN_SECRET_BYTES = 24  # the spec: "Between 24 bytes (192 bits) and 64 bytes (512 bits)"
MAX_SECRET_BYTES = 64
TOLERANCE_SECONDS = 300
_STAMP = re.compile(r"[0-9]{1,12}")  # ASCII digits only: str.isdigit() also accepts "²", which int() refuses


def decode_secret(secret: str) -> bytes:
    """The key bytes of a `whsec_<base64>` secret; ValueError (without the secret) when it is malformed."""
    raw = secret.strip().removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("signing secret is not base64 (expected whsec_<base64>)") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(f"signing secret must decode to 24..64 bytes, got {len(key)}")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature."""
    return Webhook(key).sign(msg_id, datetime.fromtimestamp(timestamp, UTC), body)


class Signer:
    """Signs request bodies with every configured secret of one destination (first = current)."""

    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("a signer needs at least one secret")
        self._hooks = [Webhook(decode_secret(s)) for s in secrets]

    def headers(self, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        if "." in msg_id:
            # the id is part of the signed string's framing; a dot would make it ambiguous
            raise ValueError("webhook-id must not contain '.'")
        ts = int(time.time()) if timestamp is None else timestamp
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": " ".join(w.sign(msg_id, datetime.fromtimestamp(ts, UTC), body) for w in self._hooks),
        }


def verify(
    secrets: Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_seconds: int = TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """True when one signature matches one secret and the timestamp is within the tolerance; False for
    anything malformed (the headers are the sender's: garbage in them is a failed check, never an error)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id", "")
    stamp = lowered.get("webhook-timestamp", "")
    offered = lowered.get("webhook-signature", "").split()
    if not (msg_id and _STAMP.fullmatch(stamp) and offered):
        return False
    ts = int(stamp)
    if abs((time.time() if now is None else now) - ts) > tolerance_seconds:
        return False
    expected = {sign(decode_secret(s), msg_id, ts, body).encode() for s in secrets}
    # compared as bytes: hmac.compare_digest raises TypeError on non-ASCII text
    return any(hmac.compare_digest(sig.encode(), want) for sig in offered for want in expected)
