"""docs/downstream.md, read literally as a downstream team would: its recipes run on what the router
writes, and what it says about the records is what they hold."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from schemas.content import content_digest
from schemas.events import ScheduleCallRequested, TaskRequested
from services.common.errors import RetryableError
from services.router.actions import with_content
from tests.unit.router.support import NOW, agent, event

DOC = Path(__file__).resolve().parents[2] / "docs" / "downstream.md"


def python_block(marker: str) -> str:
    blocks: list[str] = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    (block,) = [b for b in blocks if marker in b]
    return block


def task(title: str, action_id: str = "a1b2c3d4-0000-5000-8000-000000000001") -> TaskRequested:
    return TaskRequested(
        action_id=action_id, conversation_id="conv-1", agent_id="support-line", flow_id="callback",
        action_index=1, config_revision="rev-1", flow_revision="f" * 16,
        requested_at=datetime(2026, 3, 1, 12, tzinfo=UTC), source_event_id="evt-1", title=title, priority="High",
    )  # fmt: skip


def correction(title: str) -> TaskRequested:
    """What `postcall reextract --redeliver` makes of the task once its content changed (the router's code)."""
    action = task(title)
    with_content(action, redeliver=True)
    return action


def test_the_consumer_example_updates_the_task_a_correction_supersedes_instead_of_creating_another() -> None:
    """The example created a task for every record with a new action_id: each correction of a task
    (`reextract --redeliver`) became a second task, though the doc says to upsert (walked by downstream25:
    one task action, two corrections, three tasks)."""
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(python_block("AIOKafkaConsumer"), "docs/downstream.md", "exec"), namespace)  # our own docs
    original, fixed, fixed_again = task("Call back"), correction("Call back at 3 pm"), correction("Call back at 4 pm")
    records = [original, original, fixed, fixed, task("Call back (re-extracted)"), fixed_again]

    async def consume() -> None:
        for action in records:
            await namespace["perform"](orjson.loads(action.model_dump_json()))

    asyncio.run(consume())
    assert fixed.supersedes == fixed_again.supersedes == original.action_id != fixed.action_id
    assert namespace["tasks"] == {original.action_id: {"priority": "High", "title": "Call back at 4 pm"}}


TWO_TASKS = """
    agent: support-line
    extraction:
      fields:
        - {name: interest_level, type: enum, values: [high, low]}
    flows:
      - id: follow-up
        actions:
          - {type: task, priority: High, title: "Follow up ({{interest_level}})"}
          - {type: task, priority: Low, title: "Log the call"}
"""


def test_what_a_topic_consumer_reads_after_a_reextraction_and_a_redelivery_is_what_the_doc_says(
    tmp_path: Path,
) -> None:
    """The doc said a re-extraction's actions are 'not sent again' and a re-delivery's unchanged ones 'are
    not sent': true of what the dispatcher delivers, not of the action topics, where the router writes
    both (walked by downstream25 on the live stack: the task topic held the same action_id with the new
    values, and an unchanged schedule_call under a new id with supersedes)."""
    compiled = agent(tmp_path, TWO_TASKS)

    def routed(level: str, extraction_id: str, redeliver: bool = False) -> list[dict[str, Any]]:
        record = event(fields={"interest_level": level}).model_copy(update={"event_id": extraction_id})
        return [orjson.loads(a.model_dump_json()) for a in compiled.route(record, NOW, (redeliver, False))[1]]

    first, again, corrected = routed("high", "evt-1"), routed("low", "evt-2"), routed("low", "evt-3", True)
    # re-extracted: the same ids, written again with the new values
    assert [a["action_id"] for a in again] == [a["action_id"] for a in first]
    assert [a["title"] for a in again] == ["Follow up (low)", "Log the call"]
    # re-delivered: both under new ids superseding the first, the unchanged one too, with its own digest
    assert [a["supersedes"] for a in corrected] == [a["action_id"] for a in first]
    assert corrected[1]["content_digest"] == content_digest(TaskRequested.model_validate(first[1]))
    # the doc says so, and its consumer ends with one task per action, holding the latest content
    text = " ".join(DOC.read_text().split())
    assert "has its actions written again under the same `action_id`s, with that run's values" in text
    assert (
        "On the action topics every action of the flows that fire is written under its new id, changed or not" in text
    )
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(python_block("AIOKafkaConsumer"), "docs/downstream.md", "exec"), namespace)  # our own docs

    async def consume() -> None:
        for action in [*first, *again, *corrected]:
            await namespace["perform"](action)

    asyncio.run(consume())
    assert {k: v["title"] for k, v in namespace["tasks"].items()} == {
        first[0]["action_id"]: "Follow up (low)",
        first[1]["action_id"]: "Log the call",
    }


