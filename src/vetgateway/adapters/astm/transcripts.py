"""ASTM transcripts read into message texts, for the analyzer simulator (pure: bytes in, no I/O).

The simulator replays what an instrument sent, but always with fresh E1381 framing, so only the
*message texts* are taken from a file: records each ending with CR, one LIS2-A message ``H … L``
per text. Two kinds of file are accepted:

1. **Plain records**: the records as text, separated by CR, CRLF or LF (files are edited on
   every platform). Blank lines are dropped. Several messages may follow one another; each
   starts with a header record ``H``.
2. **Framed transcripts** (the file holds STX): a capture of the link itself. The frames are
   unframed with ``e1381_frames.parse_frame`` and their texts joined; ENQ, EOT, ACK and NAK
   bytes and noise between frames are skipped. Captures are often mangled on the way to a file,
   so a frame may end in bare LF, bare CR or nothing after its checksum, and a frame longer than
   247 characters (some instruments ignore the limit) is kept when its checksum is right. A
   defective frame is skipped, as a receiver would NAK it; a frame repeated with the same number
   and text is a retransmission and is kept once (LIS1-A §6.3, frame number).

Either way the record stream is cut into messages at each ``H`` record. What a person may want to
know but does not stop the replay (a skipped frame, a message without terminator record) is
returned as ``Transcript.notes``; input that cannot be sent at all raises ``ParseError``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from vetgateway.adapters.astm.e1381_frames import (
    ENQ,
    EOT,
    ETB,
    ETX,
    MAX_TEXT,
    RESTRICTED,
    STX,
    FrameBad,
    FrameOk,
    checksum,
    parse_frame,
)
from vetgateway.errors import ParseError

__all__ = [
    "Transcript",
    "group_messages",
    "has_query",
    "is_framed",
    "read_framed",
    "read_plain",
    "read_transcript",
    "split_records",
]

_LF: Final = 0x0A
_CR: Final = 0x0D
_RECORD_SEPARATOR: Final = re.compile(rb"\r\n|\r|\n")
# Where a frame's text stops when the capture lost its terminator: the next frame or link event.
_FRAME_END: Final = frozenset({ETX, ETB, STX, EOT, ENQ})
# What cannot be a checksum digit: a missing checksum must not swallow the next frame's STX.
_TRAILER_STOPS: Final = _FRAME_END | {_CR, _LF}


@dataclass(frozen=True, slots=True)
class Transcript:
    """The messages of one file, each records ending with CR, ready for ``Sender.send_message``;
    ``notes`` are remarks for the person replaying it (never message content)."""

    messages: tuple[bytes, ...]
    notes: tuple[str, ...] = ()


def is_framed(data: bytes) -> bool:
    """A file holding STX is a framed transcript: STX never appears in message text (LIS1-A §6)."""
    return bytes((STX,)) in data


def read_transcript(data: bytes, *, ignore_checksums: bool = False) -> Transcript:
    """Read either kind of file (see the module docstring); ``ParseError`` if nothing can be sent.

    ``ignore_checksums`` applies to framed transcripts only: a frame whose checksum is wrong is
    kept instead of skipped, for hand-edited captures.
    """
    if is_framed(data):
        return read_framed(data, ignore_checksums=ignore_checksums)
    return read_plain(data)


def split_records(data: bytes) -> list[bytes]:
    """Records separated by CR, CRLF or LF, without separators; blank records dropped."""
    return [record for record in _RECORD_SEPARATOR.split(data) if record.strip()]


def _is_record(record: bytes, record_type: bytes) -> bool:
    # A record type is one letter followed by the field delimiter, which is never alphanumeric.
    return record[:1] == record_type and (len(record) == 1 or not record[1:2].isalnum())


def group_messages(records: Iterable[bytes]) -> tuple[list[bytes], list[str]]:
    """Cut records into messages at each header record ``H``; each text ends with CR.

    Records before the first ``H`` still form a message (a deliberate test of how the gateway
    treats a headless message), with a note. A message whose last record is not the terminator
    ``L`` gets a note: a gateway waiting for ``L`` (the LIS2-A message, the default of
    ``e1381.Receiver``) discards it at EOT.
    """
    groups: list[list[bytes]] = []
    for record in records:
        if not groups or _is_record(record, b"H"):
            groups.append([])
        groups[-1].append(record)
    notes: list[str] = []
    if groups and not _is_record(groups[0][0], b"H"):
        notes.append(f"message 1: {len(groups[0])} record(s) before any header record H")
    for number, group in enumerate(groups, start=1):
        if not _is_record(group[-1], b"L"):
            notes.append(f"message {number}: no terminator record L at its end")
    return [b"\r".join(group) + b"\r" for group in groups], notes


def _check_sendable(records: list[bytes]) -> None:
    for number, record in enumerate(records, start=1):
        bad = next((b for b in record if b in RESTRICTED), None)
        if bad is not None:
            raise ParseError(
                f"holds the control character 0x{bad:02X}, which E1381 cannot carry in a frame "
                "(LIS1-A §6, restricted characters); remove it or supply a framed transcript",
                location=f"record {number}",
            )


def read_plain(data: bytes) -> Transcript:
    """Read a plain record file. ``ParseError`` when it holds no record, or a record holds a
    link-layer control character (such a record could never be framed)."""
    records = split_records(data)
    if not records:
        raise ParseError("the file holds no records")
    _check_sendable(records)
    messages, notes = group_messages(records)
    return Transcript(tuple(messages), tuple(notes))


@dataclass(frozen=True, slots=True)
class _Found:
    """One frame as found in a capture: its text or why it was skipped, and where it ended."""

    frame: FrameOk | None
    problem: str | None
    end: int


def _find_frame(data: bytes, start: int, *, ignore_checksums: bool) -> _Found:
    """Decide the frame whose STX is at ``start``. The capture's trailer (CR LF, bare LF, bare CR
    or none) is replaced by CR LF so that ``parse_frame`` judges the frame itself."""
    stop = next((i for i in range(start + 1, len(data)) if data[i] in _FRAME_END), len(data))
    if stop == len(data) or data[stop] not in (ETX, ETB):
        return _Found(None, "cut short before its ETX/ETB", stop)
    body = data[start + 1 : stop + 1]
    end = stop + 1
    while end < min(stop + 3, len(data)) and data[end] not in _TRAILER_STOPS:
        end += 1
    sent_sum = data[stop + 1 : end]
    while end < len(data) and data[end] in (_CR, _LF):
        end += 1
    if len(body) > MAX_TEXT + 2:
        return _oversized(body, sent_sum, end, ignore_checksums=ignore_checksums)
    parsed = parse_frame(bytes((STX,)) + body + sent_sum + b"\r\n")
    outcome = parsed[0] if parsed is not None else FrameBad("bad_trailer")
    if isinstance(outcome, FrameBad) and outcome.reason == "bad_checksum" and ignore_checksums:
        parsed = parse_frame(bytes((STX,)) + body + checksum(body) + b"\r\n")
        outcome = parsed[0] if parsed is not None else outcome
    if isinstance(outcome, FrameOk):
        return _Found(outcome, None, end)
    reason = outcome.reason if isinstance(outcome, FrameBad) else "cut short"
    return _Found(None, reason.replace("_", " "), end)


def _oversized(body: bytes, sent_sum: bytes, end: int, *, ignore_checksums: bool) -> _Found:
    """A frame over 247 characters: ``parse_frame`` rejects it on the line (LIS1-A §6.3), but
    in a capture it is still the instrument's text, so the same checks are made here."""
    number, text = body[0], body[1:-1]
    if not ignore_checksums and sent_sum.upper() != checksum(body):
        return _Found(None, "bad checksum", end)
    if not 0x30 <= number <= 0x37:
        return _Found(None, "bad frame number", end)
    if any(b in RESTRICTED for b in text):
        return _Found(None, "restricted character", end)
    return _Found(FrameOk(number - 0x30, text, body[-1] == ETX), None, end)


