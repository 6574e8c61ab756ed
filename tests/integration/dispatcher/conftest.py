"""Real receivers for the dispatcher's integration tests: the demo sink on a free port of 127.0.0.1,
and the dispatcher's executors wired exactly as in services/dispatcher/__main__.py."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from schemas.events import EmailRequested, WebhookRequested
from services.devkit.sink import Sink
from services.dispatcher import destinations
from services.dispatcher.__main__ import open_executors
from services.dispatcher.executors import Executors
from services.dispatcher.registry import Registry
from services.dispatcher.settings import DispatcherSettings

SECRET = "whsec_Lg6OyBH/4llMLhZdUkX1EPJtJTzZLIUK2KAo3uw+VOA="

Stack = Callable[..., AbstractAsyncContextManager[tuple[Executors, Registry]]]


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    async with Sink([SECRET], smtp_port=0, quiet=True) as s:
        yield s


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    """Executors over real clients for a destinations file text (with the sink's port filled in)."""

    @asynccontextmanager
    async def make(
        yaml: str, env: dict[str, str] | None = None, max_wait: float = 0.5, **more: Any
    ) -> AsyncIterator[tuple[Executors, Registry]]:
        path = tmp_path / "destinations.yaml"
        path.write_text(yaml)
        settings = DispatcherSettings(
            destinations_file=path, retry_after_floor_seconds=5, max_wait_seconds=max_wait, **more
        )
        registry = Registry(
            destinations.load(path, {"SECRET": SECRET, **(env or {})}),
            default_timeout=settings.default_timeout_seconds,
            max_wait_seconds=settings.max_wait_seconds,
            smtp_timeout=settings.smtp_deadline,
        )
        async with open_executors(settings, registry) as executors:
            yield executors, registry

    return make


def http_destination(name: str, url: str, **extra: Any) -> str:
    lines = [f"  - name: {name}", "    kind: http", f"    url: {url}", "    signing_secrets: [{secret_env: SECRET}]"]
    lines += [f"    {k}: {v}" for k, v in {"allow_private": "true", **extra}.items()]
    return "\n".join(lines) + "\n"


def webhook(action_id: str, destination: str, body: Any = None) -> WebhookRequested:
    return WebhookRequested(
        action_id=action_id,
        conversation_id="conv-1",
        agent_id="agent",
        flow_id="flow",
        action_index=0,
        config_revision="rev",
        requested_at=datetime.now(UTC),
        source_event_id="evt",
        destination=destination,
        body=body if body is not None else {"n": action_id},
    )


def email_action(action_id: str, destination: str | None = None, html: str | None = None) -> EmailRequested:
    return EmailRequested(
        action_id=action_id,
        conversation_id="conv-1",
        agent_id="agent",
        flow_id="flow",
        action_index=0,
        config_revision="rev",
        requested_at=datetime.now(UTC),
        source_event_id="evt",
        destination=destination,
        to=["support@example.com", "lead@example.com"],
        subject="Callback requested",
        text="+4930123 asked for a callback.",
        html=html,
    )


def self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context and its certificate (CN/SAN 127.0.0.1, localhost), made with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context, cert
