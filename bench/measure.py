"""Summary lines every benchmark returns: a measured ratio against a same-run baseline, or a yes/no check.

    ratio_line("runtime 1KB", 12345, "bare", 14000, goal=0.8)
    -> "runtime 1KB: 12,345 rec/s vs bare 14,000 rec/s = 0.88 (goal >= 0.8) PASS"

Numbers on a small shared machine are noisy: measure each side several times, interleaved, and quote
the best (throughput) or the median; `best_of` and `median_of` keep every sample for the report.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def fmt(value: float) -> str:
    """12345.6 -> '12,346'; 12.34 -> '12.3'; 0.1234 -> '0.123'."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def ratio_line(
    label: str,
    value: float,
    baseline_label: str,
    baseline: float,
    *,
    goal: float | None = None,
    unit: str = "rec/s",
    samples: Sequence[float] = (),
    baseline_samples: Sequence[float] = (),
) -> dict[str, Any]:
    """value / baseline, compared with a minimum ratio `goal` (None: reported, not judged)."""
    ratio = value / baseline if baseline else 0.0
    passed = None if goal is None else ratio >= goal
    verdict = "" if goal is None else f" (goal >= {goal:g}) {'PASS' if passed else 'FAIL'}"
    shown = f"{ratio:.2f}"
    if goal is not None and shown == f"{goal:.2f}" and ratio != goal:  # "0.50 (goal >= 0.5) FAIL" said nothing
        shown = f"{ratio:.3f}"
    text = f"{label}: {fmt(value)} {unit} vs {baseline_label} {fmt(baseline)} {unit} = {shown}{verdict}"
    return {
        "kind": "ratio",
        "label": label,
        "value": value,
        "baseline_label": baseline_label,
        "baseline": baseline,
        "unit": unit,
        "ratio": ratio,
        "goal": goal,
        "passed": passed,
        "samples": list(samples),
        "baseline_samples": list(baseline_samples),
        "text": text,
    }


def check_line(label: str, passed: bool, detail: str = "", *, expected: bool = True) -> dict[str, Any]:
    """A yes/no outcome; `expected=False` records a result that is meant to be negative (e.g. a known bug)."""
    ok = passed == expected
    text = f"{label}: {'yes' if passed else 'no'}{f' ({detail})' if detail else ''} {'PASS' if ok else 'FAIL'}"
    return {"kind": "check", "label": label, "value": passed, "expected": expected, "passed": ok, "text": text}


def info_line(label: str, text: str) -> dict[str, Any]:
    """A number worth a line in the summary with nothing to judge it against."""
    return {"kind": "info", "label": label, "passed": None, "text": f"{label}: {text}"}


def best_of(samples: Sequence[float]) -> float:
    return max(samples)


def median_of(samples: Sequence[float]) -> float:
    return float(statistics.median(samples))
