"""The HTTP surface: one POST route per platform, health, readiness and metrics (FastAPI on uvicorn).

`create_app(settings, endpoints, publisher)` builds the ASGI app; the wiring (`__main__`) serves it.
Routes read the raw request stream themselves (no body parsing by the framework: the signature is
over the exact bytes), bounded by `max_body_bytes` before the body is buffered.

The webhook routes are FastAPI routes (so the OpenAPI document is generated from them, as the other
routes') served by plain ASGI: each route's `app` is `_webhook(...)`, which reads the body from the ASGI
messages and writes the JSON answer itself, and `IngressApp` hands a request that fully matches one of
them straight to it, without FastAPI's middleware stack, dependency solving and Request/Response objects
(about a third of the CPU per webhook in a py-spy profile under bench/ingress.py's load). Every other
request (health, metrics, documents, a wrong method, an unknown path) goes through FastAPI.
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
from starlette.types import ASGIApp, Receive, Scope, Send

from services.common import observability as plog
from services.ingress.endpoints import PLATFORMS, Endpoint
from services.ingress.handler import AcceptedAnswer, Answer, ProblemAnswer, WebhookHandler, refusal
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
    route's ASGI app at once (module docstring)."""

    webhook_routes: dict[str, APIRoute]  # by platform
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
        path = get_route_path(scope)
        parts = (path[:-1] if path.endswith("/") else path).rsplit("/", 2)
        if len(parts) != 3 or parts[0] != "/webhooks" or not parts[2] or scope["method"] != "POST":
            return None
        route = self.webhook_routes.get(parts[1])
        return None if route is None else (route, parts[2])


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
    app.webhook_routes = {}
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
        route.app = _webhook(platform, endpoints, handler, settings.ingress.max_body_bytes, budget)
        app.webhook_routes[platform] = route
    _operations(app, publisher)
    _errors(app)
    app.openapi = lambda: openapi(app)  # type: ignore[method-assign]
    return app


async def _documented(endpoint: str) -> AcceptedAnswer:
    """The webhook operation as the OpenAPI document shows it (path parameter, answers). FastAPI never
    calls it: the route's `app` is replaced by `_webhook`, which reads the raw body itself."""
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


def _webhook(
    platform: str,
    endpoints: Mapping[tuple[str, str], Endpoint],
    handler: WebhookHandler,
    limit: int,
    budget: BodyBudget,
) -> ASGIApp:
    duration = REQUEST_DURATION.labels(platform)
    busy = {"Retry-After": str(handler.retry_after)}

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        endpoint: str = scope["path_params"]["endpoint"]
        found = endpoints.get((platform, endpoint))
        if found is None:
            answer = refusal(404, "not_found", "not_found", f"no {platform} endpoint is named {endpoint[:64]!r}")
        else:
            headers = RequestHeaders(scope["headers"])
            body = await read_body(headers, receive, limit, budget)
            if body is None:
                return  # the client went away before its body arrived: nobody to answer, nothing published
            if isinstance(body, Answer):
                answer = body
                if answer.outcome == "overloaded":
                    answer.headers = busy
            else:
                try:
                    answer = await handler.handle(found, headers, body)
                finally:
                    budget.give(len(body))
        label = endpoint if found is not None else "(unknown)"
        elapsed = time.perf_counter() - started
        REQUESTS.inc((platform, label, answer.outcome))  # label: a configured endpoint or "(unknown)", a bounded set
        duration.observe(elapsed)
        _log(platform, label, answer, elapsed, scope.get("client"))
        content = answer.json()
        head = [(b"content-length", str(len(content)).encode()), (b"content-type", b"application/json")]
        if answer.headers:
            head += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.items()]
        await send({"type": "http.response.start", "status": answer.status, "headers": head})
        await send({"type": "http.response.body", "body": content})

    return serve


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


async def read_body(headers: HeaderMap, receive: Receive, limit: int, budget: BodyBudget) -> bytes | Answer | None:
    """The raw body, or a 413 as soon as it is known to be over `limit` (from Content-Length, else while
    streaming): a 20 MB request is refused after at most `limit` bytes. None: the client disconnected.
    Each chunk is taken from `budget` as it arrives (what a client declares costs nothing until sent);
    a body the budget cannot hold is a 503 `overloaded`. The caller gives a returned body's length
    back once the request is answered; anything else is given back here."""
    declared = (headers.get("content-length") or "").strip()
    if declared.isascii() and declared.isdigit() and int(declared) > limit:  # "²".isdigit(), int("²") fails
        return _too_large(limit)
    chunks, size, complete = [], 0, False
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk: bytes = message.get("body", b"")
            if size + len(chunk) > limit:
                return _too_large(limit)
            if not budget.take(len(chunk)):
                return refusal(
                    503, "overloaded", "overloaded", "the ingress holds its limit of request bodies: retry later"
                )
            size += len(chunk)
            chunks.append(chunk)
            if not message.get("more_body", False):
                complete = True
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    finally:
        if not complete:
            budget.give(size)


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
    level = (
        logging.INFO if answer.status < 400 else logging.ERROR if answer.outcome == "mapping_error" else logging.WARNING
    )
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
