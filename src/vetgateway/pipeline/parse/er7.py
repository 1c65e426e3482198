"""A small, fast, pure reader for one HL7 v2 message in ER7 (pipe-delimited) encoding.

``parse_er7(raw)`` reads the MSH with ``adapters.hl7.header.read_header`` (delimiters from MSH-1
and MSH-2, HL7 v2.5.1 §2.5.4; the character set from MSH-18, §2.15.9.18, or the channel default),
decodes the whole message once, splits it into segments and each segment into fields, and stops
there. Repetitions, components and subcomponents (§2.5.5) are split, and escape sequences (§2.7)
decoded, only when a caller asks for them: the mapping stage reads a handful of fields per OBX, so
splitting everything up front would be most of the cost.

What a caller may rely on:

- Numbering is HL7's, 1-based: ``field(1)`` of MSH is the field separator itself and ``field(2)``
  the encoding characters (§2.14.9.1, 2.14.9.2), returned verbatim; MSH-3 is ``field(3)``. For every
  other segment ``field(1)`` is the first field after the segment ID.
- Segments may end in CR (the standard, §2.5.2), LF or CR LF, mixed in one message; blank lines are
  skipped. A UTF-8 byte order mark and leading whitespace before ``MSH`` are tolerated.
- A field, repetition, component or subcomponent that is not present reads as ``""``. The explicit
  HL7 null ``""`` (two double quotes, §2.5.3) is returned as received; the meaning is the mapper's.
- Escapes (§2.7.1 to 2.7.4): ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\`` give the field, component,
  subcomponent, repetition and escape characters, ``\\P\\`` the truncation character when MSH-2
  declares one (v2.7 §2.5.5.6), ``\\.br\\`` a line feed, and ``\\Xhh…\\`` the bytes ``hh…`` decoded
  in the message's character set. Every other sequence (``\\H\\ \\N\\``, the other formatting
  commands of §2.7.6, ``\\Cxxyy\\ \\Mxxyyzz\\ \\Zxx\\``) is kept verbatim, delimiters included, for
  a later stage that renders FT. A truncation character in data is not removed.
- Malformed input raises ``ParseError`` (``HeaderError``, its subclass, for the MSH) whose
  ``location`` names the segment, its sequence and field, e.g. ``OBX[3]-5``; no other exception
  escapes, whatever the bytes. Errors inside a field (an unterminated escape, bad hex) are found
  when that field is read, so they may be raised by the accessors rather than by ``parse_er7``.
- One message per call: a second MSH is an error (split batches and concatenations first).

Speed (bench/parse.py): a field holding no escape character needs no decoding, so every accessor
returns slices of the raw text as soon as ``in`` (a C scan) finds none, and calls no helper on
that path. Hot callers that read many fields of one segment (the OBX reader) may use ``fields``
and ``encoding`` directly under the same rule: raw text is the decoded text exactly when it holds
no ``encoding.escape``. The ``Encoding`` is shared by all messages with the same delimiters and
character set, as a sender's do not change.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

from vetgateway.adapters.hl7.header import MshHeader, read_header
from vetgateway.errors import ParseError

__all__ = ["Encoding", "Er7Message", "Segment", "parse_er7"]

_SEGMENT_ID: Final = re.compile(r"[A-Z][A-Z0-9]{2}")
_HEX: Final = re.compile(r"(?:[0-9A-Fa-f]{2})+")
_BOM: Final = b"\xef\xbb\xbf"
_LEADING: Final = b" \t\r\n"
_new_segment: Final = object.__new__


class Encoding:
    """The delimiters (MSH-1, MSH-2) and codec of one message, shared by its segments: read-only.

    ``Encoding.of(header)`` returns one shared instance per distinct set (a sender's delimiters and
    character set do not change from message to message, so it is built once, not per message).
    """

    __slots__ = ("codec", "component", "escape", "field", "repetition", "simple", "subcomponent")

    def __init__(self, field: str, characters: str, codec: str) -> None:
        self.field = field
        self.component = characters[0]
        self.repetition = characters[1]
        self.escape = characters[2]
        self.subcomponent = characters[3]
        self.codec = codec
        # HL7 v2.5.1 §2.7.1 (and v2.7 §2.7.1 for \P\): escapes standing for one delimiter.
        self.simple = {
            "F": self.field,
            "S": self.component,
            "T": self.subcomponent,
            "R": self.repetition,
            "E": self.escape,
            ".br": "\n",
        }
        if len(characters) > 4:  # the truncation character (v2.7 §2.5.5.6)
            self.simple["P"] = characters[4]

    @staticmethod
    def of(header: MshHeader) -> Encoding:
        """The shared Encoding for MSH-1, MSH-2 and the codec ``read_header`` chose."""
        return _shared_encoding(header.field_separator, header.encoding_characters, header.encoding)


@lru_cache(maxsize=64)
def _shared_encoding(field: str, characters: str, codec: str) -> Encoding:
    return Encoding(field, characters, codec)


class Segment:
    """One segment: ``name``, ``sequence`` (1 for the first OBX, 2 for the second …), raw fields.

    ``fields[n]`` is field ``n`` exactly as received (ER7, escapes not decoded; ``fields[0]`` is the
    segment ID). The accessors return unescaped text, ``""`` for anything not present.
    """

    __slots__ = ("encoding", "fields", "name", "sequence")

    def __init__(self, name: str, sequence: int, fields: list[str], encoding: Encoding) -> None:
        self.name = name
        self.sequence = sequence
        self.fields = fields
        self.encoding = encoding

    def __repr__(self) -> str:
        return f"Segment({self.name}[{self.sequence}], {len(self.fields) - 1} fields)"

    def location(self, n: int) -> str:
        """Where field ``n`` is, as error reasons write it: ``OBX[3]-5``."""
        return f"{self.name}[{self.sequence}]-{n}"

    def raw(self, n: int) -> str:
        """Field ``n`` in ER7 form as received: all repetitions, delimiters and escapes."""
        if n < 1:
            raise ValueError(f"HL7 field numbers start at 1, not {n}")
        fields = self.fields
        return fields[n] if n < len(fields) else ""

    # The accessors below are called tens of times per message, so each does its own bounds check
    # and calls no helper on the common path (a field present, no escape in it).

    def field(self, n: int) -> str:
        """Field ``n`` unescaped, its repetition and component separators left in place.

        Meant for primitive fields (ST, TX, NM, ID …); for composite ones use ``component``, as an
        escaped ``\\S\\`` reads here the same as a component separator.
        """
        fields = self.fields
        value = fields[n] if 0 < n < len(fields) else self.raw(n)
        if self.encoding.escape not in value or (n <= 2 and self.name == "MSH"):
            return value
        return self._unescape(value, n)

    def repetitions(self, n: int) -> list[str]:
        """The repetitions of field ``n``, each unescaped (§2.5.6); ``[]`` for an empty field."""
        fields = self.fields
        value = fields[n] if 0 < n < len(fields) else self.raw(n)
        if not value:
            return []
        if n <= 2 and self.name == "MSH":
            return [value]
        reps = value.split(self.encoding.repetition)
        if self.encoding.escape not in value:
            return reps
        return [self._unescape(rep, n) for rep in reps]

    def _part(self, n: int, rep: int, c: int) -> str:
        """Component ``c`` of repetition ``rep`` of field ``n``, still escaped."""
        if rep < 1 or c < 1:
            raise ValueError(f"HL7 repetitions and components start at 1, not {rep}/{c}")
        fields = self.fields
        value = fields[n] if 0 < n < len(fields) else self.raw(n)
        enc = self.encoding
        if enc.repetition in value:
            reps = value.split(enc.repetition)
            value = reps[rep - 1] if rep <= len(reps) else ""
        elif rep > 1:
            return ""
        if enc.component in value:
            comps = value.split(enc.component)
            return comps[c - 1] if c <= len(comps) else ""
        return value if c == 1 else ""

    def components(self, n: int, rep: int = 1) -> list[str]:
        """All components of repetition ``rep`` of field ``n``, unescaped; ``[]`` if not present."""
        fields = self.fields
        if not 0 < n < len(fields):
            return [] if n > 0 else [self.raw(n)]  # raw() raises for n < 1
        value = fields[n]
        if not value:
            return []
        enc = self.encoding
        if rep == 1 and enc.repetition not in value and enc.escape not in value and n > 2:
            return value.split(enc.component)  # the usual field: one repetition, nothing escaped
        if n <= 2 and self.name == "MSH":
            return [value] if rep == 1 else []
        if enc.repetition in value:
            reps = value.split(enc.repetition)
            value = reps[rep - 1] if 0 < rep <= len(reps) else ""
        elif rep != 1:
            return []
        if not value:
            return []
        if enc.escape in value:
            return [self._unescape(part, n) for part in value.split(enc.component)]
        return value.split(enc.component)

    def component(self, n: int, c: int, rep: int = 1) -> str:
        """Component ``c`` of repetition ``rep`` of field ``n``, unescaped, subcomponents joined."""
        if n <= 2 and self.name == "MSH":
            return self.raw(n) if c == 1 and rep == 1 else ""
        fields = self.fields
        enc = self.encoding
        if rep == 1 and c == 1 and 0 < n < len(fields):  # the usual read: a code, a time, an ID
            value = fields[n]
            value = value.partition(enc.repetition)[0].partition(enc.component)[0]
        else:
            value = self._part(n, rep, c)
        return self._unescape(value, n) if enc.escape in value else value

    def subcomponent(self, n: int, c: int, s: int, rep: int = 1) -> str:
        """Subcomponent ``s`` of component ``c`` of repetition ``rep`` of field ``n``, unescaped."""
        if s < 1:
            raise ValueError(f"HL7 subcomponents start at 1, not {s}")
        if n <= 2 and self.name == "MSH":
            return self.raw(n) if c == 1 and s == 1 and rep == 1 else ""
        value = self._part(n, rep, c)
        sep = self.encoding.subcomponent
        if sep in value:
            subs = value.split(sep)
            value = subs[s - 1] if s <= len(subs) else ""
        elif s > 1:
            return ""
        return self._unescape(value, n) if self.encoding.escape in value else value

    def _unescape(self, value: str, n: int) -> str:
        """Decode the escape sequences of §2.7 in one field's text (see the module docstring)."""
        enc = self.encoding
        esc = enc.escape
        if esc not in value:
            return value
        out: list[str] = []
        pos = 0
        while (start := value.find(esc, pos)) >= 0:
            end = value.find(esc, start + 1)
            if end < 0:
                raise ParseError(
                    f"escape sequence {value[start : start + 12]!r} has no closing {esc!r}; "
                    f"write a literal {esc!r} as {esc}E{esc} (HL7 v2.5.1 §2.7)",
                    location=self.location(n),
                )
            out.append(value[pos:start])
            code = value[start + 1 : end]
            simple = enc.simple.get(code)
            if simple is not None:
                out.append(simple)
            elif code[:1] == "X":
                out.append(self._hex(code[1:], n))
            else:
                out.append(value[start : end + 1])
            pos = end + 1
        out.append(value[pos:])
        return "".join(out)

    def _hex(self, digits: str, n: int) -> str:
        """``\\Xhh…\\`` (HL7 v2.5.1 §2.7.4): bytes in the message's character set."""
        if _HEX.fullmatch(digits) is None:
            raise ParseError(
                f"escape \\X{digits[:12]}\\ must hold an even number of hex digits (§2.7.4)",
                location=self.location(n),
            )
        try:
            return bytes.fromhex(digits).decode(self.encoding.codec)
        except (UnicodeDecodeError, LookupError) as exc:
            raise ParseError(
                f"escape \\X{digits[:12]}\\ is not valid {self.encoding.codec} text (§2.7.4)",
                location=self.location(n),
            ) from exc


