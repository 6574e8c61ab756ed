"""What the chaos run checks in the recorder's store (the run's SQLite file, written by two recorders that
are killed with the rest): after the receiver has every action, the store must hold

    store_missing_conversations  conversations published but without a row
    store_missing_actions        webhook-ids the receiver was delivered (the action ids) without an action row
    store_undelivered_actions    those action rows whose final outcome is not a done one (delivered, ...)

all 0. A store the recorders never created counts everything as missing.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Set
from pathlib import Path

from schemas.topics import DONE_OUTCOMES


def store_gaps(db: Path, conversations: Set[str], delivered_ids: Set[str]) -> dict[str, int]:
    stored: set[str] = set()
    outcomes: dict[str, str] = {}
    if db.is_file():
        with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
            stored = {row[0] for row in conn.execute("SELECT conversation_id FROM conversations")}
            outcomes = dict(conn.execute("SELECT action_id, final_outcome FROM actions"))
    kept = delivered_ids & outcomes.keys()
    return {
        "store_missing_conversations": len(conversations - stored),
        "store_missing_actions": len(delivered_ids - outcomes.keys()),
        "store_undelivered_actions": sum(1 for a in kept if outcomes[a] not in DONE_OUTCOMES),
    }
