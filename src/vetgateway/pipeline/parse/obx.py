"""One OBX segment into an ``Observation``: the per-result hot path of ``parse_oru``.

A report carries tens of OBX and the parser's throughput is mostly spent here, so the common case
reads ``Segment.fields`` directly: a field without the escape character needs no decoding
(er7.py's module docstring), and one without repetition or component separators is its own first
component. Whenever a field holds any of those the ordinary accessor reads it instead, in the
same order as always, so decoding and its ``ParseError`` (location ``OBX[n]-f``) are unchanged;
tests/unit/test_oru_parse.py checks the two ways agree on generated OBX. The Observation itself is
filled in as a ``_Draft`` (see there): its frozen ``__init__`` alone cost as much as the rest.

OBX-2, -3, -6 and -7 (type, code, unit, reference range) describe the analyte, not the result, so a
lab repeats the same few hundred combinations: when none of them holds an escape they are read once
per process and text (``_plain_analyte``, bounded in entries and text), as are short coded fields
(``read_coded``). The common OBX-1, -8 and -11 values are looked up in tables built at import.

The value rules (numbers, comparators, SN, ranges, flags, timestamps, ED) are listed in oru.py's
module docstring; ``read_coded`` is shared with the PID and OBR readers there.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Final

from vetgateway.errors import ParseError
from vetgateway.model import Attachment, Coded, Comparator, Observation, ResultStatus
from vetgateway.pipeline.parse.er7 import Encoding, Segment
from vetgateway.pipeline.parse.values import (
    NUMBER,
    RANGE,
    TimestampMemo,
    parse_compared,
    parse_decimal,
    read_reference,
)

__all__ = ["read_coded", "read_observation", "with_comments"]

_RATIO: Final = re.compile(rf"\s*({NUMBER})\s*([:/])\s*({NUMBER})\s*", re.ASCII)
# HL7 table 0085 (OBX-11).
_RESULT_STATUS: Final = {
    "F": ResultStatus.FINAL,
    "U": ResultStatus.FINAL,
    "C": ResultStatus.CORRECTED,
    **dict.fromkeys(("D", "W", "X", "N"), ResultStatus.CANCELLED),
    **dict.fromkeys(("P", "R", "S", "I", "O"), ResultStatus.PRELIMINARY),
}
_MEDIA: Final = {"AP": "application", "IM": "image", "TEXT": "text", "AU": "audio"}
_COMPARATORS: Final = frozenset({"<", ">", "<=", ">=", "="})
# OBX-2 value types whose OBX-5 may be ``[comparator] number`` (empty: the sender did not say).
_NUMERIC_TYPES: Final = frozenset({"NM", "ST", "FN", ""})
_CODED_TYPES: Final = frozenset({"CE", "CWE", "CNE", "CF"})
_SET_IDS: Final = {str(n): n for n in range(1000)}  # OBX-1 as usually sent, without int()
# OBX-2 and OBX-11 as usually sent (upper case, no spaces), read without strip() and upper().
_VALUE_TYPES: Final = {t: t for t in ("NM", "ST", "TX", "FT", "SN", "CE", "CWE", "CNE", "ED", "")}
_STATUS_CODES: Final = {"": (None, None), **{c: (c, s) for c, s in _RESULT_STATUS.items()}}
# OBX-8 as usually sent, as the tuple it is read as (letters only: never a delimiter).
_FLAGS: Final = {"": (), **{f: (f,) for f in ("N", "L", "H", "LL", "HH", "A", "AA")}}
_OBX_FIELDS: Final = 15  # OBX-1 … OBX-14 and the segment ID: what read_observation indexes
_PADDING: Final = ("",) * _OBX_FIELDS
# Longer texts are read but not memoised, so no sender can fill memory with them.
_MEMO_LIMIT: Final = 120  # one coded field (read_coded)
_ANALYTE_LIMIT: Final = 240  # OBX-2, -3, -6 and -7 together (read_observation)


class _Draft:
    """An ``Observation`` being filled in: the same slots, without the frozen ``__setattr__``.

    Observation is a frozen dataclass, so its ``__init__`` stores each of its 23 fields through
    ``object.__setattr__``; at one Observation per OBX that was a third of parse_oru. A draft is
    filled with plain attribute stores, then takes the class Observation (the end of
    read_observation), which Python allows between classes with the same slots. What comes out
    is an ordinary Observation: ==, hash, repr, pickling, frozen from then on. The declarations
    below are the model's, for mypy; a test checks that they stay the same.
    """

    __slots__ = Observation.__slots__
    set_id: int | None
    sub_id: str | None
    value_type: str
    code: str
    code_text: str | None
    coding_system: str | None
    value_text: str
    value_numeric: Decimal | None
    comparator: Comparator | None
    sn_first: Decimal | None
    sn_separator: str | None
    sn_second: Decimal | None
    value_coded: Coded | None
    unit: str | None
    reference_range: str | None
    range_low: Decimal | None
    range_high: Decimal | None
    abnormal_flags: tuple[str, ...]
    status: ResultStatus | None
    status_code: str | None
    observed_at: datetime | None
    comments: tuple[str, ...]
    attachment: Attachment | None


_Code = tuple[str, str | None, str | None]  # OBX-3: code, text, coding system


def _opt(text: str) -> str | None:
    return text.strip() or None


def _triplet(parts: list[str]) -> tuple[str | None, str | None, str | None] | None:
    """CE/CWE components as (identifier, text, coding system), None when all are blank.

    The alternate triplet (components 4 to 6) stands in when only it is sent.
    """
    count = len(parts)
    padded = parts if count >= 6 else [*parts, *_PADDING[count:6]]
    code, text = padded[0].strip() or None, padded[1].strip() or None
    if code is None and text is None:
        if not any(p.strip() for p in parts):
            return None
        if count > 3:
            return padded[3].strip() or None, padded[4].strip() or None, padded[5].strip() or None
    return code, text, padded[2].strip() or None


def _code(found: tuple[str | None, str | None, str | None] | None) -> _Code | None:
    """OBX-3's triplet as (code, text, coding system): a text-only OBX-3 uses its text as code."""
    code = None if found is None else found[0] or found[1]
    return None if found is None or code is None else (code, found[1], found[2])


