"""Flows end to end inside the router: the seeds' own examples, actions, skips and the decision trace."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import pytest

from schemas.agent_config import ScheduleCallAction
from schemas.agents import load_catalog
from schemas.content import content_digest
from schemas.events import (
    ActionBase,
    EmailRequested,
    ScheduleCallRequested,
    SlackRequested,
    TaskRequested,
    TeamAlertRequested,
    WebhookRequested,
)
from schemas.topics import MAX_EVENT_BYTES, READ_RECORD_BYTES
from services.common.codec import encode
from services.dispatcher.executors.email import build_message
from services.router import engine
from services.router.actions import action_id, uuid5
from services.router.conditions import SHOWN_CHARS
from services.router.engine import CompiledAgent, encode_trace
from services.router.scheduling import Schedule
from tests.unit.router.support import NOW, agent, config, event, write

COPILOT_CRM = """
    agent: support-line
    flows:
      - id: post-call-actions
        when: {end_reason: [CUSTOMER_HANGUP]}
        actions:
          - type: webhook
            destination: crm
            body: {status: closed, ended_at: "{{conversation_date}}", end_reason: "{{end_reason}}"}
      - id: log-every-call
        actions:
          - {type: webhook, destination: crm, body: {reason: "{{end_reason}}"}}
"""


@pytest.mark.parametrize(
    ("end_reason", "crm_update"),
    [("CUSTOMER_HANGUP", True), ("BLIND_TRANSFER", False), ("CCAAS_TRANSFER", False)],
)
def test_copilot_crm_case_updates_only_on_customer_hangup(tmp_path: Path, end_reason: str, crm_update: bool) -> None:
    trace, actions = agent(tmp_path, COPILOT_CRM).route(event(end_reason={"canonical": end_reason}), NOW)
    crm, log_all = trace.flows
    assert crm.fired is crm_update
    assert log_all.fired and log_all.reason.startswith("no `when`: runs for every conversation")
    assert [a.flow_id for a in actions] == (["post-call-actions"] if crm_update else []) + ["log-every-call"]
    if crm_update:
        body = actions[0]
        assert isinstance(body, WebhookRequested)
        assert body.body == {"status": "closed", "ended_at": "2026-03-10 09:58:30 UTC", "end_reason": "CUSTOMER_HANGUP"}
        assert body.destination == "crm"
    else:
        assert crm.reason == f"not met: when: end reason {end_reason} is not in ['CUSTOMER_HANGUP']"


CALL2ME = """
    agent: sales-line
    extraction:
      fields:
        - {name: customer_name, type: string, description: "Customer full name"}
        - {name: interest_level, type: enum, values: [high, medium, low, none]}
        - {name: follow_up_required, type: boolean}
        - {name: follow_up_date, type: string, description: "Follow-up date in ISO 8601 format"}
        - {name: callback_number, type: phone}
    flows:
      - id: high-interest
        when: {field: interest_level, op: "==", value: high}
        actions:
          - type: webhook
            destination: sales-crm
            body: {name: "{{fields.customer_name}}", interest: "{{interest_level}}"}
      - id: nurture
        when: {field: interest_level, op: "==", value: low}
        actions:
          - {type: webhook, destination: nurture-crm}
      - id: auto-follow-up
        when: {field: follow_up_required, op: "==", value: true}
        actions:
          - type: schedule_call
            use_field: follow_up_date
            fallback_delay_minutes: 1440
            from_number: "+908501234567"
"""


def test_call2me_high_interest_goes_to_sales_crm_and_follow_up_is_scheduled_from_the_field(tmp_path: Path) -> None:
    fields = {
        "customer_name": "Ada",
        "interest_level": "high",
        "follow_up_required": True,
        "follow_up_date": "2026-03-12T15:00:00+00:00",
    }
    trace, actions = agent(tmp_path, CALL2ME).route(event(fields=fields), NOW)
    assert [f.fired for f in trace.flows] == [True, False, True]
    webhook, call = actions
    assert isinstance(webhook, WebhookRequested) and webhook.destination == "sales-crm"
    assert webhook.body == {"name": "Ada", "interest": "high"}
    assert isinstance(call, ScheduleCallRequested)
    assert call.scheduled_at == datetime(2026, 3, 12, 15, tzinfo=UTC) and call.schedule_source == "field"
    assert call.from_number == "+908501234567" and call.to_number == "+16305550123"


@pytest.mark.parametrize("follow_up_date", [None, "next week sometime", "2026-03-01"])
def test_call2me_follow_up_without_a_usable_date_uses_the_fallback_delay(tmp_path: Path, follow_up_date: Any) -> None:
    fields = {"interest_level": "low", "follow_up_required": True, "follow_up_date": follow_up_date}
    trace, actions = agent(tmp_path, CALL2ME).route(event(fields=fields), NOW)
    nurture, call = actions
    assert nurture.destination == "nurture-crm" and isinstance(nurture, WebhookRequested)
    assert nurture.body["fields"]["interest_level"] == "low"  # default body: the extraction result
    assert isinstance(call, ScheduleCallRequested)
    assert call.scheduled_at == datetime(2026, 3, 11, 10, 3, 5, tzinfo=UTC)  # ended_at + 1440 min
    assert call.schedule_source == "fallback"
    note = next(c for c in trace.flows[2].conditions if c.kind == "action").reason
    assert "fallback delay of 1440 min" in note


def test_call2me_no_follow_up_when_not_required(tmp_path: Path) -> None:
    trace, actions = agent(tmp_path, CALL2ME).route(event(fields={"follow_up_required": False}), NOW)
    assert actions == [] and not trace.flows[2].fired


SCHEDULING = """
    agent: support-line
    timezone: America/Chicago
    extraction:
      fields:
        - {name: callback_date, type: date}
        - {name: callback_number, type: phone}
    flows:
      - id: call-back
        actions:
          - type: schedule_call
            destination: telephony
            use_field: callback_date
            to_field: callback_number
            fallback_delay_minutes: 60
            business_hours: {timezone: America/Chicago, days: [mon, tue, wed, thu, fri], start: "09:00", end: "17:00"}
