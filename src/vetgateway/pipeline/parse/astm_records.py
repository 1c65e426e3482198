"""The LIS2-A2 (ASTM E1394) record lexer: message text → records with safe field accessors.

``read_records(raw)`` takes the *message text* as the link layer delivers it (``e1381.Receiver``
joins the frame texts and strips STX, frame numbers, checksums): records separated by CR. CRLF and
bare LF are accepted too, as plain-record files and some instruments use them; blank lines and
whitespace-only lines are skipped. A framed transcript is not read here: unframe it first.

Delimiters come from the header record, whose first characters after the type are the delimiter
definition (LIS2-A2 header record, field 2): ``H|\\^&`` means field ``|``, repeat ``\\``,
component ``^`` and escape ``&``. Any four distinct characters are honoured (a GeneXpert writes
``H|@^\\``: ``@`` repeats, ``^`` separates components, ``\\`` escapes), provided none is a letter,
a digit or white space. A quirk is tolerated: ``H|\\\\^&``, the repeat delimiter written twice,
as in a capture from a Horiba Yumizen H550. That sender doubles the character everywhere (its
reagent list reads ``CLEANER\\\\DILUENT``), so in such a message every doubled repeat delimiter is
read as one: ``H|\\^&`` and ``CLEANER\\DILUENT``.

Fields are numbered as in the standard: the record type letter is field 1, so for the header the
delimiter definition is field 2 and the sender is field 5 (``H-5``). A field is split into
repeats, a repeat into components, and escape sequences are decoded in each piece *after*
splitting, so an escaped delimiter never splits anything: ``&F&`` field, ``&S&`` component,
``&R&`` repeat, ``&E&`` escape delimiter; ``&H&``/``&N&`` (highlighting on/off) carry no text and
are dropped; ``&Xhh…&`` is hexadecimal (read as Latin-1). Anything else, including a lone escape
character, is kept as sent: escapes never make a message unreadable.

Every accessor returns ``""`` for what is absent (a field, repeat or component beyond the end),
never raising; the only error is ``ParseError``, for text with no usable header. Bytes are read
as UTF-8, else as Latin-1 (which reads any byte), so decoding never fails either.

Records are kept whatever their type letter, in order: ``H P O R C Q L`` are what
``parse/astm.py`` interprets, ``M`` (manufacturer) and ``S`` (scientific) records and unknown
types are kept as they are for whoever wants them. Speed: a record is split into fields once,
with ``str.split``; repeats, components and escapes are only worked out when a field is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from vetgateway.errors import ParseError

__all__ = ["KNOWN_TYPES", "AstmRecord", "AstmRecords", "Delimiters", "read_records"]

KNOWN_TYPES: Final = frozenset("HPORCQLMS")
"""The record types of LIS2-A2: header, patient, order, result, comment, request information
(query), terminator, manufacturer information, scientific."""

_BOM: Final = "\ufeff"
# Escape sequences that stand for nothing: start and end of highlighted text.
_SILENT: Final = frozenset({"H", "N"})


@dataclass(frozen=True, slots=True)
class Delimiters:
    """The four delimiters a message declared in its header."""

    field: str = "|"
    repeat: str = "\\"
    component: str = "^"
    escape: str = "&"

    @property
    def definition(self) -> str:
        """The delimiter definition as a header writes it (``|\\^&``)."""
        return self.field + self.repeat + self.component + self.escape


def _hex_text(digits: str) -> str | None:
    """``&Xhhhh&``'s digits as Latin-1 text, or None when they are not an even number of hex."""
    if not digits or len(digits) % 2 or not digits.isascii() or not digits.isalnum():
        return None
    try:
        return bytes.fromhex(digits).decode("latin-1")
    except ValueError:
        return None


def _escape_table(d: Delimiters) -> dict[str, str]:
    """What ``&F&``, ``&S&``, ``&R&`` and ``&E&`` stand for under delimiters ``d``."""
    return {"F": d.field, "S": d.component, "R": d.repeat, "E": d.escape}


