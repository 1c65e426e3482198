"""Opening hours for the silence watch: parsing and opening time between two instants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vetgateway.analyzers.hours import open_time_between, parse_opening_hours
from vetgateway.errors import ConfigError

WEEKDAYS = "mon-fri 08:00-18:00, sat 09:00-12:00"


def at(day: int, hour: int, minute: int = 0, zone: str = "UTC") -> datetime:
    """November 2026: the 23rd is a Monday."""
    return datetime(2026, 11, day, hour, minute, tzinfo=ZoneInfo(zone))


def test_empty_text_is_always_open() -> None:
    hours = parse_opening_hours("")
    assert hours.always
    assert open_time_between(hours, at(23, 0), at(24, 0)) == timedelta(days=1)


def test_time_outside_opening_hours_does_not_count() -> None:
    hours = parse_opening_hours(WEEKDAYS)
    # Friday 17:00 → Monday 09:00: one hour on Friday, none at the weekend but Saturday's three,
    # one on Monday.
    assert open_time_between(hours, at(27, 17), at(30, 9)) == timedelta(hours=5)


def test_closed_day_counts_nothing() -> None:
    hours = parse_opening_hours(WEEKDAYS)
    assert open_time_between(hours, at(29, 0), at(29, 23, 59)) == timedelta(0)  # Sunday


def test_several_spans_a_day_and_a_day_range_wrapping_the_week() -> None:
    hours = parse_opening_hours("sat-mon 08:00-12:00, mon 14:00-18:00")
    assert open_time_between(hours, at(23, 0), at(24, 0)) == timedelta(hours=8)
    assert open_time_between(hours, at(29, 0), at(30, 0)) == timedelta(hours=4)  # Sunday


def test_hours_are_read_in_the_clinic_time_zone() -> None:
    hours = parse_opening_hours("mon-fri 08:00-18:00", ZoneInfo("America/New_York"))
    # 13:00-14:00 UTC is 08:00-09:00 in New York (EST, UTC-5)
    assert open_time_between(hours, at(23, 12), at(23, 14)) == timedelta(hours=1)


def test_24_00_closes_at_midnight() -> None:
    hours = parse_opening_hours("mon 00:00-24:00")
    assert open_time_between(hours, at(22, 12), at(24, 12)) == timedelta(days=1)


@pytest.mark.parametrize(
    "text",
    ["mon", "mon 08:00", "funday 08:00-18:00", "mon 18:00-08:00", "mon 25:00-26:00", "mon 8-9"],
)
def test_unreadable_hours_raise_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="opening hours"):
        parse_opening_hours(text)


@given(
    start=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 1)),
    first=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=9)),
    second=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=9)),
)
def test_open_time_is_additive_and_bounded(
    start: datetime, first: timedelta, second: timedelta
) -> None:
    hours = parse_opening_hours(WEEKDAYS, ZoneInfo("Europe/Berlin"))
    a = start.replace(tzinfo=UTC)
    b, c = a + first, a + first + second
    whole = open_time_between(hours, a, c)
    assert whole == open_time_between(hours, a, b) + open_time_between(hours, b, c)
    assert timedelta(0) <= whole <= c - a
