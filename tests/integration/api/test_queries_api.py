"""The query API on SQLite and PostgreSQL: filters, pagination, one conversation, dead letters, stats."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import httpx

from schemas import headers as h
from schemas.topics import ACTION_RESULTS, CONVERSATION_ENDED, DECISIONS
from services.api.app import create_app
from services.api.settings import ApiSettings
from services.store import rows as r
from services.store import writer
from services.store.db import Store
from tests.integration.api.conftest import unreachable_store
from tests.support.calls import T0, action_id, ended, result, rows_of, story, trace


async def seed(store: Store, n: int = 7) -> None:
    records: list[tuple[str, Any]] = []
    for i in range(n):
        records += story(f"c{i}", at=T0 + timedelta(minutes=i), agent="sales-line" if i % 2 else "support-line")
    event = ended("retrying", at=T0 + timedelta(hours=1))
    aid = action_id("retrying", "crm-sync")
    records += [
        (CONVERSATION_ENDED, event),
        (DECISIONS, trace(event, [("crm-sync", True, ["webhook"])])),
        (ACTION_RESULTS, result(aid, "retrying", "failed", 1, status_code=503, error="HTTP 503: try later")),
    ]
    rows = rows_of(records)
    rows.extend(r.retry_scheduled({"action_id": aid, "conversation_id": "retrying"}, {
        h.ATTEMPTS: "1", h.RETRY_DUE_AT: str((T0 + timedelta(hours=1, minutes=1)).timestamp())}))  # fmt: skip
    source = r.Source("postcall.router.dlq.v1", 1, 9, int(T0.timestamp() * 1000))
    rows.extend(r.dead_letter(source, "router", b"c3", b"<html>", {h.EXCEPTION_MESSAGE: "InvalidRecord: not JSON"}))
    await writer.write(store, rows)


async def test_list_filter_and_page_through_conversations(store: Store, client: httpx.AsyncClient) -> None:
    await seed(store)
    first = (await client.get("/api/v1/conversations", params={"limit": 2, "agent": "sales-line"})).json()
    assert [i["conversation_id"] for i in first["items"]] == ["c5", "c3"]
    second = (
        await client.get(
            "/api/v1/conversations", params={"limit": 2, "agent": "sales-line", "cursor": first["next_cursor"]}
        )
    ).json()
    assert [i["conversation_id"] for i in second["items"]] == ["c1"] and second["next_cursor"] is None
    item = first["items"][0]
    assert item["agent"] == {"id": "sales-line", "name": "Sales Line", "version": "3"}
    assert item["actions"] == {"total": 2, "delivered": 2, "failed": 0, "dead_lettered": 0}
    assert item["extraction_status"] == "ok" and item["summary"] == "Customer asked for a callback."
    failing = (await client.get("/api/v1/conversations", params={"failed": "true"})).json()
    assert [i["conversation_id"] for i in failing["items"]] == ["retrying", "c3"]
    both = await client.get(
        "/api/v1/conversations",
        params=[("end_reason", "CUSTOMER_HANGUP"), ("end_reason", "VOICEMAIL"), ("since", "2026-03-10T09:05:00Z")],
    )
    assert [i["conversation_id"] for i in both.json()["items"]] == ["retrying", "c6", "c5"]


async def test_one_conversation_with_every_attempt_and_its_next_retry(store: Store, client: httpx.AsyncClient) -> None:
    await seed(store)
    detail = (await client.get("/api/v1/conversations/retrying")).json()
    (action,) = detail["actions"]
    assert action["final_outcome"] == "failed" and action["flow_id"] == "crm-sync"
    (attempt,) = action["attempts"]
    assert attempt["status_code"] == 503 and attempt["error"] == "HTTP 503: try later"
    assert attempt["next_retry_at"] == "2026-03-10T10:01:00Z"
    assert detail["event"]["customer"]["name"] == "Tom Becker"
    full = (await client.get("/api/v1/conversations/c1")).json()
    assert full["extractions"][0]["fields"]["follow_up_required"] == {
        "value": True,
        "evidence": "Please call me back tomorrow.",
        "confidence": 0.93,
        "needs_review": False,
        "raw": None,  # what a model answered before normalisation, when it differed
    }
    assert full["decisions"][0]["flows"][0]["fired"] is True
    assert {a["final_outcome"] for a in full["actions"]} == {"delivered", "published"}


async def test_a_deferred_attempt_shows_its_retry_which_keeps_its_attempt_number(
    store: Store, client: httpx.AsyncClient
) -> None:
    """A delivery a rate limit deferred is not attempted: its retry copy comes back as the same attempt, and
    the timeline looked for the next one, so it showed a failed attempt with no next retry (walk24: ops-slack
    at 1/s behind 30 escalations)."""
    event = ended("deferred", at=T0)
    aid = action_id("deferred", "crm-sync")
    deferral = "Deferred: rate limit of destination crm reached"
    rows = rows_of([
        (CONVERSATION_ENDED, event),
        (DECISIONS, trace(event, [("crm-sync", True, ["webhook"])])),
        (ACTION_RESULTS, result(aid, "deferred", "failed", 1, status_code=None, error=deferral)),
    ])  # fmt: skip
    rows.extend(r.retry_scheduled({"action_id": aid, "conversation_id": "deferred"}, {
        h.ATTEMPTS: "0", h.RETRY_DUE_AT: str((T0 + timedelta(seconds=9)).timestamp())}))  # fmt: skip
    await writer.write(store, rows)
    (action,) = (await client.get("/api/v1/conversations/deferred")).json()["actions"]
    (attempt,) = action["attempts"]
    assert attempt["attempt"] == 1 and attempt["error"] == deferral
    assert attempt["next_retry_at"] == "2026-03-10T09:00:09Z"


async def test_a_deferral_a_recorder_before_0014_stored_shows_its_own_retry(
    store: Store, client: httpx.AsyncClient
) -> None:
    """A rolling upgrade: the store is at 0014 while a recorder of the version before still writes, without
    the `deferred` column (its default: false). Its deferral's retry is still the one under its own attempt."""
    event = ended("deferred-old", at=T0)
    aid = action_id("deferred-old", "crm-sync")
    deferral = "Deferred: rate limit of destination crm reached"
    rows = rows_of([
        (CONVERSATION_ENDED, event),
        (DECISIONS, trace(event, [("crm-sync", True, ["webhook"])])),
        (ACTION_RESULTS, result(aid, "deferred-old", "failed", 1, status_code=None, error=deferral)),
    ])  # fmt: skip
    for row in rows.attempts:
        del row["deferred"]  # as the writer before 0014 made them
    rows.extend(r.retry_scheduled({"action_id": aid, "conversation_id": "deferred-old"}, {
        h.ATTEMPTS: "0", h.RETRY_DUE_AT: str((T0 + timedelta(seconds=9)).timestamp())}))  # fmt: skip
    await writer.write(store, rows)
    (action,) = (await client.get("/api/v1/conversations/deferred-old")).json()["actions"]
    (attempt,) = action["attempts"]
    assert attempt["error"] == deferral and attempt["next_retry_at"] == "2026-03-10T09:00:09Z"


