"""http: a request to someone's API (a CRM, a ticketing system) through an `http` destination.

The destination fixes the origin, the path prefix and the credentials (bearer, basic, OAuth2 client
credentials); the action brings the method, the rest of the path (its values percent-encoded by the
router), query parameters, headers and a JSON body. The path is checked again here, on what is about to
be sent: a record that would leave the destination's origin or path prefix (a forged one, or a value
that decodes to '..', or '..;' which servlet containers read as '..') is refused, never sent.

The answer's status, the start of its body (redacted) and, with `result_id_pointer`, the id it names
are kept in the action's result. `Idempotency-Key: <action_id>` goes with every request: APIs that
honour it (Zendesk, Stripe-style APIs) drop a repeat after a timeout; for the others a retried PATCH or
PUT is harmless and a retried POST may create a second record (docs/integrations.md). A 410 Gone to a
path of the action's own names that resource (a deleted case): the action fails, the destination stays
enabled; only a 410 to the destination's own URL disables it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import unquote, urlencode

import httpx
import orjson
from jsonpointer import JsonPointerException, resolve_pointer

from schemas.agent_config import FLOW_RESERVED_HEADERS, HEADER_NAME, dot_segment
from schemas.events import RESPONSE_EXCERPT_CHARS, RESULT_ID_CHARS, HttpRequested
from services.common.errors import PermanentError
from services.dispatcher.delivery import (
    SNIPPET_BYTES,
    SUPERSEDES_HEADER,
    Answer,
    Delivery,
    Exchange,
    HttpSender,
    failure,
    json_body,
    signature,
)
from services.dispatcher.destinations import HttpDestination
from services.dispatcher.registry import Registry

RESULT_BYTES = 64 * 1024  # of an answer read to find the result id (a CRM's record is a few KiB)
_PRINTABLE = re.compile(r"^[\x20-\x7e\t]*$")


class HttpRequestExecutor:
    def __init__(self, registry: Registry, http: HttpSender) -> None:
        self._registry = registry
        self._http = http

    async def __call__(self, action: HttpRequested) -> Delivery:
        dest = self._registry.get(action.destination, HttpDestination)
        url = target(dest, action.path, action.query)
        body = json_body(action.body) if action.body is not None else None
        headers = request_headers(dest, action, body)
        limit = RESULT_BYTES if action.result_id_pointer else SNIPPET_BYTES
        redact = self._http.redactor(dest)

        async def run(exchange: Exchange) -> Answer:
            # signed here, in the slot, as a webhook is: an action that waited for it (the line, a rate-limit
            # token) carries the time it is sent, not the time it began to wait (receivers refuse an old one)
            signed = {**headers, **signature(dest, action.action_id, body or b"")}
            return await exchange.request(action.method, url, signed, body, read_limit=limit, side_effect=True)

        # a 410 to a path of the action's own names that resource (a deleted case), not the destination
        gone_disables = not action.path.partition("?")[0]
        answer, latency_ms = await self._http.attempt(
            dest, action.type, run, redact=redact, gone_disables=gone_disables
        )
        result_id, note = read_result_id(answer, action.result_id_pointer)
        excerpt = redact(answer.snippet, RESPONSE_EXCERPT_CHARS) or None
        result_id = redact(result_id, RESULT_ID_CHARS) if result_id else None
        return Delivery("delivered", dest.name, answer.status, latency_ms, note, excerpt, result_id)


def target(dest: HttpDestination, path: str, params: Mapping[str, str] | None = None) -> httpx.URL:
    """The destination's URL with `path` appended and `params` added to its query; PermanentError when
    the result would name another origin or leave the destination's path prefix, however its values were
    encoded, or set a query parameter the destination's URL sets. The query is built here, as text:
    httpx's `params=` replaces a URL's whole query (the destination's own, an API version or a key)."""
    base = httpx.URL(dest.endpoint)
    prefix = base.raw_path.decode("ascii").split("?", 1)[0].rstrip("/")
    login = base.userinfo.decode("ascii")  # user:password, sent as Basic (httpx), as a webhook's is
    origin = f"{base.scheme}://{login + '@' if login else ''}{base.netloc.decode('ascii')}"
    if (path and not path.startswith(("/", "?"))) or path.startswith("//"):
        raise _refused(dest, "the path must start with '/' or '?' (not '//')")
    path_part, _, path_query = path.partition("?")
    own = set(base.params)
    for name in [*httpx.QueryParams(path_query), *(params or {})]:
        if name in own:
            raise _refused(dest, f"query parameter {name!r} cannot be set by a flow (it is the destination's)")
    extra = urlencode(list((params or {}).items()))
    query = "&".join(q for q in (base.query.decode("ascii"), path_query, extra) if q)
    try:
        url = httpx.URL(f"{origin}{prefix}{path_part}" + (f"?{query}" if query else ""))
    except httpx.InvalidURL:  # not quoted: the URL may hold the destination's secret
        raise _refused(dest, "the URL is not valid (a control character, or over 65,536 characters)") from None
    if (url.scheme, url.host, url.port) != (base.scheme, base.host, base.port):
        raise _refused(dest, "the path would change the destination's origin")
    decoded = unquote(url.raw_path.decode("ascii").split("?", 1)[0]).replace("\\", "/")
    if any(dot_segment(segment) for segment in decoded.split("/")):
        raise _refused(dest, "the path has a '.' or '..' segment (after decoding)")
    if prefix and decoded != prefix and not decoded.startswith(prefix + "/"):
        raise _refused(dest, f"the path leaves the destination's path prefix {prefix}")
    return url


def _refused(dest: HttpDestination, why: str) -> Exception:
    return failure(PermanentError(f"request refused: {why}"), dest.name)


def request_headers(dest: HttpDestination, action: HttpRequested, body: bytes | None) -> dict[str, str]:
    """The flow's headers, then the destination's (credentials included); a flow's header may not replace
    one of those or the signature (added when the request is sent), and must render to printable ASCII (the
    whitespace around a value is dropped: the router's cut at 1,000 characters may end one in a space)."""
    headers = {"accept": "application/json", "idempotency-key": action.action_id}
    if action.supersedes is not None:
        headers[SUPERSEDES_HEADER] = action.supersedes
    if body is not None:
        headers["content-type"] = "application/json"
    own = {name.lower() for name in dest.header_values}
    for name, value in action.headers.items():
        if not HEADER_NAME.fullmatch(name) or name.lower() in FLOW_RESERVED_HEADERS or name.lower() in own:
            raise _refused(dest, f"header {name!r} cannot be set by a flow (it is the destination's or ours)")
        if not _PRINTABLE.fullmatch(value):
            raise _refused(dest, f"header {name!r} rendered a control or non-ASCII character")
        headers[name] = value.strip(" \t")  # not part of the value (RFC 9110 5.5), and h11 refuses to send it
    headers.update(dest.header_values)
    return headers


def read_result_id(answer: Answer, pointer: str | None) -> tuple[str | None, str | None]:
    """(the id at `pointer` in the answer, None) or (None, why there is none)."""
    if pointer is None:
        return None, None
    try:
        document = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        cut = " (or longer than the 64 KiB read)" if len(answer.body) >= RESULT_BYTES else ""
        return None, f"result_id_pointer {pointer}: the answer is not JSON{cut}"
    try:
        value = resolve_pointer(document, pointer)
    except JsonPointerException:
        return None, f"result_id_pointer {pointer}: nothing there in the answer"
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None, f"result_id_pointer {pointer}: not a string or number in the answer"
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return " ".join(text.split())[:RESULT_ID_CHARS] or None, None