def test_source_event_id_is_described_as_the_extraction_it_came_from_as_the_router_sets_it(tmp_path: Path) -> None:
    """The doc said `source_event_id` is the ConversationEnded's event_id; the router sets the
    ConversationExtracted's (the DecisionTrace's event_id too), a uuid5 new for every re-extraction, so a
    team joining it to the conversations it publishes found nothing (walked by downstream25: evt-walk-normal-1
    published, source_event_id 991cc263-...)."""
    record = event(fields={"interest_level": "high"}).model_copy(update={"event_id": "extracted-1"})
    trace, actions = agent(tmp_path, TWO_TASKS).route(record, NOW)
    assert {a.source_event_id for a in actions} == {trace.event_id} == {record.event_id}
    assert record.conversation.event_id not in {trace.event_id}
    (row,) = [line for line in DOC.read_text().splitlines() if line.startswith("| `source_event_id` |")]
    assert "the `event_id` of the `ConversationExtracted`" in row and "DecisionTrace" in row
    described = TaskRequested.model_json_schema()["properties"]["source_event_id"]["description"]
    assert "ConversationExtracted" in described and "not the ConversationEnded" in described


def test_the_retry_schedule_a_receiver_is_told_is_the_dispatchers() -> None:
    """A receiver was told its 5xx and 429 are 'retried through the retry tiers' and Retry-After is
    'honoured, capped', never when the retries come, for how long, or what a Retry-After turns into (walked
    by downstream25: a 429 with Retry-After 12 on tiers of 3, 6, 9 s came back after 9 s, the last tier)."""
    from schemas.routes import DISPATCHER
    from services.common.process import choose_tier
    from services.dispatcher.settings import DispatcherSettings
    from tests.contract.test_docs_names import spoken

    runtime = DispatcherSettings.model_fields["runtime"].get_default(call_default_factory=True)
    delays = DISPATCHER.retry_delays_seconds  # the dispatcher's runtime defaults to its route's
    text = " ".join(DOC.read_text().split())
    jitter = f"{runtime.retry_jitter:.0%}".replace("%", " %")
    assert f"goes again after {', '.join(spoken(d) for d in delays)} (each ±{jitter}):" in text
    assert f"{len(delays) + 1} attempts in about {sum(delays) / 3600:.1f} hours" in text
    floor = DispatcherSettings.model_fields["retry_after_floor_seconds"].default
    assert f"counted from {floor:g} s up to {runtime.retry_after_cap_seconds / 3600:g} hour" in text
    assert delays[choose_tier(delays, 1, 60) - 1] == 300
    assert "`Retry-After: 60` on a first attempt: the 5-minute tier" in text


DOCS = [*sorted(DOC.parent.glob("*.md")), DOC.parents[1] / "README.md"]
_JSON_BLOCK = re.compile(r"`(\w+)\.v1\.schema\.json`[^`]{0,40}\n\n( *)```json\n(.*?)\n *```", re.S)


def json_examples(path: Path) -> list[tuple[str, Any]]:
    """Every ```json block of a doc with the schema the sentence before it names (`X.v1.schema.json`)."""
    text = path.read_text()
    found = [(m.group(1), orjson.loads(m.group(3))) for m in _JSON_BLOCK.finditer(text)]
    assert len(found) == text.count("```json"), f"{path.name}: a JSON example that names no schema just before it"
    return found