async def test_a_deferral_after_a_failure_shows_the_deferrals_retry_not_the_one_it_deferred(
    store: Store, client: httpx.AsyncClient
) -> None:
    """Attempt 1 failed (retry: attempt 2 at +9 s); at +9 s a rate limit deferred attempt 2, whose copy comes
    back as attempt 2 again at +60 s. The retries row of attempt 2 kept the first copy's time, so the deferral
    showed a next retry already past. Whichever copy the recorder reads first (they may be on different tiers),
    in one write or two, attempt 2 is due at +60 s."""
    event = ended("deferred-late", at=T0)
    aid = action_id("deferred-late", "crm-sync")
    deferral = "Deferred: rate limit of destination crm reached"
    rows = rows_of([
        (CONVERSATION_ENDED, event),
        (DECISIONS, trace(event, [("crm-sync", True, ["webhook"])])),
        (ACTION_RESULTS, result(aid, "deferred-late", "failed", 1, status_code=503, error="HTTP 503: try later")),
        (ACTION_RESULTS, result(aid, "deferred-late", "failed", 2, status_code=None, error=deferral)),
    ])  # fmt: skip
    await writer.write(store, rows)
    action = {"action_id": aid, "conversation_id": "deferred-late"}
    due = [{h.ATTEMPTS: "1", h.RETRY_DUE_AT: str((T0 + timedelta(seconds=s)).timestamp())} for s in (9, 60)]
    copies = [r.retry_scheduled(action, headers) for headers in due]
    for order in ([copies[0], copies[1]], [copies[1], copies[0]], [copies[1]]):
        for written in order:
            await writer.write(store, written)
        (shown,) = (await client.get("/api/v1/conversations/deferred-late")).json()["actions"]
        first, deferred = shown["attempts"]
        assert first["next_retry_at"] == deferred["next_retry_at"] == "2026-03-10T09:01:00Z", order
    together = r.Rows()
    together.extend(copies[1])
    together.extend(copies[0])
    await writer.write(store, together)
    (shown,) = (await client.get("/api/v1/conversations/deferred-late")).json()["actions"]
    assert shown["attempts"][1]["next_retry_at"] == "2026-03-10T09:01:00Z"


