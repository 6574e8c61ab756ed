"""The offline heuristic provider on realistic transcripts: every field type, triggers with negation,
dates relative to the conversation's end, recipients, dyn_* variables and the extractive summary."""

from __future__ import annotations

import random
import re
import time
from datetime import UTC, datetime

import pytest

from schemas.agents import FieldSpec
from schemas.events import Message
from services.extractor.heuristic import lexicon as lx
from services.extractor.heuristic import provider as heuristic
from services.extractor.heuristic.fields import utterances
from tests.unit.extractor.conftest import (
    CALLBACK,
    DEMO,
    EXAMPLES,
    HUMAN,
    SALES_FIELDS,
    SUPPORT_FIELDS,
    UNHAPPY,
    conversation,
    extract,
    spec,
)


def values(extraction: object) -> dict[str, object]:
    return {k: v.value for k, v in extraction.fields.items()}  # type: ignore[attr-defined]


def test_callback_request_fills_name_phone_datetime_boolean_enum_and_integer() -> None:
    e = extract(conversation("0005"), spec(*SUPPORT_FIELDS, triggers=(CALLBACK, UNHAPPY)))
    assert values(e) == {
        "customer_name": "Tom Becker",
        "company_name": "Becker Roofing",
        "callback_number": "+13125550178",  # said as "312 555 0178", normalised to E.164
        "callback_at": "2026-03-13T15:00:00-05:00",  # "tomorrow at 3 pm", Chicago time
        "follow_up_required": True,
        "team_size": 15,
        "issue_category": "account",
        "email": None,  # never said: null, not invented
    }
    assert e.fields["callback_number"].evidence == "No, please call me back on my office line. It's 312 555 0178."
    assert e.triggers[CALLBACK.id].answer is True
    assert e.triggers[UNHAPPY.id].answer is False


def test_hot_lead_fills_enum_number_date_and_spoken_email() -> None:
    e = extract(conversation("0008"), spec(*SALES_FIELDS, triggers=(DEMO,)))
    assert values(e) == {
        "interest_level": "high",
        "budget": 2000,
        "demo_date": "2026-03-19",
        "team_size": 35,
        "email": "marcus.reed@reedmechanical.example.com",
        "follow_up_required": True,
    }
    assert e.triggers[DEMO.id].answer is True


def test_a_lead_that_declines_is_none_and_needs_no_follow_up() -> None:
    e = extract(conversation("0010"), spec(*SALES_FIELDS, triggers=(CALLBACK,)))
    assert e.fields["interest_level"].value == "none"
    assert e.fields["follow_up_required"].value is False
    assert e.triggers[CALLBACK.id].answer is False


def test_spoken_email_and_enum_from_the_description() -> None:
    e = extract(conversation("0011"), spec(*SUPPORT_FIELDS))
    assert e.fields["email"].value == "jsantos@example.net"
    assert e.fields["issue_category"].value == "account"  # "account: login" in the description


def test_voicemail_leaves_fields_null_rather_than_guessing() -> None:
    e = extract(conversation("0004"), spec(*SUPPORT_FIELDS, triggers=(CALLBACK,)))
    # the agent's own callback number in its voicemail message is not the customer's
    assert e.fields["callback_number"].value is None
    assert e.fields["callback_at"].value is None
    assert e.fields["team_size"].value is None
    assert e.triggers[CALLBACK.id].answer is False


def transcript(*turns: str) -> list[Message]:
    return [Message(role="agent" if i % 2 == 0 else "customer", text=t) for i, t in enumerate(turns)]


WEDNESDAY_5PM = datetime(2026, 3, 11, 17, 0, tzinfo=UTC)


def test_negated_request_answers_the_trigger_no_with_its_evidence() -> None:
    turns = transcript("Anything else I can do?", "No need to call me back, I'll email you instead.")
    answer = heuristic.answer_trigger(CALLBACK.question, utterances(turns))
    assert answer.answer is False
    assert answer.evidence == "No need to call me back, I'll email you instead."
    assert "negated" in answer.rationale


