"""Every benchmark's setup, run with a handful of records on the session broker, so none can rot unseen
(the extractor benchmark once crashed on a fresh clone for weeks). Its numbers mean nothing here:
`make bench` measures."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from bench.context import BenchContext
from bench.run import BENCHMARKS, run_one
from services.common.settings import KafkaSettings

NEEDS = {"faust": "faust"}  # a Python package of the bench extra
# measured against a local model server (minutes per run even at the smallest size): `make test-llm`
MODEL_BOUND = {"llm", "eval"}


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("name", "module", "title"), BENCHMARKS, ids=[b[0] for b in BENCHMARKS])
async def test_every_benchmark_runs_with_tiny_counts(
    kafka: KafkaSettings, tmp_path: Path, name: str, module: str, title: str
) -> None:
    if name in MODEL_BOUND:
        pytest.skip("bound by the local model server's speed; `make test-llm` runs it")
    if name in NEEDS and importlib.util.find_spec(NEEDS[name]) is None:
        pytest.skip(f"{NEEDS[name]} is not installed (pip install -e '.[bench]')")
    ctx = BenchContext(kafka, tmp_path / "results", tmp_path / "work", quick=True, repeats=1, smoke=True)
    try:
        result = await run_one(name, module, title, ctx)
    finally:
        await ctx.close()
    assert result["status"] == "ok", result.get("error")
    assert result["summary"], f"{name} reported nothing"