async def test_a_real_failure_of_an_attempt_a_rate_limit_deferred_first_is_shown_beside_the_deferral(
    store: Store, client: httpx.AsyncClient
) -> None:
    """Attempt 1 deferred (not made), its retry copy back as attempt 1, which then failed for real (503):
    attempts were unique by (action_id, attempt, outcome), so the 503 was dropped as a copy of the deferral
    and the timeline never showed the destination's answer (review24). A copy of either is still one row."""
    event = ended("deferred-then-503", at=T0)
    aid = action_id("deferred-then-503", "crm-sync")
    deferral = "Deferred: rate limit of destination crm reached"
    records = [
        (CONVERSATION_ENDED, event),
        (DECISIONS, trace(event, [("crm-sync", True, ["webhook"])])),
        (ACTION_RESULTS, result(aid, "deferred-then-503", "failed", 1, status_code=None, error=deferral)),
        (ACTION_RESULTS, result(aid, "deferred-then-503", "failed", 1, status_code=503, error="HTTP 503: busy")),
    ]
    await writer.write(store, rows_of(records))
    await writer.write(store, rows_of(records[2:]))  # read again: no new row
    (action,) = (await client.get("/api/v1/conversations/deferred-then-503")).json()["actions"]
    shown = [(a["attempt"], a["status_code"], a["error"], a["deferred"]) for a in action["attempts"]]
    assert shown == [(1, None, deferral, True), (1, 503, "HTTP 503: busy", False)]


async def test_a_conversation_whose_id_holds_a_slash_is_found(store: Store, client: httpx.AsyncClient) -> None:
    """The contract takes any id (Dialogflow CX names a conversation projects/.../conversations/ID): the route
    took one path segment, so its URL (the slash encoded, as `postcall explain --api` sends it) was the
    router's 404 "Not Found", and explain then said there was no decision trace in the store."""
    cid = "projects/p1/locations/global/conversations/c-7"
    await writer.write(store, rows_of(story(cid)))
    found = await client.get(f"/api/v1/conversations/{quote(cid, safe='')}")
    assert found.status_code == 200, found.text
    assert found.json()["conversation_id"] == cid and found.json()["decisions"][0]["conversation_id"] == cid


async def test_dead_letters_and_their_counts(store: Store, client: httpx.AsyncClient) -> None:
    await seed(store)
    page = (await client.get("/api/v1/dead-letters", params={"service": "router"})).json()
    (letter,) = page["items"]
    assert letter["coordinates"] == "postcall.router.dlq.v1:1:9" and letter["conversation_id"] == "c3"
    detail = (await client.get(f"/api/v1/dead-letters/{letter['id']}")).json()
    assert detail["value_text"] == "<html>" and detail["value"] is None
    counts = (await client.get("/api/v1/dead-letters/counts")).json()
    assert [(c["service"], c["reason"], c["count"]) for c in counts] == [("router", "InvalidRecord: not JSON", 1)]
    assert (await client.get("/api/v1/dead-letters", params={"service": "extractor"})).json()["items"] == []


async def test_stats_per_agent_and_day(store: Store, client: httpx.AsyncClient) -> None:
    await seed(store)
    days = await client.get("/api/v1/stats", params={"since": "2026-03-01T00:00:00Z", "until": "2026-04-01T00:00:00Z"})
    by_agent = {d["agent_id"]: d for d in days.json()}
    assert by_agent["sales-line"]["conversations"] == 3 and by_agent["support-line"]["conversations"] == 5
    assert by_agent["support-line"]["actions_failed"] == 1
    assert by_agent["sales-line"]["prompt_tokens"] == 3 * 120


async def test_bad_input_is_a_4xx_naming_the_problem(store: Store, client: httpx.AsyncClient) -> None:
    bad_cursor = await client.get("/api/v1/conversations", params={"cursor": "xyz"})
    assert bad_cursor.status_code == 400 and "malformed cursor" in bad_cursor.json()["detail"]
    bad_reason = await client.get("/api/v1/conversations", params={"end_reason": "HUNG_UP"})
    assert bad_reason.status_code == 422 and bad_reason.json()["detail"][0]["loc"] == ["query", "end_reason", 0]
    naive = await client.get("/api/v1/conversations", params={"since": "2026-03-10T09:00:00"})
    assert naive.status_code == 422 and "timezone" in naive.text
    too_many = await client.get("/api/v1/conversations", params={"limit": 100_000})
    assert too_many.status_code == 422 and too_many.json()["detail"][0]["loc"] == ["query", "limit"]
    missing = await client.get("/api/v1/conversations/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    backwards = await client.get(
        "/api/v1/stats", params={"since": "2026-03-10T00:00:00Z", "until": "2026-03-01T00:00:00Z"}
    )
    assert backwards.status_code == 400
    nul = await client.get("/api/v1/conversations", params={"q": "a\x00b"})
    assert nul.status_code == 200


