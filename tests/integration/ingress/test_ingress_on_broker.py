"""The ingress as it runs (`python -m services.ingress`), over real HTTP, publishing to a real broker:
what lands on postcall.conversation-ended.v1 for each vendor, once; what hostile requests get; and a
Kafka outage (503, then accepted after recovery, published once).

The end-to-end path on to the three services and the demo sink, for each vendor, is `make demo`
(tests/integration/test_demo.py), which sends one example per vendor format through the ingress.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from schemas.events import ConversationEnded
from schemas.topics import CONVERSATION_ENDED, Topic, dead_letter_topic, retry_topic
from services.common.kafka import ensure_topics
from services.common.runtime import Runtime
from services.common.settings import KafkaSettings, RuntimeSettings
from services.devkit.kafka import KafkaCluster, free_port
from services.devkit.webhooks import DEMO_ENDPOINTS, DEMO_SECRETS, example, signed_headers
from services.extractor.handler import Extractor
from services.extractor.metrics import DUPLICATES
from services.extractor.settings import ExtractorSettings
from tests.integration.extractor.conftest import on_topics
from tests.support.kafka import Received, create_topics, read_all, unique
from tests.support.procs import Proc, start
from tests.unit.extractor.conftest import SUPPORT_FIELDS, spec

CASES = [
    ("vapi", "vapi/phone-inbound-with-analysis.json", "/vapi/acct-copperline"),
    ("vapi", "vapi/not-connected.json", "/vapi/acct-copperline"),
    ("retell", "retell/phone-voicemail-analyzed.json", "/retell/acct-copperline"),
    ("retell", "retell/not-connected-analyzed.json", "/retell/acct-copperline"),
    ("elevenlabs", "elevenlabs/web-with-analysis.json", "/elevenlabs/acct-copperline"),
    ("elevenlabs", "elevenlabs/call-initiation-failure.json", "/elevenlabs/acct-copperline"),
    ("native", "../conversations/0007-appointment-booked.json", "/retell/acct-copperline"),
]


@dataclass
class Ingress:
    proc: Proc
    url: str

    def post(self, platform: str, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        signed = signed_headers(platform, body, DEMO_SECRETS[platform]) if headers is None else headers
        return httpx.post(f"{self.url}/webhooks/{platform}/copperline", content=body, headers=signed, timeout=30)

    def wait(self, path: str, status: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.alive(), self.proc.output()[-3000:]
            try:
                if httpx.get(f"{self.url}{path}", timeout=3).status_code == status:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        pytest.fail(f"{path} never answered {status}:\n{self.proc.output()[-3000:]}")


def start_ingress(bootstrap: str, tmp: Path, **extra: str) -> Ingress:
    port = free_port()
    env = {
        "POSTCALL_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "POSTCALL_INGRESS__PORT": str(port),
        "POSTCALL_INGRESS__HOST": "127.0.0.1",
        "POSTCALL_INGRESS__ENDPOINTS_FILE": str(DEMO_ENDPOINTS),
        "POSTCALL_INGRESS__MAX_BODY_BYTES": str(1024 * 1024),
        **extra,
    }
    ingress = Ingress(start("services.ingress", env, work_dir=tmp), f"http://127.0.0.1:{port}")
    ingress.wait("/healthz", 200)
    return ingress


@pytest.fixture(scope="module")
def ingress(kafka: KafkaSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ingress]:
    asyncio.run(ensure_topics(kafka, [Topic(CONVERSATION_ENDED, "test", 3, 3_600_000)], replication=1))
    running = start_ingress(kafka.bootstrap_servers, tmp_path_factory.mktemp("ingress"))
    running.wait("/readyz", 200)
    try:
        yield running
    finally:
        running.proc.term(timeout=30)


def records_of(kafka: KafkaSettings, event_id: str, expect: int = 1, within: float = 20) -> list[Received]:
    found: list[Received] = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = [r for r in asyncio.run(read_all(kafka, CONVERSATION_ENDED)) if r.headers.get("ce_id") == event_id]
        if len(found) >= expect:
            break
        time.sleep(0.3)
    return found


@pytest.mark.parametrize(("platform", "name", "source"), CASES)
def test_each_vendor_payload_lands_once_with_meaningful_cloudevents_headers(
    ingress: Ingress, kafka: KafkaSettings, platform: str, name: str, source: str
) -> None:
    answer = ingress.post(platform, example(name))
    assert answer.status_code == 200, answer.text
    published = answer.json()
    assert published["status"] in ("published", "duplicate")
    (record,) = records_of(kafka, published["event_id"])
    event = ConversationEnded.model_validate_json(record.value)
    assert (event.event_id, event.conversation_id) == (published["event_id"], published["conversation_id"])
    assert (record.partition, record.offset) == (published["partition"], published["offset"])
    assert record.key == event.conversation_id
    assert record.headers["ce_source"] == source
    assert record.headers["ce_subject"] == event.conversation_id
    assert record.headers["ce_time"] == event.ended_at.isoformat().replace("+00:00", "Z")
    assert record.headers["ce_type"] == "dev.postcall.conversation.ended.v1"
    assert record.headers["content-type"] == "application/json"
    assert event.account.id == "acct-copperline"


def test_a_vendor_retry_and_a_concurrent_duplicate_are_published_once(ingress: Ingress, kafka: KafkaSettings) -> None:
    body = example("retell/web-call-ended.json")  # not in publish_on: ignored, acknowledged
    assert ingress.post("retell", body).json()["status"] == "ignored"
    body = orjson.dumps({**orjson.loads(example("retell/phone-voicemail-analyzed.json")), "event": "call_analyzed"})
    body = body.replace(b"Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6", b"dup-call-0001")

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            url = f"{ingress.url}/webhooks/retell/copperline"
            sends = [
                client.post(url, content=body, headers=signed_headers("retell", body, DEMO_SECRETS["retell"]))
                for _ in range(3)
            ]
            return await asyncio.gather(*sends)

    answers = [*asyncio.run(burst()), ingress.post("retell", body)]
    assert {a.status_code for a in answers} == {200}
    assert sorted(a.json()["status"] for a in answers).count("published") == 1
    # every answer is back and a publish is answered only once the broker acknowledged it (acks=all): a second
    # copy sent by any of these requests would be on the topic within milliseconds, 3 s is a wide margin
    assert len(records_of(kafka, "retell:dup-call-0001:call_analyzed", expect=2, within=3)) == 1


def test_hostile_requests_get_a_clear_4xx_and_publish_nothing(ingress: Ingress, kafka: KafkaSettings) -> None:
    before = len(asyncio.run(read_all(kafka, CONVERSATION_ENDED)))
    huge = b'{"pad": "' + b"x" * (20 * 1024 * 1024) + b'"}'
    started = time.monotonic()
    try:
        answer = ingress.post("vapi", huge, headers={"content-type": "application/json"})
        assert answer.status_code == 413 and answer.json()["error"] == "payload_too_large"
    except httpx.TransportError:
        pass  # the server may close the connection on the unread rest of the 20 MB: refused either way
    assert time.monotonic() - started < 20

    body = example("vapi/phone-inbound-with-analysis.json")
    cases = [
        (b'{"message": ', None, 400, "invalid_json"),
        (b'{"message": "\xc3\x28"}', None, 400, "invalid_utf8"),
        (body, {"x-signature": "=,;v0=%!" * 512, "x-timestamp": "1"}, 401, "invalid_signature"),
        (body, signed_headers("vapi", body, DEMO_SECRETS["vapi"], now=time.time() - 86_400), 401, "invalid_signature"),
        (body, signed_headers("vapi", body, "not-the-secret"), 401, "invalid_signature"),
        (
            body.replace(b"Priya", b"Pryia"),
            signed_headers("vapi", body, DEMO_SECRETS["vapi"]),
            401,
            "invalid_signature",
        ),
        (b'{"message": {"type": "end-of-call-report"}}', None, 422, "invalid_payload"),
    ]
    for raw, headers, status, error in cases:
        answer = ingress.post("vapi", raw, headers)
        assert answer.status_code == status, (raw[:40], answer.text)
        assert answer.json()["error"] == error and answer.json()["message"]
    assert ingress.post("vapi", body).status_code == 200, "still serving after the hostile requests"
    after = asyncio.run(read_all(kafka, CONVERSATION_ENDED))
    assert len(after) - before <= 1  # only the last, valid one (or none when it was already published)
    logged = ingress.proc.output()
    assert logged.count('"outcome":"unauthorized"') == 4  # each refusal logged, with what was wrong
    assert logged.count('"client":"127.0.0.1:') >= len(cases), "each line names the connection's peer"
    assert not [name for name, secret in DEMO_SECRETS.items() if secret in logged], "a secret reached the log"


def test_an_event_too_large_for_what_the_services_read_is_413_with_both_sizes_and_not_published(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    """At the default limits a body under max_body_bytes (4 MiB) can map to an event whose extracted record
    (the event plus its extraction) is over the 4 MiB the router reads: it was answered 200, then
    dead-lettered downstream. Now 413 naming both sizes, and nothing published."""
    asyncio.run(ensure_topics(kafka, [Topic(CONVERSATION_ENDED, "test", 3, 3_600_000)], replication=1))
    ingress = start_ingress(kafka.bootstrap_servers, tmp_path, POSTCALL_INGRESS__MAX_BODY_BYTES=str(4 * 1024 * 1024))
    try:
        ingress.wait("/readyz", 200)
        payload = orjson.loads(example("vapi/phone-inbound-with-analysis.json"))
        payload["message"]["call"]["id"] = call_id = f"big-{uuid.uuid4()}"
        payload["message"]["artifact"]["messages"][-1]["message"] = "word " * (750 * 1024)
        body = orjson.dumps(payload)
        assert 3.6 * 1024 * 1024 < len(body) < 4 * 1024 * 1024  # under the body limit
        before = len(asyncio.run(read_all(kafka, CONVERSATION_ENDED)))
        answer = ingress.post("vapi", body)
        assert answer.status_code == 413 and answer.json()["error"] == "payload_too_large", answer.text
        assert "bytes once mapped; at most 3,670,016 are accepted" in answer.json()["message"]
        assert "4,194,304 bytes the services read" in answer.json()["message"]
        assert call_id not in str(asyncio.run(read_all(kafka, CONVERSATION_ENDED))[before:])
    finally:
        ingress.proc.term(timeout=30)


def test_kafka_down_is_503_then_accepted_after_recovery_and_published_once(tmp_path: Path) -> None:
    cluster = KafkaCluster(size=1).start()
    kafka = KafkaSettings(bootstrap_servers=cluster.bootstrap_servers)
    ingress: Ingress | None = None
    try:
        asyncio.run(ensure_topics(kafka, [Topic(CONVERSATION_ENDED, "test", 3, 3_600_000)], replication=1))
        ingress = start_ingress(kafka.bootstrap_servers, tmp_path, POSTCALL_INGRESS__PUBLISH_TIMEOUT_SECONDS="2")
        ingress.wait("/readyz", 200)
        assert ingress.post("vapi", example("vapi/web-call-no-analysis.json")).status_code == 200  # warm

        cluster.stop_node(cluster.nodes[0], kill=True)
        body = example("elevenlabs/web-with-analysis.json")
        started = time.monotonic()
        down = ingress.post("elevenlabs", body)
        assert down.status_code == 503, down.text
        assert time.monotonic() - started < 2 + 1.5, "answered within the publish timeout"
        assert down.headers["retry-after"] == "5" and down.json()["error"] == "kafka_unavailable"
        again = ingress.post("elevenlabs", body)  # while down: refused at once, nothing buffered
        assert again.status_code == 503
        ingress.wait("/readyz", 503)

        cluster.start_node(cluster.nodes[0])
        ingress.wait("/readyz", 200, timeout=90)
        accepted = ingress.post("elevenlabs", body)
        assert accepted.status_code == 200 and accepted.json()["status"] == "published", accepted.text
        # a clean stop ends every producer the ingress had (the one aborted in the outage included): what one
        # still held is sent or dropped by the time the process exits, so one read after it sees everything
        assert ingress.proc.term(timeout=30) == 0, ingress.proc.output()[-3000:]
        assert len(records_of(kafka, accepted.json()["event_id"])) == 1
    finally:
        if ingress is not None:
            ingress.proc.term(timeout=30)
        cluster.stop_node(cluster.nodes[0], kill=True)  # a throwaway broker: no controlled shutdown to wait for
        cluster.stop()


def test_a_stalled_broker_is_503_then_accepted_and_the_log_holds_no_error_of_the_kafka_client(tmp_path: Path) -> None:
    """A broker that stops answering (a long GC pause, a frozen VM: SIGSTOP here) rather than dying: the request
    is answered 503 at the publish timeout and its producer aborted. When the broker answers again, the
    aborted producer's late answers must not surface as errors of the Kafka client in the log ("Exception in
    callback", "Future exception was never retrieved"): an SRE reading the log mid-outage takes them for
    a bug."""
    cluster = KafkaCluster(size=1).start()
    kafka = KafkaSettings(bootstrap_servers=cluster.bootstrap_servers)
    ingress: Ingress | None = None
    broker = cluster.nodes[0].process.pid
    try:
        asyncio.run(ensure_topics(kafka, [Topic(CONVERSATION_ENDED, "test", 3, 3_600_000)], replication=1))
        ingress = start_ingress(kafka.bootstrap_servers, tmp_path, POSTCALL_INGRESS__PUBLISH_TIMEOUT_SECONDS="2")
        ingress.wait("/readyz", 200)
        assert ingress.post("vapi", example("vapi/web-call-no-analysis.json")).status_code == 200  # warm

        os.kill(broker, signal.SIGSTOP)
        body = example("elevenlabs/web-with-analysis.json")
        assert ingress.post("elevenlabs", body).status_code == 503
        time.sleep(1)
        os.kill(broker, signal.SIGCONT)
        ingress.wait("/readyz", 200, timeout=90)
        accepted = ingress.post("elevenlabs", body)
        assert accepted.status_code == 200, accepted.text
        time.sleep(2)  # the aborted producer's connection answered meanwhile
        assert ingress.proc.term(timeout=30) == 0
        log = ingress.proc.output()
        assert "Exception in callback" not in log and "never retrieved" not in log, log[-4000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(broker, signal.SIGCONT)
        if ingress is not None:
            ingress.proc.term(timeout=30)
        cluster.stop_node(cluster.nodes[0], kill=True)
        cluster.stop()


VAPI_CALL_ID = b"8c2f4a1e-3b7d-4f0e-9a61-5d2c7e9b1a04"  # in vapi/phone-inbound-with-analysis.json
VAPI_CREDENTIALS = """\
endpoints:
  - name: svix
    platform: vapi
    account: {id: acct-svix}
    secrets: [{secret_env: VAPI_B64_SECRET}]
    hmac: {algorithm: sha512, payload_format: "{svix-id}.{timestamp}.{method}.{url}.{body}", encoding: base64,
           message_id_header: webhook-id, url: "https://hooks.example.com/webhooks/vapi/svix", prefix: "v1,",
           secret_is_base64: true}
  - name: token
    platform: vapi
    account: {id: acct-token}
    auth: bearer
    bearer: {header: X-Api-Key, bearer_prefix: false}
    secrets: [{secret_env: VAPI_TOKEN}]
