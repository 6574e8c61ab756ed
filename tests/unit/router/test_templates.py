"""Template rendering: substitution only, system variables and their availability, fallbacks, no code."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from schemas.agent_config import VarRef
from schemas.agents import TemplateSyntaxError, parse_template
from services.router import variables
from services.router.templates import JsonTemplate, Template
from services.router.variables import TRANSCRIPT_FALLBACK, ConversationValues
from tests.unit.router.support import event

UTC = ZoneInfo("UTC")


def render(text: str, fallback: str = "(not available)", tz: ZoneInfo = UTC, **kwargs: Any) -> str:
    return Template.compile(text).render(ConversationValues(event(**kwargs), tz, fallback))


SYSTEM_CASES = [
    ("conversation_date", "2026-03-10 09:58:30 UTC"),
    ("conversation_time", "9:58 AM"),
    ("conversation_end_date", "2026-03-10 10:03:05 UTC"),
    ("conversation_duration", "04:35"),
    ("conversation_status", "Completed"),
    ("conversation_direction", "Inbound"),
    ("conversation_summary", "Customer asked for a callback."),
    ("conversation_transcript", "Agent: Hello, how can I help?\nCustomer: Please call me back."),
    ("conversation_url", "https://voice.example/c/conv-1"),
    ("conversation_uuid", "conv-1"),
    ("agent_name", "Support Assistant"),
    ("account_name", "Copperline"),
    ("customer_number", "+16305550123"),
    ("customer_name", "Tom Becker"),
    ("customer_email", "tom@becker.example"),
    ("to_number", "+13125550100"),
    ("end_reason", "CUSTOMER_HANGUP"),
    ("raw_end_reason", "customer-ended-call"),
    ("agent_id", "support-line"),
    ("duration_seconds", "275"),
    ("extraction_status", "ok"),
]


@pytest.mark.parametrize(("name", "expected"), SYSTEM_CASES, ids=[c[0] for c in SYSTEM_CASES])
def test_system_variable(name: str, expected: str) -> None:
    assert render("{{" + name + "}}") == expected


def test_dates_render_in_the_agents_time_zone_24h_and_12h() -> None:
    chicago = ZoneInfo("America/Chicago")
    assert render("{{conversation_date}}", tz=chicago) == "2026-03-10 04:58:30 CDT"
    assert render("{{conversation_time}}", tz=chicago) == "4:58 AM"
    assert render("{{conversation_end_date}}", tz=chicago) == "2026-03-10 05:03:05 CDT"  # started + 04:35
    assert render("{{conversation_time}}", started_at="2026-03-10T21:05:00Z") == "9:05 PM"


@pytest.mark.parametrize(
    "zone", ["UTC", "America/Chicago", "Asia/Kolkata", "Australia/Lord_Howe", "Pacific/Chatham", "America/St_Johns"]
)
def test_a_date_is_strftimes_text_at_every_hour_and_offset_change(zone: str) -> None:
    """_local formats the fields itself; strftime("%Y-%m-%d %H:%M:%S %Z") says what it must give: the
    first and last instants a Timestamp holds (1969 in a zone west of UTC), each change of offset (DST,
    half hours), a leap day and times with microseconds."""
    tz = ZoneInfo(zone)
    values = ConversationValues(event(), tz, "-")
    instants = [datetime(1970, 1, 1, tzinfo=UTC), datetime(2999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)]
    start = datetime(2024, 1, 1, tzinfo=UTC)
    instants += [start + timedelta(minutes=30 * n, microseconds=n) for n in range(366 * 48)]  # 2024: a leap year
    for at in instants:
        assert variables._local(at, values) == at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z"), at


def test_duration_over_an_hour_keeps_counting_minutes() -> None:
    assert render("{{conversation_duration}}", duration_seconds=3725.9) == "62:05"


AVAILABILITY_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("customer_number-web", "customer_number", {"channel": "web"}),
    ("to_number-web", "to_number", {"channel": "web"}),
    ("customer_name-no-contact", "customer_name", {"customer": {"contact_id": None}}),
    ("customer_email-no-contact", "customer_email", {"customer": {"contact_id": None}}),
    ("account_name-missing", "account_name", {"account": {"id": "a", "name": None}}),
    ("summary-missing", "conversation_summary", {"summary": None}),
    ("url-missing", "conversation_url", {"conversation_url": None}),
]


@pytest.mark.parametrize(("name", "conv"), [c[1:] for c in AVAILABILITY_CASES], ids=[c[0] for c in AVAILABILITY_CASES])
def test_unavailable_system_variable_renders_the_fallback(name: str, conv: dict[str, Any]) -> None:
    assert render("{{" + name + "}}", **conv) == "(not available)"
    assert render("{{" + name + " | unknown}}", **conv) == "unknown"


def test_transcript_only_when_messages_are_present_else_its_own_fallback() -> None:
    assert render("{{conversation_transcript}}", messages=None) == TRANSCRIPT_FALLBACK
    assert render("{{conversation_transcript}}", messages=[]) == TRANSCRIPT_FALLBACK
    assert render("{{conversation_transcript | no transcript}}", messages=None) == "no transcript"
    url_only: dict[str, Any] = {"messages": None, "transcript_url": "https://voice.example/t/1.json"}
    assert render("{{conversation_transcript}}", **url_only) == TRANSCRIPT_FALLBACK


def test_agent_default_fallback_text_applies_when_the_template_gives_none() -> None:
    assert render("Name: {{customer_name}}", fallback="n/a", customer={"contact_id": None}) == "Name: n/a"


def test_empty_text_counts_as_missing() -> None:
    assert render("{{account_name | none}}", account={"id": "a", "name": "  "}) == "none"


def test_extracted_fields_dyn_and_dynamic_variables() -> None:
    kwargs: dict[str, Any] = {
        "fields": {"interest_level": "high", "seats": 12, "follow_up_required": True, "ratio": 0.25},
        "dynamic": {"dyn_appointment_date": "March 12"},
        "dynamic_variables": {"plan": "pro", "seats_paid": 10},
    }
    text = (
        "{{interest_level}} {{fields.seats}} {{follow_up_required}} {{ratio}} {{dyn_appointment_date}} "
        "{{dynamic_variables.plan}} {{dynamic_variables.seats_paid}}"
    )
    assert render(text, **kwargs) == "high 12 true 0.25 March 12 pro 10"


def test_the_platforms_own_analysis_renders_whatever_the_extraction() -> None:
    analysis = {
        "summary": "Booked for Friday.",
        "successful": True,
        "sentiment": "Positive",
        "data": {"slot": "Fri 9-11", "items": ["a", "b"]},
    }
    text = "{{platform.summary}} {{platform.successful}} {{platform.sentiment}} {{platform.slot}} {{platform.items}}"
    for status in ("ok", "failed"):
        rendered = render(text, status=status, platform_analysis=analysis)
        assert rendered == 'Booked for Friday. true Positive Fri 9-11 ["a","b"]'
    assert render("{{platform.summary | none}} {{platform.slot | -}}") == "none -"


def test_missing_extracted_values_render_fallbacks() -> None:
    assert render("{{interest_level | unknown}} {{dyn_location}} {{dynamic_variables.nope | -}}") == (
        "unknown (not available) -"
    )


def test_extracted_values_are_missing_when_extraction_failed() -> None:
    text = "{{interest_level | ?}} {{dyn_x | ?}} {{customer_name}}"
    assert render(text, status="failed", fields={"interest_level": "high"}, dynamic={"dyn_x": "y"}) == "? ? Tom Becker"


def test_system_variable_wins_and_extracted_field_of_the_same_name_fills_in_when_unavailable() -> None:
    assert render("{{customer_name}}", fields={"customer_name": "Thomas"}) == "Tom Becker"
    assert render("{{customer_name}}", fields={"customer_name": "Thomas"}, customer={"contact_id": None}) == "Thomas"


INJECTIONS = [
    "{{__import__('os')}}",
    "{{ __import__('os').system('id') }}",
    "{{ conversation_summary.__class__ }}",
    "{{ conversation_summary.upper() }}",
    "{{ customer_name + customer_email }}",
    "{{ 7*7 }}",
    "{{ config.items() }}",
    "{% for x in y %}{{x}}{% endfor %}",
    "{{ a[0] }}",
    "{{ {{customer_name}} }}",
    "{{ lipsum.__globals__ }}",
    "{{customer_name",
]


@pytest.mark.parametrize("text", INJECTIONS)
def test_anything_but_a_name_is_refused_when_the_configuration_loads(text: str) -> None:
    with pytest.raises(TemplateSyntaxError):
        parse_template(text)


def test_values_are_never_rendered_again() -> None:
    nasty = "{{customer_email}} {{__import__('os')}} {% raw %} }}{{"
    out = render("Summary: {{conversation_summary}}", summary=nasty)
    assert out == f"Summary: {nasty}"
    transcript = render(
        "{{conversation_transcript}}", messages=[{"role": "customer", "text": "my code is {{dyn_x}} and {{{x}}}"}]
    )
    assert transcript == "Customer: my code is {{dyn_x}} and {{{x}}}"


def test_literal_text_and_single_braces_pass_through() -> None:
    assert render('JSON: {"a": 1} and } and {') == 'JSON: {"a": 1} and } and {'


def test_html_rendering_escapes_values_but_not_the_authors_markup() -> None:
    values = ConversationValues(event(summary='<script>alert(1)</script> & "x"'), UTC, "<none>")
    page = Template.compile("<p>{{conversation_summary}}</p><p>{{dyn_missing}}</p><p>{{dyn_y | <b>}}</p>")
    assert page.render_html(values) == (
        "<p>&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;x&quot;</p><p>&lt;none&gt;</p><p>&lt;b&gt;</p>"
    )


def test_json_body_exact_reference_keeps_the_type() -> None:
    body = JsonTemplate(
        {
            "level": "{{interest_level}}",
            "follow_up": "{{follow_up_required}}",
            "seats": "{{seats}}",
            "missing": "{{callback_number}}",
            "missing_with_fallback": "{{callback_number | none given}}",
            "text": "Level {{interest_level}}",
            "nested": [{"n": "{{seats}}"}, 5, True, None],
            "static": "closed",
        }
    )
    values = ConversationValues(
        event(fields={"interest_level": "high", "follow_up_required": False, "seats": 3}), UTC, "(not available)"
    )
    assert body.render(values) == {
        "level": "high",
        "follow_up": False,
        "seats": 3,
        "missing": None,
        "missing_with_fallback": "none given",
        "text": "Level high",
        "nested": [{"n": 3}, 5, True, None],
        "static": "closed",
    }


def test_a_variable_is_looked_up_once_per_record() -> None:
    values = ConversationValues(event(), UTC, "-")
    Template.compile("{{conversation_transcript}} {{conversation_transcript}}").render(values)
    assert list(values._cache) == ["conversation_transcript"]


@pytest.mark.parametrize(
    "text", ["{{ conversation_summary | upper }}", "{{x | default('n/a')}}", "{{x | trim | title}}", "{{x|e}}"]
)
def test_a_jinja_filter_after_the_bar_is_refused_not_rendered_as_fallback_text(text: str) -> None:
    """`{{ conversation_summary | upper }}` was accepted and rendered the fallback text "upper"."""
    with pytest.raises(TemplateSyntaxError, match="templates have no filters"):
        parse_template(text)


def test_a_quoted_fallback_is_kept_literally_even_when_it_is_a_filter_name() -> None:
    assert parse_template('{{x | "upper"}}')[0] == VarRef("x", "upper")
    assert parse_template("{{x | 'n/a'}}")[0] == VarRef("x", "n/a")
    assert parse_template("{{x | not available}}")[0] == VarRef("x", "not available")


def render_path(text: str, **kwargs: Any) -> tuple[str, list[str]]:
    return Template.compile(text).render_path(ConversationValues(event(**kwargs), UTC, "(not available)"))


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("4471", "4471"),
        ("../../admin", "%2E%2E%2F%2E%2E%2Fadmin"),
        ("..", "%2E%2E"),
        ("a?delete=all#x", "a%3Fdelete%3Dall%23x"),
        ("50%", "50%25"),
        ("Müller & Co", "M%C3%BCller%20%26%20Co"),
        ("a\\b", "a%5Cb"),
    ],
)
def test_a_path_value_is_percent_encoded_whole_so_it_stays_in_its_segment(value: str, encoded: str) -> None:
    path, empty = render_path("/cases/{{dyn_case}}/notes", dynamic={"dyn_case": value})
    assert (path, empty) == (f"/cases/{encoded}/notes", [])


def test_an_empty_path_value_is_named_so_the_request_is_skipped_and_an_explicit_fallback_is_used() -> None:
    assert render_path("/cases/{{dyn_case}}") == ("/cases/", ["dyn_case"])
    assert render_path("/cases/{{dyn_case}}", dynamic={"dyn_case": "  "})[1] == ["dyn_case"]
    assert render_path("/cases/{{dyn_case | new}}") == ("/cases/new", [])
