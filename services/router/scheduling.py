"""When a `schedule_call` action calls back: an extracted date, else a fallback delay, then business hours.

All times are computed from the conversation's own `ended_at`, never from the clock, so a replayed
record schedules the same call. A date without a time means the start of business hours that day
(09:00 without business hours) in the business-hours time zone, else the agent's time zone. A value
that is missing, unreadable or not after the end of the conversation uses `fallback_delay_minutes`.
Business hours move the time to the next open slot ([start, end) on an open day, local time).
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal, NamedTuple
from zoneinfo import ZoneInfo

from schemas.agent_config import BusinessHours, ScheduleCallAction
from schemas.events import LATEST, ConversationExtracted

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: A date the caller named ("call me back in the year 9999") is used only before this: a business-hours
#: move of up to a week must still give a time inside the contract's range.
LAST_USABLE = LATEST - timedelta(days=31)


class CallTime(NamedTuple):  # a tuple: made for every call scheduled, and a frozen dataclass costs more
    at: datetime
    source: Literal["field", "fallback"]
    business_hours_applied: bool
    note: str


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def call_time(action: ScheduleCallAction, event: ConversationExtracted, agent_tz: ZoneInfo) -> CallTime:
    hours = action.business_hours
    tz = _zone(hours.timezone) if hours else agent_tz
    ended = aware(event.conversation.ended_at)
    at, source = ended + _minutes(action.fallback_delay_minutes), "fallback"
    note = _fallback_note(action.fallback_delay_minutes)
    if action.use_field is not None:
        raw = _field_value(event, action.use_field)
        parsed = parse_when(raw, tz, _clock(hours.start) if hours else _NINE)
        if parsed is None:
            note = f"{action.use_field} is {raw!r}, not a date: {note}"
        elif parsed >= LAST_USABLE:
            note = f"{action.use_field} = {raw!r} is too far in the future: {note}"
        elif parsed <= ended:
            note = f"{action.use_field} = {raw!r} is not after the end of the conversation: {note}"
        else:
            at, source, note = parsed, "field", f"from {action.use_field} = {raw!r}"
    moved = False
    if hours is not None:
        opened = next_open(at, hours)
        moved = opened != at
        if moved:
            note += f"; moved into business hours ({hours.start}-{hours.end} {hours.timezone})"
        at = opened
    return CallTime(at.astimezone(UTC), "field" if source == "field" else "fallback", moved, note)


def _field_value(event: ConversationExtracted, name: str) -> object:
    if event.extraction.status != "ok":
        return None
    found = event.extraction.fields.get(name)
    return None if found is None else found.value


def parse_when(value: object, tz: ZoneInfo, default_time: time) -> datetime | None:
    """ISO 8601 date or date-time; a naive one is local time in `tz`."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().replace("Z", "+00:00")
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), default_time, tz)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)


def next_open(moment: datetime, hours: BusinessHours) -> datetime:
    """The first instant at or after `moment` inside business hours, by the local clock: a time the
    clock skips (02:30 on the day summer time starts) is the instant it names, which the clock shows an
    hour later; an opening time it skips opens when the clock gets there, and a day whose hours it skips
    whole has none."""
    tz = _zone(hours.timezone)
    local = _on_the_clock(moment, tz)
    start, end = _clock(hours.start), _clock(hours.end)
    for offset in range(8):
        day = local.date() + timedelta(days=offset)
        if _DAYS[day.weekday()] not in hours.days:
            continue
        opens = _on_the_clock(datetime.combine(day, start, tz), tz)
        at = opens if local < opens else local  # same tzinfo: compared as the clock shows them
        if at.date() == day and at.time() < end:
            return moment if at is local else at
    raise AssertionError("business hours have at least one open day")  # pragma: no cover


_NINE = time(9)
_minutes = functools.cache(lambda minutes: timedelta(minutes=minutes))
_fallback_note = functools.cache(lambda minutes: f"fallback delay of {minutes} min")
# parsed once per configuration's text, not for every call scheduled (both are validated at load time)
_zone = functools.cache(ZoneInfo)
_clock = functools.cache(time.fromisoformat)


def _on_the_clock(moment: datetime, tz: ZoneInfo) -> datetime:
    """`moment` as the clock in `tz` shows it. Through UTC: astimezone to its own zone changes nothing,
    so a local time the clock skips would stay one."""
    return moment.astimezone(UTC).astimezone(tz)
