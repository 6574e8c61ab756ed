"""Signed vendor webhook requests for the demo, the tests and the benchmark: the bytes and headers each
platform would send, with the demo endpoints file's public secrets (examples/ingress/endpoints.yaml).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
from standardwebhooks import Webhook

from services.ingress.signatures import VapiHmacVerifier, elevenlabs_signature, retell_signature

ROOT = Path(__file__).resolve().parents[2]
WEBHOOK_EXAMPLES = ROOT / "examples" / "webhooks"
DEMO_ENDPOINTS = ROOT / "examples" / "ingress" / "endpoints.yaml"
DEMO_ENDPOINT = "copperline"
# Public demo values, the endpoints file's demo_default: never use them anywhere real.
DEMO_SECRETS = {
    "vapi": "demo-vapi-hmac-secret-4f2a",
    "retell": "key_demo_retell_0b9c1d2e3f",
    "elevenlabs": "wsec_demo_elevenlabs_7a6b5c4d",
    "native": "whsec_C21PUs3I6bfW2xkyUgSJ9NYZAC1sv8tB",
}
# The one example per vendor format that `make run` / `make demo` send through the ingress.
DEMO_WEBHOOKS = (
    ("vapi", "vapi/phone-inbound-with-analysis.json"),
    ("retell", "retell/phone-voicemail-analyzed.json"),
    ("elevenlabs", "elevenlabs/web-with-analysis.json"),
)


def signed_headers(
    platform: str, body: bytes, secret: str, now: float | None = None, message_id: str | None = None
) -> dict[str, str]:
    """The authentication headers `platform` sends with `body` (Vapi: its default HMAC credential).
    Native: `message_id` is the webhook-id (a sender keeps it on every retry; default a new one)."""
    moment = time.time() if now is None else now
    headers = {"content-type": "application/json"}
    if platform == "vapi":
        headers |= VapiHmacVerifier([secret]).sign(body, secret, int(moment * 1000))
    elif platform == "retell":
        headers["x-retell-signature"] = retell_signature(body, secret, int(moment * 1000))
    elif platform == "elevenlabs":
        headers["elevenlabs-signature"] = elevenlabs_signature(body, secret, int(moment))
    elif platform == "native":
        message_id = message_id or f"msg_{uuid.uuid4().hex}"
        signature = Webhook(secret).sign(message_id, datetime.fromtimestamp(moment, UTC), body)
        headers |= {"webhook-id": message_id, "webhook-timestamp": str(int(moment)), "webhook-signature": signature}
    else:
        raise ValueError(f"unknown platform {platform!r}")
    return headers


def example(name: str) -> bytes:
    return (WEBHOOK_EXAMPLES / name).read_bytes()


async def wait_ready(url: str, timeout: float = 60.0) -> None:
    """Until the ingress answers /readyz (Kafka reachable) with 200."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=3) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.3)
    raise TimeoutError(f"the ingress at {url} was not ready within {timeout:.0f} s")


async def send_demo_webhooks(url: str) -> list[tuple[str, httpx.Response]]:
    """POST each demo example, signed as its platform signs it, to the demo endpoint of `url`."""
    out = []
    async with httpx.AsyncClient(timeout=30) as client:
        for platform, name in DEMO_WEBHOOKS:
            body = example(name)
            headers = signed_headers(platform, body, DEMO_SECRETS[platform])
            out.append(
                (
                    platform,
                    await client.post(f"{url}/webhooks/{platform}/{DEMO_ENDPOINT}", content=body, headers=headers),
                )
            )
    return out
