"""bench/runtime.py's modes: which runtime path and settings each one measures. No broker."""

from __future__ import annotations

import pytest

from bench.context import BenchContext
from bench.runtime import MAX_IN_FLIGHT, MODES, passthrough_route, passthrough_settings, window


@pytest.mark.parametrize("ordering", ["unordered", "key"])
def test_the_judged_modes_run_the_fast_path_where_the_ordering_changes_nothing(ordering: str) -> None:
    settings = passthrough_settings(passthrough_route("bench", "in", "out"), ordering, window(ordering))
    assert settings.fast_path and settings.ordering == ordering
    assert settings.max_in_flight == MAX_IN_FLIGHT


@pytest.mark.parametrize("ordering", ["unordered", "key"])
def test_each_ordering_is_also_measured_one_record_at_a_time(ordering: str) -> None:
    """The path every service doing I/O runs, the only one on which "unordered" and "key" differ."""
    mode = f"{ordering} per record"
    assert mode in MODES
    settings = passthrough_settings(passthrough_route("bench", "in", "out"), mode, window(mode))
    assert not settings.fast_path and settings.ordering == ordering
    assert settings.max_in_flight == 64  # a route's default window, not the fast path's


async def test_a_runtime_run_with_an_input_processed_twice_or_left_unread_is_an_error_not_a_rate() -> None:
    """bench/runtime.py's clock stops when the sink holds n records: a record processed twice would stop it
    early and flatter the runtime's side of the ratio. After the runtime stops, its group must have
    committed every input and the sink must hold exactly n records (BenchContext.each_once, as the
    router bench checks)."""

    class Counts:
        def __init__(self, committed: int, written: int) -> None:
            self.committed_n, self.written = committed, written

        async def committed(self, group: str, topic: str) -> dict[int, int | None]:
            return {0: self.committed_n, 1: None}

        async def count(self, topic: str) -> int:
            return self.written

        each_once = BenchContext.each_once

    await Counts(100, 100).each_once("g", "in", 100, ["out"], 100)
    for committed, written in ((99, 100), (100, 101)):
        with pytest.raises(RuntimeError, match="processed twice"):
            await Counts(committed, written).each_once("g", "in", 100, ["out"], 100)