def _no_code(seg: Segment) -> ParseError:
    return ParseError(
        "OBX-3 (observation identifier) is empty; a result without a code cannot be used",
        location=seg.location(3),
    )


def _value_type(text: str) -> str:
    """OBX-2 as a type of HL7 table 0125 (``NM``), from its unescaped text."""
    found = _VALUE_TYPES.get(text)  # the usual: written as in the table
    return found if found is not None else text.strip().upper()


def _unit(raw: str, component: str) -> str | None:
    """OBX-6 holding no escape or repetition: the identifier, else the text (``^mg/dL``)."""
    units = raw.split(component, 2)
    return units[0].strip() or (units[1].strip() or None if len(units) > 1 else None)


_Analyte = tuple[
    str, str | None, str | None, str | None, str | None, str | None, Decimal | None, Decimal | None
]  # value type; code (None when OBX-3 names nothing), text, system; unit; range, low, high


@lru_cache(maxsize=4096)
def _plain_analyte(
    value_type: str, identifier: str, units: str, reference: str, enc: Encoding
) -> _Analyte | None:
    """OBX-2, -3, -6 and -7 read from their raw text, as ``read_observation`` reads them; None
    when one of them holds an escape (or OBX-3 or OBX-6 a repetition): the caller then reads
    them field by field, through the accessors where needed.

    Memoised for the process: these four fields describe the analyte, not the result, so a lab
    sends the same few hundred combinations on every result (the values returned are immutable
    and shared). ``read_observation`` passes only short texts (``_ANALYTE_LIMIT``), so the memo
    holds a bounded amount of text whatever is sent.
    """
    esc, rep = enc.escape, enc.repetition
    if esc in value_type + identifier + units + reference or rep in identifier + units:
        return None
    code = _code(_triplet(identifier.split(enc.component)))
    if code is None:
        return _value_type(value_type), None, None, None, None, None, None, None
    return (
        _value_type(value_type),
        *code,
        _unit(units, enc.component),
        *read_reference(reference),
    )


@lru_cache(maxsize=1024)
def _plain_coded(raw: str, component: str) -> Coded | None:
    """``read_coded`` of a field holding no escape or repetition, from its raw text.

    Memoised for the process (species, breeds, panels and coded results are short lists); a
    Coded is frozen, so one can be shared, and building it is the expensive part.
    """
    parts = raw.split(component)
    if len(parts) >= 3 and (code := parts[0].strip()):
        return Coded(code, parts[1].strip() or None, parts[2].strip() or None)
    found = _triplet(parts) if raw else None
    return None if found is None else Coded(*found)