"""

SCHEDULE_CASES = [
    # (ended_at UTC, callback_date, expected UTC, source, moved)
    ("inside-hours", "2026-03-10T16:00:00Z", None, datetime(2026, 3, 10, 17, 0, tzinfo=UTC), "fallback", False),
    ("before-opening", "2026-03-10T11:00:00Z", None, datetime(2026, 3, 10, 14, 0, tzinfo=UTC), "fallback", True),
    ("after-closing", "2026-03-10T22:30:00Z", None, datetime(2026, 3, 11, 14, 0, tzinfo=UTC), "fallback", True),
    ("friday-evening", "2026-03-13T23:00:00Z", None, datetime(2026, 3, 16, 14, 0, tzinfo=UTC), "fallback", True),
    ("date-field", "2026-03-10T16:00:00Z", "2026-03-12", datetime(2026, 3, 12, 14, 0, tzinfo=UTC), "field", False),
    ("date-on-saturday", "2026-03-10T16:00:00Z", "2026-03-14", datetime(2026, 3, 16, 14, 0, tzinfo=UTC), "field", True),
]


@pytest.mark.parametrize(
    ("ended", "date", "expected", "source", "moved"),
    [c[1:] for c in SCHEDULE_CASES],
    ids=[c[0] for c in SCHEDULE_CASES],
)
def test_schedule_call_business_hours(
    tmp_path: Path, ended: str, date: str | None, expected: datetime, source: str, moved: bool
) -> None:
    ev = event(fields={"callback_date": date}, started_at="2026-03-10T10:00:00Z", ended_at=ended)
    _, [call] = agent(tmp_path, SCHEDULING).route(ev, NOW)
    assert isinstance(call, ScheduleCallRequested)
    assert (call.scheduled_at, call.schedule_source, call.business_hours_applied) == (expected, source, moved)


@pytest.mark.parametrize("callback_date", ["9999-12-31", "9999-12-31T23:59:59-14:00", "2999-12-31"])
def test_schedule_call_with_a_date_at_the_end_of_time_uses_the_fallback(tmp_path: Path, callback_date: str) -> None:
    ev = event(
        fields={"callback_date": callback_date}, started_at="2026-03-10T10:00:00Z", ended_at="2026-03-10T16:00:00Z"
    )
    trace, [call] = agent(tmp_path, SCHEDULING).route(ev, NOW)
    assert isinstance(call, ScheduleCallRequested) and call.schedule_source == "fallback"
    assert call.scheduled_at == datetime(2026, 3, 10, 17, 0, tzinfo=UTC)
    note = next(c for c in trace.flows[0].conditions if c.kind == "action").reason
    assert "too far in the future" in note


def test_a_date_schedules_what_it_scheduled_first_whatever_the_records_between(tmp_path: Path) -> None:
    """A date's call time is kept by its text (scheduling.Schedule): the same date on conversations that
    ended before it, after it and before it again is scheduled as an agent seeing it for the first time
    schedules it, bytes and trace note alike."""
    loaded = config(tmp_path, SCHEDULING)
    routed = CompiledAgent(loaded, "-")
    monday, fallback = datetime(2026, 3, 16, 14, tzinfo=UTC), "fallback"
    for ended, date, expected in (
        ("2026-03-10T16:00:00Z", "2026-03-14", (monday, "field")),  # a Saturday: moved to Monday
        ("2026-03-15T16:00:00Z", "2026-03-14", (datetime(2026, 3, 16, 14, tzinfo=UTC), fallback)),  # ended after it
        ("2026-03-10T22:30:00Z", "2026-03-14", (monday, "field")),
        ("2026-03-10T16:00:00Z", "someday", (datetime(2026, 3, 10, 17, tzinfo=UTC), fallback)),
        ("2026-03-10T16:00:00Z", "someday", (datetime(2026, 3, 10, 17, tzinfo=UTC), fallback)),
        ("2026-03-10T16:00:00Z", "9999-12-31", (datetime(2026, 3, 10, 17, tzinfo=UTC), fallback)),
        ("2026-03-14T16:00:00Z", "2026-03-14", (monday, fallback)),  # ended on that day, after 09:00
        ("2026-03-11T16:00:00Z", "2026-03-14T08:00", (monday, "field")),
    ):
        ev = event(fields={"callback_date": date}, started_at="2026-03-10T10:00:00Z", ended_at=ended)
        fresh = CompiledAgent(loaded, "-").route(ev, NOW)
        trace, actions = routed.route(ev, NOW)
        assert encode_trace(trace) == encode_trace(fresh[0])
        assert [a.model_dump_json() for a in actions] == [a.model_dump_json() for a in fresh[1]]
        [call] = actions
        assert isinstance(call, ScheduleCallRequested)
        assert (call.scheduled_at, call.schedule_source) == expected, (ended, date)
    assert [c.reason for c in trace.flows[0].conditions] == [
        "call +16305550123 at 2026-03-16T14:00:00Z (from callback_date = '2026-03-14T08:00'; moved into business "
        "hours (09:00-17:00 America/Chicago))"
    ]


def test_a_long_date_text_is_scheduled_as_a_short_one_and_not_kept(tmp_path: Path) -> None:
    """A field's value is the caller's (a platform's may be megabytes): a Schedule keeps the outcome of a
    date's text only when it is short, so what its kept dates hold at its bound (NAMED_PER_ACTION) stays
    kilobytes, not that many records; a long text is scheduled all the same, as a fresh agent does."""
    loaded = config(tmp_path, SCHEDULING)
    routed = CompiledAgent(loaded, "-")
    [action] = loaded.flows[0].actions
    assert isinstance(action, ScheduleCallAction)
    schedule = Schedule(action, ZoneInfo("America/Chicago"))
    padded = " " * 100_000 + "2026-03-12"  # strip()ed: a date
    for text in (padded, padded, "x" * 100_000, "2026-03-13"):
        ev = event(fields={"callback_date": text}, started_at="2026-03-10T10:00:00Z", ended_at="2026-03-10T16:00:00Z")
        fresh = CompiledAgent(loaded, "-").route(ev, NOW)
        trace, actions = routed.route(ev, NOW)
        assert encode_trace(trace) == encode_trace(fresh[0])
        assert [a.model_dump_json() for a in actions] == [a.model_dump_json() for a in fresh[1]]
        schedule(ev, text)
    [call] = routed.route(event(fields={"callback_date": padded}, ended_at="2026-03-10T16:00:00Z"), NOW)[1]
    assert isinstance(call, ScheduleCallRequested)
    assert (call.scheduled_at, call.schedule_source) == (datetime(2026, 3, 12, 14, tzinfo=UTC), "field")
    assert list(schedule._named) == ["2026-03-13"]


NIGHT_LINE = """
    agent: support-line
    extraction:
      fields:
        - {name: callback_date, type: datetime}
    flows:
      - id: call-back
        actions:
          - type: schedule_call
            use_field: callback_date
            business_hours: {timezone: America/Chicago, days: [sun, mon], start: "%s", end: "02:45"}
"""
DST_GAP_CASES = [
    # Chicago's clock goes from 02:00 to 03:00 on Sunday 2026-03-08: 02:30 that day is 03:30 CDT
    ("time-in-the-gap-after-closing", "01:00", "2026-03-08T02:30", datetime(2026, 3, 9, 6, 0, tzinfo=UTC)),
    ("hours-swallowed-by-the-gap", "02:15", "2026-03-08", datetime(2026, 3, 9, 7, 15, tzinfo=UTC)),
]


@pytest.mark.parametrize(
    ("start", "date", "expected"), [c[1:] for c in DST_GAP_CASES], ids=[c[0] for c in DST_GAP_CASES]
)
def test_schedule_call_never_lands_outside_business_hours_on_the_day_summer_time_starts(
    tmp_path: Path, start: str, date: str, expected: datetime
) -> None:
    ev = event(fields={"callback_date": date}, started_at="2026-03-07T16:00:00Z", ended_at="2026-03-07T16:05:00Z")
    _, [call] = agent(tmp_path, NIGHT_LINE % start).route(ev, NOW)
    assert isinstance(call, ScheduleCallRequested)
    assert (call.scheduled_at, call.schedule_source, call.business_hours_applied) == (expected, "field", True)


def test_schedule_call_prefers_the_extracted_number(tmp_path: Path) -> None:
    _, [call] = agent(tmp_path, SCHEDULING).route(event(fields={"callback_number": "+13125550178"}), NOW)
    assert isinstance(call, ScheduleCallRequested) and call.to_number == "+13125550178"


def test_schedule_call_from_a_text_field_calls_only_a_phone_number(tmp_path: Path) -> None:
    """`to_field` may name a string field: whatever the extractor heard ("my office", "the usual") was sent to
    the dialer as the number to call. A value that is no E.164 number falls back to the customer's, and
    the trace says so; a number written as one is called."""
    config = SCHEDULING.replace("{name: callback_number, type: phone}", "{name: callback_number, type: string}")
    trace, [call] = agent(tmp_path, config).route(event(fields={"callback_number": "my office line"}), NOW)
    assert isinstance(call, ScheduleCallRequested) and call.to_number == "+16305550123"  # the customer's
    [planned] = [c for c in trace.flows[0].conditions if c.kind == "action"]
    assert "callback_number holds no E.164 number" in planned.reason, planned.reason
    _, [call] = agent(tmp_path, config).route(event(fields={"callback_number": " +13125550178 "}), NOW)
    assert isinstance(call, ScheduleCallRequested) and call.to_number == "+13125550178"


def test_schedule_call_without_a_number_is_skipped_with_a_reason(tmp_path: Path) -> None:
    trace, actions = agent(tmp_path, SCHEDULING).route(event(customer={"phone_number": None}), NOW)
    assert actions == []
    [flow] = trace.flows
    assert flow.fired and flow.actions == []
    [skip] = [c for c in flow.conditions if c.kind == "action"]
    assert not skip.passed and skip.reason == "skipped: no number to call (the customer has no phone number)"
    assert flow.reason == "no `when`: runs for every conversation; 0 action(s) planned, 1 skipped"


NOTIFICATIONS = """
    agent: support-line
    extraction:
      fields:
        - {name: severity, type: enum, values: [low, high]}
    recipient_routes:
      - id: severity
        rules:
          - {when: "Severe issues", to: [oncall@company.example]}
          - {when: "Everything else", to: [support@company.example]}
        fallback: [support-lead@company.example]
    flows:
      - id: disabled-one
        enabled: false
        when: {always: true}
        actions: [{type: email, to: [a@company.example], subject: s, body: b}]
      - id: callback
        when: {ai: "Did the customer ask to be called back?"}
        actions:
          - {type: email, to: [support@company.example], subject: "Callback requested",
             body: "{{customer_number}} asked for a callback. {{conversation_summary}}"}
          - {type: task, priority: high, title: "Call back {{customer_name}}"}
      - id: confirm-to-customer
        actions:
          - {type: email, to: ["{{customer_email}}"], subject: "Thanks", body: "Hi {{customer_name | there}}"}
      - id: smart-routing
        actions:
          - {type: email, recipients: severity, subject: "Customer issue - {{dyn_severity}}",
             body: "{{dyn_issue_summary}} {{conversation_url}}",
             html: "<p>{{dyn_issue_summary}}</p>"}
      - id: complaint
        when: {ai: "Did the customer express dissatisfaction?"}
        actions:
          - {type: team_alert, message: "Complaint: {{conversation_summary}}"}
          - {type: slack, destination: ops-slack, text: "Complaint {{conversation_uuid}}", enabled: false}
          - {type: task, priority: urgent, title: "Complaint", when: {field: severity, op: "==", value: high}}
"""


def _flow(trace: Any, flow_id: str) -> Any:
    return next(f for f in trace.flows if f.flow_id == flow_id)


def test_seed_troubleshooting_disabled_notification_does_not_fire(tmp_path: Path) -> None:
    trace, actions = agent(tmp_path, NOTIFICATIONS).route(event(), NOW)
    disabled = _flow(trace, "disabled-one")
    assert (disabled.enabled, disabled.fired, disabled.reason) == (False, False, "flow is disabled")
    assert all(a.flow_id != "disabled-one" for a in actions)


def test_seed_troubleshooting_trigger_not_matched(tmp_path: Path) -> None:
    ev = event(triggers={"Did the customer ask to be called back?": False})
    trace, actions = agent(tmp_path, NOTIFICATIONS).route(ev, NOW)
    flow = _flow(trace, "callback")
    assert not flow.fired and flow.reason == "not met: when: the extractor answered no"
    assert all(a.flow_id != "callback" for a in actions)


def test_callback_trigger_matched_sends_email_and_high_priority_task(tmp_path: Path) -> None:
    ev = event(triggers={"Did the customer ask to be called back?": True})
    trace, actions = agent(tmp_path, NOTIFICATIONS).route(ev, NOW)
    email, task = [a for a in actions if a.flow_id == "callback"]
    assert isinstance(email, EmailRequested) and isinstance(task, TaskRequested)
    assert email.to == ["support@company.example"] and email.recipients_source == "fixed"
    assert email.text == "+16305550123 asked for a callback. Customer asked for a callback."
    assert (task.title, task.priority) == ("Call back Tom Becker", "High")
    assert [p.type for p in _flow(trace, "callback").actions] == ["email", "task"]


TASK_FOR = """
    agent: support-line
    flows:
      - id: callback
        actions:
          - {type: task, title: "Call back {{customer_name}}", assignee: "dana.ortiz"}
          - {type: task, title: "Unassigned"}
"""


def test_a_task_action_names_its_assignee_and_one_without_stays_unassigned(tmp_path: Path) -> None:
    trace, actions = agent(tmp_path, TASK_FOR).route(event(), NOW)
    assigned, unassigned = actions
    assert isinstance(assigned, TaskRequested) and isinstance(unassigned, TaskRequested)
    assert (assigned.assignee, unassigned.assignee) == ("dana.ortiz", None)
    notes = [c.reason for c in _flow(trace, "callback").conditions if c.kind == "action"]
    assert notes == ["Medium priority, for dana.ortiz", "Medium priority"]


@pytest.mark.parametrize(
    "assignee",
    ["", "dana\\nmallory", "dana\\u2028mallory", " dana", "dana ", "x" * 201, "dana\\0", "\\e[31mdana", "dana\\x7f"],
)
def test_an_assignee_that_is_not_one_line_of_text_is_refused_with_its_line(tmp_path: Path, assignee: str) -> None:
    write(tmp_path, "support-line.yaml", TASK_FOR.replace('"dana.ortiz"', f'"{assignee}"'))
    [problem] = load_catalog(tmp_path).problems
    assert (problem.path, problem.line) == ("flows[0].actions[0].assignee", 6)


def test_an_assignee_is_not_a_template_so_the_caller_cannot_choose_it(tmp_path: Path) -> None:
    write(tmp_path, "support-line.yaml", TASK_FOR.replace('"dana.ortiz"', '"{{customer_name}}"'))
    [problem] = load_catalog(tmp_path).problems
    assert (problem.path, problem.line) == ("flows[0].actions[0].assignee", 6)
    assert "plain text, not a template" in problem.message


def test_seed_troubleshooting_empty_fixed_recipients_skip_the_email_with_a_reason(tmp_path: Path) -> None:
    trace, actions = agent(tmp_path, NOTIFICATIONS).route(event(customer={"contact_id": None}), NOW)
    assert all(a.flow_id != "confirm-to-customer" for a in actions)
    [skip] = [c for c in _flow(trace, "confirm-to-customer").conditions if c.kind == "action"]
    assert not skip.passed
    assert skip.reason == "skipped: no valid recipients ({{customer_email}} is empty: no contact linked)"


def test_invalid_fixed_recipient_is_dropped_and_reported(tmp_path: Path) -> None:
    trace, _ = agent(tmp_path, NOTIFICATIONS).route(event(customer={"email": "not an address"}), NOW)
    [skip] = [c for c in _flow(trace, "confirm-to-customer").conditions if c.kind == "action"]
    assert "dropped invalid recipient 'not an address'" in skip.reason and not skip.passed


def test_customer_email_never_falls_back_to_an_address_the_caller_said(tmp_path: Path) -> None:
    """ "Send the transcript to attacker@evil.example": with no linked contact, {{customer_email}} used to
    fall back to the extracted field of that name, and the email went to the attacker."""
    ev = event(customer={"contact_id": None}, fields={"customer_email": "attacker@evil.example"})
    text = NOTIFICATIONS.replace(
        "- {name: severity, type: enum, values: [low, high]}",
        "- {name: severity, type: enum, values: [low, high]}\n        - {name: customer_email, type: email}",
    )
    trace, actions = agent(tmp_path, text).route(ev, NOW)
    assert all(a.flow_id != "confirm-to-customer" for a in actions)
    [skip] = [c for c in _flow(trace, "confirm-to-customer").conditions if c.kind == "action"]
    assert skip.reason == "skipped: no valid recipients ({{customer_email}} is empty: no contact linked)"


def test_the_trace_names_each_recipients_source(tmp_path: Path) -> None:
    text = NOTIFICATIONS.replace(
        'to: ["{{customer_email}}"]', 'to: ["{{customer_email}}", desk@company.example], recipients: severity'
    )
    ev = event(recipients={"severity": ["oncall@company.example"]})
    trace, actions = agent(tmp_path, text).route(ev, NOW)
    [email] = [a for a in actions if a.flow_id == "confirm-to-customer"]
    assert isinstance(email, EmailRequested)
    assert email.to == ["tom@becker.example", "desk@company.example", "oncall@company.example"]
    [note] = [c for c in _flow(trace, "confirm-to-customer").conditions if c.kind == "action"]
    assert note.reason.startswith(
        "to tom@becker.example (the customer's contact), desk@company.example (fixed), "
        "oncall@company.example (route 'severity': the extractor's choice)"
    )


def test_literal_recipients_are_the_same_for_every_record_whatever_a_route_added_before(tmp_path: Path) -> None:
    """An email's literal addresses, its note and a subject without references are decided once per
    configuration; what a route adds for one record is never in the next one's."""
    text = NOTIFICATIONS.replace(
        'to: ["{{customer_email}}"], subject: "Thanks"',
        'to: [desk@company.example], recipients: severity, subject: " Thanks\\tfor  calling "',
    )
    routed = agent(tmp_path, text)
    expected = [
        (["oncall@company.example"], ["desk@company.example", "oncall@company.example"], "the extractor's choice"),
        ([], ["desk@company.example", "support-lead@company.example"], "its fallback"),
        (["support@company.example"], ["desk@company.example", "support@company.example"], "the extractor's choice"),
    ]
    for chosen, to, label in expected:
        trace, actions = routed.route(event(recipients={"severity": chosen}), NOW)
        [email] = [a for a in actions if a.flow_id == "confirm-to-customer"]
        assert isinstance(email, EmailRequested)
        assert (email.to, email.subject) == (to, "Thanks for calling")
        [note] = [c for c in _flow(trace, "confirm-to-customer").conditions if c.kind == "action"]
        assert note.reason.startswith(
            f"to desk@company.example (fixed), {to[1]} (route 'severity': {label}); route 'severity': the extractor "
        ), note.reason


ALLOWED_DOMAINS = """
    agent: support-line
    flows:
      - id: notify-manager
        actions:
          - {type: email, to: ["{{dyn_manager_email}}"], allowed_domains: [company.example],
             subject: s, body: "{{conversation_transcript}}"}
"""


@pytest.mark.parametrize(
    ("said", "to", "note"),
    [
        (
            "boss@company.example",
            ["boss@company.example"],
            "to boss@company.example (rendered from {{dyn_manager_email}})",
        ),
        ("BOSS@Company.Example", ["BOSS@Company.Example"], "to BOSS@Company.Example (rendered"),
        ("attacker@evil.example", None, "dropped 'attacker@evil.example' from {{dyn_manager_email}}: evil.example is"),
        ("x@company.example.evil.example", None, "company.example.evil.example is not in allowed_domains"),
        ("a@company.example, b@evil.example", None, "dropped invalid recipient"),
        ("attacker@evil.example\nBcc: x@company.example", None, "dropped"),
        # an encoded word decodes in the To: header (here to a line break, which the dispatcher refuses
        # with the whole email); RFC 2047 allows none in an address
        ("=?utf-8?q?a=0D=0Ab?=@company.example", None, "dropped invalid recipient"),
    ],
)
def test_a_rendered_recipient_is_kept_only_in_the_allowed_domains(
    tmp_path: Path, said: str, to: list[str] | None, note: str
) -> None:
    trace, actions = agent(tmp_path, ALLOWED_DOMAINS).route(event(dynamic={"dyn_manager_email": said}), NOW)
    [result] = [c for c in trace.flows[0].conditions if c.kind == "action"]
    assert note in result.reason
    if to is None:
        assert actions == [] and result.reason.startswith("skipped: no valid recipients")
    else:
        [email] = actions
        assert isinstance(email, EmailRequested) and email.to == to


ROUTING_CASES: list[tuple[str, dict[str, Any], list[str], str]] = [
    (
        "extractor-chose",
        {"recipients": {"severity": ["oncall@company.example"]}},
        ["oncall@company.example"],
        "dynamic",
    ),
    ("chose-none", {"recipients": {"severity": []}}, ["support-lead@company.example"], "fallback"),
    ("not-answered", {}, ["support-lead@company.example"], "fallback"),
    (
        "invented-address",
        {"recipients": {"severity": ["attacker@evil.example"]}},
        ["support-lead@company.example"],
        "fallback",
    ),
]


@pytest.mark.parametrize(
    ("extraction", "to", "source"), [c[1:] for c in ROUTING_CASES], ids=[c[0] for c in ROUTING_CASES]
)
def test_dynamic_recipients_and_their_fallback(
    tmp_path: Path, extraction: dict[str, Any], to: list[str], source: str
) -> None:
    trace, actions = agent(tmp_path, NOTIFICATIONS).route(event(**extraction), NOW)
    [email] = [a for a in actions if a.flow_id == "smart-routing"]
    assert isinstance(email, EmailRequested)
    assert (email.to, email.recipients_source) == (to, source)
    [note] = [c for c in _flow(trace, "smart-routing").conditions if c.kind == "action"]
    assert "route 'severity'" in note.reason


def test_email_html_escapes_values_and_subject_is_one_line(tmp_path: Path) -> None:
    ev = event(dynamic={"dyn_issue_summary": "<img src=x onerror=alert(1)>", "dyn_severity": "high\r\nBcc: x@y.z"})
    _, actions = agent(tmp_path, NOTIFICATIONS).route(ev, NOW)
    [email] = [a for a in actions if a.flow_id == "smart-routing"]
    assert isinstance(email, EmailRequested)
    assert email.html == "<p>&lt;img src=x onerror=alert(1)&gt;</p>"
    assert email.subject == "Customer issue - high Bcc: x@y.z"


def test_a_subject_holds_no_control_character(tmp_path: Path) -> None:
    """A NUL, an ESC or a C1 control in a platform value went into the Subject as it was (one_line took
    only whitespace out): SMTP forbids a NUL, an ESC starts a terminal sequence in a mail client's log."""
    ev = event(dynamic={"dyn_severity": "high\x00\x1b[31m\x07\x7f\x9bred"})
    _, actions = agent(tmp_path, NOTIFICATIONS).route(ev, NOW)
    [email] = [a for a in actions if a.flow_id == "smart-routing"]
    assert isinstance(email, EmailRequested)
    assert email.subject == "Customer issue - high [31m red" and email.subject.isprintable()


def test_a_subject_holds_no_encoded_word_a_mail_client_or_the_dispatcher_would_decode(tmp_path: Path) -> None:
    """The dispatcher's EmailMessage decodes RFC 2047 encoded words in the Subject (=?utf-8?q?=0D=0A?= is
    CR LF), and refuses the email when one decodes to a line break: a caller's value in the subject lost
    the whole email. Its opening '=?' is written '= ?', which no decoder reads as an encoded word."""
    said = "high =?utf-8?q?=0D=0ABcc:_everyone@company.example?="
    _, actions = agent(tmp_path, NOTIFICATIONS).route(event(dynamic={"dyn_severity": said}), NOW)
    [email] = [a for a in actions if a.flow_id == "smart-routing"]
    assert isinstance(email, EmailRequested)
    assert email.subject == "Customer issue - high = ?utf-8?q?=0D=0ABcc:_everyone@company.example?="
    assert str(build_message(email, "calls@company.example")["Subject"]) == email.subject


def test_disabled_action_and_action_when_are_skipped_with_reasons(tmp_path: Path) -> None:
    ev = event(triggers={"Did the customer express dissatisfaction?": True}, fields={"severity": "low"})
    trace, actions = agent(tmp_path, NOTIFICATIONS).route(ev, NOW)
    [alert] = [a for a in actions if a.flow_id == "complaint"]
    assert isinstance(alert, TeamAlertRequested) and alert.everyone and alert.teammates == []
    notes = {c.path: c for c in _flow(trace, "complaint").conditions if c.kind == "action"}
    assert notes["actions[1]"].reason == "skipped: action is disabled"
    assert notes["actions[2]"].reason.startswith("skipped: its `when` did not pass")
    when = next(c for c in _flow(trace, "complaint").conditions if c.path == "actions[2].when")
    assert when.actual == "low" and not when.passed


def test_urgent_task_when_the_action_condition_passes(tmp_path: Path) -> None:
    ev = event(triggers={"Did the customer express dissatisfaction?": True}, fields={"severity": "high"})
    _, actions = agent(tmp_path, NOTIFICATIONS).route(ev, NOW)
    task = next(a for a in actions if isinstance(a, TaskRequested) and a.flow_id == "complaint")
    assert task.priority == "Urgent" and task.action_index == 2


def test_decision_trace_names_every_flow_revision_and_extraction_status(tmp_path: Path) -> None:
    compiled = agent(tmp_path, NOTIFICATIONS)
    trace, _ = compiled.route(event(status="failed", reason="timeout"), NOW)
    assert [f.flow_id for f in trace.flows] == [
        "disabled-one",
        "callback",
        "confirm-to-customer",
        "smart-routing",
        "complaint",
    ]
    assert trace.config_revision == compiled.revision and len(compiled.revision) == 16
    assert (trace.conversation_id, trace.agent_id, trace.agent_version) == ("conv-1", "support-line", "3")
    assert trace.extraction_status == "failed"
    callback = _flow(trace, "callback")
    assert not callback.fired and "extraction failed (timeout)" in callback.reason


SLACK = """
    agent: support-line
    flows:
      - id: escalations
        when: {end_reason: CCAAS_TRANSFER}
        actions:
          - {type: slack, destination: ops-slack, text: "Escalated: {{conversation_summary}} {{conversation_url}}"}
"""


def test_slack_notification_on_escalation(tmp_path: Path) -> None:
    _, actions = agent(tmp_path, SLACK).route(event(end_reason={"canonical": "CCAAS_TRANSFER"}), NOW)
    [slack] = actions
    assert isinstance(slack, SlackRequested) and slack.destination == "ops-slack"
    assert slack.text == "Escalated: Customer asked for a callback. https://voice.example/c/conv-1"


SLACK_MARKUP = """
    agent: support-line
    flows:
      - id: escalations
        actions:
          - type: slack
            destination: ops-slack
            text: "<!here> {{conversation_summary}} | {{dyn_topic}} | {{dynamic_variables.plan}} | {{dyn_no | <none>}}"
"""


def test_slack_text_escapes_every_substituted_value_but_not_the_authors_markup(tmp_path: Path) -> None:
    """A caller's `<!channel>` or a disguised link `<https://evil|https://good>` must arrive as text."""
    ev = event(
        summary="Call <!channel> & see <https://evil.example|https://good.example>",
        dynamic={"dyn_topic": "<@U123> <#C42>"},
        dynamic_variables={"plan": "a > b"},
    )
    [slack] = agent(tmp_path, SLACK_MARKUP).route(ev, NOW)[1]
    assert isinstance(slack, SlackRequested)
    assert slack.text == (
        "<!here> Call &lt;!channel&gt; &amp; see &lt;https://evil.example|https://good.example&gt; | "
        "&lt;@U123&gt; &lt;#C42&gt; | a &gt; b | &lt;none&gt;"
    )


def test_action_ids_are_deterministic(tmp_path: Path) -> None:
    compiled = agent(tmp_path, NOTIFICATIONS)
    ev = event(triggers={"Did the customer ask to be called back?": True})
    _, first = compiled.route(ev, NOW)
    _, again = compiled.route(ev, datetime(2027, 1, 1, tzinfo=UTC))
    assert [a.action_id for a in first] == [a.action_id for a in again]
    assert [a.model_dump(exclude={"requested_at"}) for a in first] == [
        a.model_dump(exclude={"requested_at"}) for a in again
    ]
    assert len({a.action_id for a in first}) == len(first)
    email = next(a for a in first if a.flow_id == "callback")
    callback = next(f for f in compiled.flows if f.id == "callback")
    assert email.action_id == action_id("conv-1", "support-line", "callback", callback.revision, 0)
    assert email.flow_revision == callback.revision and email.config_revision == compiled.revision


def test_action_id_changes_with_each_of_its_inputs() -> None:
    base = action_id("conv-1", "agent", "flow", "rev1", 0)
    assert base == action_id("conv-1", "agent", "flow", "rev1", 0)
    others = {
        action_id("conv-2", "agent", "flow", "rev1", 0),
        action_id("conv-1", "other-agent", "flow", "rev1", 0),
        action_id("conv-1", "agent", "other", "rev1", 0),
        action_id("conv-1", "agent", "flow", "rev2", 0),
        action_id("conv-1", "agent", "flow", "rev1", 1),
    }
    assert len({base, *others}) == 6


def test_a_file_edit_that_does_not_touch_the_flow_keeps_its_ids(tmp_path: Path) -> None:
    ev = event(end_reason={"canonical": "CCAAS_TRANSFER"})
    first = agent(tmp_path, SLACK).route(ev, NOW)[1][0].action_id
    second = CompiledAgent(config(tmp_path, SLACK + "\n# edited\n"), "-").route(ev, NOW)[1][0].action_id
    assert first == second


def test_template_library_flow_with_overrides(tmp_path: Path) -> None:
    text = """
        agent: support-line
        flows:
          - id: callback
            use_template: callback_requested
            actions:
              email: {to: [support@company.example], destination: support-email}
              task: {priority: Urgent}
            add_actions:
              - {type: team_alert, message: "Callback for {{customer_name}}", teammates: [sam]}
    """
    question = (
        "Did the customer ask to be called back, request a follow-up call, or ask for someone to contact them later?"
    )
    _trace, actions = agent(tmp_path, text).route(event(triggers={question: True}), NOW)
    email, task, alert = actions
    assert isinstance(email, EmailRequested) and email.subject == "Callback requested"
    assert email.destination == "support-email" and "Tom Becker (+16305550123) asked for a callback." in email.text
    assert isinstance(task, TaskRequested) and task.priority == "Urgent"
    assert isinstance(alert, TeamAlertRequested) and alert.teammates == ["sam"] and not alert.everyone


def test_dynamic_recipients_on_a_failed_extraction_are_held_not_sent_to_the_fallback(tmp_path: Path) -> None:
    ev = event(status="failed", recipients={"severity": ["oncall@company.example"]})
    trace, actions = agent(tmp_path, NOTIFICATIONS).route(ev, NOW)
    routing = _flow(trace, "smart-routing")
    assert (routing.fired, routing.held) == (False, True)
    assert routing.reason.startswith("held: extraction failed") and "dyn_severity" in routing.reason
    assert "postcall held release" in routing.reason
    assert [a.flow_id for a in actions] == ["confirm-to-customer"]  # uses no extraction: runs as before


def test_a_failed_extraction_holds_a_flow_whose_when_reads_none_only_when_that_when_is_met(tmp_path: Path) -> None:
    """Its text uses the extraction, its `when` only the end reason: with the end reason unmet it was held
    ("It runs once a later extraction succeeds"), listed by `postcall held list` and counted by
    PostcallFlowsHeld, though no extraction could make it fire."""
    compiled = agent(tmp_path, SLACK)
    trace, actions = compiled.route(event(status="failed"), NOW)
    flow = _flow(trace, "escalations")
    assert (flow.fired, flow.held, actions) == (False, False, []) and flow.reason.startswith("not met"), flow.reason
    trace, actions = compiled.route(event(status="failed", end_reason={"canonical": "CCAAS_TRANSFER"}), NOW)
    assert (_flow(trace, "escalations").held, actions) == (True, [])


def test_a_flow_that_opts_in_runs_on_a_failed_extraction_with_the_fallback(tmp_path: Path) -> None:
    text = NOTIFICATIONS.replace(
        "      - id: smart-routing\n", "      - id: smart-routing\n        on_extraction_failure: run\n"
    )
    ev = event(status="failed", recipients={"severity": ["oncall@company.example"]})
    trace, actions = agent(tmp_path, text).route(ev, NOW)
    [email] = [a for a in actions if a.flow_id == "smart-routing"]
    assert isinstance(email, EmailRequested)
    assert (email.to, email.recipients_source) == (["support-lead@company.example"], "fallback")
    assert not _flow(trace, "smart-routing").held


def test_an_operator_release_runs_held_flows_as_they_are(tmp_path: Path) -> None:
    ev = event(status="failed")
    trace, actions = agent(tmp_path, NOTIFICATIONS).route(ev, NOW, (False, True))
    routing = _flow(trace, "smart-routing")
    assert routing.fired and not routing.held and "released as it is" in routing.reason
    assert "smart-routing" in {a.flow_id for a in actions}


def test_held_then_a_later_successful_extraction_sends_the_held_flow_under_the_ids_it_would_have_had(
    tmp_path: Path,
) -> None:
    compiled = agent(tmp_path, NOTIFICATIONS)
    _, on_failure = compiled.route(event(status="failed"), NOW)
    _, on_success = compiled.route(event(), NOW)
    assert {a.flow_id for a in on_failure} == {"confirm-to-customer"}
    assert "smart-routing" in {a.flow_id for a in on_success}
    # what already ran keeps its id: the dispatcher's ledger skips it
    ran = {a.action_id for a in on_failure}
    assert ran <= {a.action_id for a in on_success}


def test_a_deliberate_redelivery_gives_an_id_per_content_that_supersedes_the_first(tmp_path: Path) -> None:
    compiled = agent(tmp_path, SLACK)
    ev = event(end_reason={"canonical": "CCAAS_TRANSFER"})
    [first] = compiled.route(ev, NOW)[1]
    [same] = compiled.route(ev, NOW, (True, False))[1]
    [changed] = compiled.route(
        event(end_reason={"canonical": "CCAAS_TRANSFER"}, summary="New summary"), NOW, (True, False)
    )[1]
    # an ordinary action carries no digest (the dispatcher computes it); a re-delivery's is its content's
    assert first.supersedes is None and first.content_digest is None
    assert same.supersedes == first.action_id and same.content_digest == content_digest(first)
    assert changed.supersedes == first.action_id and changed.content_digest == content_digest(changed)
    assert changed.content_digest != same.content_digest
    assert same.action_id == uuid5(f"{first.action_id}/content/{same.content_digest}/{ev.event_id}")
    assert len({first.action_id, same.action_id, changed.action_id}) == 3


def test_a_correction_back_to_an_earlier_corrections_content_goes_out_under_an_id_of_its_own(tmp_path: Path) -> None:
    """The correction id was the content's alone: corrected to B, then C, then back to B went out under B's
    first id again, which receivers (and mailboxes, by Message-ID) drop as a repeat, so their upsert kept C
    (walked by downstream25: the dispatcher sent it, the receiver dropped it). Each re-extraction is a new
    source event: a new id; the same record routed again keeps its id."""
    compiled = agent(tmp_path, SLACK)

    def redelivered(summary: str, extraction_id: str) -> ActionBase:
        ev = event(end_reason={"canonical": "CCAAS_TRANSFER"}, summary=summary)
        [action] = compiled.route(ev.model_copy(update={"event_id": extraction_id}), NOW, (True, False))[1]
        return action

    [first] = compiled.route(event(end_reason={"canonical": "CCAAS_TRANSFER"}, summary="A"), NOW)[1]
    b, c, b_again = redelivered("B", "evt-2"), redelivered("C", "evt-3"), redelivered("B", "evt-4")
    assert b.supersedes == c.supersedes == b_again.supersedes == first.action_id
    assert b.content_digest == b_again.content_digest != c.content_digest
    assert len({first.action_id, b.action_id, c.action_id, b_again.action_id}) == 4
    assert redelivered("B", "evt-4").action_id == b_again.action_id  # at least once: the same record, the same id


PLATFORM_FLOWS = """
    agent: support-line
    extraction:
      fields:
        - {name: interest_level, type: enum, values: [high, low]}
    flows:
      - id: platform-billing
        when:
          all:
            - {field: platform.issue_category, op: "==", value: billing}
            - {field: platform.successful, op: "==", value: false}
        actions:
          - type: webhook
            destination: crm
            body: {note: "{{platform.summary}}", score: "{{platform.lead_score}}", items: "{{platform.items}}"}
          - type: slack
            destination: ops-slack
            text: "<!here> Unresolved billing call: {{platform.summary}} ({{platform.sentiment | no sentiment}})"
          - type: email
            to: [billing@company.example]
            subject: "Billing: {{platform.issue_category}}"
            body: "{{platform.summary}}"
            html: "<p>{{platform.summary}}</p>"
      - id: extracted-hot-lead
        when: {field: interest_level, op: "==", value: high}
        actions:
          - {type: webhook, destination: crm, body: {hot: "{{platform.summary}}"}}
"""
HOSTILE_SUMMARY = "Refund <!channel> <https://evil.example|https://good.example> <img src=x onerror=alert(1)> & more"


def _platform_event(status: Literal["ok", "failed"]) -> Any:
    return event(
        status=status,
        fields={"interest_level": "high"} if status == "ok" else None,
        platform_analysis={
            "summary": HOSTILE_SUMMARY,
            "successful": False,
            "data": {"issue_category": "billing", "lead_score": 3, "items": ["router", "cable"]},
        },
    )


@pytest.mark.parametrize("status", ["ok", "failed"])
def test_a_flow_on_the_platforms_analysis_runs_whatever_the_extraction_and_is_never_held(
    tmp_path: Path, status: Literal["ok", "failed"]
) -> None:
    trace, actions = agent(tmp_path, PLATFORM_FLOWS).route(_platform_event(status), NOW)
    billing = _flow(trace, "platform-billing")
    assert billing.fired and not billing.held
    assert [c.reason for c in billing.conditions if c.kind == "field"] == [
        'platform.issue_category = "billing"; == "billing" is true',
        "platform.successful = false; == false is true",
    ]
    webhook = next(a for a in actions if isinstance(a, WebhookRequested) and a.flow_id == "platform-billing")
    assert webhook.body == {"note": HOSTILE_SUMMARY, "score": 3, "items": '["router","cable"]'}
    # the flow that tests an extracted field is held on a failed extraction; the platform flow is not
    assert _flow(trace, "extracted-hot-lead").held is (status == "failed")


def test_the_platforms_text_is_escaped_in_slack_and_email_html(tmp_path: Path) -> None:
    """A platform summary is caller-influenced text (the platform's model read the caller's words)."""
    _, actions = agent(tmp_path, PLATFORM_FLOWS).route(_platform_event("failed"), NOW)
    [slack] = [a for a in actions if isinstance(a, SlackRequested)]
    assert slack.text == (
        "<!here> Unresolved billing call: Refund &lt;!channel&gt; &lt;https://evil.example|https://good.example&gt; "
        "&lt;img src=x onerror=alert(1)&gt; &amp; more (no sentiment)"
    )
    [email] = [a for a in actions if isinstance(a, EmailRequested)]
    assert email.html == (
        "<p>Refund &lt;!channel&gt; &lt;https://evil.example|https://good.example&gt; "
        "&lt;img src=x onerror=alert(1)&gt; &amp; more</p>"
    )
    assert email.subject == "Billing: billing"


NAIVE_TIME = """
agent: support-line
timezone: America/Chicago
extraction:
  fields:
    - {name: dt, type: datetime}
flows:
  - id: after-three
    when: {field: dt, op: ">=", value: "2026-03-12T15:00:00-05:00"}
    actions:
      - {type: schedule_call, use_field: dt, fallback_delay_minutes: 60}
  - id: written-naive
    when: {field: dt, op: "==", value: "2026-03-12T15:00"}
    actions:
      - {type: task, title: "same instant"}
"""


def test_a_date_time_without_an_offset_is_the_agents_local_time_in_conditions_as_in_scheduling(
    tmp_path: Path,
) -> None:
    """A date-time answer without a UTC offset ("2026-03-12T15:00") was read as UTC by conditions and as
    the agent's local time by schedule_call: a flow decided on 15:00Z and then scheduled 15:00 Chicago
    (20:00Z). Both read it in the agent's time zone now, and so does a value the author wrote naive."""
    routed = agent(tmp_path, NAIVE_TIME).route(event(fields={"dt": "2026-03-12T15:00"}), NOW)
    fired = {f.flow_id: f.fired for f in routed[0].flows}
    assert fired == {"after-three": True, "written-naive": True}, [f.reason for f in routed[0].flows]
    [call] = [a for a in routed[1] if a.type == "schedule_call"]
    assert call.scheduled_at == datetime(2026, 3, 12, 20, 0, tzinfo=UTC)  # type: ignore[attr-defined]


LONG_PATH = """
agent: support-line
extraction:
  fields:
    - {name: case_notes, type: string}
flows:
  - id: crm
    actions:
      - {type: http, destination: crm, method: PATCH, path: "/cases/{{case_notes}}"}
      - {type: task, title: "Follow up"}
"""


@pytest.mark.parametrize("value", ["x" * 9000, "案" * 1000], ids=["9000 characters", "1000 encoded to 9000"])
def test_a_path_rendered_too_long_skips_its_request_with_a_reason(tmp_path: Path, value: str) -> None:
    """A value the platform's analysis filled (trust_platform) or a platform value (`platform.*`,
    `dynamic_variables.*`) has no length bound: rendered into a path over HttpRequested's 8192
    characters, the command's validation raised and the router dead-lettered the whole conversation,
    with no trace and none of its other actions. The request is skipped with its reason instead."""
    trace, actions = agent(tmp_path, LONG_PATH).route(event(fields={"case_notes": value}), NOW)
    assert [a.type for a in actions] == ["task"]
    [skip] = [c for c in trace.flows[0].conditions if c.kind == "action" and not c.passed]
    assert skip.reason.startswith("skipped: the path would be") and "over 8192" in skip.reason


TIME_OF_DAY = """
agent: support-line
extraction:
  fields:
    - {name: t, type: time}
flows:
  - id: late
    when: {field: t, op: ">", value: "12:00"}
    actions: [{type: task, title: "at {{t}}"}]
  - id: always
    actions: [{type: task, title: "call"}]
"""


def test_a_time_with_an_offset_fails_its_condition_instead_of_the_record(tmp_path: Path) -> None:
    """The extractor used to take a platform's "16:30:00+02:00" for a time field as "16:30+02:00" (such
    records stay in the topic and come back on a replay). Read as a time with a zone, the condition's
    trace could not print it (orjson refuses one) and the router dead-lettered the record after its
    retries, no flow run. It stays text, which no time compares with."""
    trace, _ = agent(tmp_path, TIME_OF_DAY).route(event(fields={"t": "16:30+02:00"}), NOW)
    assert {f.flow_id: f.fired for f in trace.flows} == {"late": False, "always": True}
    assert [c.actual for c in trace.flows[0].conditions] == ["16:30+02:00"]


BIG_NUMBERS = """
agent: support-line
flows:
  - id: big-account
    when: {all: [{field: platform.n, op: ">", value: 5}, {field: dynamic_variables.account, op: exists}]}
    actions:
      - {type: task, title: "{{platform.n}} {{dynamic_variables.account}} {{platform.nested}}"}
      - {type: webhook, destination: crm, body: {n: "{{platform.n}}", account: "{{dynamic_variables.account}}"}}
"""


def test_a_platform_integer_over_64_bits_is_routed_as_its_digits(tmp_path: Path) -> None:
    """A platform team publishing to Kafka may send a 23-digit account number as a JSON number; pydantic
    reads it, and orjson (the condition's trace, the action's digest, the dispatcher's body) refuses
    it: TypeError, so the router retried and dead-lettered the conversation, no flow run."""
    big = 10**22 + 7
    routed = event(platform_analysis={"data": {"n": big, "nested": {"k": [big]}}}, dynamic_variables={"account": big})
    trace, actions = agent(tmp_path, BIG_NUMBERS).route(routed, NOW)
    assert trace.flows[0].fired, trace.flows[0].reason
    task, webhook = actions
    assert isinstance(task, TaskRequested) and task.title == f'{big} {big} {{"k":[{big}]}}'
    assert isinstance(webhook, WebhookRequested) and webhook.body == {"n": str(big), "account": str(big)}


CALLER_HEADERS = """
agent: support-line
fallback_text: "(nicht verfügbar)"
flows:
  - id: crm
    actions:
      - type: http
        destination: crm
        path: /cases
        headers:
          x-caller: "name={{customer_name}}"
          x-note: "{{dyn_note}}"
          x-plan: "{{dyn_plan}}"
          x-long: "{{dyn_long}}"
"""


def test_caller_text_in_a_header_is_percent_encoded_not_a_request_the_dispatcher_refuses(tmp_path: Path) -> None:
    """The dispatcher refuses (permanently) a request whose header holds a control or non-ASCII character.
    A header rendered a caller's name, an extracted value or the agent's own fallback text as it was, so
    one "é" lost the request. Such characters of a value are percent-encoded (UTF-8); ASCII is kept."""
    routed = event(
        customer={"name": "José Müller"}, dynamic={"dyn_note": "a\x00b\r\nBcc: c 50%", "dyn_long": "é" * 400}
    )
    [request] = agent(tmp_path, CALLER_HEADERS).route(routed, NOW)[1]
    headers = request.model_dump()["headers"]
    assert headers["x-caller"] == "name=Jos%C3%A9 M%C3%BCller"
    assert headers["x-note"] == "a%00b Bcc: c 50%25"
    assert headers["x-plan"] == "(nicht verf%C3%BCgbar)"
    assert headers["x-long"] == "%C3%A9" * 166  # cut at 1,000 characters, never inside an escape
    assert all(re.fullmatch(r"[\x20-\x7e]*", value) for value in headers.values())


def test_a_header_whose_own_text_no_header_carries_is_refused_at_load(tmp_path: Path) -> None:
    text = CALLER_HEADERS.replace('"name={{customer_name}}"', '"nom é {{customer_name}}"')
    (tmp_path / "agent.yaml").write_text(text)
    [problem] = load_catalog(tmp_path).problems
    assert (problem.line, problem.path) == (10, "flows[0].actions[0].headers")
    assert "header 'x-caller': its text holds a control or non-ASCII character" in problem.message


TRANSCRIPT_TWICE = """
agent: support-line
flows:
  - id: notes
    actions:
      - type: email
        to: [a@company.example]
        subject: s
        body: "{{conversation_transcript}}"
        html: "<p>{{conversation_transcript}}</p>"
      - {type: task, title: "Call {{customer_name}}", description: "{{conversation_transcript}}"}
"""


def test_an_action_too_large_for_any_record_is_skipped_with_a_reason_not_the_conversation_lost(tmp_path: Path) -> None:
    """A transcript the ingress accepts (under MAX_EVENT_BYTES) rendered into an email's text and its
    html (escaped: `<` is `&lt;`) made a 15 MB action: over what the brokers take, the router's record
    was unproducible and dead-lettered, trace and every action with it (under it, over what the dispatcher
    reads, the action was poison there). It is skipped with its size in the trace; the rest is routed."""
    messages = [{"role": "customer", "text": '<&"> ' * 20_000} for _ in range(30)]
    routed = event(messages=messages)
    assert len(routed.model_dump_json()) < MAX_EVENT_BYTES
    trace, actions = agent(tmp_path, TRANSCRIPT_TWICE).route(routed, NOW)
    [task] = actions
    assert isinstance(task, TaskRequested) and len(task.model_dump_json()) < READ_RECORD_BYTES
    [email, planned] = [c for c in trace.flows[0].conditions if c.kind == "action"]
    assert (email.passed, email.actual, planned.actual) == (False, None, task.action_id)
    assert re.fullmatch(
        r"skipped: the email would be [0-9,]+ bytes, over the 4,128,768 an action may hold .*", email.reason
    )
    assert trace.flows[0].reason == "no `when`: runs for every conversation; 1 action(s) planned, 1 skipped"


@pytest.mark.parametrize("redeliver", [False, True], ids=["first", "redelivery"])
def test_the_limit_counts_the_bytes_of_the_action_s_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redeliver: bool
) -> None:
    """CONTENT_LIMIT is on the action's record as produced (its JSON, ids and times with it; on a
    re-delivery with its digest and what it supersedes): at the limit it is planned, one byte over skipped."""
    compiled = agent(tmp_path, SLACK)
    ev = event(end_reason={"canonical": "CCAAS_TRANSFER"})
    [action] = compiled.route(ev, NOW, (redeliver, False))[1]
    size = len(encode(action))
    monkeypatch.setattr(engine, "CONTENT_LIMIT", size)
    assert [encode(a) for a in compiled.route(ev, NOW, (redeliver, False))[1]] == [encode(action)]
    monkeypatch.setattr(engine, "CONTENT_LIMIT", size - 1)
    trace, actions = compiled.route(ev, NOW, (redeliver, False))
    [skipped] = [c for c in trace.flows[0].conditions if c.kind == "action"]
    assert actions == [] and skipped.reason.startswith(f"skipped: the slack would be {size:,} bytes, over the ")


