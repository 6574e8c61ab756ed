"""Real HTTP servers on 127.0.0.1 that speak the part of a vendor API an integration test needs: an
OAuth2 authorization server with a CRM behind it, the Google Sheets values API with its token exchange
(the service account's JWT verified with its public key), Slack's chat.postMessage and incoming
webhooks, and a Teams incoming webhook. Starlette apps served by uvicorn, one per test.

Each records every request as it arrived (method, raw path, headers, body), so a test can say what was
sent, and what was never sent.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

import orjson
import uvicorn
from google.auth import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.devkit.kafka import free_port


@dataclass
class Seen:
    method: str
    raw_path: str  # as sent, percent-encoding kept
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[str]:
    """The app on a free port of 127.0.0.1 until the block ends; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def _seen(request: Request) -> Seen:
    raw = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
    query = request.scope.get("query_string", b"").decode("latin-1")
    return Seen(request.method, raw, parse_qs(query), dict(request.headers), await request.body())


def _bearer(request: Request) -> str | None:
    value = request.headers.get("authorization", "")
    return value.removeprefix("Bearer ") if value.startswith("Bearer ") else None


# ── OAuth2 authorization server + CRM ─────────────────────────────────────────────────────────────


@dataclass
class Crm:
    """POST /oauth/token (client credentials, HTTP Basic or form), and /api/v2/cases/{id} behind it
    (GET, PATCH, PUT, DELETE; POST /api/v2/cases creates one). Everything else is a recorded 404."""

    client_id: str = "postcall"
    client_secret: str = "s3cret-CLIENT-77"
    expires_in: Any = 3600  # as the token answer gives it: a test may make it text or null
    token_delay: float = 0.0  # seconds before the token endpoint answers (a stalled authorization server)
    requests: list[Seen] = field(default_factory=list)
    token_requests: list[Seen] = field(default_factory=list)
    valid: set[str] = field(default_factory=set)
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/oauth/token", self._token, methods=["POST"]),
                Route("/api/v2/cases", self._create, methods=["POST"]),
                Route("/api/v2/cases/{case_id}", self._case, methods=["GET", "PATCH", "PUT", "DELETE"]),
                Route("/{rest:path}", self._elsewhere, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
            ]
        )

    def revoke(self) -> None:
        """The tokens issued so far stop working (a key rotation on the server's side)."""
        self.valid.clear()

    async def _token(self, request: Request) -> Response:
        seen = await _seen(request)
        self.token_requests.append(seen)
        await asyncio.sleep(self.token_delay)
        form = {k: v[0] for k, v in parse_qs(seen.body.decode()).items()}
        basic = request.headers.get("authorization", "")
        if basic.startswith("Basic "):
            user, _, password = base64.b64decode(basic[6:]).decode().partition(":")
        else:
            user, password = form.get("client_id", ""), form.get("client_secret", "")
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        if (unquote(user), unquote(password)) != (self.client_id, self.client_secret):
            return JSONResponse({"error": "invalid_client", "error_description": f"bad secret {password}"}, 401)
        token = f"at-{next(self._numbers)}-CANARY"
        self.valid.add(token)
        return JSONResponse({"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in})

    async def _case(self, request: Request) -> Response:
        seen = await _seen(request)
        self.requests.append(seen)
        if _bearer(request) not in self.valid:
            return JSONResponse({"error": "invalid_token"}, 401, {"www-authenticate": 'Bearer error="invalid_token"'})
        case_id = request.path_params["case_id"]
        if request.method == "DELETE":
            return Response(status_code=204)
        return JSONResponse({"case": {"id": case_id, "status": "updated"}, "echo": seen.json() if seen.body else None})

    async def _create(self, request: Request) -> Response:
        seen = await _seen(request)
        self.requests.append(seen)
        if _bearer(request) not in self.valid:
            return JSONResponse({"error": "invalid_token"}, 401)
        return JSONResponse({"id": f"{4470 + next(self._numbers)}", "success": True}, 201)

    async def _elsewhere(self, request: Request) -> Response:
        self.requests.append(await _seen(request))
        return JSONResponse({"error": "not here"}, 404)

    def paths(self) -> list[str]:
        return [r.raw_path for r in self.requests]


# ── Google Sheets (values.get, values.append) and the service account token exchange ──────────────

_A1 = re.compile(r"^(?:'((?:[^']|'')+)'|([^!]+))!([A-Z]{1,3})(?:\d+)?(?::([A-Z]{1,3})(?:\d+)?)?$")


def column_number(letters: str) -> int:
    number = 0
    for char in letters:
        number = number * 26 + ord(char) - 64
    return number


@dataclass
class Sheets:
    """POST /token verifies the assertion's RS256 signature with the service account's public key
    (google-auth), its issuer, audience and scope; /v4/spreadsheets/{id}/values/{range} (GET) and
    /v4/spreadsheets/{id}/values/{range}:append (POST, RAW) work on an in-memory grid per sheet.
    `slow_appends` makes the next appends write the row and then answer only after that many seconds."""

    public_key_pem: bytes
    issuer: str
    spreadsheet_id: str = "1SheetAbc_123"
    audience: str = ""  # the token endpoint's URL, set when served
    grids: dict[str, list[list[Any]]] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    token_requests: list[Seen] = field(default_factory=list)
    valid: set[str] = field(default_factory=set)
    slow_appends: list[float] = field(default_factory=list)
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/token", self._token, methods=["POST"]),
                Route("/v4/spreadsheets/{sid}/values/{rng:path}", self._values, methods=["GET", "POST"]),
            ]
        )

    async def _token(self, request: Request) -> Response:
        seen = await _seen(request)
        self.token_requests.append(seen)
        form = {k: v[0] for k, v in parse_qs(seen.body.decode()).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        try:
            claims = jwt.decode(form.get("assertion", ""), certs=self.public_key_pem, audience=self.audience)
        except ValueError as exc:
            return JSONResponse({"error": "invalid_grant", "error_description": str(exc)}, 400)
        if claims.get("iss") != self.issuer or "https://www.googleapis.com/auth/spreadsheets" not in claims["scope"]:
            return JSONResponse({"error": "invalid_scope"}, 400)
        token = f"ya29.sheet-{next(self._numbers)}"
        self.valid.add(token)
        return JSONResponse({"access_token": token, "token_type": "Bearer", "expires_in": 3599})

    async def _values(self, request: Request) -> Response:
        seen = await _seen(request)
        self.requests.append(seen)
        if _bearer(request) not in self.valid:
            return JSONResponse({"error": {"code": 401, "status": "UNAUTHENTICATED"}}, 401)
        if request.path_params["sid"] != self.spreadsheet_id:
            return JSONResponse({"error": {"code": 404, "status": "NOT_FOUND"}}, 404)
        rng = request.path_params["rng"]
        if request.method == "POST" and rng.endswith(":append"):
            return await self._append(rng.removesuffix(":append"), seen)
        if request.method == "GET":
            return self._get(rng, seen)
        return JSONResponse({"error": {"code": 400}}, 400)

    def _parse(self, rng: str) -> tuple[str, int, int] | None:
        match = _A1.match(rng)
        if not match:
            return None
        sheet = (match.group(1) or "").replace("''", "'") or match.group(2)
        first = column_number(match.group(3))
        return sheet, first, column_number(match.group(4) or match.group(3))

    def _get(self, rng: str, seen: Seen) -> Response:
        parsed = self._parse(rng)
        if parsed is None or parsed[0] not in self.grids:
            return JSONResponse({"error": {"code": 400, "message": "Unable to parse range"}}, 400)
        sheet, first, last = parsed
        rows = [row[first - 1 : last] for row in self.grids[sheet]]
        if seen.query.get("majorDimension") == ["COLUMNS"]:
            width = last - first + 1
            columns = [[row[i] if i < len(row) else "" for row in rows] for i in range(width)]
            return JSONResponse({"range": rng, "majorDimension": "COLUMNS", "values": columns})
        return JSONResponse({"range": rng, "majorDimension": "ROWS", "values": rows})

    async def _append(self, rng: str, seen: Seen) -> Response:
        parsed = self._parse(rng)
        if parsed is None or parsed[0] not in self.grids or seen.query.get("valueInputOption") != ["RAW"]:
            return JSONResponse({"error": {"code": 400, "message": "bad append"}}, 400)
        sheet = parsed[0]
        [row] = seen.json()["values"]
        self.grids[sheet].append(row)
        number = len(self.grids[sheet])
        if self.slow_appends:
            await asyncio.sleep(self.slow_appends.pop(0))  # written, but the answer comes late
        quoted = sheet.replace("'", "''")
        updated = f"'{quoted}'!A{number}:{_letters(len(row))}{number}"
        return JSONResponse({"spreadsheetId": self.spreadsheet_id, "updates": {"updatedRange": updated}})

    def appends(self) -> list[Seen]:
        return [r for r in self.requests if r.method == "POST"]


def _letters(number: int) -> str:
    out = ""
    while number:
        number, rest = divmod(number - 1, 26)
        out = chr(65 + rest) + out
    return out


# ── Slack and Teams ───────────────────────────────────────────────────────────────────────────────

BOT_PROFILE = {
    "id": "B0",
    "app_id": "A0",
    "name": "postcall",
    "icons": {f"image_{n}": f"https://a.slack-edge.com/80588/img/plugins/app/bot_{n}.png" for n in (36, 48, 72)},
    "deleted": False,
    "updated": 1712345678,
    "team_id": "T1",
}


@dataclass
class Chat:
    """Slack's POST /api/chat.postMessage (bot token) and an incoming webhook POST /services/T1/B1/x, and
    a Teams incoming webhook POST /webhookb2/teams. `busy` answers that many requests with 429 and
    Retry-After first; `slack_error` answers chat.postMessage with {"ok": false, "error": ...}, else the
    answer echoes the message back, as Slack's does. Teams answers a message over 28 KB with 413; with
    `connector`, as a legacy Office 365 connector does: 200 whatever became of the message, "1" when it was
    posted and "Webhook message delivery failed with error: ... HTTP error <status> ..." when not
    (MicrosoftDocs/msteams-docs#1810, #9064)."""

    bot_token: str = "xoxb-CANARY-1"
    busy: int = 0
    retry_after: str = "7"
    slack_error: str | None = None
    ts: str = "1712345678.000100"  # the posted message's id, as chat.postMessage answers it
    connector: bool = False  # Teams answers as a legacy Office 365 connector
    teams_error: int | None = None  # the status Teams answers the connector with (400: a card it refuses)
    # a connector's failure that names no status: "Error contacting Microsoft Teams endpoint" (msteams-docs#1736)
    connector_failure: str | None = None
    requests: list[Seen] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/chat.postMessage", self._post_message, methods=["POST"]),
                Route("/services/T1/B1/x", self._webhook, methods=["POST"]),
                Route("/webhookb2/teams", self._teams, methods=["POST"]),
            ]
        )

    async def _limited(self, request: Request) -> Response | None:
        self.requests.append(await _seen(request))
        if self.busy:
            self.busy -= 1
            return Response("rate limited", 429, {"retry-after": self.retry_after})
        return None

    async def _post_message(self, request: Request) -> Response:
        if (limited := await self._limited(request)) is not None:
            return limited
        if _bearer(request) != self.bot_token:
            return JSONResponse({"ok": False, "error": "invalid_auth"})
        if self.slack_error:
            return JSONResponse({"ok": False, "error": self.slack_error})
        sent, ts = self.requests[-1].json(), self.ts
        # as Slack does: the posted message comes back, its text and blocks with it, and "/" escaped
        message: dict[str, Any] = {"user": "U0", "type": "message", "ts": ts, "bot_id": "B0", "app_id": "A0"}
        message |= {"text": sent.get("text", ""), "blocks": sent.get("blocks", []), "bot_profile": BOT_PROFILE}
        answer = orjson.dumps({"ok": True, "channel": sent.get("channel"), "ts": ts, "message": message})
        return Response(answer.replace(b"/", b"\\/"), 200, media_type="application/json")

    async def _webhook(self, request: Request) -> Response:
        return await self._limited(request) or Response("ok", 200)

    async def _teams(self, request: Request) -> Response:
        answer = await self._limited(request)
        if answer is None and len(self.requests[-1].body) > 28 * 1024:
            answer = Response("Microsoft Teams endpoint returned HTTP error 413", 413)
        if answer is None and self.teams_error is not None:
            answer = Response(f"Microsoft Teams endpoint returned HTTP error {self.teams_error}", self.teams_error)
        if not self.connector:
            return answer or Response(status_code=202)
        if answer is None and self.connector_failure is not None:
            return Response(f"Webhook message delivery failed with error: {self.connector_failure}", 200)
        if answer is None:
            return Response("1", 200)
        failed = "Webhook message delivery failed with error: Microsoft Teams endpoint returned HTTP error"
        return Response(f"{failed} {answer.status_code} with ContextId tcid=0,server=msgapi-1,cv=x.0..", 200)


