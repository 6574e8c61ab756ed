"""The benchmark report writer on a synthetic run: JSON, markdown and PNGs, no broker, no benchmark."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.measure import check_line, info_line, ratio_line
from bench.run import BENCHMARKS, run_one, select


def synthetic_run(started_at: str = "2026-11-22T10:00:00Z") -> dict[str, Any]:
    runtime = {
        "status": "ok",
        "title": "runtime pass-through vs a bare aiokafka loop",
        "measured_at": started_at,
        "duration_s": 42.0,
        "summary": [
            ratio_line("runtime 1KB unordered", 12345, "bare", 14000, goal=0.8, samples=[12000, 12345]),
            ratio_line("runtime 20KB key", 900, "bare", 2000, goal=0.8),
            info_line("CPU per record 1KB", "bare 20 us, runtime 70 us"),
        ],
        "charts": [
            {
                "id": "throughput",
                "kind": "bar",
                "title": "Pass-through",
                "ylabel": "records/s",
                "categories": ["1KB", "20KB"],
                "series": {"bare": [14000, 2000], "runtime": [12345, 900]},
            },
            {
                "id": "speedup",
                "kind": "line",
                "title": "Speed-up",
                "xlabel": "instances",
                "ylabel": "x",
                "x": [1, 2, 3, 4],
                "series": {"measured": [1, 1.9, 2.7, 3.6], "ideal (linear)": [1, 2, 3, 4]},
            },
        ],
        "data": {"1KB": {"best_rec_s": {"bare": 14000}}},
        "notes": ["3 partitions."],
    }
    faust = {
        "status": "ok",
        "title": "faust vs runtime",
        "measured_at": started_at,
        "duration_s": 90.0,
        "summary": [check_line("faust kill -9: slow head record processed after restart", False, "committed 201")],
    }
    return {
        "started_at": started_at,
        "command": "python -m bench.run --only runtime,faust",
        "quick": False,
        "host": {"cpus": 2, "python": "3.11.7", "aiokafka": "0.14.0", "kafka": "4.1.0", "loadavg": "0.5"},
        "benchmarks": {
            "runtime": runtime,
            "faust": faust,
            "router": {"status": "not built yet", "title": "router", "module": "bench.router", "summary": []},
            "e2e": {
                "status": "error",
                "title": "e2e",
                "measured_at": started_at,
                "duration_s": 1.0,
                "error": "Traceback (most recent call last):\nRuntimeError: broker went away",
            },
        },
    }


def test_writes_json_markdown_and_a_png_per_chart(tmp_path: Path) -> None:
    report.write(synthetic_run(), tmp_path)

    latest = json.loads((tmp_path / "latest.json").read_text())
    assert set(latest["benchmarks"]) == {"runtime", "faust", "router", "e2e"}
    assert (tmp_path / "20261122T100000Z.json").exists()
    for name in ("runtime-throughput.png", "runtime-speedup.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "REPORT.md").read_text()
    assert "runtime 1KB unordered: 12,345 rec/s vs bare 14,000 rec/s = 0.88 (goal >= 0.8) PASS" in md
    assert "runtime 20KB key: 900 rec/s vs bare 2,000 rec/s = 0.45 (goal >= 0.8) FAIL" in md
    assert "![Pass-through](runtime-throughput.png)" in md
    assert "| faust | faust kill -9: slow head record processed after restart: no (committed 201) FAIL | FAIL |" in md
    assert "| router | not built yet | - |" in md
    assert "| e2e | RuntimeError: broker went away | ERROR |" in md


def test_a_partial_run_keeps_the_other_benchmarks_of_the_last_report(tmp_path: Path) -> None:
    report.write(synthetic_run(), tmp_path)
    later = synthetic_run("2026-11-22T11:00:00Z")
    later["benchmarks"] = {"faust": {**later["benchmarks"]["faust"], "summary": [info_line("faust", "re-run")]}}

    merged = report.write(later, tmp_path)

    assert set(merged["benchmarks"]) == {"runtime", "faust", "router", "e2e"}
    assert merged["benchmarks"]["faust"]["summary"][0]["text"] == "faust: re-run"
    assert merged["started_at"] == "2026-11-22T11:00:00Z"
    assert (tmp_path / "20261122T100000Z.json").exists() and (tmp_path / "20261122T110000Z.json").exists()


def test_ratio_line_without_a_goal_is_reported_not_judged() -> None:
    line = ratio_line("scaling 2 instances", 300, "1 instance", 160)
    assert line["passed"] is None
    assert line["text"] == "scaling 2 instances: 300 rec/s vs 1 instance 160 rec/s = 1.88"


async def test_a_registered_module_that_does_not_exist_is_not_built_yet() -> None:
    result = await run_one("nothing", "bench.no_such_module", "a future benchmark", ctx=None)  # type: ignore[arg-type]
    assert result["status"] == "not built yet"


async def test_a_module_that_fails_to_import_is_an_error_not_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_bench_mod.py").write_text("import no_such_dependency_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = await run_one("broken", "broken_bench_mod", "broken", ctx=None)  # type: ignore[arg-type]
    assert result["status"] == "error"
    assert "no_such_dependency_anywhere" in result["error"]


def test_only_selects_known_benchmarks_and_rejects_unknown_names() -> None:
    assert [b[0] for b in select("scaling,runtime")] == ["runtime", "scaling"]
    assert len(select("")) == len(BENCHMARKS)
    with pytest.raises(SystemExit, match="unknown benchmark"):
        select("runtime,nope")


def test_the_host_speed_probe_of_the_runs_start_and_end_is_in_the_report(tmp_path: Path) -> None:
    from bench.run import host_probe

    probe = host_probe()
    assert set(probe) == {"python_us", "pydantic_us"} and all(v > 0 for v in probe.values())
    run = {**synthetic_run(), "probe_start": {"python_us": 1650.0, "pydantic_us": 2210.4}}
    assert "start 1,650 / 2,210 µs." in report.markdown(run)
    run["probe_end"] = {"python_us": 2480.2, "pydantic_us": 3300.0}
    assert "start 1,650 / 2,210 µs; end 2,480 / 3,300 µs." in report.markdown(run)
    assert "Host speed probe" not in report.markdown(synthetic_run())  # runs from before it


def test_a_ratio_that_rounds_to_its_goal_shows_the_digit_that_decides_it() -> None:
    """The ingress's 6,012 vs 12,098 req/s printed "= 0.50 (goal >= 0.5) FAIL"."""
    missed = ratio_line("ingress", 6012, "bare", 12098, goal=0.5)
    assert missed["text"].endswith("= 0.497 (goal >= 0.5) FAIL")
    assert ratio_line("ingress", 6060, "bare", 12098, goal=0.5)["text"].endswith("= 0.501 (goal >= 0.5) PASS")
    assert ratio_line("ingress", 7213, "bare", 12098, goal=0.5)["text"].endswith("= 0.60 (goal >= 0.5) PASS")
    assert ratio_line("ingress", 50, "bare", 100, goal=0.5)["text"].endswith("= 0.50 (goal >= 0.5) PASS")
