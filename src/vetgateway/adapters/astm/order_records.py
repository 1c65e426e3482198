"""LIS2-A2 records the gateway sends: the answer to an analyzer's host query (download of
orders). Pure: data in, message text out, ready for ``AstmStation.send_message``.

The answer is one message, H … L (LIS2-A2 §7, message structure), with for each queried specimen:
a P record with the patient's identifiers and name, and an O record with the specimen id (O-3)
and the tests to run as a repeat list of universal test ids (O-5, ``^^^code``), action code ``N``
(new order, O-12) and report type ``O`` (order record, O-26). A specimen with no pending test
gets a P and an O record with report type ``Y`` ("no order on record for this test", O-26), so the
analyzer stops waiting instead of timing out. Values are escaped with the default delimiters
(``&F& &S& &R& &E&``, LIS2-A2 §7.1.5) and stripped of control characters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

__all__ = ["SpecimenOrders", "build_order_answer"]

_ESCAPES = str.maketrans({"&": "&E&", "|": "&F&", "\\": "&R&", "^": "&S&"})


@dataclass(frozen=True, slots=True)
class SpecimenOrders:
    """What to tell the analyzer about one specimen; ``codes`` empty: nothing pending."""

    sample_id: str
    codes: tuple[str, ...] = ()
    patient_id: str | None = None
    patient_name: str | None = None
    owner_surname: str | None = None
    sex: str | None = None  # M, F or U (LIS2-A2 P-9)
    birth_date: date | None = None


def _text(value: str | None) -> str:
    if not value:
        return ""
    printable = "".join(ch for ch in value if ch >= " " and ch != "\x7f")
    return printable.translate(_ESCAPES)


def build_order_answer(specimens: Sequence[SpecimenOrders], *, sender: str, now: datetime) -> bytes:
    """The whole answer message (records each ending in CR), latin-1 encoded."""
    stamp = now.strftime("%Y%m%d%H%M%S")
    records = [f"H|\\^&|||{_text(sender)}|||||||P|LIS2-A2|{stamp}"]
    for number, item in enumerate(specimens, start=1):
        name = "^".join(_text(p) for p in (item.owner_surname, item.patient_name)).rstrip("^")
        born = item.birth_date.strftime("%Y%m%d") if item.birth_date else ""
        records.append(f"P|{number}|{_text(item.patient_id)}|||{name}||{born}|{item.sex or ''}")
        tests = "\\".join(f"^^^{_text(code)}" for code in item.codes)
        report_type = "O" if item.codes else "Y"
        action = "N" if item.codes else ""
        fields = ["O", "1", _text(item.sample_id), "", tests, "R", "", "", "", "", "", action]
        fields += [""] * 13 + [report_type]
        records.append("|".join(fields))
    records.append("L|1|N")
    return ("\r".join(records) + "\r").encode("latin-1", "replace")
