"""The HTTP surface: one POST route per platform, health, readiness and metrics (FastAPI on uvicorn).

`create_app(settings, endpoints, publisher)` builds the ASGI app; the wiring (`__main__`) serves it.
Routes read the raw request stream themselves (no body parsing by the framework: the signature is
over the exact bytes), bounded by `max_body_bytes` before the body is buffered.

The webhook routes are FastAPI routes (so the OpenAPI document is generated from them, as the other
routes') served by plain ASGI: each route's `app` is a `WebhookRoute`'s `asgi`, which reads the body from
the ASGI messages and writes the JSON answer itself, and `IngressApp` hands a request that fully matches
one of them straight to it, without FastAPI's middleware stack, dependency solving and Request/Response
objects (about a third of the CPU per webhook in a py-spy profile under bench/ingress.py's load). Every
other request (health, metrics, documents, a wrong method, an unknown path) goes through FastAPI.

Under the server (`python -m services.ingress`), a webhook request does not become ASGI at all: the HTTP
protocol (services/common/serving.py) asks `IngressApp.direct_route` and serves the request through the
same `WebhookRoute` as a serving.DirectRoute, collecting the body as it is parsed, calling the handler
once and writing the answer's bytes: the same answers, metrics and log lines, without uvicorn's ASGI
scope, request cycle, receive/send messages and response-header checks (about 8% fewer instructions per
webhook, whole process under bench/ingress.py's load).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette._utils import get_route_path
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE

from services.common import observability as plog
from services.common.serving import DirectRequest
from services.ingress.endpoints import PLATFORMS, Endpoint
from services.ingress.handler import AcceptedAnswer, Answer, ProblemAnswer, WebhookHandler, failed, refusal
from services.ingress.metrics import REQUEST_DURATION, REQUESTS, label_endpoints
from services.ingress.platforms import DOCUMENTED
from services.ingress.publisher import Publisher
from services.ingress.settings import IngressSettings
from services.ingress.signatures import Headers as HeaderMap

log = logging.getLogger("services.ingress")
VERSION = "0.1.0"
TITLE = "postcall ingress"
DESCRIPTION = (
    "Receives voice platforms' post-call webhooks (Vapi, Retell, ElevenLabs, or a native ConversationEnded "
    "signed per Standard Webhooks), verifies them on the raw body, maps them to ConversationEnded v1 and "
    "answers 2xx only after Kafka acknowledged the record (acks=all)."
)
_PLATFORM_DOCS = {
    "vapi": "Vapi server messages; `end-of-call-report` is published, other message types are acknowledged "
    "and ignored. Authentication: the endpoint's Vapi HMAC credential (`x-signature`, `x-timestamp`), "
    "bearer token or legacy `X-Vapi-Secret`.",
    "retell": "Retell `call_ended` / `call_analyzed` (the endpoint's `publish_on`), calls that never "
    "connected included. Authentication: `x-retell-signature: v=<ms>,d=<hex>` with the Retell API key.",
    "elevenlabs": "ElevenLabs `post_call_transcription` and `call_initiation_failure`; `post_call_audio` is "
    "acknowledged and ignored. Authentication: `ElevenLabs-Signature: t=<s>,v0=<hex>`.",
    "native": "A ConversationEnded v1 as is, for any other platform. Authentication: Standard Webhooks "
    "(`webhook-id`, `webhook-timestamp`, `webhook-signature`) or a bearer token.",
}
_ERRORS = {
    400: "The body is not valid UTF-8 or not JSON.",
    401: "The signature or token is missing, malformed, stale or does not match.",
    404: "No endpoint of this platform has this name.",
    413: "The body is over the configured size.",
    422: "Valid JSON that cannot become a ConversationEnded; `problems` names each field.",
    503: (
        "`kafka_unavailable`: Kafka did not acknowledge in time, so the event is not known to be published (a "
        "record already sent may still land; a retry carries the same event id, and consumers keep one). "
        "`overloaded`: the requests being served hold the limit of request bodies in flight, nothing was "
        "published. Retry after `Retry-After` seconds."
    ),
}


class IngressApp(FastAPI):
    """FastAPI, except that a request fully matching a webhook route (POST, known path) goes to that
    route's ASGI app at once, and that the server (services/common/serving.py) serves it on its HTTP
    protocol itself, without ASGI (`direct_route`; module docstring)."""

    webhook_routes: dict[str, APIRoute]  # by platform
    direct_routes: dict[str, WebhookRoute]  # by platform: what each webhook APIRoute's app is a method of
    # the path prefix a proxy strips (settings' root_path): set on every request's scope before routing, as
    # FastAPI's own (deprecated) root_path parameter did, so a path with or without the prefix matches
    prefix: str = ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.prefix:
            scope["root_path"] = self.prefix
        if scope["type"] == "http":
            found = self.webhook_match(scope)
            if found is not None:
                route, endpoint = found
                scope["endpoint"], scope["route"], scope["path_params"] = route.endpoint, route, {"endpoint": endpoint}
                await route.app(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def webhook_match(self, scope: Scope) -> tuple[APIRoute, str] | None:
        """The webhook route and endpoint name of a request that fully matches one (what the route's
        Starlette `matches` answers Match.FULL for: POST to `/webhooks/<platform>/<endpoint>` after the
        root path, the endpoint one non-empty segment), else None; one `/` after the endpoint is the same
        endpoint (a URL pasted into a vendor's dashboard with one got Starlette's 307 with an empty body,
        which a vendor that does not follow redirects counts as a failed delivery). Its own string test
        rather than `matches`, which cost a few microseconds per webhook; test_webhook_matching_is_starlettes
        compares the two."""
        found = self._webhook(scope["method"], get_route_path(scope))
        return None if found is None else (self.webhook_routes[found[0]], found[1])

    def direct_route(self, method: str, path: str) -> tuple[WebhookRoute, str] | None:
        """The webhook route and endpoint name of a request with this method and path (as uvicorn decodes
        it, without a root path of its own) that `__call__` would give a webhook route, for serving.py's
        protocol to serve itself; None: the request is served through ASGI."""
        found = self._webhook(method, get_route_path({"path": path, "root_path": self.prefix}))
        return None if found is None else (self.direct_routes[found[0]], found[1])

    def _webhook(self, method: str, path: str) -> tuple[str, str] | None:
        parts = (path[:-1] if path.endswith("/") else path).rsplit("/", 2)
        if len(parts) != 3 or parts[0] != "/webhooks" or not parts[2] or method != "POST":
            return None
        return None if parts[1] not in self.webhook_routes else (parts[1], parts[2])


def create_app(
    settings: IngressSettings,
    endpoints: Mapping[tuple[str, str], Endpoint],
    publisher: Publisher,
    clock: Callable[[], float] = time.time,
) -> IngressApp:
    handler = WebhookHandler(publisher, settings.ingress.retry_after_seconds, clock)
    label_endpoints(list(endpoints))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await publisher.start()
        log.info("ingress ready", extra={"endpoints": sorted(e.path for e in endpoints.values())})
        try:
            yield
        finally:
            await publisher.stop()

    # no 307 with an empty body for a path with or without a `/` at its end: a JSON 404 (_errors)
    app = IngressApp(title=TITLE, version=VERSION, description=DESCRIPTION, lifespan=lifespan, redirect_slashes=False)
    app.prefix = settings.ingress.root_path
    app.webhook_routes, app.direct_routes = {}, {}
    budget = BodyBudget(settings.ingress.max_body_bytes_in_flight)  # shared by every webhook route
    for platform in PLATFORMS:
        app.add_api_route(
            f"/webhooks/{platform}/{{endpoint}}",
            _documented,
            methods=["POST"],
            name=f"{platform}_webhook",
            summary=f"{platform.capitalize()} post-call webhook",
            description=_PLATFORM_DOCS[platform],
            tags=["webhooks"],
            response_model=AcceptedAnswer,
            responses={status: {"model": ProblemAnswer, "description": text} for status, text in _ERRORS.items()},
            openapi_extra={"requestBody": _request_body(platform)},
        )
        route = app.router.routes[-1]
        assert isinstance(route, APIRoute)
        served = WebhookRoute(platform, endpoints, handler, settings.ingress.max_body_bytes, budget)
        route.app = served.asgi
        app.webhook_routes[platform], app.direct_routes[platform] = route, served
    _operations(app, publisher)
    _errors(app)
    app.openapi = lambda: openapi(app)  # type: ignore[method-assign]
    return app


async def _documented(endpoint: str) -> AcceptedAnswer:
    """The webhook operation as the OpenAPI document shows it (path parameter, answers). FastAPI never
    calls it: the route's `app` is replaced by `WebhookRoute.asgi`, which reads the raw body itself."""
    raise NotImplementedError("served by the route's ASGI app (_webhook)")


