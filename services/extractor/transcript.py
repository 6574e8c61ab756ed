"""The transcript: from the event or its claim check (transcript_url), and cut to a model's token budget.

A transcript_url body is either JSON (a list of messages, or an object with a `messages`/`transcript`
list; each item has a role and `text`, `message` or `content`) or plain text with one `Speaker: text`
turn per line. The body is streamed and the fetch stops at the size limit.

The URL comes from the platform's event, so the fetch goes through the dispatcher's SSRF guard (wired in
__main__.py): an address the guard refuses (loopback, private, link-local, cloud metadata ...) is a
PermanentError, as is a body that is malformed in any way; neither gets better by retrying.

Tokens are estimated as characters / 4 (CHARS_PER_TOKEN): good enough for English and cheap; the budget
leaves the model room for the instructions and the answer. Over budget, the beginning (the request)
and the end (the outcome) are kept, and the cut is marked in the text the model sees.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from pydantic import ValidationError

from schemas.events import Message
from services.common.errors import PermanentError, RetryableError, classify_http_status
from services.common.ssrf import AddressRefused
from services.extractor.settings import CHARS_PER_TOKEN

ROLE_ALIASES = {
    "agent": "agent", "assistant": "agent", "ai": "agent", "bot": "agent", "model": "agent",
    "customer": "customer", "user": "customer", "caller": "customer", "client": "customer",
    "human": "customer", "human_agent": "human_agent", "operator": "human_agent",
    "system": "system", "tool": "tool", "function": "tool",
}  # fmt: skip
_SPEAKER = re.compile(r"^\s*([A-Za-z_ ]{2,20}?)\s*:\s*(.*)$")


async def fetch_transcript(http: httpx.AsyncClient, url: str, max_bytes: int, timeout: float) -> bytes:
    """GET the claim check; PermanentError over the size limit, on a 4xx or a refused address,
    RetryableError on 5xx/timeouts. `timeout` bounds the whole fetch: httpx's own timeouts bound each
    read, so a server sending one byte at a time would otherwise hold the fetch for as long as it likes."""
    if not url.startswith(("http://", "https://")):
        raise PermanentError(f"transcript_url must be http(s), got {url[:40]!r}")
    try:
        async with asyncio.timeout(timeout):
            return await _fetch(http, url, max_bytes, timeout)
    except TimeoutError:
        raise RetryableError(f"transcript_url did not finish within {timeout:g}s") from None


async def _fetch(http: httpx.AsyncClient, url: str, max_bytes: int, timeout: float) -> bytes:
    try:
        async with http.stream("GET", url, timeout=timeout, follow_redirects=False) as response:
            if (error := classify_http_status(response.status_code)) is not None:
                raise type(error)(f"transcript_url answered {error}")
            if int(response.headers.get("content-length") or 0) > max_bytes:
                raise PermanentError(f"transcript too large: over {max_bytes} bytes")
            return await _read(response, max_bytes)
    except AddressRefused as exc:
        raise PermanentError(f"transcript_url refused by the SSRF guard: {exc}") from exc
    except httpx.TimeoutException as exc:
        raise RetryableError(f"transcript_url timed out: {type(exc).__name__}") from exc
    except httpx.TransportError as exc:
        raise RetryableError(f"transcript_url unreachable: {type(exc).__name__}") from exc


_CODINGS = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS}


async def _read(response: httpx.Response, max_bytes: int) -> bytes:
    """The body, decoded as its Content-Encoding says (gzip, deflate; another is passed as it is, as httpx
    does), holding at most max_bytes of it at any time. httpx inflates each network chunk whole: 64 KiB of
    gzip is 64 MiB, and a few such records in flight were over the pod's memory (a crash loop: they are
    read again after the restart)."""
    codings = [c.strip().lower() for c in response.headers.get_list("content-encoding", split_commas=True)]
    codings = [c for c in codings if c in _CODINGS]
    if len(codings) > 1:
        raise PermanentError(f"transcript_url body in content-encoding {', '.join(codings)[:60]}: one coding is read")
    if response.is_stream_consumed:  # read already, decoded (a response made from bytes: httpx.MockTransport)
        if len(response.content) > max_bytes:
            raise PermanentError(f"transcript too large: over {max_bytes} bytes")
        return response.content
    inflate = zlib.decompressobj(_CODINGS[codings[0]]) if codings else None
    headerless = bool(codings) and codings[0] == "deflate"  # may still turn out to be deflate without its header
    body = bytearray()
    async for chunk in response.aiter_raw():
        if inflate is None:
            body += chunk
        else:
            inflate = _inflate(inflate, chunk, body, max_bytes, headerless=headerless)
            headerless = False
        if len(body) > max_bytes:
            raise PermanentError(f"transcript too large: over {max_bytes} bytes")
    if inflate is not None:
        body += inflate.flush()
    if len(body) > max_bytes:
        raise PermanentError(f"transcript too large: over {max_bytes} bytes")
    return bytes(body)


def _inflate(inflate: Any, data: bytes, body: bytearray, max_bytes: int, *, headerless: bool) -> Any:
    """`data` inflated onto `body`, never more than one byte past max_bytes; the decompressor to go on with.
    `headerless`: the body's first bytes, of a deflate body, which some servers send without the zlib
    header (httpx tries that too when the header is refused)."""
    try:
        while data and len(body) <= max_bytes:
            body += inflate.decompress(data, max_bytes + 1 - len(body))
            data, headerless = inflate.unconsumed_tail, False
    except zlib.error as exc:
        if headerless:
            return _inflate(zlib.decompressobj(-zlib.MAX_WBITS), data, body, max_bytes, headerless=False)
        raise PermanentError(f"transcript_url body does not decode as its content-encoding: {exc}") from exc
    return inflate


def parse_transcript(body: bytes) -> list[Message]:
    """JSON messages or `Speaker: text` lines; PermanentError when it is neither or a message is malformed.

    Every malformed-payload error (invalid JSON, a message pydantic rejects, such as start_seconds: -1,
    bytes that are not UTF-8; all ValueErrors) is permanent: the same body fails the same way on every
    retry, and an unknown exception would spend the retry tiers before reaching the dead-letter topic.
    """
    body = body.removeprefix(b"\xef\xbb\xbf")  # UTF-8's byte order mark (Windows and .NET writers): not text
    stripped = body.lstrip()
    if stripped[:1] in (b"[", b"{"):
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise PermanentError(f"transcript_url body is not valid JSON: {exc}") from exc
        try:
            return _from_json(data)
        except ValueError as exc:  # a safety net: _from_json maps what it knows with a precise reason
            raise PermanentError(f"transcript_url body is malformed: {str(exc)[:200]}") from exc
    try:
        return _from_text(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise PermanentError("transcript_url body is neither JSON nor UTF-8 text") from exc


def _first_error(exc: ValidationError) -> str:
    """`start_seconds: Input should be greater than or equal to 0`, without echoing the input."""
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in error["loc"]) or "message"
    more = exc.error_count() - 1
    return f"{where}: {error['msg']}" + (f" (and {more} more)" if more else "")


def _from_json(data: Any) -> list[Message]:
    if isinstance(data, dict):
        data = data.get("messages", data.get("transcript"))
    if not isinstance(data, list):
        raise PermanentError("transcript JSON must be a list of messages or an object with `messages`")
    out = []
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise PermanentError("transcript JSON messages must be objects")
        text = _text_of(item)
        if not text.strip():
            continue  # tool calls and empty turns carry nothing to extract
        role = ROLE_ALIASES.get(str(item.get("role", "")).lower().replace(" ", "_"), "customer")
        try:
            out.append(Message.model_validate({"role": role, "text": text,
                                               "start_seconds": item.get("start_seconds"),
                                               "end_seconds": item.get("end_seconds")}))  # fmt: skip
        except ValidationError as exc:
            raise PermanentError(f"transcript JSON message {i} is malformed: {_first_error(exc)}") from exc
    return out


def _text_of(item: dict[str, Any]) -> str:
    """The first of `text`, `message`, `content` that holds text (a null one hides nothing); `content` may
    be the chat format's list of parts, whose text parts are joined."""
    for key in ("text", "message", "content"):
        value = item.get(key)
        if isinstance(value, list):
            value = "".join(p["text"] for p in value if isinstance(p, dict) and isinstance(p.get("text"), str))
        if isinstance(value, str) and value.strip():
            return value
    return ""


