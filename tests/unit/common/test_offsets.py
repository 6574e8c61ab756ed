"""The committable offset never passes an unfinished record."""

from __future__ import annotations

from services.common.kafka import PartitionState


def test_commit_stops_at_the_lowest_unfinished_offset() -> None:
    state = PartitionState("t", 0)
    for offset in (5, 6, 7, 8):
        state.accept(offset)
    state.finish(6)
    state.finish(8)
    assert state.committable() == 5  # 5 still runs: 6 and 8 are done but must wait
    state.finish(5)
    assert state.committable() == 7
    state.finish(7)
    assert state.committable() == 9


def test_nothing_to_commit_before_any_record_or_after_a_commit() -> None:
    state = PartitionState("t", 0)
    assert state.committable() is None
    state.accept(0)
    state.finish(0)
    state.committed = 1
    assert state.committable() is None