class BodyBudget:
    """The bytes of request bodies that the requests being served hold together, against `limit`.
    Every body is read before its signature can be checked, so without a bound any client could make
    the process hold as many bodies as it opens connections: 128 bodies of 4 MB passed the pod's
    512 Mi."""

    __slots__ = ("held", "limit")

    def __init__(self, limit: int) -> None:
        self.limit, self.held = limit, 0

    def take(self, size: int) -> bool:
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        self.held -= size


class WebhookRoute:
    """One platform's webhook route, served two ways with the same answers: as the route's ASGI app
    (`asgi`: what FastAPI, and an in-process test, call) and on the server's HTTP protocol itself, without
    ASGI (serving.DirectRoute: `begin`, `receive`, `serve`, `lost`; what `python -m services.ingress`
    does). Either way: a 404 for an unknown endpoint; a 413 as soon as the body is known to be over
    `limit` (its Content-Length, else while it arrives); the body taken from `budget` as it arrives
    (a 503 `overloaded` when it cannot hold it); then the handler's answer; one metric and log line per
    answer, none for a client that went away before its body arrived."""

    __slots__ = ("budget", "busy", "duration", "endpoints", "handler", "limit", "platform")

    def __init__(
        self,
        platform: str,
        endpoints: Mapping[tuple[str, str], Endpoint],
        handler: WebhookHandler,
        limit: int,
        budget: BodyBudget,
    ) -> None:
        self.platform, self.endpoints, self.handler, self.limit, self.budget = (
            platform,
            endpoints,
            handler,
            limit,
            budget,
        )
        self.duration = REQUEST_DURATION.labels(platform)
        self.busy = {"Retry-After": str(handler.retry_after)}

    async def asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        endpoint: str = scope["path_params"]["endpoint"]
        found = self.endpoints.get((self.platform, endpoint))
        if found is None:
            answer = self._unknown(endpoint)
        else:
            headers = RequestHeaders(scope["headers"])
            body = await read_body(headers, receive, self.limit, self.budget, self.busy)
            if body is None:
                return  # the client went away before its body arrived: nobody to answer, nothing published
            if isinstance(body, Answer):
                answer = body
            else:
                try:
                    answer = await self.handler.handle(found, headers, body)
                except Exception as exc:
                    answer = failed(exc)
                finally:
                    self.budget.give(len(body))
        content = self._answered(endpoint, found, answer, started, scope.get("client"))
        head = [(b"content-length", str(len(content)).encode()), (b"content-type", b"application/json")]
        if answer.headers:
            head += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.items()]
        await send({"type": "http.response.start", "status": answer.status, "headers": head})
        await send({"type": "http.response.body", "body": content})

    def begin(self, request: DirectRequest) -> None:
        request.since = time.perf_counter()
        found = self.endpoints.get((self.platform, request.param))
        if found is None:
            self._answer(request, None, self._unknown(request.param))
            return
        headers = RequestHeaders(request.headers)
        request.target = (found, headers)
        too_large = declared_too_large(headers, self.limit)
        if too_large is not None:
            self._answer(request, found, too_large)

    def receive(self, request: DirectRequest, chunk: bytes) -> None:
        refused = take(request.size, len(chunk), self.limit, self.budget, self.busy)
        if refused is None:
            request.chunks.append(chunk)
            request.size += len(chunk)
            return
        self.lost(request)
        self._answer(request, request.target[0], refused)

    async def serve(self, request: DirectRequest) -> None:
        found, headers = request.target
        chunks = request.chunks
        try:
            answer = await self.handler.handle(found, headers, chunks[0] if len(chunks) == 1 else b"".join(chunks))
        except Exception as exc:
            answer = failed(exc)
        finally:
            self.lost(request)
        self._answer(request, found, answer)

    def lost(self, request: DirectRequest) -> None:
        self.budget.give(request.size)
        request.size = 0

    def _answer(self, request: DirectRequest, found: Endpoint | None, answer: Answer) -> None:
        content = self._answered(request.param, found, answer, request.since, request.client)
        head = b"content-length: %d\r\ncontent-type: application/json\r\n" % len(content)
        if answer.headers:
            head += b"".join(header_line(name, value) for name, value in answer.headers.items())
        request.answer(answer.status, head, content)

    def _answered(
        self, endpoint: str, found: Endpoint | None, answer: Answer, started: float, client: tuple[str, int] | None
    ) -> bytes:
        """The answer's JSON, once counted and logged."""
        label = endpoint if found is not None else "(unknown)"
        elapsed = time.perf_counter() - started
        REQUESTS.inc(
            (self.platform, label, answer.outcome)
        )  # label: a configured endpoint or "(unknown)", a bounded set
        self.duration.observe(elapsed)
        _log(self.platform, label, answer, elapsed, client)
        return answer.json()

    def _unknown(self, endpoint: str) -> Answer:
        return refusal(404, "not_found", "not_found", f"no {self.platform} endpoint is named {endpoint[:64]!r}")


