"""Who may publish: each vendor's request authentication, checked on the raw body bytes.

Every check is constant-time (`hmac.compare_digest`), bounds the age of a signed timestamp in both
directions (a replayed old request and a clock far ahead are both refused), and accepts either of an
endpoint's secrets (current and previous, for rotation). A failure raises `Refused` with a reason that
names what is wrong and never a secret or an expected signature.

| Scheme | Header | Signed bytes |
|---|---|---|
| Vapi HMAC credential | `x-signature` (+ `x-timestamp`, message id) | `payload_format`, default `{timestamp}.{body}` |
| Vapi bearer / legacy | `Authorization: Bearer <token>` (or its own header) / `X-Vapi-Secret` | nothing (a token) |
| Retell | `x-retell-signature: v=<ms>,d=<hex>` | body + timestamp |
| ElevenLabs | `ElevenLabs-Signature: t=<s>,v0=<hex>` | `t.` + body |
| Standard Webhooks | `webhook-id`, `-timestamp`, `-signature` | `id.timestamp.` + body (`standardwebhooks`) |

The vendors' own helpers (retell-sdk, elevenlabs, standardwebhooks) sign and verify the same bytes:
tests/unit/ingress/test_signatures.py proves it both ways. docs/adr/0003 says why the Retell and
ElevenLabs checks are ours and not the SDKs' at run time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, Protocol

from standardwebhooks import Webhook, WebhookVerificationError

Headers = Mapping[str, str]  # lower-case names (Starlette's Headers are case-insensitive too)

_RETELL = re.compile(r"v=([0-9]{1,16}),d=([0-9a-fA-F]{64})")  # [0-9]: \d also takes other scripts' digits
_HASHES = {"sha256": hashlib.sha256, "sha512": hashlib.sha512, "sha1": hashlib.sha1}


class Refused(Exception):
    """Raised when a request's authentication is missing, malformed, stale or wrong (HTTP 401)."""


class Verifier(Protocol):
    def verify(self, body: bytes, headers: Headers, now: float) -> None:
        """Return when the request is authentic; raise Refused otherwise. `now` is Unix seconds."""


def _header(headers: Headers, name: str) -> str:
    value = headers.get(name.lower())
    if not value:
        raise Refused(f"missing {name} header")
    return value


def _digits(text: str, most: int) -> bool:
    """ASCII digits only: str.isdigit() also says yes to "²", which int() then refuses."""
    return 0 < len(text) <= most and text.isascii() and text.isdigit()


def _fresh(timestamp: float, now: float, tolerance: float, name: str) -> None:
    if abs(now - timestamp) > tolerance:
        raise Refused(f"{name} is {abs(now - timestamp):.0f} s from now, over the {tolerance:.0f} s tolerance")


def _any_matches(candidates: Sequence[bytes], given: bytes) -> bool:
    # every secret is tried: the time taken does not tell which one matched (a loop, not sum() over a
    # generator: every request comes here)
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(candidate, given)
    return matched


def _hmac(secret: str, message: bytes, digest: str = "sha256") -> bytes:
    return hmac.new(secret.encode(), message, _HASHES[digest]).digest()


def _keyed(secrets: Sequence[str], digest: str = "sha256") -> tuple[hmac.HMAC, ...]:
    """An HMAC per secret with its key already set, to `_mac` from (built once per verifier)."""
    return tuple(hmac.new(s.encode(), digestmod=_HASHES[digest]) for s in secrets)


def _mac(keyed: hmac.HMAC, *parts: bytes) -> bytes:
    """`_hmac(secret, b"".join(parts))` from the secret's keyed HMAC: no key set-up and no joined copy
    of the body per request."""
    mac = keyed.copy()
    for part in parts:
        mac.update(part)
    return mac.digest()


@dataclass(frozen=True)
class RetellVerifier:
    """`x-retell-signature: v=<unix ms>,d=<hex HMAC-SHA256(api key, body + ms)>` (retell-sdk webhook_auth)."""

    secrets: Sequence[str]
    tolerance_seconds: float = 300.0

    def verify(self, body: bytes, headers: Headers, now: float) -> None:
        found = _RETELL.fullmatch(_header(headers, "x-retell-signature").strip())
        if found is None:
            raise Refused("x-retell-signature is not of the form v=<unix ms>,d=<64 hex digits>")
        stamp, digest = found.group(1), bytes.fromhex(found.group(2))
        _fresh(int(stamp) / 1000, now, self.tolerance_seconds, "x-retell-signature timestamp")
        tail = stamp.encode()
        if not _any_matches([_mac(k, body, tail) for k in self._keys], digest):
            raise Refused("x-retell-signature does not match the body")

    @cached_property
    def _keys(self) -> tuple[hmac.HMAC, ...]:
        return _keyed(self.secrets)


