"""Rows built from records, without a database."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson
import pytest

from schemas import headers as h
from services.store import rows as r
from services.store.queries import QueryError, decode_cursor, encode_cursor
from services.store.rows import final_outcome
from tests.support.calls import T0, ended, extracted

SOURCE = r.Source("postcall.extractor.dlq.v1", 2, 41, int(T0.timestamp() * 1000))


def test_final_outcome_prefers_done_then_dead_lettered_then_failed() -> None:
    assert final_outcome([]) == "pending"
    assert final_outcome([(1, "failed")]) == "failed"
    assert final_outcome([(1, "failed"), (2, "dead_lettered")]) == "dead_lettered"
    assert final_outcome([(1, "failed"), (2, "delivered")]) == "delivered"
    assert final_outcome([(1, "delivered"), (2, "failed")]) == "delivered"  # a late failure of a second copy


def test_a_dead_letter_finds_its_conversation_in_the_value_or_the_key() -> None:
    value = extracted(ended("c-in-value")).model_dump_json().encode()
    assert r.dead_letter(SOURCE, "extractor", b"k", value, {}).dead_letters[0]["conversation_id"] == "c-in-value"
    assert r.dead_letter(SOURCE, "router", b"c-key", b"\xff not json", {}).dead_letters[0]["conversation_id"] == "c-key"
    row = r.dead_letter(SOURCE, "router", None, None, {h.ATTEMPTS: "x" * 30}).dead_letters[0]
    assert row["conversation_id"] is None and row["attempts"] is None and row["reason"] == "(no reason recorded)"


def test_forged_dead_letter_headers_are_read_defensively() -> None:
    headers = {h.ORIGINAL_PARTITION: "²", h.FIRST_FAILURE_AT: "yesterday", h.EXCEPTION_MESSAGE: "a\x00b"}
    row = r.dead_letter(SOURCE, "extractor", b"k", b"{}", headers).dead_letters[0]
    assert row["original_partition"] is None and row["first_failure_at"] is None and row["reason"] == "a\ufffdb"


def test_a_dead_letter_whose_failure_time_has_no_utc_equivalent_is_still_stored() -> None:
    """x-first-failure-at is carried from the record that failed, whoever wrote it: year 1 at +05:00 parses
    but is before the first representable UTC time (OverflowError, the dead letter was not stored)."""
    for forged in ("0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"):
        headers = {h.FIRST_FAILURE_AT: forged, h.LAST_FAILURE_AT: forged, h.EXCEPTION_MESSAGE: "boom"}
        row = r.dead_letter(SOURCE, "extractor", b"k", b"{}", headers).dead_letters[0]
        assert row["first_failure_at"] is None and row["last_failure_at"] is None and row["reason"] == "boom"
    marker = {h.DLQ_REPLAYED: "postcall.router.dlq.v1:3:17", h.REPLAYED_AT: "0001-01-01T00:00:00+05:00"}
    assert r.replay_marker(marker, SOURCE).replays[0]["replayed_at"] == T0


def test_a_replay_marker_names_the_dead_letter_it_replayed() -> None:
    headers = {h.DLQ_REPLAYED: "postcall.router.dlq.v1:3:17", h.REPLAYED_BY: "alice", h.REPLAYED_VIA: "api"}
    marker = r.replay_marker(headers, SOURCE)
    assert marker.replays == [
        {
            "kafka_topic": "postcall.router.dlq.v1",
            "kafka_partition": 3,
            "kafka_offset": 17,
            "replayed_at": T0,
            "replayed_by": "alice",
        }
    ]
    assert not r.replay_marker({h.DLQ_REPLAYED: "nonsense"}, SOURCE).replays


def test_a_command_line_replay_is_audited_from_its_marker_and_an_api_replay_is_not() -> None:
    """`postcall dlq replay` went straight to Kafka and left no audit row; the API audits its own."""
    cli = {h.DLQ_REPLAYED: "postcall.router.dlq.v1:3:17", h.REPLAYED_BY: "ops@box", h.REPLAYED_VIA: "cli"}
    (audit,) = r.replay_marker(cli, SOURCE).audits
    assert (audit["actor"], audit["role"], audit["action"], audit["at"]) == ("ops@box", "command line", "replay", T0)
    assert orjson.loads(audit["target"]) == {
        "dead_letter": "postcall.router.dlq.v1:3:17",
        "marker": "postcall.extractor.dlq.v1:2:41",
    }
    older = {h.DLQ_REPLAYED: "postcall.router.dlq.v1:3:17", h.REPLAYED_BY: "ops@box"}  # before x-replayed-via
    assert len(r.replay_marker(older, SOURCE).audits) == 1
    assert r.replay_marker({**cli, h.REPLAYED_VIA: "api"}, SOURCE).audits == []


def test_naive_times_are_read_as_utc() -> None:
    # the contract refuses naive times now; a record written before it (model_copy skips validation) may have one
    naive = ended("c1").model_copy(update={"ended_at": datetime(2026, 1, 1, 12, 0)})
    row = r.conversation_row(naive, T0)
    assert row["ended_at"] == datetime(2026, 1, 1, 12, 0, tzinfo=UTC) and row["ended_day"] == "2026-01-01"


def test_cursors_round_trip() -> None:
    assert decode_cursor(encode_cursor(T0, "c-1"), str) == (T0, "c-1")
    assert decode_cursor(encode_cursor(T0, 7), int) == (T0, 7)


@pytest.mark.parametrize("key", [True, False])
def test_a_cursor_whose_key_is_a_boolean_is_malformed_not_a_number(key: bool) -> None:
    """bool is an int to isinstance(): a forged dead-letter cursor ["...", true] passed, and SQLAlchemy
    refused `id < True` (ArgumentError), a 500 from /api/v1/dead-letters and the console's page."""
    forged = base64.urlsafe_b64encode(orjson.dumps([T0.isoformat(), key])).decode()
    with pytest.raises(QueryError, match="malformed cursor"):
        decode_cursor(forged, int)


