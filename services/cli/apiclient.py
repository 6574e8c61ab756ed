"""The query API from the command line: `--api URL` / POSTCALL_API_URL and `--token` / POSTCALL_API_TOKEN.

`postcall explain` and `postcall reextract` use the store through it when it is configured (fast,
every attempt, beyond the topics' retention) and the topics otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
import typer

from services.common.ssrf import UrlRefused, checked_http_url

Api = Annotated[
    str | None,
    typer.Option("--api", help="The query API, e.g. http://127.0.0.1:8400 (default: POSTCALL_API_URL): use the store."),
]
Token = Annotated[
    str | None, typer.Option("--token", help="Bearer token for the query API (default: POSTCALL_API_TOKEN).")
]


HIDDEN = "***"  # a password in the --api URL, as messages show it


class ApiUnreachable(Exception):
    """Raised when nothing answers at the API's address (connection refused, timeout, DNS)."""


class ApiRefused(Exception):
    """Raised when the API answered with an error (the message names the status and its detail)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status


@dataclass(frozen=True)
class ApiClient:
    base: str
    token: str | None = None
    timeout: float = 30.0

    @classmethod
    def configured(cls, api: str | None, token: str | None) -> ApiClient | None:
        """The client --api/POSTCALL_API_URL and --token/POSTCALL_API_TOKEN name, None without an address;
        an address or a token that cannot be used is a usage error naming where it came from."""
        base = api or os.environ.get("POSTCALL_API_URL")
        if not base:
            return None
        _check_url(base, "--api" if api else "POSTCALL_API_URL")
        secret = token or os.environ.get("POSTCALL_API_TOKEN") or None
        if secret is not None and not (secret.isascii() and secret.isprintable() and " " not in secret):
            raise typer.BadParameter(
                "a token is printable ASCII without spaces, as `postcall api token create` prints it; this one "
                "holds another character (a line break, a space, a pasted quote?)",
                param_hint="--token" if token else "POSTCALL_API_TOKEN",
            )
        return cls(base.rstrip("/"), secret)

    @property
    def shown(self) -> str:
        """The address as messages show it: a password in it as ***."""
        url = httpx.URL(self.base)
        return str(url.copy_with(username=url.username, password=HIDDEN)) if url.password else self.base

    def get(self, path: str, **params: Any) -> Any:
        return self._call("GET", path, params=params)

    def post(self, path: str, body: Any, timeout: float | None = None) -> Any:
        return self._call("POST", path, json=body, timeout=timeout)

    def _call(self, method: str, path: str, timeout: float | None = None, **kwargs: Any) -> Any:
        headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            with httpx.Client(timeout=timeout or self.timeout, trust_env=False) as client:
                answer = client.request(method, f"{self.base}/api/v1{path}", headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise ApiUnreachable(f"the query API at {self.shown} does not answer ({type(exc).__name__})") from None
        try:
            body = answer.json()
        except ValueError:
            raise ApiRefused(answer.status_code, f"not JSON; is {self.shown} the query API?") from None
        # a 503 whose body is an operation's result (Kafka failed part-way) is an answer; any other
        # error, the store's 503 among them, is a refusal
        if answer.status_code >= 400 and (answer.status_code != 503 or not _operation_result(body)):
            raise ApiRefused(
                answer.status_code, _detail(body) + (self._token_hint() if answer.status_code == 401 else "")
            )
        return body

    def _token_hint(self) -> str:
        """What the command's user does about a 401: the API's own message speaks of HTTP headers."""
        if self.token:
            return " (the token of --token or POSTCALL_API_TOKEN; `postcall api token list` shows the store's)"
        return (
            " (give the command a token with --token or POSTCALL_API_TOKEN; "
            "`postcall api token create NAME --role viewer` makes one)"
        )


def _check_url(base: str, where: str) -> None:
    try:
        checked_http_url(base)
    except UrlRefused as exc:
        raise typer.BadParameter(
            f"{exc}; the query API's address is like http://127.0.0.1:8400", param_hint=where
        ) from None


def _operation_result(body: Any) -> bool:
    return isinstance(body, dict) and "detail" not in body and "error" in body


def _detail(body: Any) -> str:
    detail = body.get("detail", body) if isinstance(body, dict) else body
    return detail if isinstance(detail, str) else str(detail)[:300]
