"""The metrics module's docstring names every LLM request outcome the code counts, and no other."""

from __future__ import annotations

import re
from pathlib import Path

from services.extractor import metrics

EXTRACTOR = Path(metrics.__file__).parent


def counted_outcomes() -> set[str]:
    outcomes: set[str] = set()
    for module in ("llm.py", "handler.py"):
        text = (EXTRACTOR / module).read_text()
        for call in re.findall(r"LLM_REQUESTS\.labels\(([^()]*)\)", text):
            outcomes.update(re.findall(r'"(\w+)"', call.rsplit(",", 1)[-1]))
    body = re.search(r"def _outcome\(.*?(?=\n\S)", (EXTRACTOR / "llm.py").read_text(), re.S)
    assert body is not None
    return outcomes | set(re.findall(r'"(\w+)"', body.group()))


def test_the_docstring_lists_the_llm_request_outcomes_the_code_counts() -> None:
    counted = counted_outcomes()
    assert {"ok", "timeout", "rate_limited", "configuration_error"} <= counted  # the patterns still find them
    doc = metrics.__doc__ or ""
    listed = set(re.findall(r"`(\w+)`", doc[doc.index("Request outcomes") :])) - {"outcome"}
    assert listed == counted