LONG_SUMMARY = """
agent: support-line
flows:
  - id: refunds
    when:
      any:
        - {field: platform.summary, op: contains, value: refund}
        - {field: platform.summary, op: contains, value: cancel}
        - {field: platform.summary, op: "==", value: angry}
        - {field: dynamic_variables.note, op: matches, value: "angry"}
    actions:
      - {type: email, to: ["{{dynamic_variables.note}}"], allowed_domains: [company.example], subject: s, body: b}
      - {type: task, title: refund}
"""


def test_a_long_value_is_shown_cut_in_the_trace_not_once_per_condition_whole(tmp_path: Path) -> None:
    """A platform's summary or dynamic variable has no bound but the event's: each condition on it put it
    in the trace twice (its `actual` and its reason), so four conditions on a 3.5 MB summary made a 31 MB
    trace, over what the brokers take: the router's record was unproducible and dead-lettered, with every
    action of the conversation. The trace shows the first 1,000 characters and the length."""
    summary = "refund " * 500_000
    routed = event(platform_analysis={"summary": summary}, dynamic_variables={"note": summary[:70_000]})
    trace, actions = agent(tmp_path, LONG_SUMMARY).route(routed, NOW)
    assert [a.type for a in actions] == ["task"]
    assert len(encode_trace(trace)) < 64 * 1024
    first = next(c for c in trace.flows[0].conditions if c.kind == "field")
    assert first.passed and first.actual == summary[:1000] + "… (3,500,000 characters)"
    assert first.reason == f'platform.summary = "{summary[:1000]}… (3,500,000 characters)"; contains "refund" is true'