"""


def test_vapi_credentials_other_than_the_default_are_verified_over_http(kafka: KafkaSettings, tmp_path: Path) -> None:
    """An HMAC credential with every payloadFormat placeholder, a base64 secret, sha512 and base64
    signatures; a Bearer credential in its own header without `Bearer `. Signed here by hand."""
    key = b"\x00vapi-key\xfe"
    endpoints = tmp_path / "endpoints.yaml"
    endpoints.write_text(VAPI_CREDENTIALS)
    env = {"VAPI_B64_SECRET": base64.b64encode(key).decode(), "VAPI_TOKEN": "t0ken-9"}
    ingress = start_ingress(kafka.bootstrap_servers, tmp_path, POSTCALL_INGRESS__ENDPOINTS_FILE=str(endpoints), **env)
    try:
        ingress.wait("/readyz", 200)
        call_id = uuid.uuid4().hex.encode()  # a call of its own: published once by this ingress
        body = example("vapi/phone-inbound-with-analysis.json").replace(VAPI_CALL_ID, call_id)
        stamp, url = str(int(time.time() * 1000)), b"https://hooks.example.com/webhooks/vapi/svix"
        signed = b".".join([b"msg_2xYz", stamp.encode(), b"POST", url, body])
        mac = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha512).digest()).decode()
        headers = {"x-signature": mac, "x-timestamp": stamp, "webhook-id": "msg_2xYz"}
        svix, token = f"{ingress.url}/webhooks/vapi/svix", f"{ingress.url}/webhooks/vapi/token"
        answer = httpx.post(svix, content=body, headers=headers, timeout=30)
        assert answer.status_code == 200 and answer.json()["status"] in ("published", "duplicate"), answer.text
        (record,) = records_of(kafka, answer.json()["event_id"])
        assert record.headers["ce_source"] == "/vapi/acct-svix"
        refused = httpx.post(svix, content=body, headers={**headers, "webhook-id": "msg_other"}, timeout=30)
        assert refused.status_code == 401 and "does not match" in refused.json()["message"]

        assert httpx.post(token, content=body, headers={"x-api-key": "t0ken-9"}, timeout=30).status_code == 200
        wrong = httpx.post(token, content=body, headers={"x-api-key": "Bearer t0ken-9"}, timeout=30)
        assert wrong.status_code == 401, wrong.text
        assert env["VAPI_B64_SECRET"] not in ingress.proc.output() and "t0ken-9" not in ingress.proc.output()
    finally:
        ingress.proc.term(timeout=30)


def test_a_vendor_retry_through_another_replica_lands_twice_and_is_extracted_once(
    ingress: Ingress, kafka: KafkaSettings, tmp_path: Path
) -> None:
    """De-duplication in the ingress is per process: the same Retell webhook sent to two replicas is
    published by each (same event id). The extractor, which gets both (same key, same partition), runs
    the extraction once and skips the copy (services/extractor/duplicates.py)."""
    replica = start_ingress(kafka.bootstrap_servers, tmp_path / "replica")
    try:
        replica.wait("/readyz", 200)
        call_id = f"replica-retry-{uuid.uuid4().hex[:12]}".encode()
        body = example("retell/phone-voicemail-analyzed.json").replace(b"Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6", call_id)
        answers = [ingress.post("retell", body), replica.post("retell", body)]
    finally:
        replica.proc.term(timeout=30)
    assert [a.json()["status"] for a in answers] == ["published", "published"], [a.text for a in answers]
    event_id = answers[0].json()["event_id"]
    assert len(records_of(kafka, event_id, expect=2)) == 2

    service, out = unique("extractor-dups"), unique("extracted")
    asyncio.run(create_topics(kafka, [out, dead_letter_topic(service), retry_topic(service, 1)]))
    skipped = DUPLICATES._value.get()

    async def extract_all() -> None:
        async with httpx.AsyncClient() as http:
            everyone = spec(*SUPPORT_FIELDS)  # every conversation on the topic, whichever agent
            ex = Extractor(ExtractorSettings(config_dir=tmp_path), lambda e: everyone, http, None)
            settings = RuntimeSettings(metrics_port=0, retry_delays_seconds=[0.5], idle_exit_seconds=2.0)
            service_on = on_topics(ex, service, CONVERSATION_ENDED, out)
            await asyncio.wait_for(Runtime(service_on, kafka=kafka, settings=settings).run(), 90)

    asyncio.run(extract_all())
    extracted = [r for r in asyncio.run(read_all(kafka, out)) if r.json()["conversation"]["event_id"] == event_id]
    assert len(extracted) == 1 and extracted[0].json()["extraction"]["status"] == "ok"
    assert DUPLICATES._value.get() >= skipped + 1


def retell_request(call_id: bytes) -> tuple[bytes, bytes]:
    """A signed Retell call_analyzed webhook of its own call, as (head, body) bytes on the wire."""
    body = example("retell/phone-voicemail-analyzed.json").replace(b"Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6", call_id)
    headers = {**signed_headers("retell", body, DEMO_SECRETS["retell"]), "content-length": str(len(body))}
    head = b"POST /webhooks/retell/copperline HTTP/1.1\r\nhost: ingress\r\n"
    return head + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items()) + b"\r\n", body


async def trickle(port: int, parts: list[bytes], every: float, until: float) -> bytes:
    """Send `parts` one every `every` seconds, then one byte of the rest at a time, until the server
    answers and closes or `until` seconds pass; what the server sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = b""
    deadline = time.monotonic() + until

    async def read_to_eof() -> None:
        nonlocal answer
        while chunk := await reader.read(4096):
            answer += chunk

    reading = asyncio.create_task(read_to_eof())
    try:
        for part in parts:
            if reading.done() or time.monotonic() > deadline:
                break
            writer.write(part)
            await asyncio.wait([reading], timeout=every)
        await asyncio.wait([reading], timeout=max(deadline - time.monotonic(), 0))
    except ConnectionError:
        pass
    finally:
        reading.cancel()
        writer.close()
    return answer