def test_a_yes_to_the_agent_question_answers_the_trigger() -> None:
    turns = transcript("Would you like us to call you back tomorrow?", "Yes please, after lunch.")
    answer = heuristic.answer_trigger(CALLBACK.question, utterances(turns))
    assert answer.answer is True
    assert answer.evidence == "Yes please, after lunch."


def test_trigger_confidence_follows_the_strength_of_the_match() -> None:
    strong = heuristic.answer_trigger(HUMAN.question, utterances(transcript("Hi", "I want to talk to a real person.")))
    weak = heuristic.answer_trigger(
        "Did the customer mention pricing or a discount?", utterances(transcript("Hi", "Is there a discount?"))
    )
    nothing = heuristic.answer_trigger(HUMAN.question, utterances(transcript("Hi", "My invoice is wrong.")))
    assert strong.answer and weak.answer and not nothing.answer
    assert strong.confidence is not None and weak.confidence is not None
    assert strong.confidence > weak.confidence
    assert nothing.evidence is None and nothing.confidence == 0.5


def test_frustration_and_a_threat_to_cancel_answer_the_complaint_trigger() -> None:
    e = extract(conversation("0006"), spec(triggers=(UNHAPPY, HUMAN)))
    assert e.triggers[UNHAPPY.id].answer is True
    assert e.triggers[HUMAN.id].answer is False


@pytest.mark.parametrize(
    ("ended", "expected"),
    [
        (WEDNESDAY_5PM, "2026-03-17"),  # next Tuesday after Wednesday the 11th
        (datetime(2026, 3, 16, 17, 0, tzinfo=UTC), "2026-03-17"),  # ended on Monday: the day after
        (datetime(2026, 3, 17, 17, 0, tzinfo=UTC), "2026-03-24"),  # ended on a Tuesday: a week later
    ],
)
def test_relative_dates_resolve_against_ended_at(ended: datetime, expected: str) -> None:
    s = spec(FieldSpec(name="follow_up_date", type="date", description="Follow-up date in ISO 8601 format"))
    turns = transcript("When should we follow up?", "Call me back next Tuesday, please.")
    e = heuristic.extract(s, turns, ended, "1")
    assert e.fields["follow_up_date"].value == expected


def test_a_date_unrelated_to_the_field_is_not_taken() -> None:
    s = spec(FieldSpec(name="follow_up_date", type="date", description="Follow-up date"))
    turns = transcript("How can I help?", "Our app stopped syncing since Monday, can you check?")
    assert heuristic.extract(s, turns, WEDNESDAY_5PM, "1").fields["follow_up_date"].value is None


@pytest.mark.parametrize(
    ("example", "recipients"),
    [
        ("0006", ["billing@copperline.example"]),
        ("0001", ["tech@copperline.example"]),
        ("0008", ["sales@copperline.example"]),
        ("0002", ["support@copperline.example"]),  # a cracked tablet fits no rule: the fallback
    ],
)
def test_dynamic_recipients_follow_the_rule_descriptions(example: str, recipients: list[str]) -> None:
    assert extract(conversation(example), spec()).recipients == {"route": recipients}


def test_dyn_variables_are_typed_by_their_names() -> None:
    e = extract(conversation("0007"), spec(dynamic=("dyn_appointment_date", "dyn_appointment_time", "dyn_location")))
    assert {k: v.value for k, v in e.dynamic.items()} == {
        "dyn_appointment_date": "2026-03-16",
        "dyn_appointment_time": "10:30 AM",
        "dyn_location": "1450 West Lake Street, Chicago",
    }


def test_summary_is_the_customer_request_and_the_outcome() -> None:
    e = extract(conversation("0007"), spec())
    assert e.summary == (
        "Customer: I'd like someone to come and see how we work before we switch software. "
        "Outcome: I've booked your on-site consultation for Monday, March 16th at 10:30 am at "
        "1450 West Lake Street, Chicago."
    )


