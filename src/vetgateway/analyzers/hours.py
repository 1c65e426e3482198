"""Opening hours, for the silence watch: only time the clinic is open counts towards a quiet limit.

An analyzer that sends nothing overnight or over a weekend is not broken, the clinic is closed.
So "quiet for two hours" means two hours *of opening time* without a message: last seen Friday at
17:00 with the clinic open until 18:00, a two-hour limit is reached Monday at 09:00, not Friday at
19:00. ``open_time_between`` measures exactly that, and the watch compares it with the limit.

The text form, in the clinic's local time: ``"mon-fri 08:00-18:00, sat 09:00-12:30"``. Days are
``mon`` … ``sun`` (a range or one day), several spans per day allowed (``mon 08:00-12:00, mon
14:00-18:00``), ``24:00`` ends a day; an empty text means always open. Pure: no clock read here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo

from vetgateway.errors import ConfigError

__all__ = ["OpeningHours", "open_time_between", "parse_opening_hours"]

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class OpeningHours:
    """Open spans per weekday (0 = Monday), as minutes from local midnight; ``always`` when the
    text was empty."""

    spans: tuple[tuple[tuple[int, int], ...], ...]
    zone: tzinfo
    always: bool = False


def _minutes(text: str, where: str) -> int:
    try:
        hours, minutes = text.split(":")
        value = int(hours) * 60 + int(minutes)
    except ValueError:
        raise ConfigError(f"opening hours: {where}: {text!r} is not HH:MM") from None
    if not 0 <= value <= 24 * 60 or not 0 <= int(minutes) < 60:
        raise ConfigError(f"opening hours: {where}: {text!r} is not a time of day")
    return value


def _days(text: str, where: str) -> list[int]:
    first, _, last = text.partition("-")
    try:
        start = _DAYS.index(first.strip().lower()[:3])
        end = _DAYS.index((last or first).strip().lower()[:3])
    except ValueError:
        raise ConfigError(f"opening hours: {where}: days are mon … sun, got {text!r}") from None
    return [(start + n) % 7 for n in range((end - start) % 7 + 1)]


def parse_opening_hours(text: str, zone: tzinfo = UTC) -> OpeningHours:
    """Read the text form (module docstring), as local times in ``zone``; raises
    ``ConfigError`` naming the bad part."""
    if not text.strip():
        return OpeningHours(tuple(() for _ in _DAYS), zone, always=True)
    spans: list[list[tuple[int, int]]] = [[] for _ in _DAYS]
    for part in text.split(","):
        where = part.strip()
        try:
            days, hours = where.split()
            opens, closes = hours.split("-")
        except ValueError:
            raise ConfigError(f"opening hours: {where!r} is not 'DAYS HH:MM-HH:MM'") from None
        start, end = _minutes(opens, where), _minutes(closes, where)
        if end <= start:
            raise ConfigError(f"opening hours: {where!r} closes before it opens")
        for day in _days(days, where):
            spans[day].append((start, end))
    return OpeningHours(tuple(tuple(sorted(day)) for day in spans), zone)


def open_time_between(hours: OpeningHours, start: datetime, end: datetime) -> timedelta:
    """How much of ``[start, end)`` (aware datetimes) falls in opening hours."""
    if end <= start:
        return timedelta(0)
    if hours.always:
        return end - start
    local_start, local_end = start.astimezone(hours.zone), end.astimezone(hours.zone)
    total = timedelta(0)
    day = local_start.date()
    while day <= local_end.date():
        midnight = datetime.combine(day, time(0), hours.zone)
        for opens, closes in hours.spans[day.weekday()]:
            span_start = max(midnight + timedelta(minutes=opens), local_start)
            span_end = min(midnight + timedelta(minutes=closes), local_end)
            if span_end > span_start:  # in UTC: a DST change day is 23 or 25 hours long
                total += span_end.astimezone(UTC) - span_start.astimezone(UTC)
        day += _DAY
    return total