async def test_a_nul_in_the_stats_agent_matches_nothing_and_is_no_503(store: Store) -> None:
    """PostgreSQL refuses NUL in a text parameter: /stats?agent= passed it through, and the DataError was
    answered 503 "the store is unavailable; try again shortly" (SQLite: 200 and nothing)."""
    await seed(store)
    app = create_app(ApiSettings.model_validate({"database": {"url": "sqlite://"}}), store=store)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        nul = await client.get("/api/v1/stats", params={"agent": "sales\x00line", "since": "2026-03-01T00:00:00Z"})
    assert nul.status_code == 200 and nul.json() == [], nul.text


async def test_numbers_and_times_the_store_cannot_hold_are_a_4xx_never_a_500(store: Store) -> None:
    """An id past 64 bits (SQLite: OverflowError; PostgreSQL: a DataError answered 503 as if the store were
    down), a time that is out of range once moved to UTC, a cursor carrying either: each is the caller's."""
    await seed(store, 1)
    app = create_app(ApiSettings.model_validate({"database": {"url": "sqlite://"}}), store=store)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    huge = str(2**64 - 1)  # orjson reads it: a cursor may carry it
    cursors = [
        base64.urlsafe_b64encode(f'["0001-01-01T00:00:00+05:00", {key}]'.encode()).decode().rstrip("=")
        for key in ('"c0"', "1")
    ] + [base64.urlsafe_b64encode(f'["2026-03-10T09:00:00+00:00", {huge}]'.encode()).decode().rstrip("=")]
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        for path, params in [
            (f"/api/v1/dead-letters/{huge}", {}),
            ("/api/v1/dead-letters", {"ids": huge}),
            ("/api/v1/dead-letters/counts", {"ids": huge}),
            ("/api/v1/audit", {"cursor": huge}),
            ("/api/v1/conversations", {"since": "0001-01-01T00:00:00+05:00"}),
            ("/api/v1/conversations", {"until": "9999-12-31T23:59:59-05:00"}),
            ("/api/v1/dead-letters", {"since": "0001-01-01T00:00:00+05:00"}),
            ("/api/v1/dead-letters/counts", {"until": "9999-12-31T23:59:59-05:00"}),
            ("/api/v1/stats", {"since": "0001-01-01T00:00:00+05:00", "until": "2026-01-01T00:00:00Z"}),
            ("/api/v1/conversations", {"cursor": cursors[0]}),
            ("/api/v1/dead-letters", {"cursor": cursors[1]}),
            ("/api/v1/dead-letters", {"cursor": cursors[2]}),
        ]:
            answer = await client.get(path, params=params)
            assert answer.status_code in (400, 404, 422), (path, params, answer.status_code, answer.text)
            named = ("out of range", "no dead letter", "malformed cursor")
            assert any(n in answer.text for n in named), (path, params, answer.text)
        early = await client.get("/api/v1/stats", params={"until": "0001-01-02T00:00:00Z"})
        assert early.status_code == 200 and early.json() == []  # the default 30 days stop at the earliest time
        dry = await client.post("/api/v1/dead-letters/replay", json={"dry_run": True, "filter": {"ids": [2**63]}})
        assert dry.status_code == 400 and "out of range" in dry.text, dry.text


async def test_an_unreachable_store_is_a_503_that_says_so_never_a_500() -> None:
    """asyncpg raises OSError (ConnectionRefusedError) when it cannot connect, which SQLAlchemy does not wrap
    as a DBAPIError: every route answered 500 "Internal Server Error" while PostgreSQL was down."""
    store = unreachable_store()
    app = create_app(ApiSettings.model_validate({"database": {"url": "sqlite://"}}), store=store)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            for path in ("/api/v1/conversations", "/api/v1/conversations/c1", "/api/v1/dead-letters", "/api/v1/stats"):
                answer = await client.get(path)
                assert answer.status_code == 503, (path, answer.status_code, answer.text)
                assert answer.json() == {"detail": "the store is unavailable; try again shortly"}
            assert (await client.get("/readyz")).status_code == 503
    finally:
        await store.engine.dispose()