def test_no_transcript_extracts_nothing_and_has_no_summary() -> None:
    e = heuristic.extract(spec(*SUPPORT_FIELDS, triggers=(CALLBACK,)), [], WEDNESDAY_5PM, "1")
    assert all(v.value is None for v in e.fields.values())
    assert e.summary is None
    assert e.triggers[CALLBACK.id].answer is False


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.json")), ids=lambda p: p.name[:4])
def test_every_value_quotes_its_utterance_and_stays_under_0_7(path: object) -> None:
    event = conversation(path.name[:4])  # type: ignore[attr-defined]
    e = extract(event, spec(*SUPPORT_FIELDS, *SALES_FIELDS, triggers=(CALLBACK, UNHAPPY, HUMAN, DEMO)))
    said = [m.text for m in event.messages or []]
    quoted = [(v.confidence, v.evidence) for v in e.fields.values()]
    quoted += [(t.confidence, t.evidence) for t in e.triggers.values()]
    for confidence, evidence in quoted:
        assert confidence is None or confidence <= 0.7
        assert evidence is None or any(evidence in text for text in said)


SUPPORT_CONFIG = (
    FieldSpec(name="issue_category", type="enum", values=["billing", "technical", "warranty", "account", "other"],
              description="What the call was mainly about."),
    FieldSpec(name="resolved", type="boolean", description="Whether the agent resolved the customer's issue."),
    FieldSpec(name="case_id", type="string", description="The support case number, e.g. CASE-12345."),
)  # fmt: skip


@pytest.mark.parametrize(
    ("example", "category"),
    [("0001", "technical"), ("0002", "warranty"), ("0005", "account"), ("0009", "billing"), ("0011", "account")],
)
def test_common_category_names_need_no_description(example: str, category: str) -> None:
    assert extract(conversation(example), spec(*SUPPORT_CONFIG)).fields["issue_category"].value == category


def test_resolution_is_read_from_what_the_customer_says() -> None:
    assert extract(conversation("0001"), spec(*SUPPORT_CONFIG)).fields["resolved"].value is True  # "That fixed it."
    turns = transcript("Did signing out and back in help?", "No, it's still not working.")
    e = heuristic.extract(spec(*SUPPORT_CONFIG), turns, WEDNESDAY_5PM, "1")
    assert e.fields["resolved"].value is False


def test_a_case_number_is_taken_only_where_a_case_is_talked_about() -> None:
    turns = transcript("Do you have a case number?", "Yes, it's CASE-48213.", "And the invoice?", "INV-20418.")
    assert heuristic.extract(spec(*SUPPORT_CONFIG), turns, WEDNESDAY_5PM, "1").fields["case_id"].value == "CASE-48213"
    unrelated = transcript("Which invoice is it?", "INV-20418, from March.")
    assert heuristic.extract(spec(*SUPPORT_CONFIG), unrelated, WEDNESDAY_5PM, "1").fields["case_id"].value is None


def test_the_agent_confirming_a_booking_answers_the_booking_trigger() -> None:
    question = (
        "Did the customer book, schedule or confirm an appointment, meeting or consultation "
        "for a specific date or time?"
    )
    assert heuristic.answer_trigger(question, utterances(conversation("0007").messages or [])).answer is True
    # "a lot of time on paperwork" matches only the generic word "time": no
    assert heuristic.answer_trigger(question, utterances(conversation("0008").messages or [])).answer is False


def test_dyn_topic_is_a_category() -> None:
    e = extract(conversation("0009"), spec(dynamic=("dyn_complaint_topic",)))
    assert e.dynamic["dyn_complaint_topic"].value == "billing"


ONE_LONG_TURN = {  # what one customer turn repeats, and to how many characters
    "counts near their words": ("technicians 12 people 4 seats 9 ", 150_000),
    "callback requests": ("call me back tomorrow at 3 pm please. ", 150_000),
    "times": ("at half past four in the afternoon 4:30 PM ", 150_000),
    "corrections": ("the 3rd, actually the 7th at 4 pm, no wait, 5 technicians ", 150_000),
    "spoken emails": ("j o h n at gmail dot com ", 500_000),
}