def read_coded(seg: Segment, n: int, rep: int = 1) -> Coded | None:
    """Field ``n`` (repetition ``rep``) as a coded value, None when it is blank."""
    fields, enc = seg.fields, seg.encoding
    if rep == 1 and 2 < n < len(fields):
        raw = fields[n]
        if len(raw) <= _MEMO_LIMIT and enc.escape not in raw and enc.repetition not in raw:
            return _plain_coded(raw, enc.component)
    parts = seg.components(n, rep)
    if len(parts) >= 3 and (code := parts[0].strip()):  # the usual: code ^ text ^ system
        return Coded(code, parts[1].strip() or None, parts[2].strip() or None)
    found = _triplet(parts) if parts else None
    return None if found is None else Coded(*found)


def _sn(seg: Segment) -> tuple[Comparator | None, Decimal | None, str | None, Decimal | None]:
    """SN (comparator ^ num1 ^ separator/suffix ^ num2), or an SN sent as plain text."""
    parts = seg.components(5)
    if len(parts) <= 1:
        text = parts[0] if parts else ""
        compared = parse_compared(text)
        if compared is not None:
            return compared[0], compared[1], None, None
        m = _RATIO.fullmatch(text) or RANGE.fullmatch(text)
        if m is not None and m.re is _RATIO:
            return None, parse_decimal(m.group(1)), m.group(2), parse_decimal(m.group(3))
        if m is not None:
            return None, parse_decimal(m.group(1)), "-", parse_decimal(m.group(2))
        return None, None, None, None
    parts += [""] * (4 - len(parts))
    raw_cmp = parts[0].strip()
    comparator: Comparator | None = (
        raw_cmp if raw_cmp in _COMPARATORS else None  # type: ignore[assignment]
    )
    first = parse_decimal(parts[1].strip()) if parts[1].strip() else None
    separator = _opt(parts[2])
    second = parse_decimal(parts[3].strip()) if parts[3].strip() else None
    return comparator, first, separator, second


def _attachment(seg: Segment) -> Attachment:
    """ED: source ^ type of data ^ data subtype ^ encoding ^ data (HL7 v2.5.1 §2.A.24)."""
    kind = seg.component(5, 2).strip()
    subtype = seg.component(5, 3).strip()
    encoding = _opt(seg.component(5, 4))
    payload = seg.component(5, 5)
    media = None
    if kind or subtype:
        major = _MEDIA.get(kind.upper(), kind.lower() or "application")
        media = f"{major}/{subtype.lower()}" if subtype else major
    data: bytes | None = None
    enc = (encoding or "").upper()
    try:
        if enc == "BASE64":
            data = base64.b64decode("".join(payload.split()), validate=True)
        elif enc == "HEX":
            data = bytes.fromhex("".join(payload.split()))
        elif enc in ("A", ""):
            data = payload.encode("utf-8")
    except (binascii.Error, ValueError):
        data = None  # kept as text in value_text; the attachment says it could not be decoded
    return Attachment(media_type=media, encoding=encoding, data=data)