def _from_text(text: str) -> list[Message]:
    """Unlabelled lines continue the previous turn; a transcript without labels is one customer turn."""
    turns: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _SPEAKER.match(line)
        role = ROLE_ALIASES.get(match.group(1).strip().lower().replace(" ", "_")) if match else None
        if match and role:
            turns.append((role, [match.group(2)]))
        elif turns:
            turns[-1][1].append(line.strip())
        else:
            turns.append(("customer", [line.strip()]))
    return [Message(role=role, text=" ".join(parts)) for role, parts in turns if "".join(parts).strip()]


def estimate_tokens(text: str) -> int:
    return -(-len(text) // CHARS_PER_TOKEN)


@dataclass(frozen=True)
class Fitted:
    """The transcript as the model sees it."""

    text: str
    truncated: bool
    reason: str | None = None


def render(messages: list[Message]) -> list[str]:
    return [f"[{i}] {m.role}: {' '.join(m.text.split())}" for i, m in enumerate(messages)]


def fit_budget(messages: list[Message], budget_tokens: int, model: str) -> Fitted:
    """Everything when it fits; otherwise the first and the last half-budget, with the cut marked."""
    lines = render(messages)
    total_chars = sum(len(line) + 1 for line in lines)
    if total_chars <= budget_tokens * CHARS_PER_TOKEN:
        return Fitted("\n".join(lines), truncated=False)
    half = budget_tokens * CHARS_PER_TOKEN // 2
    head, head_whole = _take(lines, half)
    tail_reversed, _ = _take([line[::-1] for line in reversed(lines[head_whole:])], half)
    tail = [line[::-1] for line in reversed(tail_reversed)]
    kept = sum(len(line) + 1 for line in (*head, *tail))
    omitted = (total_chars - kept) // CHARS_PER_TOKEN
    reason = (
        f"transcript of about {total_chars // CHARS_PER_TOKEN} tokens is over the {budget_tokens}-token "
        f"budget of {model}: kept the beginning and the end, cut about {omitted} tokens from the middle"
    )
    marker = f"[... about {omitted} tokens of the conversation cut here to fit the budget ...]"
    return Fitted("\n".join([*head, marker, *tail]), truncated=True, reason=reason)


def _take(lines: list[str], chars: int) -> tuple[list[str], int]:
    """Whole lines while they fit, then a prefix of the next one; returns (lines, whole lines taken)."""
    out: list[str] = []
    used = 0
    for line in lines:
        if used + len(line) + 1 > chars:
            room = chars - used - 2
            if room > 80:
                out.append(line[:room] + " …")
            return out, len(out) - (1 if room > 80 else 0)
        out.append(line)
        used += len(line) + 1
    return out, len(out)