def read_framed(data: bytes, *, ignore_checksums: bool = False) -> Transcript:
    """Unframe a capture and cut its text into messages (see the module docstring).

    The texts of one transfer (ENQ … EOT) are joined as the receiver joins them; a transfer whose
    text does not end with CR is closed with one, so records of two transfers never merge.
    ``ParseError`` when no frame could be read.
    """
    notes: list[str] = []
    stream = bytearray()
    last: FrameOk | None = None
    frames = 0
    pos = 0
    while pos < len(data):
        byte = data[pos]
        if byte != STX:
            if byte in (ENQ, EOT):  # a transfer boundary: numbering restarts at 1
                last = None
                _close_text(stream)
            pos += 1
            continue
        frames += 1
        found = _find_frame(data, pos, ignore_checksums=ignore_checksums)
        pos = found.end
        frame = found.frame
        if frame is None:
            notes.append(f"frame {frames}: {found.problem}; skipped")
        elif last is not None and (frame.number, frame.text) == (last.number, last.text):
            notes.append(
                f"frame {frames}: a retransmission of frame number {frame.number}; kept once"
            )
        else:
            if len(frame.text) > MAX_TEXT:
                notes.append(f"frame {frames}: {len(frame.text)} characters, over {MAX_TEXT}")
            stream += frame.text
            last = frame
    _close_text(stream)
    records = split_records(bytes(stream))
    if not records:
        raise ParseError(f"no readable frame among {frames} frame(s)")
    _check_sendable(records)
    messages, message_notes = group_messages(records)
    return Transcript(tuple(messages), tuple(notes + message_notes))


def _close_text(stream: bytearray) -> None:
    if stream and stream[-1] != _CR:
        stream.append(_CR)


def has_query(message: bytes) -> bool:
    """True when the message holds a request-information record ``Q`` (LIS2-A §12): the host is
    expected to answer with a message of its own."""
    return any(_is_record(record, b"Q") for record in split_records(message))
