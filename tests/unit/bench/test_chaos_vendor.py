"""The chaos run's vendor posts each conversation to the ingress until it is answered 2xx, under the same
webhook-id, through 5xx, 429 and cut connections; a 4xx refusal is not sent again."""

from __future__ import annotations

from bench.chaos.conversations import generate
from bench.chaos.vendor import Vendor
from services.devkit.sink import Reply, Sink
from services.devkit.webhooks import DEMO_SECRETS

SECRET = DEMO_SECRETS["native"]


async def test_a_webhook_is_sent_again_until_it_is_answered_2xx_under_one_webhook_id() -> None:
    event, refused = generate(2, seed=1)
    async with Sink([SECRET], quiet=True) as sink:
        sink.script("/ok", Reply(503), Reply(reset=True), Reply(429))
        sink.script("/no", then=Reply(422))
        ok, no = Vendor(sink.url("/ok"), SECRET, pause=0.01), Vendor(sink.url("/no"), SECRET, pause=0.01)
        await ok.send([event])
        await no.send([refused])
    assert (ok.accepted, ok.retries, ok.refused) == (1, 3, [])
    assert (no.accepted, no.retries, no.refused) == (0, 0, [refused.conversation_id])
    sent = [r for r in sink.received if r["path"] == "/ok"]
    assert len(sent) == 4 and {r["webhook_id"] for r in sent} == {f"msg_{event.event_id}"}
    assert all(r["verified"] for r in sink.received)
    assert sent[-1]["body"]["conversation_id"] == event.conversation_id
