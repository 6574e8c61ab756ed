"""Typed values in spoken text: phone numbers, emails, dates relative to the conversation's end, times,
numbers."""

from __future__ import annotations

from datetime import date, datetime, time
from time import thread_time  # CPU time: a loaded machine (other test workers) does not inflate it
from zoneinfo import ZoneInfo

import pytest

from services.extractor import values as vs

CHICAGO = ZoneInfo("America/Chicago")
THURSDAY = date(2026, 3, 12)  # the conversation ended on a Thursday


@pytest.mark.parametrize(
    ("said", "expected"),
    [
        ("It's 312 555 0178.", "+13125550178"),
        ("my cell is (708) 555-0136", "+17085550136"),
        ("call 1-312-555-0101 tomorrow", "+13125550101"),
        ("the London office is +44 20 7946 0958", "+442079460958"),
        ("three one two, five five five, zero one seven eight", "+13125550178"),
        ("double five five, one two three, four five six seven", "+15551234567"),
        ("five five five, one two three four", None),  # no area code: not a full number
    ],
)
def test_phone_numbers_are_normalised_to_e164(said: str, expected: str | None) -> None:
    found = [f.value for f in vs.find_phones(said)]
    assert found == ([expected] if expected else [])


@pytest.mark.parametrize(
    "written",
    [
        "+1 415 555 0132 x5",
        "+1 415 555 0132x205",
        "+1 415 555 0132 ext. 12",
        "(415) 555-0132, ext 12",
        "415-555-0132 extension 9",
        "415 555 0132 #204",
        "tel:+1-415-555-0132;ext=5",
    ],
)
def test_a_number_with_an_extension_is_the_number_without_it(written: str) -> None:
    """The extension's digits were appended to the number: "+1 415 555 0132 x5" became +141555501325, a
    different number, which a scheduled call would dial. E.164 has no extension: the number is kept."""
    assert vs.normalize_phone(written) == "+14155550132"


def test_short_numbers_dates_and_amounts_are_not_phone_numbers() -> None:
    assert vs.find_phones("invoice INV-20418 for 312 dollars, dated 2026-03-01, seats: 12") == []


def test_a_number_written_in_another_scripts_digits_is_given_in_ascii_digits() -> None:
    """The phone schema is ^\\+[1-9][0-9]{6,14}$: a number transcribed in Arabic-Indic, Persian or
    full-width digits kept them ('+1' and ten Arabic-Indic digits), outside it, and that is what an SMS
    or a scheduled call got."""

    def digits(text: str, zero: int) -> str:
        return text.translate({ord("0") + i: zero + i for i in range(10)})

    for zero in (0x660, 0x6F0, 0xFF10):
        assert [f.value for f in vs.find_phones(digits("call me on 312 555 0178 please", zero))] == ["+13125550178"]
        assert [f.value for f in vs.find_phones(digits("+44 20 7946 0958", zero))] == ["+442079460958"]
        assert vs.normalize_phone(digits("030 1234567", zero), "49") == "+49301234567"


def test_national_numbers_use_the_configured_country_code() -> None:
    assert [f.value for f in vs.find_phones("ring me on 030 1234567", country_code="49")] == ["+49301234567"]


@pytest.mark.parametrize(
    ("said", "expected"),
    [
        ("Email me at greg@pattersonpools.example.com when it's done.", "greg@pattersonpools.example.com"),
        ("It's jsantos at example dot net, j s a n t o s.", "jsantos@example.net"),
        ("sarah dot johnson at gmail dot com please", "sarah.johnson@gmail.com"),
        ("Send it to Marcus.Reed@ReedMechanical.example.com", "marcus.reed@reedmechanical.example.com"),
        # spelled out letter by letter: the whole name, not its last letter ("n@gmail.com" before)
        ("Sure, it's j o h n at gmail dot com.", "john@gmail.com"),
        ("t o m dot b at example dot org", "tom.b@example.org"),
        ("k e l l y underscore 7 at example dot net", "kelly_7@example.net"),
    ],
)
def test_emails_written_or_spoken(said: str, expected: str) -> None:
    assert [f.value for f in vs.find_emails(said)] == [expected]


def test_meeting_at_a_time_is_not_an_email() -> None:
    assert vs.find_emails("let's meet at 3.30pm at the office") == []


@pytest.mark.parametrize(
    "said",
    ["a." * 20_000 + " at b", "a@" + "a." * 20_000, "x dot " * 10_000 + "at example", "y at " + "a dot " * 10_000],
)
def test_a_long_run_of_email_like_text_is_scanned_in_linear_time(said: str) -> None:
    """A pasted log or an ASR loop in one message: each of its words was a start the pattern scanned
    to the end from (40,000 characters took over 20 s; a transcript may hold 8 MB)."""
    started = thread_time()
    vs.find_emails(said)
    assert thread_time() - started < 2.0
    assert [f.value for f in vs.find_emails("a." * 20_000 + " mail greg@example.com")] == ["greg@example.com"]


@pytest.mark.parametrize(
    ("said", "expected"),
    [
        ("call me back tomorrow", date(2026, 3, 13)),
        ("the day after tomorrow works", date(2026, 3, 14)),
        ("next Tuesday", date(2026, 3, 17)),
        ("on Thursday", date(2026, 3, 19)),  # today is Thursday: the next one
        ("March 14th", date(2026, 3, 14)),
        ("the 2nd of March", date(2027, 3, 2)),  # already past this year
        ("on 2026-04-01", date(2026, 4, 1)),
        ("in two weeks", date(2026, 3, 26)),
        ("sometime next week", date(2026, 3, 16)),
        ("4/15", date(2026, 4, 15)),
    ],
)
def test_dates_resolve_against_the_conversation_end(said: str, expected: date) -> None:
    assert [f.value for f in vs.find_dates(said, THURSDAY)] == [expected]


