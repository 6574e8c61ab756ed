"""`postcall publish FILE|-` as an operator runs it, on the real broker: a ConversationEnded file, a vendor
payload on standard input mapped as the ingress maps it, and each refusal with its exit code (2 a bad
file or payload, 1 not published) and nothing published."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest

from schemas.events import ConversationEnded
from schemas.topics import CONVERSATION_ENDED, Topic
from services.common.kafka import ensure_topics
from services.common.settings import KafkaSettings
from services.devkit.kafka import ROOT, free_port
from services.devkit.webhooks import example
from tests.support.kafka import Received, read_all


@pytest.fixture(autouse=True)
def topic(kafka: KafkaSettings) -> None:
    asyncio.run(ensure_topics(kafka, [Topic(CONVERSATION_ENDED, "test", 3, 3_600_000)], replication=1))


def postcall(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", "publish", *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def records(kafka: KafkaSettings, event_id: str) -> list[Received]:
    return [r for r in asyncio.run(read_all(kafka, CONVERSATION_ENDED)) if r.headers.get("ce_id") == event_id]


def test_a_conversation_file_is_published_once_where_the_cli_says(kafka: KafkaSettings, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    event = orjson.loads((ROOT / "examples" / "conversations" / "0007-appointment-booked.json").read_bytes())
    event |= {"event_id": f"evt-cli-{tag}", "conversation_id": f"conv-cli-{tag}"}
    path = tmp_path / "conversation.json"
    path.write_bytes(orjson.dumps(event))
    done = postcall(str(path), "-b", kafka.bootstrap_servers)
    assert done.returncode == 0, done.stderr
    (record,) = records(kafka, f"evt-cli-{tag}")
    assert done.stdout.strip() == (
        f"published evt-cli-{tag} (conversation conv-cli-{tag}) to {CONVERSATION_ENDED} "
        f"partition {record.partition} offset {record.offset}"
    )
    assert record.key == f"conv-cli-{tag}"
    assert record.headers["ce_source"] == "/retell/acct-copperline"  # a native event names its platform
    assert ConversationEnded.model_validate_json(record.value).conversation_id == f"conv-cli-{tag}"


def test_a_vapi_payload_on_stdin_is_mapped_as_the_ingress_maps_it(kafka: KafkaSettings) -> None:
    call = f"cli-vapi-{uuid.uuid4().hex[:8]}"
    vapi_call_id = b"8c2f4a1e-3b7d-4f0e-9a61-5d2c7e9b1a04"
    body = example("vapi/phone-inbound-with-analysis.json").replace(vapi_call_id, call.encode())
    done = postcall("-", "--from", "vapi", "--account", "acct-cli", "-b", kafka.bootstrap_servers, stdin=body)
    assert done.returncode == 0, done.stderr
    (record,) = records(kafka, f"vapi:{call}:end-of-call-report")
    event = ConversationEnded.model_validate_json(record.value)
    assert (event.conversation_id, event.account.id) == (call, "acct-cli")
    assert record.headers["ce_source"] == "/vapi/acct-cli"
    assert event.platform_analysis is not None and event.platform_analysis.data["issue_category"] == "billing"


@pytest.mark.parametrize(
    ("args", "stdin", "code", "message"),
    [
        (["--from", "retell"], example("retell/phone-voicemail-analyzed.json"), 2, "--account is required"),
        ([], b'{"event_id": ', 2, "-: not valid JSON"),
        (
            ["--from", "vapi", "--account", "acct-cli"],
            b'{"message": {"type": "end-of-call-report"}}',
            2,
            "the payload cannot be used:\n  message.call:",
        ),
        (["--from", "vapi", "--account", "acct-cli"], example("vapi/status-update.json"), 1, "not published:"),
    ],
    ids=["vendor-without-account", "invalid-json", "unusable-payload", "not-a-finished-call"],
)
def test_a_refused_payload_names_the_problem_and_publishes_nothing(
    kafka: KafkaSettings, args: list[str], stdin: bytes, code: int, message: str
) -> None:
    before = len(asyncio.run(read_all(kafka, CONVERSATION_ENDED)))
    done = postcall("-", *args, "-b", kafka.bootstrap_servers, stdin=stdin)
    assert done.returncode == code, (done.stdout, done.stderr)
    assert message in done.stderr and done.stdout == ""
    assert len(asyncio.run(read_all(kafka, CONVERSATION_ENDED))) == before


def test_kafka_unreachable_is_exit_1_within_the_timeout() -> None:
    started = time.monotonic()
    body = (ROOT / "examples" / "conversations" / "0007-appointment-booked.json").read_bytes()
    nowhere = f"127.0.0.1:{free_port()}"
    done = postcall("-", "-b", nowhere, "--timeout", "2", stdin=body)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.splitlines() == [
        f"not published: cannot reach Kafka at {nowhere} (Kafka is not reachable); start it (make kafka) or point "
        "at it with --bootstrap HOST:PORT or POSTCALL_KAFKA__BOOTSTRAP_SERVERS"
    ]
    assert time.monotonic() - started < 60