def test_every_json_example_in_the_docs_validates_against_the_schema_it_illustrates() -> None:
    """docs/downstream.md had no example of what is on the topics; its examples now show a task, its
    correction and its result. Each must be what the schema (and the model) accepts, and what the doc's
    formulas make: the ids, the correction's digest and id, the result's digest."""
    from jsonschema import Draft202012Validator, FormatChecker

    from schemas import events, generate

    checked = []
    for path in DOCS:
        for name, example in json_examples(path):
            schema = orjson.loads(
                (DOC.parents[1] / "schemas" / "json" / f"{name}{generate.SCHEMA_SUFFIX}").read_bytes()
            )
            errors = [
                e.message for e in Draft202012Validator(schema, format_checker=FormatChecker()).iter_errors(example)
            ]
            assert errors == [], (path.name, name, errors)
            getattr(events, name).model_validate(example)
            checked.append((path.name, name))
    assert {n for doc, n in checked if doc == DOC.name} >= {"TaskRequested", "ActionCompleted"}
    task_, fixed = [TaskRequested.model_validate(e) for n, e in json_examples(DOC) if n == "TaskRequested"]
    (completed,) = [e for n, e in json_examples(DOC) if n == "ActionCompleted"]
    ns = uuid.uuid5(uuid.NAMESPACE_URL, "urn:postcall:action-id")
    parts = (task_.conversation_id, task_.agent_id, task_.flow_id, task_.flow_revision, task_.action_index)
    assert task_.action_id == str(uuid.uuid5(ns, "/".join(map(str, parts))))
    assert fixed.supersedes == task_.action_id and fixed.content_digest == content_digest(fixed)
    assert fixed.action_id == str(
        uuid.uuid5(ns, f"{task_.action_id}/content/{fixed.content_digest}/{fixed.source_event_id}")
    )
    assert completed["action_id"] == task_.action_id and completed["content_digest"] == content_digest(task_)


def test_the_field_table_names_every_common_field_and_says_null_where_records_write_null() -> None:
    """The table said `destination` is 'a destination name ..., or absent'; records always carry it, as
    null (walked: every task and team_alert record had "destination": null), so `"destination" in action`
    is true of every record."""
    text = DOC.read_text()
    start = text.index("Every action payload has these fields")
    table = text[start:].split("\n\n")[1]  # the paragraph after the sentence
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    named = {name for row in rows for name in re.findall(r"`(\w+)`", row.split("|")[1])}
    fields = set(TaskRequested.model_json_schema()["properties"]) - {"title", "description", "priority", "assignee"}
    assert named == fields
    written = orjson.loads(task("Call back").model_dump_json())
    assert {k for k in fields if written[k] is None} == {"destination", "content_digest", "supersedes"}
    assert not [row for row in rows if "absent" in row]
    assert "always present (`null` when not set)" in text


def test_every_header_the_dispatcher_adds_to_an_email_is_named_in_the_doc() -> None:
    """X-Postcall-Conversation-Id was on every email (walked: aiosmtpd received it) and named nowhere, though
    the doc tells webhook receivers that no header names the conversation."""
    from schemas.events import EmailRequested
    from services.dispatcher.executors.email import build_message

    common = task("x").model_dump(exclude={"type", "title", "description", "priority", "assignee"})
    email = EmailRequested(**common, to=["desk@example.com"], subject="Call", text="Hi")
    with_content(email, redeliver=True)  # a correction: Supersedes too
    standard = {"from", "to", "subject", "date", "content-type", "content-transfer-encoding", "mime-version"}
    message = build_message(email, "postcall@example.com", auto_submitted=True)  # every header it may add
    ours = [name for name in message if name.lower() not in standard]
    assert set(ours) == {
        "Message-ID",
        "X-Postcall-Action-Id",
        "X-Postcall-Conversation-Id",
        "Supersedes",
        "Auto-Submitted",
        "X-Auto-Response-Suppress",
    }
    text = DOC.read_text()
    assert [name for name in ours if f"`{name}" not in text] == []


def test_the_doc_says_an_attempt_an_open_circuit_holds_back_counts_and_a_deferral_does_not() -> None:
    """Walked by downstream25 (14 actions to a receiver answering 500, tiers 3, 6, 9 s): after the first
    request each, the circuit opened and every later attempt was 'circuit open', no request made, until
    all 14 were dead-lettered: a receiver sees fewer requests than the schedule's attempts."""
    from services.common.api import Deferred
    from services.common.breaker import BreakerPolicy, CircuitBreaker
    from services.dispatcher.limits import Gate

    async def refused() -> BaseException:
        breaker = CircuitBreaker(BreakerPolicy(consecutive_failures=1, open_seconds=30))
        g = Gate("crm", max_concurrency=1, max_waiting=1, max_wait_seconds=0.2, breaker=breaker)
        async with g.slot() as slot:
            slot.record(False)
        try:
            async with g.slot():
                raise AssertionError("sent through an open circuit")
        except RetryableError as exc:
            return exc

    # the runtime counts every failed attempt but a Deferred one (services.common.process.Processor.fail)
    assert not isinstance(asyncio.run(refused()), Deferred)
    text = " ".join(DOC.read_text().split())
    assert "So is an attempt the destination's open circuit breaker (below) holds back: nothing is sent" in text
    assert "one a rate limit holds back (`Deferred:`) is not counted" in text


