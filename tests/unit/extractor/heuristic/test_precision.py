"""The heuristic's defects measured on the Schema-Guided Dialogue corpus (issue 17), one test each:
week-relative and ordinal dates, spoken times and the `time` type, counts that are really clock times,
prices or the agent's numbers, an unrelated "yes", corrections, the customer's side before the agent's,
and a place rather than a sentence for a text field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from schemas.agents import ExtractionSpec, FieldSpec
from schemas.events import Message
from services.extractor.heuristic import provider as heuristic

FRIDAY = datetime(2019, 3, 1, 12, 0, tzinfo=UTC)


def extract(fields: list[FieldSpec], *turns: str) -> dict[str, Any]:
    """Turns alternate agent, customer, agent, ..."""
    messages = [Message(role="agent" if i % 2 == 0 else "customer", text=t) for i, t in enumerate(turns)]
    spec = ExtractionSpec(agent_id="a", config_revision="r", summary=False, fields=fields)
    return {k: v.value for k, v in heuristic.extract(spec, messages, FRIDAY, "1").fields.items()}


DATE = FieldSpec(name="date", type="date", description="Date for the reservation")
TIME = FieldSpec(name="time", type="time", description="Time for the reservation")
SEATS = FieldSpec(name="party_size", type="integer", description="Number of people for the reservation")


def test_wednesday_next_week_is_that_wednesday_and_ordinals_are_read() -> None:
    assert extract([DATE], "When?", "Book it for Wednesday next week.")["date"] == "2019-03-06"
    assert extract([DATE], "When?", "The 11th of this month, please.")["date"] == "2019-03-11"
    assert extract([DATE], "When?", "On the 1st.")["date"] == "2019-03-01"


def test_a_time_field_reads_spoken_times() -> None:
    got = extract([DATE, TIME], "What time?", "Half past 4 in the evening on March 4th.")
    assert got == {"date": "2019-03-04", "time": "16:30"}


def test_the_last_value_wins_over_the_one_it_corrects() -> None:
    assert extract([DATE], "Which day?", "The 1st... actually, the 7th.")["date"] == "2019-03-07"
    got = extract([TIME], "What time works?", "7 pm.", "7 pm then?", "No wait, make it 8 pm.")
    assert got["time"] == "20:00"


def test_the_customer_is_preferred_to_the_agent() -> None:
    got = extract([DATE], "We have March 5th open for the reservation.", "I'd rather come on March 8th.")
    assert got["date"] == "2019-03-08"


def test_counts_are_not_clock_times_prices_or_numbers_only_the_agent_said() -> None:
    got = extract([SEATS], "How many people?", "4 people, at 7:30, and we'd spend about $80.")
    assert got["party_size"] == 4
    got = extract([SEATS], "A table for 6 people costs $120 minimum. Shall I look?", "Hmm, let me think about it.")
    assert got["party_size"] is None  # the agent's number, never confirmed
    got = extract([SEATS], "How many people will be there?", "Around 7:30 pm if possible.")
    assert got["party_size"] is None  # a clock time is no head count


def test_an_unrelated_yes_or_a_question_sets_no_boolean() -> None:
    wifi = FieldSpec(name="has_wifi", type="boolean", description="Whether the hotel has wifi")
    assert extract([wifi], "Shall I book the room?", "Yes please.")["has_wifi"] is None
    assert extract([wifi], "Anything else?", "Does the hotel have wifi?")["has_wifi"] is None
    assert extract([wifi], "Anything else?", "I need a hotel with wifi.")["has_wifi"] is True


def test_a_text_field_gets_a_place_not_a_sentence() -> None:
    city = FieldSpec(name="city", type="string", description="City where the restaurant is located")
    assert extract([city], "How can I help?", "I'm looking for a restaurant in San Jose.")["city"] == "San Jose"
    assert extract([city], "How can I help?", "I'm hungry, find me something good.")["city"] is None


BUDGET = FieldSpec(name="budget", type="number", description="Monthly budget in dollars")


def test_a_number_too_large_to_carry_is_no_value() -> None:
    """A caller's 400-digit number read as a float is infinite: int() of it raised OverflowError, so the
    extraction crashed (retried, then dead-lettered as failed); twenty-four digits became an integer
    over 64 bits, which the router cannot write (the record was dead-lettered there). A count or an
    amount a record can carry is still read."""
    for said in ("9" * 400, "1" + "0" * 23):
        got = extract([SEATS, BUDGET], "How many people, and your budget?", f"{said} people, budget {said} dollars.")
        assert got["party_size"] is None, got
        assert got["budget"] is None or (isinstance(got["budget"], float) and got["budget"] < float("inf")), got
    got = extract([SEATS, BUDGET], "How many people, and your budget?", "12 people, budget 2500 dollars.")
    assert got == {"party_size": 12, "budget": 2500}
