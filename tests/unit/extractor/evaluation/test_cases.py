"""The two dataset formats of `postcall eval`: our labelled calls and the Schema-Guided Dialogue sample."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from services.devkit.kafka import ROOT
from services.extractor.evaluation.cases import DatasetError, load_calls, load_sgd

CALLS = ROOT / "examples" / "eval" / "calls.yaml"
SGD = ROOT / "examples" / "eval" / "sgd"


def test_our_dataset_has_sixty_calls_over_both_example_agents_every_field_and_question_labelled() -> None:
    cases = load_calls(CALLS)
    assert len(cases) >= 60 and len({c.id for c in cases}) == len(cases)
    assert Counter(c.spec.agent_id for c in cases) == {"sales-line": 30, "support-line": 30}
    for c in cases:
        assert set(c.expected) == {f.name for f in c.spec.fields}
        assert set(c.triggers) == {t.id for t in c.spec.triggers}
        assert c.event.messages and c.event.ended_at.utcoffset() is not None
    booked = next(c for c in cases if c.id == "sales-01-hot-lead-demo")
    assert booked.expected["follow_up_date"] == ("2026-03-17",) and booked.expected["callback_number"] == (
        "+13125550143",
    )
    assert list(booked.triggers.values()) == [True]
    assert next(c for c in cases if c.id == "sales-03-voicemail").expected["callback_number"] == ()


def test_a_bad_case_is_refused_naming_the_file_and_the_case(tmp_path: Path) -> None:
    bad = tmp_path / "calls.yaml"
    bad.write_text(
        f"agents: {ROOT / 'examples' / 'agents'}\ncases:\n"
        "  - {id: x1, agent: sales-line, ended_at: '2026-03-12T10:00:00-05:00', transcript: 'customer: hi',"
        " expected: {shoe_size: 9}}\n"
    )
    with pytest.raises(DatasetError, match=r"calls.yaml: case 1 \(x1\): .*shoe_size"):
        load_calls(bad)
    bad.write_text(
        f"agents: {ROOT / 'examples' / 'agents'}\ncases:\n"
        "  - {id: x1, agent: sales-line, ended_at: '2026-03-12T10:00:00', transcript: 'customer: hi'}\n"
    )
    with pytest.raises(DatasetError, match="UTC offset"):
        load_calls(bad)


@pytest.mark.parametrize("labels", ["expected: [follow_up_date]", "triggers: [appointment-booked]"])
def test_labels_that_are_a_list_not_a_mapping_are_refused_naming_the_case(tmp_path: Path, labels: str) -> None:
    """Used to be a traceback (AttributeError: 'list' object has no attribute 'get' / 'items')."""
    bad = tmp_path / "calls.yaml"
    bad.write_text(
        f"agents: {ROOT / 'examples' / 'agents'}\ncases:\n"
        "  - {id: x1, agent: sales-line, ended_at: '2026-03-12T10:00:00-05:00', transcript: 'customer: hi', "
        f"{labels}}}\n"
    )
    with pytest.raises(DatasetError, match=r"calls.yaml: case 1 \(x1\): `\w+` must be a mapping"):
        load_calls(bad)


def test_sgd_slots_become_typed_fields_and_final_states_labels() -> None:
    cases = load_sgd(SGD)
    assert len(cases) == 48 and len({c.spec.agent_id for c in cases}) == 24
    restaurant = next(c for c in cases if c.spec.agent_id == "Restaurants_1")
    types = {f.name: f.type for f in restaurant.spec.fields}
    assert types["date"] == "date" and types["time"] == "time" and types["party_size"] == "integer"
    assert types["serves_alcohol"] == "boolean" and types["price_range"] == "enum" and types["city"] == "string"
    assert "phone_number" not in types  # only the system says it: not a user-settable slot
    labelled = {k: v for k, v in restaurant.expected.items() if v}
    assert labelled and all(isinstance(v, tuple) for v in labelled.values())
    assert restaurant.event.ended_at.date().isoformat() == "2019-03-01"
    roles = {m.role for m in restaurant.event.messages or []}
    assert roles == {"agent", "customer"}