# ── A vendor's REST API, for the recipes in docs/integrations.md ──────────────────────────────────


@dataclass
class Vendor:
    """Any path: checks the credential (a fixed bearer token, basic credentials, or a token it issued
    at `token_path` for OAuth2 client credentials in the form) and answers `answer(method, path)`."""

    bearer: str | None = None
    basic: tuple[str, str] | None = None
    client: tuple[str, str] | None = None  # OAuth2 client id and secret
    token_path: str = "/services/oauth2/token"
    answers: dict[str, tuple[int, Any]] = field(default_factory=dict)  # method -> (status, JSON or None)
    requests: list[Seen] = field(default_factory=list)
    token_requests: list[Seen] = field(default_factory=list)
    issued: set[str] = field(default_factory=set)

    def app(self) -> Starlette:
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        return Starlette(routes=[Route("/{rest:path}", self._any, methods=methods)])

    async def _any(self, request: Request) -> Response:
        seen = await _seen(request)
        if request.url.path == self.token_path and self.client is not None:
            self.token_requests.append(seen)
            form = {k: v[0] for k, v in parse_qs(seen.body.decode()).items()}
            if (form.get("grant_type"), form.get("client_id"), form.get("client_secret")) != (
                "client_credentials", *self.client,
            ):  # fmt: skip
                return JSONResponse({"error": "invalid_client"}, 400)
            token = f"00D-session-{len(self.issued) + 1}"
            self.issued.add(token)
            return JSONResponse({"access_token": token, "token_type": "Bearer", "issued_at": "1712345678000"})
        self.requests.append(seen)
        if not self._authorized(request.headers.get("authorization", "")):
            return JSONResponse([{"errorCode": "INVALID_SESSION_ID"}], 401)
        status, body = self.answers.get(request.method, (200, {}))
        return Response(status_code=status) if body is None else JSONResponse(body, status)

    def _authorized(self, header: str) -> bool:
        if self.basic is not None:
            expected = base64.b64encode(":".join(self.basic).encode()).decode()
            return header == f"Basic {expected}"
        token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else None
        return token is not None and (token == self.bearer or token in self.issued)
