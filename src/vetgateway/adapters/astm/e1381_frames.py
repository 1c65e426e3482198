"""LIS1-A (ASTM E1381) frames: control characters, checksum, building and parsing one frame.

A frame is ``STX FN text ETB|ETX C1 C2 CR LF`` (LIS1-A §6.3, transfer phase):

- ``FN`` is one ASCII digit, the frame number modulo 8: the first frame of a transfer is ``1``,
  then ``2`` … ``7``, ``0``, ``1`` …
- ``text`` is at most 247 characters. A message longer than that is split: every frame but the
  last of a block ends with ETB (intermediate frame), the last with ETX (end frame).
- ``C1 C2`` is the checksum: the sum of the bytes from ``FN`` through ETB/ETX inclusive, modulo 256,
  as two uppercase hexadecimal digits.
- The text must not contain the restricted characters of the link layer (SOH, STX, ETX, EOT,
  ENQ, ACK, DLE, NAK, SYN, ETB, LF, DC1-DC4; per LIS1-A §6, restricted message characters). CR is
  allowed: it ends each record.

Everything here is pure. ``parse_frame`` never raises on any bytes; ``build_frame`` and
``split_message`` raise ``LinkUsageError``, which is always the caller's bug, never the peer's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from vetgateway.errors import VetgatewayError

__all__ = [
    "ACK",
    "CR",
    "ENQ",
    "EOT",
    "ETB",
    "ETX",
    "LF",
    "MAX_TEXT",
    "NAK",
    "RESTRICTED",
    "STX",
    "FrameBad",
    "FrameDropped",
    "FrameOk",
    "FrameOutcome",
    "LinkUsageError",
    "build_frame",
    "checksum",
    "parse_frame",
    "split_message",
    "whole_good_frame",
]

ENQ: Final = 0x05
ACK: Final = 0x06
NAK: Final = 0x15
EOT: Final = 0x04
STX: Final = 0x02
ETX: Final = 0x03
ETB: Final = 0x17
CR: Final = 0x0D
LF: Final = 0x0A

MAX_TEXT: Final = 247
"""Most text characters one frame may carry (LIS1-A §6.3: 247 characters of message text)."""

RESTRICTED: Final = frozenset(
    {0x01, STX, ETX, EOT, ENQ, ACK, 0x10, NAK, 0x16, ETB, LF, 0x11, 0x12, 0x13, 0x14}
)
"""Bytes that must never appear in frame text (per LIS1-A §6, restricted message characters)."""

# The per-byte scans of the hot path run in C: a receiver at 115,200 baud sees 11,520 bytes/s
# per line, and a Python loop per byte was most of the link's CPU (bench/astm.py).
_RESTRICTED_RE: Final = re.compile(b"[" + re.escape(bytes(sorted(RESTRICTED))) + b"]")

# Position of the terminator (ETX/ETB) counted from STX: FN at 1, text at 2 .. 2 + MAX_TEXT - 1.
_LAST_TERMINATOR_POS: Final = 2 + MAX_TEXT
_TRAILER: Final = 4  # C1 C2 CR LF
_HEX: Final = b"0123456789ABCDEF"


class LinkUsageError(VetgatewayError):
    """The caller misused the link API (bad message text, a second message while one is in flight,
    a storage decision with nothing awaiting it). Never raised because of bytes from the peer."""


@dataclass(frozen=True, slots=True)
class FrameOk:
    """A well-formed frame with a correct checksum. ``final`` is True for an end frame (ETX)."""

    number: int
    text: bytes
    final: bool


@dataclass(frozen=True, slots=True)
class FrameBad:
    """A defective frame the receiver must answer with NAK (LIS1-A §6.5.1, defective frames).

    ``reason`` is one of ``bad_checksum``, ``bad_trailer``, ``bad_frame_number``,
    ``restricted_character``, ``text_too_long``, ``no_terminator``.
    """

    reason: str


@dataclass(frozen=True, slots=True)
class FrameDropped:
    """A partial frame cut short by a new STX or an EOT: no reply, the bytes are line noise or an
    abandoned transmission (the sender never waits for an answer to a frame it did not finish)."""


FrameOutcome = FrameOk | FrameBad | FrameDropped


def checksum(body: bytes) -> bytes:
    """The two uppercase hex digits over ``body`` = FN + text + ETB/ETX (LIS1-A §6.3, checksum)."""
    total = sum(body) % 256
    return bytes((_HEX[total >> 4], _HEX[total & 0x0F]))


def build_frame(number: int, text: bytes, *, final: bool) -> bytes:
    """Encode one frame. ``number`` is the frame number modulo 8 (any int; ``1`` for the first)."""
    if len(text) > MAX_TEXT:
        raise LinkUsageError(f"frame text is {len(text)} bytes, more than {MAX_TEXT}")
    if _RESTRICTED_RE.search(text):
        raise LinkUsageError("frame text holds a restricted link-layer character")
    body = bytes((0x30 + number % 8,)) + text + bytes((ETX if final else ETB,))
    return bytes((STX,)) + body + checksum(body) + bytes((CR, LF))


def split_message(text: bytes, *, packed: bool = False) -> list[tuple[bytes, bool]]:
    """Cut a message into ``(frame_text, final)`` pieces.

    ``text`` is records each ending with CR. By default each record goes in its own frames: a
    record of at most 247 bytes (CR included) is one end frame (ETX); a longer one spans
    intermediate frames (ETB) and ends with an end frame. This is the one-record-per-frame layout
    many LIS2-A instruments use; a receiver that treats the ETX frame as the end of an E1381
    message sees one message per record, one that waits for the terminator record (``L``) sees
    H … L (see ``e1381.Receiver``).

    ``packed``: the whole message fills frames of 247 bytes regardless of record boundaries,
    every frame but the last intermediate (ETB), the last an end frame (ETX) — the layout of
    instruments that send a message as one E1381 message (fewer frames, fewer turn-arounds).
    """
    if not text:
        raise LinkUsageError("a message must hold at least one record")
    if text[-1] != CR:
        raise LinkUsageError("a message must end with CR (each record ends with CR)")
    if _RESTRICTED_RE.search(text):
        raise LinkUsageError("message text holds a restricted link-layer character")
    blocks = [text] if packed else [record + b"\r" for record in text[:-1].split(b"\r")]
    pieces: list[tuple[bytes, bool]] = []
    for data in blocks:
        for start in range(0, len(data), MAX_TEXT):
            pieces.append((data[start : start + MAX_TEXT], start + MAX_TEXT >= len(data)))
    return pieces


_FRAME_STOP_RE: Final = re.compile(bytes((ord("["), STX, EOT, LF, ETX, ETB, ord("]"))))


def parse_frame(buf: bytes | bytearray) -> tuple[FrameOutcome, int] | None:
    """Decide the frame at the start of ``buf`` (which begins with STX), never raising.

    Returns ``(outcome, consumed)`` or ``None`` when more bytes are needed. ``consumed`` is how many
    bytes of ``buf`` the outcome used up. An EOT that cuts a frame is *not* consumed, so the caller
    sees it next and ends the transfer. At most 254 bytes are examined, so the caller's buffer
    stays bounded when it drops what was consumed.
    """
    found = _FRAME_STOP_RE.search(buf, 1, _LAST_TERMINATOR_POS + 1)
    stop = -1 if found is None else found.start()
    if stop < 0:
        if len(buf) > _LAST_TERMINATOR_POS:
            # No terminator where one must be: NAK now; the rest of the frame is line garbage.
            return FrameBad("text_too_long"), _LAST_TERMINATOR_POS + 1
        return None
    code = buf[stop]
    if code == STX:
        return FrameDropped(), stop
    if code == EOT:
        return FrameDropped(), stop
    if code == LF:
        return FrameBad("no_terminator"), stop + 1
    trailer = bytes(buf[stop + 1 : stop + 1 + _TRAILER])
    lf = trailer.find(b"\n")
    if 0 <= lf < _TRAILER - 1:
        return FrameBad("bad_trailer"), stop + 2 + lf
    if len(trailer) < _TRAILER:
        return None
    consumed = stop + 1 + _TRAILER
    if trailer[2:] != b"\r\n":
        return FrameBad("bad_trailer"), consumed
    body = bytes(buf[1 : stop + 1])
    if trailer[:2].upper() != checksum(body):
        return FrameBad("bad_checksum"), consumed
    if stop == 1 or not 0x30 <= body[0] <= 0x37:
        return FrameBad("bad_frame_number"), consumed
    text = body[1:-1]
    if _RESTRICTED_RE.search(text):
        return FrameBad("restricted_character"), consumed
    return FrameOk(body[0] - 0x30, text, code == ETX), consumed


_WHOLE_FRAME_MAX: Final = _LAST_TERMINATOR_POS + 1 + _TRAILER
_CHECKSUMS: Final = tuple(bytes((_HEX[n >> 4], _HEX[n & 0x0F])) for n in range(256))


def whole_good_frame(data: bytes) -> FrameOk | None:
    """``data`` decided at once when it is exactly one good frame, the usual read on a line
    (an analyzer sends a frame and waits for its ACK); ``None`` for anything else, which
    ``parse_frame`` then decides byte by byte. Same checks as ``parse_frame``, fewer steps:
    a frame is most of the receiver's CPU at 32 analyzers (bench/astm.py).
    """
    size = len(data)
    if not 7 <= size <= _WHOLE_FRAME_MAX or data[0] != STX or data[-2:] != b"\r\n":
        return None
    stop = size - 5
    code = data[stop]
    # Nothing restricted between FN and the terminator: no frame end, STX, EOT or LF inside.
    if (code != ETX and code != ETB) or _RESTRICTED_RE.search(data, 2, stop) is not None:
        return None
    number = data[1] - 0x30
    if not 0 <= number <= 7:
        return None
    sent, expected = data[stop + 1 : stop + 3], _CHECKSUMS[sum(data[1 : stop + 1]) % 256]
    if sent != expected and sent.upper() != expected:
        return None
    return FrameOk(number, data[2:stop], code == ETX)
