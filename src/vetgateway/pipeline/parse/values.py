"""HL7 v2 primitive values read as Python values: numbers, comparisons, ranges, timestamps.

Pure and forgiving: an odd value gives ``None`` (the caller keeps the original text), never an
exception. HL7 v2.5.1 §2.A (NM, SN, DT, DTM/TS).

Speed: these run for every OBX. A plain unsigned number (``4.10``), by far the most common OBX-5,
is recognised with two string methods before any regex. Short reference ranges are memoised for
the process, as a lab sends the same few range texts for an analyte on every result; timestamps are
memoised per message (``TimestampMemo``), as a report's results usually share one observation
time but the next message has its own. Every value returned is immutable (``Decimal``,
``datetime``, tuples), so a memoised one can be shared.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Final

from vetgateway.model import Comparator

NUMBER: Final = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_COMPARED: Final = re.compile(rf"\s*(<=|>=|<|>|=)?\s*({NUMBER})\s*", re.ASCII)
RANGE: Final = re.compile(rf"\s*({NUMBER})\s*(?:-|_|to)\s*({NUMBER})\s*", re.ASCII)
_MEMO_LIMIT: Final = 40  # longer range texts are prose: not memoised, so no one can fill memory
# Lengths of a TS with a day and without fraction or offset (YYYYMMDD[HH[MM[SS]]]): no regex.
_DIGITS_ONLY: Final = frozenset({8, 10, 12, 14})
_TS: Final = re.compile(
    r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,4}))?(?:([+-])(\d{2})(\d{2}))?",
    re.ASCII,
)


def parse_datetime(text: str, zone: tzinfo = UTC) -> datetime | None:
    """An HL7 TS/DTM as an aware datetime; None when empty or invalid.

    A time without an offset is in ``zone``: HL7 v2 reads it as the sender's local time, and
    analyzers print their own clock's. The pipeline passes the clinic's zone
    (``VETGATEWAY_TIMEZONE``); a wall time that a daylight-saving change skips or repeats takes
    the offset in force before the change (``fold=0``)."""
    if len(text) in _DIGITS_ONLY and text.isascii() and text.isdigit():  # the usual form
        try:  # the same value as below, parsed in C (ISO 8601 basic format)
            if zone is UTC:
                return datetime.fromisoformat(f"{text[:8]}T{text[8:] or '00'}Z")
            return datetime.fromisoformat(f"{text[:8]}T{text[8:] or '00'}").replace(tzinfo=zone)
        except ValueError:  # month 13, 30 February, hour 24 …
            return None
    if not text:  # an empty field, as often as not (PID-7, OBX-14)
        return None
    m = _TS.fullmatch(text.strip())
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, sign, oh, om = m.groups()
    try:
        tz = zone
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


class TimestampMemo(dict[str, datetime | None]):
    """``memo[text]`` is ``parse_datetime(text, zone)``, parsed once per text; one per message."""

    def __init__(self, zone: tzinfo = UTC) -> None:
        super().__init__()
        self.zone = zone

    def __missing__(self, text: str) -> datetime | None:
        value = self[text] = parse_datetime(text, self.zone)
        return value


def parse_date(text: str) -> date | None:
    """PID-7 as a date: the first eight digits of the timestamp, None when not a real date."""
    stamp = parse_datetime(text)
    if stamp is None or len(text.strip()) < 8:
        return None
    return date(stamp.year, stamp.month, stamp.day)


def parse_decimal(text: str) -> Decimal | None:
    """``text`` as a Decimal, or None when it is not a number or not finite (``NaN``, ``Inf``)."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def parse_compared(text: str) -> tuple[Comparator | None, Decimal] | None:
    """``[<|>|<=|>=|=] number`` (spaces allowed around both) as (comparator, number), else None."""
    if text.isascii() and text.replace(".", "", 1).isdigit():  # digits, at most one point
        return None, Decimal(text)
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
    return _memo_range(text) if len(text) <= _MEMO_LIMIT else _read_range(text)


@lru_cache(maxsize=1024)
def _memo_range(text: str) -> tuple[Decimal | None, Decimal | None]:
    return _read_range(text)


def read_reference(text: str) -> tuple[str | None, Decimal | None, Decimal | None]:
    """OBX-7 as (the text stripped, None when blank; low; high): ``parse_range`` and the text."""
    return _memo_reference(text) if len(text) <= _MEMO_LIMIT else _reference(text)


@lru_cache(maxsize=1024)
def _memo_reference(text: str) -> tuple[str | None, Decimal | None, Decimal | None]:
    return _reference(text)


def _reference(text: str) -> tuple[str | None, Decimal | None, Decimal | None]:
    return (text.strip() or None, *parse_range(text))


def _read_range(text: str) -> tuple[Decimal | None, Decimal | None]:
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
