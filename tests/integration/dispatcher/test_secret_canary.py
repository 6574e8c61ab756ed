"""A canary credential in destination headers, sent to receivers that quote it back (in 4xx and 5xx
bodies and a redirect's Location), must appear nowhere but on the wire: not in results, dead letters
(values and headers), retry records or logs. The dispatcher runs in-process on the real broker."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from schemas.topics import dead_letter_topic, retry_topic
from services.common.observability import QUIET_LIBRARIES
from services.common.settings import KafkaSettings
from services.devkit.sink import Reply, Sink
from tests.integration.dispatcher.conftest import Stack, webhook
from tests.integration.dispatcher.test_on_broker import by_action, dispatcher_run
from tests.support.kafka import create_topics, produce, read_all, unique

TOKEN, KEY = "tok-CANARY-91c2e7", "key-CANARY-5b08aa"


def destination(name: str, url: str) -> str:
    return (
        f"  - name: {name}\n    kind: http\n    url: {url}\n    allow_private: true\n"
        "    headers:\n"
        '      authorization: {secret_env: TOKEN, prefix: "Bearer "}\n'
        "      x-api-key: {secret_env: KEY}\n"
    )


async def test_a_header_credential_appears_in_no_result_dead_letter_retry_record_or_log(
    kafka: KafkaSettings, sink: Sink, stack: Stack, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)  # every log line of every level, with the library levels the services set
    for name in QUIET_LIBRARIES:
        caplog.set_level(logging.WARNING, logger=name)
    service, topic, results, group = unique("dispatcher"), unique("actions"), unique("results"), unique("g")
    retries = [retry_topic(service, i) for i in range(1, 7)]
    await create_topics(kafka, [topic, results, dead_letter_topic(service), *retries])
    sink.script("/echo400", then=Reply(400, echo=True))
    sink.script("/echo500", then=Reply(500, echo=True))
    sink.script("/moved", then=Reply(302, {"Location": f"https://elsewhere.example/?key={KEY}&t=Bearer%20{TOKEN}"}))
    sink.script("/ok", then=Reply(200, echo=True))
    names = ("echo400", "echo500", "moved", "ok")
    yaml = "destinations:\n" + "".join(destination(n, sink.url(f"/{n}")) for n in names)
    async with stack(yaml, {"TOKEN": TOKEN, "KEY": KEY}) as (executors, _):
        await produce(kafka, topic, [(f"conv-{n}", webhook(f"act-{n}", n)) for n in names])
        async with dispatcher_run(kafka, executors, service, topic, results, group):
            pass

    sent = [r for r in sink.received if r["path"] == "/echo400"]
    assert sent and sent[0]["authorization"] == f"Bearer {TOKEN}"  # it did go on the wire
    outcomes = {a: [v["outcome"] for _, v in got] for a, got in by_action(await read_all(kafka, results)).items()}
    assert outcomes["act-ok"] == ["delivered"]
    assert outcomes["act-echo400"] == ["dead_lettered"] and outcomes["act-moved"] == ["dead_lettered"]
    assert outcomes["act-echo500"][-1] == "dead_lettered"
    records = [r for t in (results, dead_letter_topic(service), *retries) for r in await read_all(kafka, t)]
    texts = [r.value.decode(errors="replace") + repr(r.headers) for r in records]
    texts += [f"{r.getMessage()} {vars(r)}" for r in caplog.records]
    assert any("[redacted]" in t for t in texts)  # the quoted credentials were there, and were scrubbed
    for secret in (TOKEN, KEY):
        leaked = [t for t in texts if secret in t]
        assert not leaked, leaked[:1]