def test_numeric_dates_are_day_first_outside_north_america() -> None:
    assert [f.value for f in vs.find_dates("4/5", THURSDAY, day_first=True)] == [date(2026, 5, 4)]


def test_a_weekday_before_its_date_is_one_date() -> None:
    assert [f.value for f in vs.find_dates("Thursday, March 19th at 2 pm", THURSDAY)] == [date(2026, 3, 19)]


def test_habitual_weekdays_are_not_dates() -> None:
    assert vs.find_dates("we're open Mondays and every Tuesday", THURSDAY) == []


@pytest.mark.parametrize(
    ("said", "expected"),
    [("at 3 pm", time(15)), ("10:30 am", time(10, 30)), ("15:45", time(15, 45)), ("noon", time(12)),
     ("three o'clock", time(15)), ("nine thirty in the morning", time(9, 30))],
)  # fmt: skip
def test_times(said: str, expected: time) -> None:
    assert [f.value for f in vs.find_times(said)] == [expected]


def test_tomorrow_at_3pm_is_a_datetime_in_the_conversation_time_zone() -> None:
    ended = datetime(2026, 3, 12, 14, 3, tzinfo=CHICAGO)
    found = vs.find_datetimes("Could you call me back tomorrow at 3 pm?", ended)
    assert [f.value.isoformat() for f in found] == ["2026-03-13T15:00:00-05:00"]


def test_a_time_alone_is_its_next_occurrence() -> None:
    ended = datetime(2026, 3, 12, 16, 0, tzinfo=CHICAGO)
    assert [f.value.isoformat() for f in vs.find_datetimes("call me at 3 pm", ended)] == ["2026-03-13T15:00:00-05:00"]


@pytest.mark.parametrize(
    ("said", "expected"),
    [("around $15,000", 15000), ("fifteen thousand dollars", 15000), ("thirty-five technicians", 35),
     ("about 5k a month", 5000), ("two hundred and fifty", 250), ("12.5 hours", 12.5)],
)  # fmt: skip
def test_numbers_in_digits_and_words(said: str, expected: float) -> None:
    assert [f.value for f in vs.find_numbers(said)] == [expected]


FRIDAY = date(2019, 3, 1)  # the Schema-Guided Dialogue corpus's reference day


@pytest.mark.parametrize(
    ("said", "expected"),
    [
        ("Wednesday next week", date(2019, 3, 6)),  # was Monday the 4th
        ("next week on Tuesday", date(2019, 3, 5)),
        ("the 11th of this month", date(2019, 3, 11)),  # was not read
        ("the 1st", date(2019, 3, 1)),  # was not read
        ("on the 7th", date(2019, 3, 7)),
        ("the 2nd of next month", date(2019, 4, 2)),
        ("the twenty-fourth of March", date(2019, 3, 24)),
        ("on the first", date(2019, 3, 1)),
    ],
)
def test_week_relative_and_ordinal_dates(said: str, expected: date) -> None:
    assert [f.value for f in vs.find_dates(said, FRIDAY)] == [expected]


def test_ordinals_that_are_not_days_are_not_dates() -> None:
    assert vs.find_dates("this is the 3rd time I call, I live on the 2nd floor", FRIDAY) == []
    assert vs.find_dates("the first time I called", FRIDAY) == []


@pytest.mark.parametrize(
    ("said", "expected"),
    [
        ("half past 4 in the evening", time(16, 30)),  # was not read
        ("quarter past 5 in the evening", time(17, 15)),
        ("quarter to 6 pm", time(17, 45)),
        ("5 o'clock in the evening", time(17, 0)),
        ("11 in the morning", time(11, 0)),
        ("10:30 in the morning", time(10, 30)),
        ("half past eleven in the morning", time(11, 30)),
        ("twenty minutes past three pm", time(15, 20)),
    ],
)
def test_spoken_times(said: str, expected: time) -> None:
    assert [f.value for f in vs.find_times(said)] == [expected]


def test_a_long_message_of_dates_and_times_is_scanned_in_linear_time() -> None:
    """Each date or time found was compared with all found before (and each time with every date):
    10,000 'Monday at 3 pm' in one message took 27 s, quadratic, in a transcript of up to 8 MB."""
    ref = datetime(2026, 3, 12, 12, tzinfo=CHICAGO)
    said = "monday at 3 pm, " * 10_000
    started = thread_time()
    found = vs.find_datetimes(said, ref)
    assert thread_time() - started < 3.0
    assert len(found) == 10_000 and {f.value for f in found} == {datetime(2026, 3, 16, 15, tzinfo=CHICAGO)}
    assert [f.value for f in vs.find_dates("Thursday, March 19th or friday", THURSDAY)] == [
        date(2026, 3, 19),
        date(2026, 3, 13),
    ]


def test_a_long_message_of_weekdays_is_scanned_in_linear_time() -> None:
    """Whether each weekday was habitual ('open Mondays') lower-cased the rest of the message from it:
    100,000 'monday' (700,000 characters) took 13 s, quadratic."""
    started = thread_time()
    found = vs.find_dates("monday " * 100_000, THURSDAY)
    assert thread_time() - started < 4.0
    assert len(found) == 100_000
    assert vs.find_dates("we're open Mondays and Tuesdays.", THURSDAY) == []