def retell_signature(body: bytes, secret: str, timestamp_ms: int) -> str:
    return f"v={timestamp_ms},d={_hmac(secret, body + str(timestamp_ms).encode()).hex()}"


@dataclass(frozen=True)
class ElevenLabsVerifier:
    """`ElevenLabs-Signature: t=<unix s>,v0=<hex HMAC-SHA256(secret, "t." + body)>`; 30 minutes by
    default, as ElevenLabs' own helper allows (its retries are byte-identical, re-signed)."""

    secrets: Sequence[str]
    tolerance_seconds: float = 1800.0

    def verify(self, body: bytes, headers: Headers, now: float) -> None:
        stamp, given = "", []
        for part in _header(headers, "ElevenLabs-Signature").split(","):
            name, _, value = part.strip().partition("=")
            if name == "t":
                stamp = value
            elif name == "v0":
                given.append(value)
        if not _digits(stamp, 12) or not given:
            raise Refused("ElevenLabs-Signature is not of the form t=<unix seconds>,v0=<hex>")
        _fresh(int(stamp), now, self.tolerance_seconds, "ElevenLabs-Signature timestamp")
        expected = [_hmac(s, stamp.encode() + b"." + body).hex().encode() for s in self.secrets]
        if not any(_any_matches(expected, g.strip().lower().encode()) for g in given):
            raise Refused("ElevenLabs-Signature does not match the body")


def elevenlabs_signature(body: bytes, secret: str, timestamp: int) -> str:
    return f"t={timestamp},v0={_hmac(secret, str(timestamp).encode() + b'.' + body).hex()}"


VAPI_PLACEHOLDERS = ("timestamp", "body", "method", "url", "svix-id")  # HmacAuthenticationPlan.payloadFormat
_VAPI_PART = re.compile(r"(\{[^{}]*\})")


def vapi_format(
    payload_format: str, url: str | None = None, message_id_header: str | None = None
) -> tuple[tuple[bool, bytes], ...]:
    """The format's parts: (True, placeholder name) or (False, literal bytes). ValueError names an
    unknown placeholder, a format without exactly one {body}, or {url} / {svix-id} without the setting
    that fills it."""
    parts = tuple(
        (True, text[1:-1].encode()) if _VAPI_PART.fullmatch(text) else (False, text.encode())
        for text in _VAPI_PART.split(payload_format)
        if text
    )
    unknown = sorted({name.decode() for is_name, name in parts if is_name} - set(VAPI_PLACEHOLDERS))
    if unknown:
        supported = ", ".join(f"{{{n}}}" for n in VAPI_PLACEHOLDERS)
        raise ValueError(f"unsupported placeholder {{{unknown[0]}}} (supported: {supported})")
    if sum(part == (True, b"body") for part in parts) != 1:
        raise ValueError("payload_format must contain {body} exactly once")
    if (True, b"url") in parts and not url:
        raise ValueError("payload_format uses {url}: set url (the server URL as set in Vapi)")
    if (True, b"svix-id") in parts and not message_id_header:
        raise ValueError("payload_format uses {svix-id}: set message_id_header")
    return parts


def vapi_key(secret: str, secret_is_base64: bool) -> bytes:
    """The HMAC key: the secret's UTF-8 bytes, or the bytes it encodes in base64 (`secretIsBase64`).
    ValueError (never echoing the secret) when it is not base64."""
    if not secret_is_base64:
        return secret.encode()
    text = secret.strip()
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (ValueError, binascii.Error):
        raise ValueError("secret_is_base64 is set but a secret is not base64") from None