class Er7Message:
    """One parsed message: its ``header`` (as ``read_header`` read it) and its ``segments``."""

    __slots__ = ("header", "segments")

    def __init__(self, header: MshHeader, segments: list[Segment]) -> None:
        self.header = header
        self.segments = segments

    def __repr__(self) -> str:
        return f"Er7Message({self.header.message_type!r}, {len(self.segments)} segments)"

    def segment(self, name: str) -> Segment | None:
        """The first segment called ``name``, or None."""
        for seg in self.segments:
            if seg.name == name:
                return seg
        return None

    def segments_named(self, name: str) -> list[Segment]:
        """Every segment called ``name``, in message order."""
        return [seg for seg in self.segments if seg.name == name]


def parse_er7(raw: bytes, *, default_encoding: str = "utf-8") -> Er7Message:
    """Read one ER7 message; raise ``ParseError`` (naming segment and field) if it is malformed.

    ``default_encoding`` (a Python codec name, the channel's setting) applies when MSH-18 is empty.
    """
    header = read_header(raw, default_encoding=default_encoding)
    body = raw[len(_BOM) :] if raw.startswith(_BOM) else raw
    try:
        text = body.lstrip(_LEADING).decode(header.encoding)
    except (UnicodeDecodeError, LookupError) as exc:  # read_header checked; kept for the contract
        raise ParseError(f"the message is not valid {header.encoding} text") from exc
    if "\n" in text:  # LF or CR LF endings; the scan is cheap, the replacements are not
        text = text.replace("\r\n", "\r").replace("\n", "\r")
    enc = Encoding.of(header)
    sep = enc.field
    segments: list[Segment] = []
    append = segments.append
    counts: dict[str, int] = {}
    for line in text.split("\r"):
        fields = line.split(sep)
        name = fields[0]
        sequence = counts.get(name)
        if sequence is None:  # a name not seen before; a blank line never gets into ``counts``
            if _SEGMENT_ID.fullmatch(name) is None:
                if not line or line.isspace():
                    continue
                number = len(segments) + 1
                raise ParseError(
                    f"segment {number} starts {line[:12]!r}; a segment starts with a three-"
                    f"character ID such as OBX followed by {sep!r} (HL7 v2.5.1 §2.5.2)",
                    location=f"segment {number}",
                )
            if name == "MSH":
                fields.insert(1, sep)  # MSH-1 is the separator itself (§2.14.9.1)
            counts[name] = sequence = 1
        elif name == "MSH":
            raise ParseError(
                "a second MSH starts another message; split batches and concatenated "
                "messages into one message each first",
                location=f"MSH[{sequence + 1}]",
            )
        else:
            counts[name] = sequence = sequence + 1
        # Segment(name, sequence, fields, enc) without the call to __init__: 25 times a message.
        seg = _new_segment(Segment)
        seg.name, seg.sequence, seg.fields, seg.encoding = name, sequence, fields, enc
        append(seg)
    return Er7Message(header, segments)
