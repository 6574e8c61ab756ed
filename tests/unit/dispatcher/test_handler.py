"""The handler: once per action_id, results on the ledger partition, failed and dead-lettered outcomes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from schemas.events import ActionCompleted, TaskRequested
from schemas.topics import ACTION_RESULTS
from services.common.errors import PermanentError, RetryableError
from services.dispatcher.delivery import HttpSender
from services.dispatcher.executors import Executors
from services.dispatcher.handler import Dispatcher
from services.dispatcher.ledger import Ledger
from services.dispatcher.registry import Registry
from tests.unit.dispatcher.conftest import CRM, CRM_ENV, context, registry, webhook

Sender = Callable[[Callable[[httpx.Request], httpx.Response], Registry], HttpSender]


async def no_results(topic: str, partition: int, from_offset: int | None) -> AsyncIterator[Any]:
    for _ in ():
        yield


def dispatcher(mock_sender: Sender, answer: Callable[[httpx.Request], httpx.Response]) -> tuple[Dispatcher, list[str]]:
    calls: list[str] = []

    def counting(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers.get("webhook-id", ""))
        return answer(request)

    reg = registry(CRM, CRM_ENV)
    executors = Executors.build(reg, mock_sender(counting, reg), {}, None)
    return Dispatcher(executors, Ledger(no_results)), calls


def completed(emit: Any) -> ActionCompleted:
    assert emit.topic == ACTION_RESULTS
    assert isinstance(emit.value, ActionCompleted)
    return emit.value


async def test_delivered_action_is_recorded_on_the_input_partition(mock_sender: Sender) -> None:
    handle, calls = dispatcher(mock_sender, lambda r: httpx.Response(200))
    [emit] = await handle(webhook("act_1"), context(partition=2))
    result = completed(emit)
    assert (emit.partition, emit.key) == (2, "act_1")
    assert (result.outcome, result.status_code, result.destination, result.attempts) == ("delivered", 200, "crm", 1)
    assert calls == ["act_1"]


async def test_a_repeat_of_a_done_action_is_skipped_and_the_skip_recorded(mock_sender: Sender) -> None:
    handle, calls = dispatcher(mock_sender, lambda r: httpx.Response(200))
    await handle(webhook("act_1"), context(partition=1))
    [emit] = await handle(webhook("act_1"), context(partition=1))
    assert (completed(emit).outcome, emit.key) == ("skipped_duplicate", "act_1")
    assert calls == ["act_1"]


async def test_retry_tier_record_uses_the_original_partition(mock_sender: Sender) -> None:
    handle, _ = dispatcher(mock_sender, lambda r: httpx.Response(200))
    ctx = context(partition=0, attempt=3, original_partition=2)
    [emit] = await handle(webhook("act_1"), ctx)
    assert emit.partition == 2 and completed(emit).attempts == 3
    [emit] = await handle(webhook("act_1"), context(partition=2))
    assert completed(emit).outcome == "skipped_duplicate"


async def test_retryable_failure_carries_a_failed_result(mock_sender: Sender) -> None:
    handle, _ = dispatcher(mock_sender, lambda r: httpx.Response(503, text="maintenance"))
    with pytest.raises(RetryableError) as caught:
        await handle(webhook("act_1"), context(partition=1))
    [emit] = caught.value.emit
    result = completed(emit)
    assert (result.outcome, result.status_code, emit.partition) == ("failed", 503, 1)
    assert result.error is not None and "maintenance" in result.error


async def test_permanent_failure_is_raised_and_dead_letter_emits_records_it(mock_sender: Sender) -> None:
    handle, _ = dispatcher(mock_sender, lambda r: httpx.Response(400))
    with pytest.raises(PermanentError) as caught:
        await handle(webhook("act_1"), context(partition=1))
    [emit] = handle.dead_letter_emits(webhook("act_1"), context(partition=1, attempt=1), caught.value)
    result = completed(emit)
    assert (result.outcome, result.status_code, result.destination, emit.partition) == ("dead_lettered", 400, "crm", 1)


async def test_unknown_destination_is_permanent(mock_sender: Sender) -> None:
    handle, calls = dispatcher(mock_sender, lambda r: httpx.Response(200))
    with pytest.raises(PermanentError, match="unknown destination 'nowhere'"):
        await handle(webhook("act_1", destination="nowhere"), context())
    assert calls == []


async def test_task_without_destination_is_published(mock_sender: Sender) -> None:
    handle, calls = dispatcher(mock_sender, lambda r: httpx.Response(200))
    task = TaskRequested(
        action_id="act_t",
        conversation_id="c",
        agent_id="a",
        flow_id="f",
        action_index=1,
        config_revision="r",
        requested_at=datetime.now(UTC),
        source_event_id="e",
        title="Call back",
    )
    [emit] = await handle(task, context())
    assert completed(emit).outcome == "published" and calls == []


async def test_failures_never_share_the_compaction_key_of_a_done_result(mock_sender: Sender) -> None:
    # results are compacted by key: a failure keyed by action_id could erase an earlier `delivered`
    handle, _ = dispatcher(mock_sender, lambda r: httpx.Response(503))
    with pytest.raises(RetryableError) as caught:
        await handle(webhook("act_1"), context(partition=1, attempt=2))
    [failed] = caught.value.emit
    [dead] = handle.dead_letter_emits(webhook("act_1"), context(partition=1, attempt=7), caught.value)
    assert (completed(failed).outcome, failed.key) == ("failed", "act_1/attempt-2")
    assert (completed(dead).outcome, dead.key) == ("dead_lettered", "act_1/attempt-7")
