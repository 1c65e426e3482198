"""One OBX segment into an ``Observation``: the per-result hot path of ``parse_oru``.

A report carries tens of OBX and the parser's throughput is mostly spent here, so the common case
reads ``Segment.fields`` directly: a field without the escape character needs no decoding
(er7.py's module docstring), and one without repetition or component separators is its own first
component. Whenever a field holds any of those the ordinary accessor reads it instead, in the
same order as always, so decoding and its ``ParseError`` (location ``OBX[n]-f``) are unchanged;
tests/unit/test_oru_parse.py checks the two ways agree on generated OBX. The Observation itself is
filled in as a ``_Draft`` (see there): its frozen ``__init__`` alone cost as much as the rest.

The value rules (numbers, comparators, SN, ranges, flags, timestamps, ED) are listed in oru.py's
module docstring; ``read_coded`` is shared with the PID and OBR readers there.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from decimal import Decimal
from typing import Final

from vetgateway.errors import ParseError
from vetgateway.model import Attachment, Coded, Comparator, Observation, ResultStatus
from vetgateway.pipeline.parse.er7 import Segment
from vetgateway.pipeline.parse.values import (
    NUMBER,
    RANGE,
    TimestampMemo,
    parse_compared,
    parse_decimal,
    parse_range,
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
_OBX_FIELDS: Final = 15  # OBX-1 … OBX-14 and the segment ID: what read_observation indexes
_PADDING: Final = ("",) * _OBX_FIELDS


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


def read_coded(seg: Segment, n: int, rep: int = 1) -> Coded | None:
    """Field ``n`` (repetition ``rep``) as a coded value, None when it is blank."""
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
    obs = _Draft()
    # Each ``raw`` below goes through its accessor when it holds an escape (or, where components
    # matter, a separator): the same calls in the same order as a reader using accessors only, so
    # a malformed escape fails at the same field. Otherwise it is used as it is. Delimiters are
    # never letters or digits (MSH-2, HL7 v2.5.1 §2.5.4), so an alphanumeric field holds none.
    raw = fields[3]
    if esc in raw or rep in raw:
        found = _triplet(seg.components(3))
    else:  # usually identifier ^ text ^ coding system [^ alternate triplet]: no padding needed
        parts = raw.split(comp, 3)
        if len(parts) >= 3 and (identifier := parts[0].strip()):
            found = identifier, parts[1].strip() or None, parts[2].strip() or None
        else:
            found = _triplet(raw.split(comp))
    code = None if found is None else found[0] or found[1]
    if found is None or code is None:
        raise ParseError(
            "OBX-3 (observation identifier) is empty; a result without a code cannot be used",
            location=seg.location(3),
        )
    obs.code, obs.code_text, obs.coding_system = code, found[1], found[2]
    raw = fields[2]
    obs.value_type = value_type = (seg.field(2) if esc in raw else raw).strip().upper()
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
    raw = fields[7]
    reference = seg.field(7) if esc in raw else raw
    obs.reference_range = reference.strip() or None
    obs.range_low, obs.range_high = parse_range(reference)
    raw = fields[8]
    if not raw.isalnum() and (esc in raw or rep in raw or comp in raw):
        obs.abnormal_flags = tuple(
            flag
            for r in range(1, len(seg.repetitions(8)) + 1)
            if (flag := seg.component(8, 1, r).strip())
        )
    else:
        obs.abnormal_flags = (flag,) if (flag := raw.strip()) else ()
    raw = fields[11]
    if not raw.isalnum() and (esc in raw or rep in raw or comp in raw):
        raw = seg.component(11, 1)
    obs.status_code = status_code = raw.strip() or None
    obs.status = _RESULT_STATUS.get(status_code.upper()) if status_code else None
    raw = fields[1]
    raw = (seg.field(1) if esc in raw else raw).strip()
    set_id = _SET_IDS.get(raw)
    if set_id is None and raw.isascii() and raw.isdigit():
        set_id = int(raw)
    obs.set_id = set_id
    raw = fields[4]
    obs.sub_id = (seg.field(4) if esc in raw else raw).strip() or None
    raw = fields[6]
    if esc in raw or rep in raw:
        obs.unit = _opt(seg.component(6, 1)) or _opt(seg.component(6, 2))
    else:  # the identifier, else the text (a unit sent as ^mg/dL)
        units = raw.split(comp, 2)
        obs.unit = units[0].strip() or (units[1].strip() or None if len(units) > 1 else None)
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