@dataclass(frozen=True)
class VapiHmacVerifier:
    """A Vapi HMAC credential (`HmacAuthenticationPlan`): the header names, payload format, algorithm,
    encoding, prefix and secret encoding are the credential's, with Vapi's defaults. The signed bytes
    are the payload format with its placeholders filled: {body} the raw body, {timestamp} the timestamp
    header, {method} `POST`, {url} the server URL as configured in Vapi (`url`; the URL this process
    sees may be rewritten by proxies), {svix-id} the message id header. The timestamp may be in seconds
    or milliseconds (Vapi does not document which); without {timestamp} in the format there is no
    replay protection, which the endpoints file says."""

    secrets: Sequence[str]
    tolerance_seconds: float = 300.0
    algorithm: Literal["sha256", "sha512", "sha1"] = "sha256"
    signature_header: str = "x-signature"
    timestamp_header: str = "x-timestamp"
    payload_format: str = "{timestamp}.{body}"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = ""
    url: str | None = None
    message_id_header: str | None = None
    secret_is_base64: bool = False

    def __post_init__(self) -> None:
        _ = self._parts, self._keys  # a format or a secret it cannot use fails here, at start

    @cached_property
    def _parts(self) -> tuple[tuple[bool, bytes], ...]:
        return vapi_format(self.payload_format, self.url, self.message_id_header)

    @cached_property
    def _keys(self) -> tuple[bytes, ...]:
        return tuple(vapi_key(s, self.secret_is_base64) for s in self.secrets)

    def verify(self, body: bytes, headers: Headers, now: float) -> None:
        given = self._given(_header(headers, self.signature_header))
        stamp = message_id = ""
        if (True, b"timestamp") in self._parts:
            stamp = _header(headers, self.timestamp_header).strip()
            if not _digits(stamp, 16):
                raise Refused(f"{self.timestamp_header} is not a Unix timestamp")
            seconds = int(stamp) / 1000 if len(stamp) > 11 else int(stamp)
            _fresh(seconds, now, self.tolerance_seconds, self.timestamp_header)
        if (True, b"svix-id") in self._parts:
            message_id = _header(headers, self.message_id_header or "").strip()
        signed = self._signed(body, stamp, message_id)
        if not _any_matches([hmac.new(k, signed, _HASHES[self.algorithm]).digest() for k in self._keys], given):
            raise Refused(f"{self.signature_header} does not match the body")

    def _signed(self, body: bytes, timestamp: str, message_id: str) -> bytes:
        """The payload format with its placeholders filled."""
        values = {
            b"body": body,
            b"method": b"POST",
            b"url": (self.url or "").encode(),
            b"timestamp": timestamp.encode(),
            b"svix-id": message_id.encode(),
        }
        return b"".join(values[text] if is_name else text for is_name, text in self._parts)

    def _given(self, value: str) -> bytes:
        value = value.strip()
        if self.prefix and value.startswith(self.prefix):
            value = value[len(self.prefix) :]
        try:
            return bytes.fromhex(value) if self.encoding == "hex" else base64.b64decode(value, validate=True)
        except (ValueError, binascii.Error):
            raise Refused(f"{self.signature_header} is not {self.encoding}") from None

    def sign(self, body: bytes, secret: str, timestamp: int, message_id: str = "msg_demo") -> dict[str, str]:
        """The headers Vapi would send (tests, `make demo`)."""
        signed = self._signed(body, str(timestamp), message_id)
        digest = hmac.new(vapi_key(secret, self.secret_is_base64), signed, _HASHES[self.algorithm])
        value = digest.hexdigest() if self.encoding == "hex" else base64.b64encode(digest.digest()).decode()
        headers = {self.signature_header: self.prefix + value}
        if (True, b"timestamp") in self._parts:
            headers[self.timestamp_header] = str(timestamp)
        if (True, b"svix-id") in self._parts and self.message_id_header:
            headers[self.message_id_header] = message_id
        return headers


@dataclass(frozen=True)
class TokenVerifier:
    """A shared token in a header: Vapi's bearer credential (`Authorization: Bearer`), its legacy
    `X-Vapi-Secret`, or a bearer token on the native endpoint. No replay protection: prefer HMAC."""

    secrets: Sequence[str]
    header: str = "authorization"
    scheme: str = "Bearer"

    def verify(self, body: bytes, headers: Headers, now: float) -> None:
        value = _header(headers, self.header).strip()
        if self.scheme:
            scheme, _, value = value.partition(" ")
            if scheme.lower() != self.scheme.lower():
                raise Refused(f"{self.header} is not `{self.scheme} <token>`")
        if not _any_matches([s.encode() for s in self.secrets], value.strip().encode()):
            raise Refused(f"{self.header} does not hold a valid token")


class StandardWebhooksVerifier:
    """Standard Webhooks (`whsec_` secrets), verified by the `standardwebhooks` package itself; its
    tolerance is the specification's 5 minutes (on its own clock)."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self._hooks = [Webhook(s) for s in secrets]  # a secret that is not base64 fails here, at start

    def verify(self, body: bytes, headers: Headers, now: float) -> None:
        wanted = {name: headers.get(name, "") for name in ("webhook-id", "webhook-timestamp", "webhook-signature")}
        missing = [name for name, value in wanted.items() if not value]
        if missing:
            raise Refused(f"missing {', '.join(missing)} header")
        reasons = []
        for hook in self._hooks:
            try:
                hook.verify(body, wanted, json_parse=False)
                return
            except WebhookVerificationError as exc:
                reasons.append(str(exc))
        raise Refused(f"webhook-signature: {reasons[0].lower()}")
