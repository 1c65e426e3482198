"""HL7 v2 primitive values read as Python values: numbers, comparisons, ranges, timestamps.

Pure and forgiving: an odd value gives ``None`` (the caller keeps the original text), never an
exception. HL7 v2.5.1 §2.A (NM, SN, DT, DTM/TS).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Final

from vetgateway.model import Comparator

NUMBER: Final = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_COMPARED: Final = re.compile(rf"\s*(<=|>=|<|>|=)?\s*({NUMBER})\s*", re.ASCII)
RANGE: Final = re.compile(rf"\s*({NUMBER})\s*(?:-|_|to)\s*({NUMBER})\s*", re.ASCII)
_TS: Final = re.compile(
    r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,4}))?(?:([+-])(\d{2})(\d{2}))?",
    re.ASCII,
)


def parse_datetime(text: str) -> datetime | None:
    """An HL7 TS/DTM as an aware datetime (naive → UTC); None when empty or invalid."""
    m = _TS.fullmatch(text.strip())
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, sign, oh, om = m.groups()
    try:
        tz: timezone = UTC
        if sign is not None:
            offset = timedelta(hours=int(oh), minutes=int(om))
            tz = timezone(-offset if sign == "-" else offset)
        return datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((frac or "0").ljust(6, "0")),
            tzinfo=tz,
        )
    except ValueError:  # month 13, offset +25:00 …
        return None


def parse_date(text: str) -> date | None:
    """PID-7 as a date: the first eight digits of the timestamp, None when not a real date."""
    stamp = parse_datetime(text)
    if stamp is None or len(text.strip()) < 8:
        return None
    return date(stamp.year, stamp.month, stamp.day)


def parse_decimal(text: str) -> Decimal | None:
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def parse_compared(text: str) -> tuple[Comparator | None, Decimal] | None:
    m = _COMPARED.fullmatch(text)
    if m is None:
        return None
    number = parse_decimal(m.group(2))
    if number is None:
        return None
    comparator: Comparator | None = m.group(1)  # type: ignore[assignment]
    return comparator, number


def parse_range(text: str) -> tuple[Decimal | None, Decimal | None]:
    """The lab's reference range text as (low, high); (None, None) when not understood."""
    m = RANGE.fullmatch(text)
    if m is not None:
        return parse_decimal(m.group(1)), parse_decimal(m.group(2))
    compared = parse_compared(text)
    if compared is not None:
        comparator, number = compared
        if comparator in ("<", "<="):
            return None, number
        if comparator in (">", ">="):
            return number, None
    return None, None