def read_observation(seg: Segment, timestamps: TimestampMemo) -> Observation:
    """One OBX as an Observation; ``ParseError`` at OBX-3 when it names no observation.

    ``timestamps`` is the message's memo for OBX-14 (a report's results share their times).
    """
    fields = seg.fields
    if len(fields) < _OBX_FIELDS:
        fields = [*fields, *_PADDING[len(fields) :]]
    enc = seg.encoding
    esc, comp, rep = enc.escape, enc.component, enc.repetition
    # OBX-2, -3, -6 and -7 describe the analyte rather than the result: see _plain_analyte.
    raw2, raw3, raw6, raw7 = fields[2], fields[3], fields[6], fields[7]
    analyte = None
    if len(raw2) + len(raw3) + len(raw6) + len(raw7) <= _ANALYTE_LIMIT:
        analyte = _plain_analyte(raw2, raw3, raw6, raw7, enc)
    obs = _Draft()
    # Each ``raw`` below goes through its accessor when it holds an escape (or, where components
    # matter, a separator): the same calls in the same order as a reader using accessors only, so
    # a malformed escape fails at the same field. Otherwise it is used as it is. Delimiters are
    # never letters or digits (MSH-2, HL7 v2.5.1 §2.5.4), so an alphanumeric field holds none.
    # With ``analyte`` none of its four fields holds an escape, so none of them can fail: they are
    # set at once, and read at their places in that order only when ``analyte`` is None.
    if analyte is not None:
        (
            value_type,
            code,
            obs.code_text,
            obs.coding_system,
            obs.unit,
            obs.reference_range,
            obs.range_low,
            obs.range_high,
        ) = analyte
        if code is None:
            raise _no_code(seg)
        obs.code = code
    else:
        found = _code(
            _triplet(seg.components(3) if esc in raw3 or rep in raw3 else raw3.split(comp))
        )
        if found is None:
            raise _no_code(seg)
        obs.code, obs.code_text, obs.coding_system = found
        value_type = _value_type(seg.field(2) if esc in raw2 else raw2)
    obs.value_type = value_type
    if value_type in ("TX", "FT"):  # they repeat as lines; other types keep their separators
        obs.value_text = value_text = "\n".join(seg.repetitions(5))
    else:
        raw = fields[5]
        obs.value_text = value_text = seg.field(5) if esc in raw else raw
    obs.value_numeric = obs.comparator = obs.value_coded = obs.attachment = None
    obs.sn_first = obs.sn_separator = obs.sn_second = None
    if value_type in _NUMERIC_TYPES:
        if value_text.isascii() and value_text.replace(".", "", 1).isdigit():
            obs.value_numeric = Decimal(value_text)  # parse_compared's usual case, without a call
        elif (compared := parse_compared(value_text)) is not None:
            obs.comparator, obs.value_numeric = compared
    elif value_type == "SN":
        comparator, first, separator, second = _sn(seg)
        if separator is None:  # a number, maybe compared: not a ratio or range
            obs.value_numeric = first
            obs.comparator = comparator if first is not None else None
        else:
            obs.comparator, obs.sn_first, obs.sn_separator = comparator, first, separator
        obs.sn_second = second
    elif value_type in _CODED_TYPES:
        obs.value_coded = read_coded(seg, 5)
    elif value_type == "ED":
        obs.attachment = _attachment(seg)
    if analyte is None:
        reference = seg.field(7) if esc in raw7 else raw7
        obs.reference_range, obs.range_low, obs.range_high = read_reference(reference)
    raw = fields[8]
    flags = _FLAGS.get(raw)  # the usual: one flag of table 0078, or none
    if flags is None:
        if not raw.isalnum() and (esc in raw or rep in raw or comp in raw):
            flags = tuple(
                flag
                for r in range(1, len(seg.repetitions(8)) + 1)
                if (flag := seg.component(8, 1, r).strip())
            )
        else:
            flags = (flag,) if (flag := raw.strip()) else ()
    obs.abnormal_flags = flags
    raw = fields[11]
    status = _STATUS_CODES.get(raw)  # the usual: one code of table 0085, or nothing
    if status is None:
        if not raw.isalnum() and (esc in raw or rep in raw or comp in raw):
            raw = seg.component(11, 1)
        status_code = raw.strip() or None
        status = status_code, _RESULT_STATUS.get(status_code.upper()) if status_code else None
    obs.status_code, obs.status = status
    raw = fields[1]
    set_id = _SET_IDS.get(raw)  # the usual: digits and nothing else
    if set_id is None:
        raw = (seg.field(1) if esc in raw else raw).strip()
        set_id = _SET_IDS.get(raw)
        if set_id is None and raw.isascii() and raw.isdigit():
            set_id = int(raw)
    obs.set_id = set_id
    raw = fields[4]
    if not raw:
        obs.sub_id = None
    else:
        obs.sub_id = (seg.field(4) if esc in raw else raw).strip() or None
    if analyte is None:
        if esc in raw6 or rep in raw6:
            obs.unit = _opt(seg.component(6, 1)) or _opt(seg.component(6, 2))
        else:
            obs.unit = _unit(raw6, comp)
    raw = fields[14]
    if not raw.isalnum() and (esc in raw or rep in raw or comp in raw):
        raw = seg.component(14, 1)
    obs.observed_at = timestamps[raw]
    obs.comments = ()  # the NTE that follow the OBX: see with_comments
    obs.__class__ = Observation  # type: ignore[assignment]  # published: see _Draft
    return obs  # type: ignore[return-value]


def with_comments(obs: Observation, comments: list[str]) -> Observation:
    """``obs`` with the NTE that followed its OBX, set in place.

    Only for an observation the parser has not handed out yet: the field is set as a frozen
    dataclass's own ``__init__`` sets it, which is 20 times cheaper than ``replace()`` copying all
    23 fields, and labs that comment every result are common.
    """
    if comments:
        object.__setattr__(obs, "comments", tuple(comments))
    return obs
