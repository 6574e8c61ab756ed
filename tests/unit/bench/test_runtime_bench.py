"""bench/runtime.py's modes: which runtime path and settings each one measures. No broker."""

from __future__ import annotations

import pytest

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