class AstmRecord:
    """One record: its type letter, its place in the message, and its fields.

    ``number`` is the record's 1-based position in the message (blank lines not counted); error
    locations name it, as ``R-3 (record 5)``, because record sequence numbers restart under every
    parent and so do not say which record is meant.
    """

    __slots__ = ("_delimiters", "_fields", "_unescape", "number", "type")

    def __init__(
        self,
        text: str,
        number: int,
        delimiters: Delimiters,
        unescape: dict[str, str] | None = None,
    ) -> None:
        self._fields = text.split(delimiters.field)
        self.type = self._fields[0].strip()
        self.number = number
        self._delimiters = delimiters
        # One table per message, shared by its records (read_records passes it in).
        self._unescape = _escape_table(delimiters) if unescape is None else unescape

    def __repr__(self) -> str:
        return f"AstmRecord({self.type!r}, number={self.number}, fields={len(self._fields)})"

    @property
    def delimiters(self) -> Delimiters:
        """The delimiters of the message this record belongs to."""
        return self._delimiters

    @property
    def field_count(self) -> int:
        """How many fields the record has, the type letter included (trailing empties are often
        left out by senders: LIS2-A2 lets a record end after its last non-empty field)."""
        return len(self._fields)

    def raw(self, n: int) -> str:
        """Field ``n`` exactly as sent: delimiters and escape sequences untouched."""
        fields = self._fields
        return fields[n - 1] if 0 < n <= len(fields) else ""

    def decode(self, text: str) -> str:
        """``text`` with its escape sequences decoded (see the module docstring)."""
        esc = self._delimiters.escape
        if esc not in text:
            return text
        out: list[str] = []
        start = 0
        while True:
            opening = text.find(esc, start)
            closing = text.find(esc, opening + 1) if opening >= 0 else -1
            if closing < 0:
                out.append(text[start:])
                return "".join(out)
            sequence = text[opening + 1 : closing]
            decoded = self._unescape.get(sequence)
            if decoded is None and sequence in _SILENT:
                decoded = ""
            elif decoded is None and sequence[:1] == "X":
                decoded = _hex_text(sequence[1:])
            if decoded is None:  # not an escape sequence: keep the character, read on after it
                out.append(text[start : opening + 1])
                start = opening + 1
                continue
            out.append(text[start:opening])
            out.append(decoded)
            start = closing + 1

    def field(self, n: int) -> str:
        """Field ``n`` as text, escapes decoded; repeat and component delimiters stay in it."""
        return self.decode(self.raw(n))

    def repeats(self, n: int) -> list[str]:
        """The repeats of field ``n``, each decoded (``[]`` for an empty field)."""
        raw = self.raw(n)
        if not raw:
            return []
        return [self.decode(r) for r in raw.split(self._delimiters.repeat)]

    def repeat_count(self, n: int) -> int:
        """How many repeats field ``n`` holds (0 when empty)."""
        raw = self.raw(n)
        return raw.count(self._delimiters.repeat) + 1 if raw else 0

    def components(self, n: int, rep: int = 1) -> list[str]:
        """The components of repeat ``rep`` of field ``n``, each decoded (``[]`` when absent)."""
        raw = self.raw(n)
        if not raw:
            return []
        d = self._delimiters
        if d.repeat in raw:
            repeats = raw.split(d.repeat)
            if not 0 < rep <= len(repeats):
                return []
            raw = repeats[rep - 1]
        elif rep != 1:
            return []
        if d.escape not in raw:
            return raw.split(d.component)
        return [self.decode(c) for c in raw.split(d.component)]

    def component(self, n: int, c: int, rep: int = 1) -> str:
        """Component ``c`` of repeat ``rep`` of field ``n``, decoded; ``""`` when absent."""
        if c == 1 and rep == 1:  # by far the most asked for: no list of all the parts
            fields = self._fields
            raw = fields[n - 1] if 0 < n <= len(fields) else ""
            d = self._delimiters
            if d.repeat in raw:
                raw = raw.split(d.repeat, 1)[0]
            if d.component in raw:
                raw = raw.split(d.component, 1)[0]
            return self.decode(raw) if d.escape in raw else raw
        parts = self.components(n, rep)
        return parts[c - 1] if 0 < c <= len(parts) else ""

    def location(self, n: int | None = None) -> str:
        """Where a problem is, for ``ParseError``: ``R-3 (record 5)``, or ``H-2`` in the header."""
        name = self.type or "?"
        where = name if n is None else f"{name}-{n}"
        return where if self.number == 1 else f"{where} (record {self.number})"


@dataclass(frozen=True, slots=True)
class AstmRecords:
    """A message's records in order (the header first) and the delimiters it declared."""

    delimiters: Delimiters
    records: tuple[AstmRecord, ...]

    @property
    def header(self) -> AstmRecord:
        """The H record (always the first)."""
        return self.records[0]


def _text(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text[1:] if text.startswith(_BOM) else text


def _delimiters(header: str) -> tuple[Delimiters, bool]:
    """The delimiters from the header's first characters (``H|\\^&``), or ``ParseError``; and
    whether the repeat delimiter was written twice (the quirk in the module docstring)."""
    if len(header) < 2:
        raise ParseError(
            "the header record ends before its delimiter definition (expected e.g. 'H|\\^&')",
            location="H-2",
        )
    field = header[1]
    definition = header[2:].split(field, 1)[0]
    # Quirk: the repeat delimiter written twice (H|\\^&), as one Horiba Yumizen H550 sends it.
    doubled = len(definition) == 4 and definition[0] == definition[1]
    if doubled:
        definition = definition[1:]
    chars = field + definition
    if len(definition) != 3 or len(set(chars)) != 4:
        raise ParseError(
            f"delimiter definition {header[1:6]!r} is not four distinct characters "
            "(field, repeat, component, escape; e.g. '|\\^&')",
            location="H-2",
        )
    if any(c.isalnum() or c.isspace() for c in chars):
        raise ParseError(
            f"delimiter definition {header[1:6]!r} uses a letter, digit or space as a delimiter",
            location="H-2",
        )
    return Delimiters(field, definition[0], definition[1], definition[2]), doubled


def read_records(raw: bytes) -> AstmRecords:
    """Split one message's text into records; ``ParseError`` when there is no usable header.

    The first non-blank record must be the header (``H``), which declares the delimiters.
    """
    text = _text(raw)
    if "\n" in text:
        text = text.replace("\r\n", "\r").replace("\n", "\r")
    lines = [line for line in text.split("\r") if line and not line.isspace()]
    if not lines or lines[0][:1] != "H":
        first = repr(lines[0][:20]) if lines else "nothing"
        raise ParseError(
            f"a message must start with a header record (H); it starts with {first}"
            " (a framed transcript must be unframed by the link layer first)",
            location="H-1",
        )
    delimiters, doubled = _delimiters(lines[0])
    if doubled:
        pair = delimiters.repeat * 2
        lines = [line.replace(pair, delimiters.repeat) for line in lines]
    table = _escape_table(delimiters)
    records = tuple(
        AstmRecord(line, number, delimiters, table) for number, line in enumerate(lines, start=1)
    )
    return AstmRecords(delimiters, records)