def header_line(name: str, value: str) -> bytes:
    """`name: value` CRLF as uvicorn writes an ASGI app's header (lower-case name, latin-1), refused as
    uvicorn refuses one (RuntimeError: a 500)."""
    line_name, line_value = name.lower().encode("latin-1"), value.encode("latin-1")
    if HEADER_RE.search(line_name) or HEADER_VALUE_RE.search(line_value):
        raise RuntimeError("Invalid HTTP header name or value.")
    return b"%s: %s\r\n" % (line_name, line_value)


class RequestHeaders(Mapping[str, str]):
    """A request's headers by name, as Starlette's `Headers(scope=scope)` reads them (a name in any case;
    the first of repeated headers; values decoded as latin-1), looked up in the ASGI scope's list as
    they are asked for: a webhook asks for two or three of them. Starlette's copies the list into the
    scope and goes through Mapping.get and a KeyError for each lookup."""

    __slots__ = ("raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.raw = raw  # lower-case names (ASGI)

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        name = key.lower().encode("latin-1")
        for found, value in self.raw:
            if found == name:
                return value.decode("latin-1")
        return default

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return (name.decode("latin-1") for name, _ in self.raw)

    def __len__(self) -> int:
        return len(self.raw)


async def read_body(
    headers: HeaderMap, receive: Receive, limit: int, budget: BodyBudget, busy: dict[str, str]
) -> bytes | Answer | None:
    """The raw body, or a 413 as soon as it is known to be over `limit` (from Content-Length, else while
    streaming): a 20 MB request is refused after at most `limit` bytes. None: the client disconnected.
    Each chunk is taken from `budget` as it arrives (what a client declares costs nothing until sent);
    a body the budget cannot hold is a 503 `overloaded` (with `busy`'s Retry-After). The caller gives a
    returned body's length back once the request is answered; anything else is given back here."""
    too_large = declared_too_large(headers, limit)
    if too_large is not None:
        return too_large
    chunks, size, complete = [], 0, False
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk: bytes = message.get("body", b"")
            refused = take(size, len(chunk), limit, budget, busy)
            if refused is not None:
                return refused
            size += len(chunk)
            chunks.append(chunk)
            if not message.get("more_body", False):
                complete = True
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    finally:
        if not complete:
            budget.give(size)


def declared_too_large(headers: HeaderMap, limit: int) -> Answer | None:
    """A 413 for a Content-Length over `limit`, before any of the body is read."""
    declared = (headers.get("content-length") or "").strip()
    if declared.isascii() and declared.isdigit() and int(declared) > limit:  # "²".isdigit(), int("²") fails
        return _too_large(limit)
    return None


def take(held: int, size: int, limit: int, budget: BodyBudget, busy: dict[str, str]) -> Answer | None:
    """Take `size` more bytes of a body of which `held` are read from `budget`; or a 413 when they put it
    over `limit`, a 503 `overloaded` (Retry-After `busy`) when the budget cannot hold them."""
    if held + size > limit:
        return _too_large(limit)
    if not budget.take(size):
        answer = refusal(503, "overloaded", "overloaded", "the ingress holds its limit of request bodies: retry later")
        answer.headers = busy
        return answer
    return None


def _too_large(limit: int) -> Answer:
    return refusal(413, "too_large", "payload_too_large", f"the body is over the {limit}-byte limit")


def _log(platform: str, endpoint: str, answer: Answer, elapsed: float, peer: tuple[str, int] | None) -> None:
    """One line per webhook; `client` is the ASGI scope's client: the connection's peer, or the address
    a proxy that uvicorn trusts gave in X-Forwarded-For (proxy_headers, FORWARDED_ALLOW_IPS)."""
    extra: dict[str, Any] = {
        "source": platform,
        "endpoint": endpoint,
        "client": f"{peer[0]}:{peer[1]}" if peer else None,
        "outcome": answer.outcome,
        "status": answer.status,
        "ms": round(elapsed * 1000, 1),
    }
    if answer.event_id:
        extra["event_id"], extra["conversation_id"] = answer.event_id, answer.conversation_id
    if answer.detail:
        extra["detail"] = answer.detail[:300]
    if answer.status < 400:
        level = logging.INFO
    elif answer.outcome in ("mapping_error", "error"):
        level = logging.ERROR
    else:
        level = logging.WARNING
    if answer.exc is not None:  # a failure of ours
        extra["exc"] = plog.traceback_without_text(answer.exc)
    plog.log_fields(log, level, f"webhook {answer.outcome}", extra)


def _operations(app: FastAPI, publisher: Publisher) -> None:
    @app.get("/healthz", tags=["operations"], summary="The process is alive.")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Kafka is reachable (a producer is connected and answers a metadata request).",
        responses={503: {"description": "Kafka is not reachable: webhooks would be answered 503."}},
    )
    async def readyz() -> JSONResponse:
        ok = await publisher.ready()
        return JSONResponse({"status": "ready" if ok else "kafka unreachable"}, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _errors(app: FastAPI) -> None:
    """Every framework-level refusal is JSON of the same shape as the webhooks' own."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        body = ProblemAnswer(error=code, message=str(exc.detail))
        return JSONResponse(body.model_dump(exclude_none=True), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def request_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        body = ProblemAnswer(error="invalid_request", message="the request does not match the route")
        return JSONResponse(body.model_dump(exclude_none=True), status_code=422)


def _request_body(platform: str) -> dict[str, Any]:
    name = DOCUMENTED[platform].__name__
    return {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}


def openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus the request bodies' schemas (the routes read raw bytes, so FastAPI does
    not know them)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = doc.setdefault("components", {}).setdefault("schemas", {})
    for model in DOCUMENTED.values():
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            components.setdefault(name, sub)
        components[model.__name__] = schema
    app.openapi_schema = doc
    return doc
