"""The chaos run checks the recorder's store too: a conversation or a delivered action the recorders never
wrote, or an action stored as not delivered, is a gap; a store that was never created has everything missing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from bench.chaos.store import store_gaps
from services.store.models import Action, Base, Conversation

T = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def store(path: Path, conversations: list[str], actions: dict[str, str]) -> Path:
    engine = create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        for cid in conversations:
            session.add(
                Conversation(
                    conversation_id=cid, event_id=f"e-{cid}", occurred_at=T, account_id="acme", agent_id="chaos-line",
                    channel="voice", direction="inbound", status="completed", started_at=T, ended_at=T,
                    ended_day="2026-11-20", duration_seconds=1.0, end_reason="AGENT_HANGUP", source_platform="copilot",
                    event="{}", received_at=T, stored_at=T,
                )
            )  # fmt: skip
        for aid, outcome in actions.items():
            action = Action(action_id=aid, conversation_id="c1", type="webhook", first_seen_at=T, final_outcome=outcome)
            session.add(action)
        session.commit()
    engine.dispose()
    return path


def test_a_complete_store_has_no_gaps(tmp_path: Path) -> None:
    db = store(tmp_path / "store.db", ["c1", "c2"], {"a1": "delivered", "a2": "delivered"})
    assert set(store_gaps(db, {"c1", "c2"}, {"a1", "a2"}).values()) == {0}


def test_missing_conversations_missing_actions_and_undelivered_actions_are_gaps(tmp_path: Path) -> None:
    db = store(tmp_path / "store.db", ["c1"], {"a1": "delivered", "a2": "failed"})
    assert store_gaps(db, {"c1", "c2"}, {"a1", "a2", "a3"}) == {
        "store_missing_conversations": 1,
        "store_missing_actions": 1,
        "store_undelivered_actions": 1,
    }


def test_a_store_never_created_has_everything_missing(tmp_path: Path) -> None:
    gaps = store_gaps(tmp_path / "absent.db", {"c1", "c2"}, {"a1"})
    assert gaps["store_missing_conversations"] == 2 and gaps["store_missing_actions"] == 1
    assert not (tmp_path / "absent.db").exists()
