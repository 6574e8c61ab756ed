"""Write a benchmark run: <UTC timestamp>.json, latest.json (merged with earlier runs), REPORT.md, PNG plots.

A run is {"started_at", "finished_at", "command", "quick", "host": {...}, "benchmarks": {name: result}}.
A result is what bench.run made of a module's return value:

    {"status": "ok" | "not built yet" | "error", "title", "measured_at", "duration_s",
     "summary": [line, ...],            # bench.measure.ratio_line / check_line / info_line
     "charts": [chart, ...], "data": {...}, "notes": [str, ...], "error": str}

A chart is drawn here, so bench modules never import matplotlib:

    {"id": "throughput", "kind": "bar", "title", "ylabel", "categories": [...], "series": {name: [values]}}
    {"id": "speedup", "kind": "line", "title", "xlabel", "ylabel", "x": [...], "series": {name: [values]}}

latest.json keeps the newest result of every benchmark, so `--only scaling` refreshes one section of
REPORT.md without dropping the others.
"""

from __future__ import annotations

import fcntl
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after use("Agg"): no display here


def write(run: dict[str, Any], results_dir: Path) -> dict[str, Any]:
    """Write this run and the merged view; returns the merged view (what REPORT.md shows)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = run["started_at"].replace(":", "").replace("-", "")
    _write_json(results_dir / f"{stamp}.json", run)
    # two engineers' `--only` runs may finish at once: read-merge-write latest.json under a lock
    with (results_dir / "write-lock.tmp").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        merged = merge(_read_json(results_dir / "latest.json"), run)
        _write_json(results_dir / "latest.json", merged)
        for name, result in merged["benchmarks"].items():
            for chart in result.get("charts", []):
                plot(chart, results_dir / chart_file(name, chart))
        (results_dir / "REPORT.md").write_text(markdown(merged))
    return merged


def merge(previous: dict[str, Any] | None, run: dict[str, Any]) -> dict[str, Any]:
    merged = {k: v for k, v in run.items() if k != "benchmarks"}
    benchmarks = dict((previous or {}).get("benchmarks", {}))
    benchmarks.update(run["benchmarks"])
    merged["benchmarks"] = benchmarks
    return merged


def chart_file(benchmark: str, chart: dict[str, Any]) -> str:
    return f"{benchmark}-{chart['id']}.png"


# ── plots ─────────────────────────────────────────────────────────────────────────────────────


def plot(chart: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    try:
        if chart["kind"] == "bar":
            _bars(ax, chart)
        else:
            _lines(ax, chart)
        ax.set_title(chart.get("title", ""))
        ax.set_ylabel(chart.get("ylabel", ""))
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def _bars(ax: Any, chart: dict[str, Any]) -> None:
    categories = chart["categories"]
    series = chart["series"]
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [c + (i - (len(series) - 1) / 2) * width for c in range(len(categories))]
        bars = ax.bar(xs, values, width, label=name)
        ax.bar_label(bars, labels=[_short(v) for v in values], fontsize=7)
    ax.set_xticks(range(len(categories)), categories)


def _lines(ax: Any, chart: dict[str, Any]) -> None:
    for name, values in chart["series"].items():
        style = "--" if name.startswith("ideal") else "-"
        ax.plot(chart["x"], values, style, marker="o", label=name)
    ax.set_xticks(chart["x"])
    ax.set_xlabel(chart.get("xlabel", ""))


def _short(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.2g}"


# ── markdown ──────────────────────────────────────────────────────────────────────────────────


def _probe_lines(run: dict[str, Any]) -> list[str]:
    """The host speed probe (bench.run.host_probe) at the run's start and end, when it has them."""
    found = [(when, run[key]) for when, key in (("start", "probe_start"), ("end", "probe_end")) if key in run]
    if not found:
        return []
    parts = [f"{when} {probe['python_us']:,.0f} / {probe['pydantic_us']:,.0f} µs" for when, probe in found]
    return [
        "Host speed probe (the same Python / pydantic work in every run, lower is faster; compare runs by it,",
        f"not by the load average): {'; '.join(parts)}.",
    ]


def markdown(merged: dict[str, Any]) -> str:
    host = merged.get("host", {})
    out = [
        "# Benchmark report",
        "",
        f"Last run: {merged.get('started_at', '?')} UTC, `{merged.get('command', 'python -m bench.run')}`"
        f"{' (--quick)' if merged.get('quick') else ''}.",
        f"Host: {host.get('cpus', '?')} CPUs, Python {host.get('python', '?')}, aiokafka {host.get('aiokafka', '?')},"
        f" Kafka {host.get('kafka', '?')} (one local broker), load average at start {host.get('loadavg', '?')}.",
        *_probe_lines(merged),
        "",
        "Every number below comes from one small, shared machine that also runs the broker, so absolute",
        "figures are noisy; read the ratios, which compare against a baseline measured in the same run.",
        "Raw samples are in `latest.json`.",
        "",
        "## Summary",
        "",
        "| benchmark | result | verdict |",
        "|---|---|---|",
    ]
    for name, result in merged["benchmarks"].items():
        out.extend(_summary_rows(name, result))
    for name, result in merged["benchmarks"].items():
        out.extend(["", *_section(name, result)])
    return "\n".join(out) + "\n"


def _summary_rows(name: str, result: dict[str, Any]) -> list[str]:
    status = result.get("status", "?")
    if status == "error":
        last = (result.get("error", "").strip().splitlines() or ["?"])[-1]
        return [f"| {name} | {_cell(last)} | ERROR |"]
    if status != "ok":
        return [f"| {name} | {status} | - |"]
    rows = []
    for line in result.get("summary", []):
        verdict = {True: "PASS", False: "FAIL", None: "info"}[line.get("passed")]
        rows.append(f"| {name} | {_cell(line['text'])} | {verdict} |")
    return rows or [f"| {name} | (no summary lines) | info |"]


def _section(name: str, result: dict[str, Any]) -> list[str]:
    out = [f"## {name}: {result.get('title', '')}", ""]
    status = result.get("status", "?")
    if status == "not built yet":
        return [*out, f"Not built yet (no module `{result.get('module', '')}`)."]
    measured = f"Measured {result.get('measured_at', '?')} UTC in {result.get('duration_s', 0):.0f} s."
    out.extend([measured, ""])
    if status == "error":
        return [*out, "**The benchmark failed:**", "", "```", result.get("error", "").rstrip(), "```"]
    out.extend(f"- {line['text']}" for line in result.get("summary", []))
    for chart in result.get("charts", []):
        out.extend(["", f"![{chart.get('title', chart['id'])}]({chart_file(name, chart)})"])
    if result.get("notes"):
        out.extend(["", *result["notes"]])
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        loaded: dict[str, Any] = json.loads(path.read_text())
        return loaded
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path)
