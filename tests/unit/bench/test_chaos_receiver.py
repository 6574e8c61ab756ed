"""The chaos receiver injects every fault its run claims, over real HTTP: 500s, 429s, answers stalled or
trickled past the dispatcher's timeout (counted as deliveries: the work was done) and connections reset
before an answer (not counted)."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import orjson

from bench.chaos.__main__ import FAULTS, FaultyReceiver
from bench.chaos.conversations import Action
from services.devkit.sink import DEMO_SECRETS
from services.dispatcher.signing import Signer


async def test_every_fault_reaches_the_client_and_only_answered_work_counts_as_delivered() -> None:
    expected: set[Action] = {(f"c{i}", "every-call", 0) for i in range(300)}
    receiver = await FaultyReceiver(11, expected).start()
    signer = Signer([DEMO_SECRETS[0]])
    seen: Counter[str] = Counter()

    async def send(client: httpx.AsyncClient, i: int) -> None:
        body = orjson.dumps({"conversation": f"c{i}", "flow": "every-call", "action": 0})
        try:
            answer = await client.post(receiver.url("/a"), content=body, headers=signer.headers(f"act-{i}", body))
            seen[str(answer.status_code)] += 1
        except httpx.TimeoutException:
            seen["timeout"] += 1
        except (httpx.RemoteProtocolError, httpx.ReadError):
            seen["reset"] += 1

    try:
        # 50 at a time: 300 connecting at once overflow the listen backlog and time out before they are read
        limits, timeout = httpx.Limits(max_connections=50), httpx.Timeout(1.5, pool=60)
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
            await asyncio.gather(*(send(client, i) for i in range(300)))
    finally:
        await receiver.stop()
    assert set(receiver.injected) == set(FAULTS), receiver.injected
    injected = receiver.injected
    assert sum(seen.values()) == 300 and seen["reset"] > 0  # (on a starved loop some are seen as timeouts)
    answered = 300 - injected["500"] - injected["429"] - injected["reset"]  # stalled and trickled ones too
    assert receiver.tally.summary()["delivered_actions"] == answered, (receiver.tally.summary(), seen, injected)
