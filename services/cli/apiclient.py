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

Api = Annotated[
    str | None,
    typer.Option("--api", help="The query API, e.g. http://127.0.0.1:8400 (default: POSTCALL_API_URL): use the store."),
]
Token = Annotated[
    str | None, typer.Option("--token", help="Bearer token for the query API (default: POSTCALL_API_TOKEN).")
]


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
        base = api or os.environ.get("POSTCALL_API_URL")
        if not base:
            return None
        return cls(base.rstrip("/"), token or os.environ.get("POSTCALL_API_TOKEN") or None)

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
            raise ApiUnreachable(f"the query API at {self.base} does not answer ({type(exc).__name__})") from None
        try:
            body = answer.json()
        except ValueError:
            raise ApiRefused(answer.status_code, f"not JSON; is {self.base} the query API?") from None
        # a 503 whose body is an operation's result (Kafka failed part-way) is an answer; any other
        # error, the store's 503 among them, is a refusal
        if answer.status_code >= 400 and (answer.status_code != 503 or not _operation_result(body)):
            raise ApiRefused(answer.status_code, _detail(body))
        return body


def _operation_result(body: Any) -> bool:
    return isinstance(body, dict) and "detail" not in body and "error" in body


def _detail(body: Any) -> str:
    detail = body.get("detail", body) if isinstance(body, dict) else body
    return detail if isinstance(detail, str) else str(detail)[:300]