def test_slow_or_silent_clients_are_answered_408_and_hold_no_connection_or_capacity(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    """A request whose head and body have not all arrived `read_timeout_seconds` (here 2) after its
    connection or first byte is answered 408 and closed: one that sends nothing, trickles its head, or
    trickles its body. 32 such connections do not delay a webhook sent meanwhile; one that arrives in
    pieces within the time is published; a head over 64 KiB is answered 431."""
    asyncio.run(ensure_topics(kafka, [Topic(CONVERSATION_ENDED, "test", 3, 3_600_000)], replication=1))
    ingress = start_ingress(kafka.bootstrap_servers, tmp_path, POSTCALL_INGRESS__READ_TIMEOUT_SECONDS="2")
    port = int(ingress.url.rsplit(":", 1)[1])
    try:
        ingress.wait("/readyz", 200)
        assert ingress.post("vapi", example("vapi/web-call-no-analysis.json")).status_code == 200  # warm
        slow_call = f"slow-{uuid.uuid4().hex}"
        slow_head, slow_body = retell_request(slow_call.encode())
        pieces_head, pieces_body = retell_request(f"pieces-{uuid.uuid4().hex}".encode())

        async def scenario() -> tuple[list[bytes], bytes, float, httpx.Response]:
            slow = [
                *(trickle(port, [], 0.5, 8) for _ in range(8)),  # nothing at all
                *(
                    trickle(port, [bytes([b]) for b in slow_head], 0.5, 8) for _ in range(12)
                ),  # the head, a byte at a time
                *(trickle(port, [slow_head, *(bytes([b]) for b in slow_body)], 0.5, 8) for _ in range(12)),
            ]
            held = [asyncio.create_task(s) for s in slow]
            await asyncio.sleep(0.5)
            in_pieces = trickle(port, [pieces_head, pieces_body[:100], pieces_body[100:]], 0.4, 8)
            started = time.monotonic()
            async with httpx.AsyncClient(timeout=10) as client:
                body = example("retell/phone-voicemail-analyzed.json").replace(
                    b"Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6", f"quick-{uuid.uuid4().hex}".encode()
                )
                url = f"{ingress.url}/webhooks/retell/copperline"
                quick = await client.post(
                    url, content=body, headers=signed_headers("retell", body, DEMO_SECRETS["retell"])
                )
            waited = time.monotonic() - started
            return [*(await asyncio.gather(*held))], await in_pieces, waited, quick

        answers, in_pieces, waited, quick = asyncio.run(scenario())
        assert quick.status_code == 200 and quick.json()["status"] == "published", quick.text
        assert waited < 1.5, "the webhook sent while 32 connections trickled was not delayed"
        assert in_pieces.startswith(b"HTTP/1.1 200 ") and b'"status":"published"' in in_pieces, in_pieces[:300]
        refused = [a for a in answers if a.startswith(b"HTTP/1.1 408 ") and b'"error":"request_timeout"' in a]
        assert len(refused) == 32, [a[:100] for a in answers]
        assert records_of(kafka, f"retell:{slow_call}:call_analyzed", within=1) == []  # no body arrived whole

        huge = asyncio.run(trickle(port, [slow_head[:60], *[b"a" * 65536] * 64], 0.01, 5))
        assert huge.startswith(b"HTTP/1.1 431 ") and b'"error":"headers_too_large"' in huge, huge[:300]
        assert ingress.proc.output().count('"msg":"request refused: request_timeout"') == 32
    finally:
        ingress.proc.term(timeout=30)
