"""A voice platform posting conversations to the ingress, as vendors do: each webhook again until it is
answered 2xx (after a cut connection, a refused one, a timeout, a 5xx or a 429), so that a kill -9 of the
ingress between the broker's acknowledgement and its 2xx is followed by a retry of a conversation already
published. Other 4xx answers are refusals: the webhook is not sent again (and its conversation will be
missing downstream)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx

from schemas.events import ConversationEnded
from services.common import codec
from services.devkit.webhooks import signed_headers


class Vendor:
    def __init__(self, url: str, secret: str, *, spread: float = 30, concurrency: int = 16, pause: float = 1) -> None:
        self.url, self.secret, self.spread, self.pause = url, secret, spread, pause
        self.slots = asyncio.Semaphore(concurrency)
        self.accepted = 0  # webhooks answered 2xx
        self.retries = 0  # webhooks sent again
        self.refused: list[str] = []  # conversation ids answered 4xx (not 429)

    async def send(self, events: Sequence[ConversationEnded]) -> None:
        """Every event, started evenly over `spread` seconds (the conversations end over time)."""
        async with httpx.AsyncClient(timeout=10) as client:
            await asyncio.gather(*(self._one(client, i * self.spread / len(events), e) for i, e in enumerate(events)))

    async def _one(self, client: httpx.AsyncClient, after: float, event: ConversationEnded) -> None:
        await asyncio.sleep(after)
        body = codec.encode(event)
        message_id = f"msg_{event.event_id}"  # the same webhook-id on every retry, as Standard Webhooks senders do
        while True:
            async with self.slots:
                headers = signed_headers("native", body, self.secret, message_id=message_id)
                try:
                    answer = await client.post(self.url, content=body, headers=headers)
                    status = answer.status_code
                except httpx.TransportError:
                    status = None
            if status is not None and 200 <= status < 300:
                self.accepted += 1
                return
            if status is not None and 400 <= status < 500 and status != 429:
                self.refused.append(event.conversation_id)
                return
            self.retries += 1
            await asyncio.sleep(self.pause)
