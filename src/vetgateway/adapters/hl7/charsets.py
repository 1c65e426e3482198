"""HL7 table 0211 (alternate character sets, MSH-18) mapped to Python codecs, and decode checks.

HL7 v2.5.1 §2.15.9.18: MSH-18 names the character set of the whole message; its first repetition
is the default set (later repetitions are ISO 2022 code extensions, which this gateway does not
support). When MSH-18 is empty the channel's configured default applies (R19).

Only character sets in which the HL7 delimiters and CR/LF are single ASCII bytes are supported, so
the MSH segment can be found before the message is decoded. UTF-16/32 and the ISO 2022 sets are not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = ["TABLE_0211", "UndecodableByte", "codec_for", "find_undecodable"]

TABLE_0211: Final[dict[str, str]] = {
    "ASCII": "ascii",
    "8859/1": "iso8859-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "GB 18030-2000": "gb18030",
    "KS X 1001": "euc_kr",
    "BIG-5": "big5",
    "UNICODE UTF-8": "utf-8",
    # Deprecated "UNICODE" (table 0211 before v2.5) is read as UTF-8: a message whose MSH was
    # found as ASCII bytes cannot be UCS-2.
    "UNICODE": "utf-8",
}

# Names senders write instead of the table value; accepted because their meaning is unambiguous.
_ALIASES: Final[dict[str, str]] = {
    "UTF-8": "utf-8",
    "UTF8": "utf-8",
    "ISO-8859-1": "iso8859-1",
    "ISO_8859-1": "iso8859-1",
    "ISO8859-1": "iso8859-1",
    "LATIN1": "iso8859-1",
    "LATIN-1": "iso8859-1",
    "ISO-8859-15": "iso8859-15",
    "WINDOWS-1252": "cp1252",
    "CP1252": "cp1252",
    "US-ASCII": "ascii",
}

_SEGMENT_BREAK = re.compile(rb"\r\n|\r|\n")


def codec_for(name: str) -> str | None:
    """The Python codec for a table 0211 value (or a common alias), or None if unsupported."""
    key = " ".join(name.strip().upper().split())
    return TABLE_0211.get(key) or _ALIASES.get(key)


@dataclass(frozen=True, slots=True)
class UndecodableByte:
    """Where a message stops being valid in its declared character set, in HL7 terms."""

    offset: int
    byte: int
    segment: str
    sequence: int
    field: int


def find_undecodable(raw: bytes, codec: str, field_separator: bytes) -> UndecodableByte | None:
    """The first byte of ``raw`` that ``codec`` rejects, located by segment and field, or None."""
    try:
        raw.decode(codec)
    except UnicodeDecodeError as exc:
        offset = exc.start
    else:
        return None
    start = max(raw.rfind(b"\r", 0, offset), raw.rfind(b"\n", 0, offset)) + 1
    seg_id = raw[start : start + 3]
    sequence = 1 + sum(1 for s in _SEGMENT_BREAK.split(raw[:start]) if s[:3] == seg_id)
    field = raw.count(field_separator, start, offset)
    if seg_id == b"MSH":
        field += 1  # MSH-1 is the separator itself, so MSH fields count one further
    return UndecodableByte(
        offset=offset,
        byte=raw[offset],
        segment=seg_id.decode("ascii", "replace"),
        sequence=sequence,
        field=field,
    )
