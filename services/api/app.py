"""`create_app()`: the query API as an ASGI app, and the seam the console mounts into.

    app = create_app(settings)                 # opens the store in its lifespan
    app = create_app(settings, store=store)    # uses an open store (tests, a process that has one)

`app.state` holds `settings`, `store`, `auth` (services.api.auth.Auth) and `stopping` (an asyncio.Event set
when the server is asked to exit): a console router added with `app.include_router(...)` depends on
`require("viewer")` and reads `app.state.store` like these routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api.auth import Auth
from services.api.handler import router
from services.api.settings import ApiSettings
from services.console import app as console
from services.console.app import mount as mount_console
from services.console.destinations import DestinationStates
from services.store.db import Store, StoreUnavailable
from services.store.queries import QueryError

VERSION = "0.1.0"
REQUESTS = Counter("postcall_api_requests_total", "Query API requests, by route and status.", ["route", "status"])
DURATION = Histogram(
    "postcall_api_request_duration_seconds",
    "Query API request time.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)

# answers carry transcripts and customers' numbers: no browser or proxy cache keeps them, whoever asked
API_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
#: the most a request's body may hold: FastAPI reads and parses a route's whole body before its dependencies
#: run, the token check among them, so this is what anyone who can connect can make the process read. An
#: operation's JSON holds up to 1,000 ids of 256 characters: 3 MiB at most when each character is sent as
#: an escaped surrogate pair (\ud83d\ude00, as httpx's json= writes any non-ASCII one); the console's forms are
#: far smaller; Try a flow takes a payload, an upload and a configuration file of up to 5 MiB each
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_TRY_BODY_BYTES = 16 * 1024 * 1024


def create_app(settings: ApiSettings, *, store: Store | None = None) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with follow_destination_state(app, settings):
            if store is not None:
                _attach(app, store)
                yield
                return
            async with Store.open(settings.database) as opened:
                _attach(app, opened)
                yield

    def _attach(app: FastAPI, opened: Store) -> None:
        app.state.store = opened
        app.state.auth = Auth(opened, settings.api.host)

    app = FastAPI(
        title="postcall query API",
        version=VERSION,
        description="Every call's extraction, decisions and deliveries, kept and searchable. Authenticate with "
        "`Authorization: Bearer <token>` (`postcall api token create`); viewers read, operators also act.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    # set when the server is asked to exit (services/api/__main__.py): a replay or re-extraction stops sending
    app.state.stopping = asyncio.Event()
    if store is not None:  # usable without the lifespan too (an ASGI transport in tests does not run it)
        _attach(app, store)
    app.include_router(router)
    if settings.console.enabled:
        mount_console(app)
        app.state.destination_states = DestinationStates()
        if not settings.console.destination_state:
            app.state.destination_states.error = "destination state not followed (POSTCALL_CONSOLE__DESTINATION_STATE)"
    app.add_exception_handler(QueryError, _bad_query)
    app.add_exception_handler(OperationalError, _store_unavailable)
    app.add_exception_handler(DBAPIError, _store_unavailable)
    app.add_exception_handler(StoreUnavailable, _store_unavailable)
    app.middleware("http")(_measure)
    app.add_middleware(BodyLimit)  # added last: outermost, before any other middleware reads the body
    _health(app)
    return app


class BodyLimit:
    """A request whose body is over its limit is answered 413 (JSON, naming the limit): by its Content-Length
    before any of it is read, or as soon as a streamed body passes the limit, when the app is told that the
    client went away, so that it stops reading."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = MAX_TRY_BODY_BYTES if scope["path"] == "/console/try" else MAX_BODY_BYTES
        declared = next((value for name, value in scope["headers"] if name == b"content-length"), b"").strip()
        if declared.isdigit() and int(declared) > limit:  # bytes.isdigit(): ASCII digits only
            await _too_large(send, limit)
            return
        read, started, refused = 0, False, False

        async def limited() -> Message:
            nonlocal read, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > limit:
                    refused = True
                    if not started:
                        await _too_large(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if refused and message["type"].startswith("http.response"):
                return  # the 413 is the answer
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(ClientDisconnect):  # the app's read of the body refused above
            await self.app(scope, limited, guarded)


async def _too_large(send: Send, limit: int) -> None:
    body = orjson.dumps({"detail": f"the request body is over {limit // 1024 // 1024} MiB"})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": [*headers, (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def follow_destination_state(app: FastAPI, settings: ApiSettings) -> AsyncIterator[None]:
    """The console's view of the dispatcher group's destination state, followed while the app runs."""
    if not (settings.console.enabled and settings.console.destination_state):
        yield
        return
    states: DestinationStates = app.state.destination_states
    task = asyncio.create_task(states.follow(settings.kafka))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _bad_query(_request: Request, exc: Exception) -> Response:
    return JSONResponse({"detail": str(exc)}, status_code=400)


async def _store_unavailable(request: Request, exc: Exception) -> Response:
    if request.app.state.settings.console.enabled and console.console_page(request):
        return console.store_unavailable(request)
    return JSONResponse({"detail": console.STORE_UNAVAILABLE}, status_code=503)


async def _measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    started = time.perf_counter()
    response = await call_next(request)
    route = getattr(request.scope.get("route"), "path", "unmatched")
    DURATION.labels(route).observe(time.perf_counter() - started)
    REQUESTS.labels(route, str(response.status_code)).inc()
    if request.url.path.startswith("/api/"):
        response.headers.update(API_HEADERS)
    return response


def _health(app: FastAPI) -> None:
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> Response:
        store: Store = request.app.state.store
        try:
            async with store.read() as conn:
                await conn.execute(text("SELECT 1"))
        except (OperationalError, DBAPIError, OSError):
            return JSONResponse({"status": "store unavailable"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