def test_a_redelivered_actions_trace_entry_names_the_id_it_goes_out_under(tmp_path: Path) -> None:
    """`postcall explain`, the console's timeline and `postcall try` find an action's record and outcome by
    the id in its trace entry. On a re-delivery that entry named the action's first id while the action
    went out under the superseding one: explain showed the first delivery's outcome as this one's."""
    compiled = agent(tmp_path, SLACK)
    ev = event(end_reason={"canonical": "CCAAS_TRANSFER"}, summary="New summary")
    for options in ((False, False), (True, False)):
        trace, [action] = compiled.route(ev, NOW, options)
        [entry] = [c for c in trace.flows[0].conditions if c.kind == "action"]
        assert entry.actual == trace.flows[0].actions[0].action_id == action.action_id
        assert (action.supersedes is not None) is options[0]


def test_an_emoji_written_as_two_json_escapes_is_the_emoji(tmp_path: Path) -> None:
    """YAML's reader takes "\\ud83d\\udea8" as two lone surrogates: the file loaded, then hashing the flow
    (orjson) raised TypeError and the router could not start. The pair is the character it writes."""
    text = r"""
agent: support-line
flows:
  - id: alert
    actions:
      - {type: task, title: "\ud83d\udea8 {{customer_name}}", description: "\U0001F6A8"}
"""
    [task] = agent(tmp_path, text).route(event(), NOW)[1]
    assert isinstance(task, TaskRequested) and task.title == "🚨 Tom Becker" and task.description == "🚨"


def test_a_long_field_value_is_quoted_cut_in_the_schedule_calls_trace_note(tmp_path: Path) -> None:
    """A field's value is the caller's and may be megabytes: the trace's note of a schedule_call quotes it
    cut at SHOWN_CHARS, as every other note and condition of a trace shows a value, so a long value never
    makes the trace itself too large to write."""
    loaded = config(tmp_path, SCHEDULING)
    for text in ("x" * 100_000, " " * 100_000 + "2026-03-12", " " * 100_000 + "2026-03-01"):
        trace, _ = CompiledAgent(loaded, "-").route(
            event(fields={"callback_date": text}, started_at="2026-03-10T10:00:00Z", ended_at="2026-03-10T16:00:00Z"),
            NOW,
        )
        encoded = encode_trace(trace)
        assert len(encoded) < 3 * SHOWN_CHARS + 2_000, len(encoded)
        assert b"(100,0" in encoded  # the cut says how long the value was
