"""The ledger benchmark's measuring child, on a small ledger (the real run uses 10 million ids)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.ledger import _child


@pytest.mark.parametrize("store", ["index", "set"])
async def test_the_child_restores_every_id_and_reports_its_memory(store: str, tmp_path: Path) -> None:
    result = await _child(2_400, store, tmp_path)
    assert result["all_found"] and result["ids"] == 2_400
    assert result["rss_mib"] >= result["rss_before_mib"] > 0 and result["hwm_mib"] >= result["rss_mib"]
    assert (result["file_mib"] > 0) == (store == "index")
