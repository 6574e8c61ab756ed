"""The HTTP answers of the ingress, in process (httpx's ASGI transport; Kafka replaced by a recording
publisher). The same requests over real HTTP to a real broker: tests/integration/ingress/."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.datastructures import Headers
from starlette.routing import Match

from schemas.events import MAX_ID_LENGTH, MAX_NESTING, Account, Agent, ConversationEnded, EndReasonInfo
from services.common import codec
from services.common.settings import KafkaSettings
from services.devkit.webhooks import DEMO_ENDPOINTS, DEMO_SECRETS, example, signed_headers
from services.ingress import endpoints as endpoints_file
from services.ingress.app import RequestHeaders, create_app
from services.ingress.handler import AcceptedAnswer, WebhookHandler, accepted
from services.ingress.platforms import MAPPINGS
from services.ingress.publisher import Published, Publisher, Unavailable, ce_source
from services.ingress.settings import IngressHttpSettings, IngressSettings


class RecordingPublisher(Publisher):
    def __init__(self) -> None:
        super().__init__(KafkaSettings())
        self.sent: list[tuple[ConversationEnded, str]] = []
        self.down = False

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def ready(self) -> bool:
        return not self.down

    async def _send(self, event: ConversationEnded, source: str) -> Published:
        if self.down:
            raise Unavailable("Kafka is not reachable")
        codec.encode(event)  # as the real one does before sending
        self.sent.append((event, source))
        return Published(event.event_id, event.conversation_id, "postcall.conversation-ended.v1", 0, len(self.sent))


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
async def client(publisher: RecordingPublisher) -> AsyncIterator[httpx.AsyncClient]:
    settings = IngressSettings(ingress=IngressHttpSettings(endpoints_file=DEMO_ENDPOINTS, max_body_bytes=64 * 1024))
    app = create_app(settings, endpoints_file.load(Path(DEMO_ENDPOINTS), {}), publisher)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress") as c:
        yield c


async def post(client: httpx.AsyncClient, platform: str, body: bytes, **headers: str) -> httpx.Response:
    signed = signed_headers(platform, body, DEMO_SECRETS[platform])
    return await client.post(f"/webhooks/{platform}/copperline", content=body, headers={**signed, **headers})


@pytest.mark.parametrize(
    ("platform", "name"),
    [
        ("vapi", "vapi/phone-inbound-with-analysis.json"),
        ("retell", "retell/phone-voicemail-analyzed.json"),
        ("elevenlabs", "elevenlabs/web-with-analysis.json"),
        ("native", "../conversations/0004-sales-voicemail.json"),
    ],
)
async def test_a_signed_webhook_is_published_and_answered_with_its_event_id(
    client: httpx.AsyncClient, publisher: RecordingPublisher, platform: str, name: str
) -> None:
    answer = await post(client, platform, example(name))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    (event, source), = publisher.sent  # fmt: skip
    assert body == {
        "status": "published",
        "event_id": event.event_id,
        "conversation_id": event.conversation_id,
        "topic": "postcall.conversation-ended.v1",
        "partition": 0,
        "offset": 1,
    }
    assert source == f"/{platform if platform != 'native' else 'vapi'}/acct-copperline"
    assert event.account.id == "acct-copperline"


async def test_the_same_event_twice_is_published_once(client: httpx.AsyncClient, publisher: RecordingPublisher) -> None:
    first = await post(client, "retell", example("retell/phone-voicemail-analyzed.json"))
    again = await post(client, "retell", example("retell/phone-voicemail-analyzed.json"))
    assert (first.json()["status"], again.json()["status"]) == ("published", "duplicate")
    assert again.json() == {**first.json(), "status": "duplicate"} and len(publisher.sent) == 1


async def test_a_bad_signature_is_401_naming_the_problem(client: httpx.AsyncClient) -> None:
    body = example("vapi/phone-inbound-with-analysis.json")
    answer = await post(client, "vapi", body, **{"x-signature": "00" * 32})
    assert answer.status_code == 401
    assert answer.json() == {"error": "invalid_signature", "message": "x-signature does not match the body"}
    raw_header = {b"x-retell-signature": b"v=\xff\xfe,d=<script>"}
    garbage = await client.post("/webhooks/retell/copperline", content=body, headers=raw_header)
    assert garbage.status_code == 401 and "not of the form" in garbage.json()["message"]
    unsigned = await client.post("/webhooks/elevenlabs/copperline", content=body)
    assert unsigned.status_code == 401 and unsigned.json()["message"] == "missing ElevenLabs-Signature header"


async def test_a_replayed_old_request_is_refused(client: httpx.AsyncClient, publisher: RecordingPublisher) -> None:
    body = example("retell/phone-voicemail-analyzed.json")
    old = signed_headers("retell", body, DEMO_SECRETS["retell"], now=time.time() - 3600)
    answer = await client.post("/webhooks/retell/copperline", content=body, headers=old)
    assert answer.status_code == 401 and "tolerance" in answer.json()["message"] and not publisher.sent


async def test_invalid_utf8_and_invalid_json_are_400(client: httpx.AsyncClient) -> None:
    bad_utf8 = await post(client, "retell", b'{"event": "call_ended", "call": {"call_id": "\xff\xfe"}}')
    assert bad_utf8.status_code == 400 and bad_utf8.json()["error"] == "invalid_utf8"
    assert "byte 45" in bad_utf8.json()["message"]
    bad_json = await post(client, "retell", b'{"event": "call_ended", ')
    assert bad_json.status_code == 400 and bad_json.json()["error"] == "invalid_json"
    not_object = await post(client, "retell", b"[1, 2]")
    assert not_object.status_code == 422 and not_object.json()["message"] == "the body must be a JSON object"


async def test_a_payload_that_cannot_be_mapped_is_422_naming_each_field(client: httpx.AsyncClient) -> None:
    body = b'{"message": {"type": "end-of-call-report", "call": {"startedAt": "not a time"}}}'
    answer = await post(client, "vapi", body)
    assert answer.status_code == 422
    problems = {p["field"] for p in answer.json()["problems"]}
    assert problems == {"message.call.id", "message.call.startedAt"}


async def test_a_signed_payload_with_a_time_no_calendar_holds_is_422_naming_it(
    client: httpx.AsyncClient, publisher: RecordingPublisher
) -> None:
    payload = orjson.loads(example("retell/phone-voicemail-analyzed.json"))
    payload["call"]["end_timestamp"] = 10**15  # milliseconds: year 33658
    body = orjson.dumps(payload)
    answer = await post(client, "retell", body)
    assert answer.status_code == 422 and not publisher.sent, answer.text
    assert {p["field"] for p in answer.json()["problems"]} == {"call.end_timestamp"}


async def test_a_validation_error_out_of_a_mapping_is_422_not_500(
    client: httpx.AsyncClient,
    publisher: RecordingPublisher,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The safety net behind every mapping: a part it builds outside its own checks that the contract
    refuses is the payload's fault (422 with the problem), never an exception out of the server."""

    def mapping(payload: dict[str, object], ctx: object) -> object:
        return Agent(id="a" * 300)

    monkeypatch.setitem(MAPPINGS, "retell", mapping)
    answer = await post(client, "retell", example("retell/phone-voicemail-analyzed.json"))
    assert answer.status_code == 422 and not publisher.sent, answer.text
    assert answer.json()["problems"][0]["field"] == "(mapped event).id"
    logged = [r for r in caplog.records if r.name == "services.ingress" and r.getMessage() == "webhook mapping_error"]
    assert [r.levelno for r in logged] == [logging.ERROR]  # not among the vendors' refusals (review5 L8)


