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
from services.router.conditions import SHOWN_CHARS

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


#: dates (the text an extractor answered) whose outcome each Schedule keeps; when full it starts again
NAMED_PER_ACTION = 1024
#: characters of a date's text that is kept (an ISO 8601 date-time has at most 32): a field's value is the
#: caller's and may be megabytes, and a kept one is held twice (the key, the note's repr)
LONGEST_NAMED = 64


def _quoted(raw: object) -> str:
    """A field's value as a trace's note quotes it: its repr, cut at SHOWN_CHARS (a caller's value may be
    megabytes; conditions._shown cuts a condition's the same way)."""
    shown = repr(raw)
    return shown if len(shown) <= SHOWN_CHARS else f"{shown[:SHOWN_CHARS]}… ({len(shown):,} characters)"


class Schedule:
    """When one schedule_call action calls back, compiled once per configuration: what it reads of the action
    (a pydantic model's attributes) read here, and the time a date names kept by the date's text. A date
    names the same time (and the same business-hours move) whatever the record; only whether it is after
    the conversation's end is the record's. A longer text than LONGEST_NAMED is decided every time."""

    __slots__ = ("_named", "default_time", "delay", "field", "hours", "moved_note", "note", "tz")

    def __init__(self, action: ScheduleCallAction, agent_tz: ZoneInfo) -> None:
        hours = self.hours = action.business_hours
        self.tz = _zone(hours.timezone) if hours else agent_tz
        self.delay = _minutes(action.fallback_delay_minutes)
        self.note = _fallback_note(action.fallback_delay_minutes)
        self.field = action.use_field
        self.default_time = _clock(hours.start) if hours else _NINE
        self.moved_note = f"; moved into business hours ({hours.start}-{hours.end} {hours.timezone})" if hours else ""
        # by a date's text: (the time it names or None, the CallTime it schedules when after the end)
        self._named: dict[str, tuple[datetime | None, CallTime | None]] = {}

    def __call__(self, event: ConversationExtracted, raw: object) -> CallTime:
        """`raw`: the value of the action's use_field (None without one, or when the extraction failed)."""
        ended = aware(event.conversation.ended_at)
        if self.field is not None:
            named = self._named.get(raw) if type(raw) is str else None
            if named is None:
                named = self._name(raw)
            parsed, scheduled = named
            if parsed is None:
                note = f"{self.field} is {_quoted(raw)}, not a date: {self.note}"
            elif scheduled is None:
                note = f"{self.field} = {_quoted(raw)} is too far in the future: {self.note}"
            elif parsed <= ended:
                note = f"{self.field} = {_quoted(raw)} is not after the end of the conversation: {self.note}"
            else:
                return scheduled
            return self._moved(ended + self.delay, "fallback", note)
        return self._moved(ended + self.delay, "fallback", self.note)

    def _name(self, raw: object) -> tuple[datetime | None, CallTime | None]:
        parsed = parse_when(raw, self.tz, self.default_time)
        named = (
            (parsed, None)
            if parsed is None or parsed >= LAST_USABLE
            else (parsed, self._moved(parsed, "field", f"from {self.field} = {_quoted(raw)}"))
        )
        if type(raw) is str and len(raw) <= LONGEST_NAMED:
            if len(self._named) >= NAMED_PER_ACTION:
                self._named.clear()
            self._named[raw] = named
        return named

    def _moved(self, at: datetime, source: Literal["field", "fallback"], note: str) -> CallTime:
        """The call at `at`, or at the next open slot of business hours."""
        moved = False
        if self.hours is not None:
            opened = next_open(at, self.hours)
            moved = opened != at
            if moved:
                note += self.moved_note
            at = opened
        return CallTime(at.astimezone(UTC), source, moved, note)


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
