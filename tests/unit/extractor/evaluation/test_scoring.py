"""How values are scored and runs compared (postcall eval)."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.agents import ExtractionSpec, FieldSpec
from schemas.events import ExtractedValue, Extraction, TriggerAnswer, Usage
from services.extractor.evaluation.cases import Case, conversation, parse_transcript
from services.extractor.evaluation.scoring import Scorecard, compare, token_f1, value_score


@pytest.mark.parametrize(
    ("kind", "expected", "got", "score"),
    [
        ("enum", ("high",), "high", 1.0),
        ("enum", ("high",), "low", 0.0),
        ("boolean", (True,), True, 1.0),
        ("boolean", (True,), "true", 1.0),
        ("integer", (2,), 2, 1.0),
        ("integer", ("2",), 2.0, 1.0),
        ("number", ("1740",), "$1,740", 1.0),
        ("date", ("2019-03-06",), "2019-03-06", 1.0),
        ("date", ("2019-03-06", "next Wednesday"), "2019-03-04", 0.0),
        ("time", ("17:30",), "17:30:00", 1.0),
        ("phone", ("+13125550178",), "(312) 555-0178", 1.0),
        ("email", ("ann@example.com",), "Ann@Example.com", 1.0),
        ("string", ("San Jose",), "San Jose", 1.0),
        ("string", ("NYC", "New York"), "new york city", 0.8),
        ("string", ("San Jose",), None, 0.0),
        ("string", (), None, 1.0),
        ("date", (), "2019-03-06", 0.0),
        ("datetime", ("2026-03-17T15:00:00-05:00",), "2026-03-17T20:00:00+00:00", 1.0),
        # a date-time field answered with a date alone stays a date (the extractor's answer.py)
        ("datetime", ("2026-03-17",), "2026-03-17", 1.0),
        ("datetime", ("2026-03-17T15:00:00-05:00",), "2026-03-17", 0.0),
    ],
)
def test_value_scores(kind: str, expected: tuple[Any, ...], got: Any, score: float) -> None:
    assert value_score(kind, expected, got) == pytest.approx(score)


def test_token_f1_is_symmetric_and_bounded() -> None:
    assert token_f1("the blue note", "blue note") == token_f1("blue note", "the blue note") == pytest.approx(0.8)
    assert token_f1("a", "b") == 0.0


SPEC = ExtractionSpec(
    agent_id="a",
    config_revision="r",
    summary=False,
    fields=[FieldSpec(name="city", type="string"), FieldSpec(name="seats", type="integer")],
)


def case(city: tuple[Any, ...], seats: tuple[Any, ...]) -> Case:
    from datetime import UTC, datetime

    event = conversation("c1", "a", parse_transcript("agent: hi\ncustomer: hello"), datetime(2026, 3, 1, tzinfo=UTC))
    return Case("c1", event, SPEC, {"city": city, "seats": seats}, {"t1": True})


def extraction(city: Any, seats: Any, review: bool = False, trigger: bool = True) -> Extraction:
    return Extraction(
        status="ok",
        provider="heuristic",
        config_revision="r",
        fields={"city": ExtractedValue(value=city, needs_review=review), "seats": ExtractedValue(value=seats)},
        triggers={"t1": TriggerAnswer(question="q", answer=trigger)},
        usage=Usage(prompt_tokens=100, completion_tokens=20, cached_prompt_tokens=50, cost_usd=0.001),
    )


def test_the_scorecard_separates_accuracy_precision_and_recall() -> None:
    card = Scorecard()
    card.add(case(("Paris",), ()), extraction("Paris", None), 10.0)  # right, right empty
    card.add(case(("Paris",), (2,)), extraction(None, 3, trigger=False), 30.0)  # a miss, a wrong value
    r = card.as_json()
    assert r["overall"]["accuracy"] == 0.5 and r["overall"]["precision"] == 0.5 and r["overall"]["recall"] == 0.3333
    assert r["overall"]["empty_baseline"] == 0.25
    assert r["fields"]["seats"] == {"n": 2, "accuracy": 0.5, "precision": 0.0, "recall": 0.0, "given": 1,
                                    "labelled": 1, "empty_baseline": 0.5}  # fmt: skip
    assert r["triggers"] == {"n": 2, "accuracy": 0.5}
    assert r["review_flag"] == {"n": 2, "accuracy": 0.5}  # the wrong 3 was not flagged
    assert r["latency_ms"] == {"p50": 10.0, "p99": 30.0}
    assert r["per_call"] == {"prompt_tokens": 100.0, "completion_tokens": 20.0, "cached_share": 0.5,
                             "cost_usd": 0.001}  # fmt: skip
    assert card.rows[1]["fields"]["seats"] == {"expected": [2], "got": 3, "score": 0.0}


def test_a_comparison_shows_each_metric_before_after_and_the_change() -> None:
    before, after = Scorecard(), Scorecard()
    before.add(case(("Paris",), (2,)), extraction(None, 3), 5.0)
    after.add(case(("Paris",), (2,)), extraction("Paris", 2), 5.0)
    c = compare(before.as_json(), after.as_json())
    assert c["overall"]["accuracy"] == {"before": 0.0, "after": 1.0, "change": 1.0}
    assert c["fields"]["city"]["recall"]["change"] == 1.0