def nested_in(payload: dict[str, Any], depth: int) -> bytes:
    """`payload` as JSON with its "DEEP" string replaced by objects nested `depth` deep (orjson writes 254 at most)."""
    return orjson.dumps(payload).replace(b'"DEEP"', b'{"a":' * depth + b"1" + b"}" * depth)


@pytest.mark.parametrize("depth", [MAX_NESTING, 220, 300])
async def test_a_value_nested_deeper_than_the_contract_takes_is_422_naming_the_field(
    client: httpx.AsyncClient, publisher: RecordingPublisher, depth: int
) -> None:
    # 220: every consumer's reader refuses the record (over 200 deep), so it was published to be
    # dead-lettered by all of them; 300: the event could not be written at all (a 500)
    vapi = orjson.loads(example("vapi/phone-inbound-with-analysis.json"))
    vapi["message"]["artifact"]["variableValues"] = {"x": "DEEP"}
    native = orjson.loads(example("../conversations/0004-sales-voicemail.json"))
    native["metadata"]["x"] = "DEEP"
    for platform, payload, field in (("vapi", vapi, "(mapped event).metadata"), ("native", native, "metadata")):
        answer = await post(client, platform, nested_in(payload, depth))
        assert answer.status_code == 422, answer.text
        [problem] = answer.json()["problems"]
        assert problem == {"field": field, "problem": f"objects and arrays nest deeper than {MAX_NESTING} levels"}
    assert not publisher.sent