def test_a_command_line_reextraction_is_audited_from_its_copy_and_an_original_is_not() -> None:
    """`postcall reextract` from the topic went straight to Kafka and left no audit row."""
    event = ended("c-re")
    (audit,) = r.ended(event, SOURCE, {h.REEXTRACT_OF: event.event_id, h.REEXTRACTED_BY: "ops@box"}).audits
    assert (audit["actor"], audit["role"], audit["action"]) == ("ops@box", "command line", "reextract")
    assert orjson.loads(audit["target"]) == {
        "conversation_id": "c-re",
        "event_id": event.event_id,
        "record": "postcall.extractor.dlq.v1:2:41",
    }
    assert r.ended(event, SOURCE, {}).audits == [] and r.ended(event, SOURCE).audits == []
    from_api = {h.REEXTRACT_OF: event.event_id, h.CE_SOURCE: "/postcall/store"}  # the API audits its own
    assert r.ended(event, SOURCE, from_api).audits == []


def test_a_decision_trace_is_stored_with_a_row_per_flow_saying_whether_it_fired() -> None:
    from tests.support.calls import trace

    decided = trace(ended("c1", agent="support-line"), [("crm-sync", True, ["webhook"]), ("callback", False, [])])
    rows = r.decided(decided, r.Source("postcall.decisions.v1", 0, 7, 0))
    flows = [(f["flow_id"], f["fired"], f["event_id"], f["config_revision"]) for f in rows.decision_flows]
    assert flows == [("crm-sync", True, "evt-c1", "rev-1"), ("callback", False, "evt-c1", "rev-1")]
    assert rows.decision_flows[0]["decided_at"] == decided.decided_at == rows.decisions[0]["decided_at"]