@pytest.mark.parametrize(("unit", "chars"), list(ONE_LONG_TURN.values()), ids=list(ONE_LONG_TURN))
def test_one_long_turn_full_of_values_is_read_in_linear_time(unit: str, chars: int) -> None:
    """Each value in one utterance was tested against every phone/date/time span, every keyword spot and
    every correction cue, each number copied the rest of the turn, negation split the whole text before
    each enum match, and a spoken email was tested against every one found before: quadratic in the turn.
    150,000 characters of counts took 25 s of CPU, the other three 6 s each (a 3.5 MiB event, or a
    platform sending the transcript as one message: minutes per attempt, in a thread the handler's
    timeout cannot stop); about 1 s after."""
    turn = [Message(role="customer", text=unit * (chars // len(unit)))]
    spec_ = spec(*SUPPORT_FIELDS, *SALES_FIELDS, triggers=(CALLBACK, UNHAPPY, HUMAN, DEMO))
    started = time.thread_time()  # CPU time, which a loaded machine does not inflate
    heuristic.extract(spec_, turn, datetime(2026, 3, 12, 12, tzinfo=UTC), "1")
    assert time.thread_time() - started < 5.0


def _negated_by_the_whole_prefix(norm: str, start: int) -> bool:
    """lexicon.negated as it was: the clause split from everything before `start`."""
    clause = re.split(r"[.;!?,]|\bbut\b", norm[:start])[-1]
    return any(w in lx.NEGATORS for w in lx._TOKEN.findall(clause)[-4:])


def test_negation_read_from_a_window_answers_as_reading_the_whole_text_before() -> None:
    pieces = ["not", "no", "don't", "never", "but", "butter", "rebut", "i", "want", "it", "x'y", "'s", "é", "ßbut",
              "a" * 70, "5", " ", " ", " ", ",", ".", "?", ";", "'", "~", "-", "_", "\u0130"]  # fmt: skip
    rng = random.Random(14)
    for _ in range(400):
        norm = "".join(rng.choice(pieces) + rng.choice(["", " "]) for _ in range(rng.randrange(1, 120)))
        for start in range(len(norm) + 1):
            assert lx.negated(norm, start) == _negated_by_the_whole_prefix(norm, start), (norm, start)


def test_a_transcript_of_100000_messages_is_read_in_linear_time() -> None:
    """Whether the customer agreed with each agent turn copied the rest of the transcript to find the next
    customer turn: quadratic, 100,000 messages took 19 s in a count field alone (2.7 s after)."""
    turns = [
        Message(role="agent", text="How many technicians do you have?"),
        Message(role="customer", text="Let me think about that for a while."),
    ] * 50_000
    count = FieldSpec(name="team_size", type="integer", description="Number of technicians")
    started = time.thread_time()  # CPU time, which a loaded machine does not inflate
    e = heuristic.extract(spec(count), turns, datetime(2026, 3, 12, 12, tzinfo=UTC), "1")
    assert time.thread_time() - started < 10.0
    assert e.fields["team_size"].value is None


@pytest.mark.parametrize("blank", ["", " ", "_", "-"])
def test_a_blank_enum_value_is_never_what_the_customer_said(blank: str) -> None:
    """An enum value with no words (the loader takes it) was a phrase that matched at every word boundary:
    the heuristic answered it for every conversation, quoting the first thing the customer said."""
    level = FieldSpec(name="interest_level", type="enum", values=[blank, "high", "low"])
    turn = [Message(role="customer", text="I would say the interest is pretty much nothing today")]
    e = heuristic.extract(spec(level), turn, datetime(2026, 3, 12, 12, tzinfo=UTC), "1")
    assert e.fields["interest_level"].value is None
    turn = [Message(role="customer", text="Honestly my interest is high, very high.")]
    assert (
        heuristic.extract(spec(level), turn, datetime(2026, 3, 12, 12, tzinfo=UTC), "1").fields["interest_level"].value
        == "high"
    )