async def test_a_value_nested_within_the_contracts_bound_is_published_and_read_back(
    client: httpx.AsyncClient, publisher: RecordingPublisher
) -> None:
    native = orjson.loads(example("../conversations/0004-sales-voicemail.json"))
    native["metadata"]["x"] = "DEEP"
    answer = await post(client, "native", nested_in(native, MAX_NESTING - 1))
    assert answer.status_code == 200, answer.text
    [(event, _)] = publisher.sent
    assert ConversationEnded.model_validate_json(codec.encode(event)) == event  # as a consumer reads it


LONG_IDS = [
    ("vapi", "vapi/phone-inbound-with-analysis.json", ("message", "call", "id"), "message.call.id", 232),
    ("retell", "retell/phone-voicemail-analyzed.json", ("call", "call_id"), "call.call_id", 235),
    ("elevenlabs", "elevenlabs/web-with-analysis.json", ("data", "conversation_id"), "data.conversation_id", 234),
]


@pytest.mark.parametrize(("platform", "name", "path", "field", "room"), LONG_IDS, ids=[p[0] for p in LONG_IDS])
async def test_a_vendor_id_too_long_for_the_event_id_made_from_it_is_422_naming_the_vendors_field(
    client: httpx.AsyncClient, publisher: RecordingPublisher, platform: str, name: str, path: tuple[str, ...],
    field: str, room: int,
) -> None:  # fmt: skip
    # the vendor's id is within the contract's 256, but the event id is "<platform>:<id>:<more>"
    for length, status in ((room, 200), (room + 1, 422), (MAX_ID_LENGTH, 422)):
        payload = orjson.loads(example(name))
        *parents, last = path
        holder = payload
        for key in parents:
            holder = holder[key]
        holder[last] = "c" * length
        answer = await post(client, platform, orjson.dumps(payload))
        assert answer.status_code == status, (length, answer.text)
        if status == 422:
            [problem] = answer.json()["problems"]
            assert problem["field"] == field and problem["problem"].startswith(f"String should have at most {room} ")
    [(event, _)] = publisher.sent
    assert len(event.event_id) == MAX_ID_LENGTH


async def test_a_message_that_is_not_a_finished_call_is_acknowledged_and_not_published(
    client: httpx.AsyncClient, publisher: RecordingPublisher
) -> None:
    answer = await post(client, "vapi", example("vapi/status-update.json"))
    assert answer.status_code == 200 and answer.json()["status"] == "ignored" and not publisher.sent


async def test_over_the_size_limit_is_413_from_content_length_or_while_streaming(client: httpx.AsyncClient) -> None:
    big = b'{"pad": "' + b"x" * (70 * 1024) + b'"}'
    declared = await post(client, "retell", big)
    assert declared.status_code == 413 and declared.json()["error"] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"x" * 8192

    streamed = await client.post("/webhooks/retell/copperline", content=chunks())
    assert streamed.status_code == 413


