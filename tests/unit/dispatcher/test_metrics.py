"""The metrics module's docstring counts the label values the code has."""

from __future__ import annotations

import re
from typing import get_args

from schemas.events import ActionCompleted
from schemas.topics import ACTION_TYPES
from services.dispatcher import metrics


def test_the_docstring_counts_the_action_types_and_the_outcomes() -> None:
    doc = " ".join((metrics.__doc__ or "").split())
    types = re.search(r"action type \((\d+)", doc)
    outcomes = re.search(r"outcome \((\d+)", doc)
    assert types and outcomes, doc
    assert int(types.group(1)) == len(ACTION_TYPES)
    deferred = "deferred" in metrics.DELIVERIES._documentation  # counted by the handler besides the results'
    assert deferred and int(outcomes.group(1)) == len(get_args(ActionCompleted.model_fields["outcome"].annotation)) + 1