def test_the_doc_does_not_let_a_receiver_expect_the_routers_order() -> None:
    """The Ordering section promised 'flow order then action order' and said nothing of the requests the
    dispatcher sends, which run concurrently (walked by downstream25: a conversation's webhook, action 0,
    reached its receiver after the Slack message and the posted task of actions 2 and 6)."""
    from schemas.routes import DISPATCHER

    assert DISPATCHER.ordering == "unordered"
    text = " ".join(DOC.read_text().split())
    assert "on each action topic one conversation's records are on one partition" in text
    assert "**What the dispatcher sends has no order**, not even within a conversation" in text


def test_the_decisions_topic_is_described_as_one_trace_per_routing_as_a_reextraction_adds_one(tmp_path: Path) -> None:
    """Doc, AsyncAPI and model said 'one DecisionTrace per conversation'; the topic is not compacted and a
    re-extraction adds a trace (walked by downstream25: walk-normal-1 had a trace per reextract run), so
    support tooling taking 'the' trace of a conversation could show a stale one."""
    from schemas.topics import DECISION_TRACES

    compiled = agent(tmp_path, TWO_TASKS)
    traces = [compiled.route(event().model_copy(update={"event_id": e}), NOW)[0] for e in ("evt-1", "evt-2")]
    assert [t.conversation_id for t in traces] == ["conv-1", "conv-1"] and traces[0].event_id != traces[1].event_id
    text = " ".join(DOC.read_text().split())
    assert "has one `DecisionTrace` each time a conversation is routed" in text
    assert "per conversation" not in DECISION_TRACES.description


def test_every_field_a_topic_consumer_reads_is_described_in_the_json_schema() -> None:
    """The doc sends other languages to the JSON Schemas to generate types; the records a downstream team
    reads itself (the common action fields, schedule_call, task and team_alert, and ActionCompleted) had
    most fields undescribed: to_number's origin, scheduled_at's clock, what `everyone` means, what
    `attempts` counts, when status_code is null."""
    from schemas import generate

    bare = []
    for name in ("ScheduleCallRequested", "TaskRequested", "TeamAlertRequested", "WebhookRequested", "ActionCompleted"):
        schema = orjson.loads((DOC.parents[1] / "schemas" / "json" / f"{name}{generate.SCHEMA_SUFFIX}").read_bytes())
        bare += [
            f"{name}.{field}"
            for field, spec in schema["properties"].items()
            if field != "type" and not spec.get("description")
        ]
    assert bare == []


def test_the_cloudevents_recipe_reads_an_action_record_as_the_router_writes_it(tmp_path: Path) -> None:
    """The doc said 'generic CloudEvents tooling can read the records' with no recipe and no ce_subject;
    walked by downstream25 with the SDK on every record of the live stack (236, all read). The recipe now
    in the doc, on an action record with the headers the router's runtime writes."""
    from types import SimpleNamespace

    from schemas.topics import ACTION_STREAMS
    from services.common import codec

    namespace: dict[str, Any] = {}
    exec(compile(python_block("def cloud_event("), "docs/downstream.md", "exec"), namespace)  # our own docs
    _, [action, _] = agent(tmp_path, TWO_TASKS).route(event(fields={"interest_level": "high"}), NOW)
    ce_type = ACTION_STREAMS["task"].ce_type
    headers = codec.cloudevent_headers(action, ce_type, "router", action.conversation_id)
    record = SimpleNamespace(headers=codec.header_list(headers), key=b"conv-1", value=codec.encode(action))
    read = namespace["cloud_event"](record)
    assert (read.get_id(), read.get_type(), read.get_subject()) == (action.action_id, ce_type, "conv-1")
    assert read.get_data() == orjson.loads(action.model_dump_json())


CALLBACK = """
    agent: support-line
    flows:
      - id: callback
        actions: [{type: schedule_call, fallback_delay_minutes: 60}]
"""


def test_a_dialer_is_told_scheduled_at_can_be_past_as_it_is_for_an_older_call(tmp_path: Path) -> None:
    """Walked by downstream25: a schedule_call for an example conversation of March, routed in December,
    had scheduled_at 2026-03-12T20:03:59Z, nine months past; the doc said nothing a dialer could act on."""
    _, [call] = agent(tmp_path, CALLBACK).route(event(), NOW + timedelta(days=30))
    assert isinstance(call, ScheduleCallRequested) and call.scheduled_at < NOW
    text = " ".join(DOC.read_text().split())
    assert "so it is in the past when the conversation reaches you late" in text