@pytest.mark.parametrize("declared", [b"\xb2", b"1\xb9"])  # "²", "1¹": headers are read as latin-1
async def test_a_content_length_of_non_ascii_digits_is_read_as_not_declared(
    publisher: RecordingPublisher, declared: bytes
) -> None:
    """str.isdigit() holds for "²" but int() refuses it (a 500 before): the declared length is taken only
    when it is ASCII digits, else the body is read and bounded while it streams (uvicorn refuses such a
    header before the app; this app may run behind another server)."""
    app = create_app(
        IngressSettings(ingress=IngressHttpSettings(endpoints_file=DEMO_ENDPOINTS)),
        endpoints_file.load(Path(DEMO_ENDPOINTS), {}),
        publisher,
    )
    messages: list[dict[str, Any]] = [{"type": "http.request", "body": b"not json", "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    path = "/webhooks/vapi/copperline"
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
        "headers": [(b"content-length", declared)], "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8080),
    }  # fmt: skip
    await app(scope, receive, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 401, sent  # read, then unsigned


async def test_the_bodies_in_flight_are_bounded_and_a_request_past_the_bound_is_503_with_retry_after(
    publisher: RecordingPublisher,
) -> None:
    """Every body is read before its signature is checked: without a bound, 128 unsigned bodies of 4 MB
    held at once passed the pod's 512 Mi. What a request holds is given back when it is answered."""
    ingress = IngressHttpSettings(
        endpoints_file=DEMO_ENDPOINTS, max_body_bytes=64 * 1024, max_body_bytes_in_flight=100 * 1024
    )
    app = create_app(IngressSettings(ingress=ingress), endpoints_file.load(Path(DEMO_ENDPOINTS), {}), publisher)
    release, taken = asyncio.Event(), asyncio.Event()

    async def held() -> AsyncIterator[bytes]:  # 60 KB sent, the last byte held back
        yield b"x" * 60_000
        taken.set()
        await release.wait()
        yield b"x"

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress") as c:
        first = asyncio.create_task(c.post("/webhooks/vapi/copperline", content=held()))
        await asyncio.wait_for(taken.wait(), 5)
        await asyncio.sleep(0.01)
        past = await post(c, "vapi", b"y" * 50_000)
        fits = await post(c, "retell", example("retell/phone-voicemail-analyzed.json"))  # about 6 KB
        release.set()
        assert (await first).status_code == 401  # answered as before
        after = await post(c, "vapi", b"y" * 50_000)
    assert past.status_code == 503 and past.headers["retry-after"] == "5", past.text
    assert past.json()["error"] == "overloaded"
    assert fits.status_code == 200 and fits.json()["status"] == "published"
    assert after.status_code == 400, "every body was given back"  # signed, not JSON: read and checked


def test_the_bodies_in_flight_hold_at_least_the_largest_body() -> None:
    with pytest.raises(ValueError, match="max_body_bytes_in_flight must be at least max_body_bytes"):
        IngressHttpSettings(endpoints_file=DEMO_ENDPOINTS, max_body_bytes=64 * 1024, max_body_bytes_in_flight=4096)


async def test_a_body_streamed_in_chunks_is_verified_on_the_joined_bytes(
    client: httpx.AsyncClient, publisher: RecordingPublisher
) -> None:
    """The webhook routes read the ASGI body messages themselves (app.py): a body in many chunks is the
    same bytes as one, for the signature and the mapping."""
    body = example("retell/phone-voicemail-analyzed.json")
    signed = signed_headers("retell", body, DEMO_SECRETS["retell"])

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 100):
            yield body[start : start + 100]

    answer = await client.post("/webhooks/retell/copperline", content=chunks(), headers=signed)
    assert answer.status_code == 200 and answer.json()["status"] == "published" and len(publisher.sent) == 1
    assert answer.headers["content-type"] == "application/json"
    assert int(answer.headers["content-length"]) == len(answer.content)


async def test_webhooks_are_served_under_the_root_path_as_the_other_routes(publisher: RecordingPublisher) -> None:
    settings = IngressSettings(ingress=IngressHttpSettings(endpoints_file=DEMO_ENDPOINTS, root_path="/ingress"))
    app = create_app(settings, endpoints_file.load(Path(DEMO_ENDPOINTS), {}), publisher)
    body = example("retell/phone-voicemail-analyzed.json")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress") as c:
        kept = await post(c, "retell", body)  # a proxy that strips the prefix
        prefixed = await c.post(
            "/ingress/webhooks/retell/copperline", content=body, headers=signed_headers("retell", body, "x")
        )
        health = await c.get("/ingress/healthz")
    assert kept.json()["status"] == "published" and health.status_code == 200
    assert prefixed.status_code == 401  # matched the webhook route (signed with a wrong secret)


async def test_kafka_down_is_503_with_retry_after_then_accepted(
    client: httpx.AsyncClient, publisher: RecordingPublisher
) -> None:
    publisher.down = True
    body = example("elevenlabs/web-with-analysis.json")
    answer = await post(client, "elevenlabs", body)
    assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
    assert answer.json()["error"] == "kafka_unavailable" and "not known to be published" in answer.json()["message"]
    assert (await client.get("/readyz")).status_code == 503
    publisher.down = False
    assert (await post(client, "elevenlabs", body)).json()["status"] == "published"
    assert len(publisher.sent) == 1 and (await client.get("/readyz")).status_code == 200


async def test_a_webhook_url_with_a_slash_at_its_end_is_the_same_endpoint(
    client: httpx.AsyncClient, publisher: RecordingPublisher
) -> None:
    """Not Starlette's 307 with an empty body, which a vendor that does not follow redirects counts as a
    failed delivery; `//` at the end is no endpoint (404, JSON)."""
    body = example("retell/phone-voicemail-analyzed.json")
    signed = signed_headers("retell", body, DEMO_SECRETS["retell"])
    answer = await client.post("/webhooks/retell/copperline/", content=body, headers=signed)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "published" and len(publisher.sent) == 1
    twice = await client.post("/webhooks/retell/copperline//", content=body, headers=signed)
    assert twice.status_code == 404 and twice.json()["error"] == "not_found"


async def test_unknown_endpoint_and_method_are_json(client: httpx.AsyncClient) -> None:
    unknown = await client.post("/webhooks/vapi/nobody", content=b"{}")
    assert unknown.status_code == 404 and unknown.json()["message"] == "no vapi endpoint is named 'nobody'"
    elsewhere = await client.get("/nothing-here")
    assert elsewhere.status_code == 404 and elsewhere.json()["error"] == "not_found"
    wrong_method = await client.get("/webhooks/vapi/copperline")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"] == "method_not_allowed"


async def test_metrics_count_requests_by_source_and_outcome(client: httpx.AsyncClient) -> None:
    await post(client, "vapi", example("vapi/status-update.json"))
    text = (await client.get("/metrics")).text
    assert 'postcall_ingress_requests_total{endpoint="copperline",outcome="ignored",source="vapi"}' in text
    assert "postcall_ingress_request_duration_seconds_bucket" in text
    assert (await client.get("/healthz")).json() == {"status": "ok"}


async def test_retells_duplicate_call_ended_is_one_record_and_call_analyzed_is_its_own(
    publisher: RecordingPublisher,
) -> None:
    """An endpoint that publishes both Retell events: the call_ended Retell sends twice within a second
    is one record; call_analyzed for the same call is another (its own event id)."""
    text = DEMO_ENDPOINTS.read_text().replace("publish_on: [call_analyzed]", "publish_on: [call_ended, call_analyzed]")
    assert "call_ended, call_analyzed" in text
    settings = IngressSettings(ingress=IngressHttpSettings(endpoints_file=DEMO_ENDPOINTS))
    app = create_app(settings, endpoints_file.parse(text, {}, "endpoints.yaml"), publisher)
    analyzed = example("retell/phone-voicemail-analyzed.json")
    ended = analyzed.replace(b'"event": "call_analyzed"', b'"event": "call_ended"')
    assert ended != analyzed
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress") as c:
        answers = [await post(c, "retell", body) for body in (ended, ended, analyzed)]
    assert [a.json()["status"] for a in answers] == ["published", "duplicate", "published"]
    call = answers[0].json()["conversation_id"]
    assert [e.event_id for e, _ in publisher.sent] == [f"retell:{call}:call_ended", f"retell:{call}:call_analyzed"]
    assert {e.conversation_id for e, _ in publisher.sent} == {call}


@pytest.mark.parametrize("duplicate", [False, True])
@pytest.mark.parametrize(
    "text",
    [
        "retell:Jabr9TXY:call_analyzed",
        'quote " back \\ slash',
        "ctl \x00\x01\x1f\x7f tab\t nl\n",
        "é ü 漢字 😀 \u2028\u2029",
    ],
)
def test_an_accepted_answers_json_is_the_models(text: str, duplicate: bool) -> None:
    """The published / duplicate answer's JSON is written without the model: the same bytes."""
    done = Published(text, text[::-1], "postcall.conversation-ended.v1", 11, 2**40, duplicate)
    status = "duplicate" if duplicate else "published"
    model = AcceptedAnswer(
        status=status,
        event_id=done.event_id,
        conversation_id=done.conversation_id,
        topic=done.topic,
        partition=done.partition,
        offset=done.offset,
    )
    answer = accepted(status, done)
    assert answer.json() == model.model_dump_json(exclude_none=True).encode()
    assert (answer.status, answer.outcome) == (200, status)
    assert (answer.event_id, answer.conversation_id) == (text, text[::-1])


def test_webhook_matching_is_starlettes() -> None:
    """IngressApp's own test of a webhook request answers what the routes' Starlette matching does, for
    a path ending in one `/` what it does for the path without it."""
    settings = IngressSettings(ingress=IngressHttpSettings(endpoints_file=DEMO_ENDPOINTS))
    app = create_app(settings, endpoints_file.load(Path(DEMO_ENDPOINTS), {}), RecordingPublisher())
    paths = [
        "/webhooks/retell/copperline",
        "/webhooks/vapi/x",
        "/webhooks/native/é漢",
        "/webhooks/retell/a\n",
        "/webhooks/retell/",
        "/webhooks/retell",
        "/webhooks//copperline",
        "/webhooks/nope/copperline",
        "/webhooks/retell/a/b",
        "//webhooks/retell/a",
        "/webhooks/retell/copperline/",
        "/api/webhooks/retell/a",
        "/webhooks/retell/copperline\n",
        "/webhooks/retell/ a ",
        "/webhooks/RETELL/a",
        "webhooks/retell/a",
        "/",
    ]
    checked = 0
    for root in ("", "/api", "/api/"):
        for path in paths + [root + p for p in paths]:
            for method in ("POST", "GET", "post"):
                scope = {"type": "http", "path": path, "root_path": root, "method": method}
                expected = None
                slashless = {**scope, "path": path.removesuffix("/")}
                for route in app.webhook_routes.values():
                    match, child = route.matches(slashless)
                    if match is Match.FULL:
                        expected = (route, child["path_params"]["endpoint"])
                assert app.webhook_match(scope) == expected, scope
                checked += expected is not None
    assert checked >= 10


def test_the_cloudevents_source_kept_per_platform_and_account_is_ce_sources() -> None:
    """The handler keeps a non-native event's source by (platform, account id); a native event's source
    can name the event's own platform, so it is computed for each event."""
    handler = WebhookHandler(RecordingPublisher(), 5)
    event = ConversationEnded.model_validate_json(example("../conversations/0004-sales-voicemail.json"))
    events = [
        event.model_copy(
            update={"account": Account(id=account), "end_reason": EndReasonInfo(raw="x", source_platform=p)}
        )
        for account in ("acct-copperline", "a/b c%", "acct-2")
        for p in ("retell", "unknown", "", "x y/z")
    ]
    for _ in range(2):  # the second time from what was kept
        for platform in ("vapi", "retell", "elevenlabs", "native"):
            for e in events:
                assert handler._source(platform, e) == ce_source(platform, e)
    assert sorted(handler._sources) == sorted(
        (p, a) for p in ("vapi", "retell", "elevenlabs") for a in ("acct-copperline", "a/b c%", "acct-2")
    )


TWO_ACCOUNTS = """\
endpoints:
  - {name: acme, platform: retell, account: {id: acme}, secrets: [{secret_env: ACME_RETELL}],
     agents: {agent_acme_1: {id: acme-sales}, agent_shared: {id: shared-line}}}
  - {name: acme, platform: native, account: {id: acme}, secrets: [{secret_env: ACME_NATIVE}]}
  - {name: globex, platform: retell, account: {id: globex}, secrets: [{secret_env: GLOBEX_RETELL}],
     agents: {agent_globex_1: {id: globex-sales}, agent_globex_2: {}, agent_shared: {id: shared-line}},
     default_agent_id: globex-default}
  - {name: globex, platform: native, account: {id: globex}, secrets: [{secret_env: GLOBEX_NATIVE}]}
"""
TWO_ACCOUNTS_ENV = {
    "ACME_RETELL": "key_acme",
    "GLOBEX_RETELL": "key_globex",
    "ACME_NATIVE": DEMO_SECRETS["native"],
    "GLOBEX_NATIVE": "whsec_" + "R2xvYmV4IG5hdGl2ZSBzZWNyZXQ=",
}


@pytest.fixture
async def two_accounts(publisher: RecordingPublisher) -> AsyncIterator[httpx.AsyncClient]:
    settings = IngressSettings(ingress=IngressHttpSettings(endpoints_file=DEMO_ENDPOINTS))
    app = create_app(settings, endpoints_file.parse(TWO_ACCOUNTS, TWO_ACCOUNTS_ENV), publisher)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress") as c:
        yield c


async def post_as(client: httpx.AsyncClient, platform: str, account: str, payload: dict[str, object]) -> httpx.Response:
    body = orjson.dumps(payload)
    secret = TWO_ACCOUNTS_ENV[f"{account.upper()}_{platform.upper()}"]
    headers = signed_headers(platform, body, secret)
    return await client.post(f"/webhooks/{platform}/{account}", content=body, headers=headers)


def retell_call(agent_id: str) -> dict[str, object]:
    payload: dict[str, object] = orjson.loads(example("retell/phone-voicemail-analyzed.json"))
    payload["call"] = {**payload["call"], "agent_id": agent_id, "call_id": f"call-{agent_id}"}  # type: ignore[dict-item]
    return payload


def native_event(agent_id: str, account: str) -> dict[str, object]:
    event: dict[str, object] = orjson.loads(example("../conversations/0004-sales-voicemail.json"))
    return {**event, "event_id": f"evt-{agent_id}", "agent": {"id": agent_id}, "account": {"id": account}}


@pytest.mark.parametrize("agent", ["globex-sales", "agent_globex_2", "globex-default"])
async def test_an_endpoint_cannot_publish_for_an_agent_another_accounts_endpoint_lists(
    two_accounts: httpx.AsyncClient, publisher: RecordingPublisher, agent: str
) -> None:
    """The account is the endpoint's, and so are its agents: a payload signed with acme's secret that names
    an agent only globex's endpoints list (an alias's id, a platform id kept as it is, the default) would
    run globex's flows on acme's data, with globex's destinations and their credentials."""
    for platform, payload in (("retell", retell_call(agent)), ("native", native_event(agent, "acme"))):
        answer = await post_as(two_accounts, platform, "acme", payload)
        assert answer.status_code == 422, (platform, answer.text)
        problem = f"agent {agent!r} is another account's: this endpoint publishes for account 'acme'"
        assert answer.json()["problems"] == [{"field": "agent.id", "problem": problem}]
    assert not publisher.sent
    for platform, payload in (("retell", retell_call(agent)), ("native", native_event(agent, "globex"))):
        answer = await post_as(two_accounts, platform, "globex", payload)
        assert answer.status_code == 200, (platform, answer.text)  # a 401 in a fresh clone at 14:10 UTC, unexplained
    assert [(e.account.id, e.agent.id) for e, _ in publisher.sent] == [("globex", agent)] * 2


async def test_an_endpoint_publishes_for_its_own_shared_and_unlisted_agents(
    two_accounts: httpx.AsyncClient, publisher: RecordingPublisher
) -> None:
    for agent in ("agent_acme_1", "agent_shared", "some-unlisted-agent"):
        assert (await post_as(two_accounts, "retell", "acme", retell_call(agent))).status_code == 200
    for agent in ("acme-sales", "shared-line", "some-unlisted-agent"):
        assert (await post_as(two_accounts, "native", "acme", native_event(agent, "acme"))).status_code == 200
    assert [e.agent.id for e, _ in publisher.sent] == ["acme-sales", "shared-line", "some-unlisted-agent"] * 2


async def test_an_endpoint_with_only_listed_agents_refuses_an_agent_it_does_not_list(
    publisher: RecordingPublisher,
) -> None:
    """An agent no endpoint lists could be named by any endpoint's payloads (a platform's id kept as it
    is): a deployment of several tenants can now close that per endpoint. Its listed agents (an alias's id,
    a platform id kept as it is, the default for a payload naming none) still publish."""
    strict = TWO_ACCOUNTS.replace(
        "agents: {agent_acme_1: {id: acme-sales}, agent_shared: {id: shared-line}}}",
        "agents: {agent_acme_1: {id: acme-sales}, agent_acme_2: {}}, default_agent_id: acme-default,\n"
        "     only_listed_agents: true}",
    )
    settings = IngressSettings(ingress=IngressHttpSettings(endpoints_file=DEMO_ENDPOINTS))
    app = create_app(settings, endpoints_file.parse(strict, TWO_ACCOUNTS_ENV), publisher)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress") as c:
        refused = await post_as(c, "retell", "acme", retell_call("some-unlisted-agent"))
        assert refused.status_code == 422, refused.text
        assert refused.json()["problems"] == [
            {
                "field": "agent.id",
                "problem": "agent 'some-unlisted-agent' is not listed on this endpoint (only_listed_agents), "
                "account 'acme'",
            }
        ]
        assert not publisher.sent
        for agent in ("agent_acme_1", "agent_acme_2"):
            assert (await post_as(c, "retell", "acme", retell_call(agent))).status_code == 200, agent
        unnamed = retell_call("x")
        unnamed["call"] = {k: v for k, v in unnamed["call"].items() if k != "agent_id"}  # type: ignore[attr-defined]
        assert (await post_as(c, "retell", "acme", unnamed)).status_code == 200
        # the native endpoint of the same account did not ask for it
        assert (await post_as(c, "native", "acme", native_event("some-unlisted-agent", "acme"))).status_code == 200
    assert [e.agent.id for e, _ in publisher.sent] == [
        "acme-sales",
        "agent_acme_2",
        "acme-default",
        "some-unlisted-agent",
    ]


async def test_two_accounts_events_with_the_same_event_id_are_each_published(
    two_accounts: httpx.AsyncClient, publisher: RecordingPublisher
) -> None:
    """An event id is unique within its source (CloudEvents: source + id), and each account's bridge
    derives its own: globex's evt-1 is not a copy of acme's, to be answered `duplicate` with acme's
    conversation id, partition and offset and never published."""
    acme = {**native_event("acme-sales", "acme"), "event_id": "evt-1", "conversation_id": "acme-conv-1"}
    globex = {**native_event("globex-sales", "globex"), "event_id": "evt-1", "conversation_id": "globex-conv-1"}
    first = await post_as(two_accounts, "native", "acme", acme)
    second = await post_as(two_accounts, "native", "globex", globex)
    again = await post_as(two_accounts, "native", "globex", globex)
    assert [a.json()["status"] for a in (first, second, again)] == ["published", "published", "duplicate"]
    assert second.json()["conversation_id"] == again.json()["conversation_id"] == "globex-conv-1"
    assert [(e.account.id, e.conversation_id) for e, _ in publisher.sent] == [
        ("acme", "acme-conv-1"),
        ("globex", "globex-conv-1"),
    ]


async def test_each_webhook_log_line_names_the_client_and_no_header(
    publisher: RecordingPublisher, caplog: pytest.LogCaptureFixture
) -> None:
    """An operator tracing a flood of 401s (or one vendor's retries) had no address to go on: the line had
    the endpoint and outcome only. The peer of the ASGI scope, never a header a client can write."""
    settings = IngressSettings(ingress=IngressHttpSettings(endpoints_file=DEMO_ENDPOINTS))
    app = create_app(settings, endpoints_file.load(Path(DEMO_ENDPOINTS), {}), publisher)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 4711))
    forged = {"x-forwarded-for": "198.51.100.1", "authorization": "Bearer not-logged"}
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as c:
        body = example("vapi/phone-inbound-with-analysis.json")
        assert (await c.post("/webhooks/vapi/copperline", content=body, headers=forged)).status_code == 401
        assert (await c.post("/webhooks/vapi/nowhere", content=body)).status_code == 404
    lines = [r for r in caplog.records if r.name == "services.ingress" and r.getMessage().startswith("webhook ")]
    assert [(r.getMessage(), r.__dict__["client"]) for r in lines] == [
        ("webhook unauthorized", "203.0.113.9:4711"),
        ("webhook not_found", "203.0.113.9:4711"),
    ]
    assert not any("198.51.100.1" in str(r.__dict__) or "not-logged" in str(r.__dict__) for r in lines)


def test_request_headers_read_as_starlettes() -> None:
    raw = [(b"content-length", b"12"), (b"x-retell-signature", b"v=1,d=ab"), (b"x-dup", b"first"), (b"x-dup", b"2nd")]
    raw += [(b"x-latin", "caf\u00e9".encode("latin-1")), (b"x-empty", b"")]
    ours, theirs = RequestHeaders(list(raw)), Headers(raw=list(raw))
    for name in ("content-length", "X-Retell-Signature", "x-dup", "X-LATIN", "x-empty", "missing"):
        assert ours.get(name) == theirs.get(name), name
        assert (name in ours) == (name in theirs), name
    assert ours.get("missing", "d") == "d"
    assert list(ours) == list(theirs.keys()) and len(ours) == len(raw)
    with pytest.raises(KeyError):
        ours["missing"]
