"""Sans-I/O MLLP receiver: bytes in, frames and framing events out (h11's pattern).

MLLP Release 2 (HL7 v2.5.1 Implementation Guide "Transport Specification: MLLP", §1.2.1) wraps each
message as ``<SB> payload <EB><CR>`` with SB = 0x0B, EB = 0x1C, CR = 0x0D. The payload must not
contain SB or EB. The driver (an asyncio server, a test) feeds whatever the socket returned with
``receive_data`` and then calls ``next_event`` until it returns ``NEED_DATA``::

    receiver.receive_data(chunk)          # b"" when the peer closed
    while (event := receiver.next_event()) is not NEED_DATA:
        ...                               # Frame, JunkDiscarded, FrameTooLarge, ConnectionClosed

Rules, in the order they are applied:

1. Outside a frame every byte up to the next SB is junk: it is dropped at once and reported as
   ``JunkDiscarded(reason="between_frames")`` (R14, R15: NUL or CR/LF between frames, an HTTP GET).
2. Inside a frame, ``EB CR`` ends it: ``Frame(payload)``. An empty frame is ``Frame(b"")``; the
   caller rejects it. An EB followed by anything but CR is kept as payload: MLLP r2 forbids it, so
   it can only be a sender's bug, and cutting the message there would hide it; the frame then ends
   at the next ``EB CR`` or at the driver's per-frame timeout.
3. An SB inside a frame restarts the frame: the partial payload before it is reported as
   ``JunkDiscarded(reason="frame_restarted")`` and a new frame begins. A sender that gave up on a
   frame and retransmits on the same connection is thereby not merged with its abandoned attempt.
4. Once the current frame holds more than ``max_message_size`` payload bytes, buffering stops:
   ``FrameTooLarge`` (with the first ``HEAD_BYTES`` of the payload, to address the NAK) is emitted
   once and every further byte is dropped until the connection closes (the caller NAKs and closes,
   R13).
5. ``receive_data(b"")`` means the peer closed: after any complete frames still buffered,
   ``ConnectionClosed(incomplete=True)`` if a frame was cut short (R11; the partial is dropped).

The buffer stays bounded: after ``next_event`` has returned ``NEED_DATA`` it holds at most
``max_message_size + 1`` bytes (the partial payload and a trailing EB awaiting its CR). Scanning is
linear: each byte is examined once however the stream is chunked.

No timers live here: ``in_frame`` tells the driver when to run its per-frame read timeout (R12).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "END_BLOCK",
    "HEAD_BYTES",
    "NEED_DATA",
    "START_BLOCK",
    "ConnectionClosed",
    "Event",
    "Frame",
    "FrameTooLarge",
    "JunkDiscarded",
    "MllpReceiver",
    "NeedData",
    "frame",
]

START_BLOCK: Final = b"\x0b"
END_BLOCK: Final = b"\x1c\x0d"
_EB: Final = 0x1C
_CR: Final = 0x0D
_EB_BYTE: Final = b"\x1c"
PREVIEW_BYTES: Final = 32
HEAD_BYTES: Final = 4096


def _next_delimiter(buf: bytearray, start: int) -> int:
    """Position of the next SB or EB at or after ``start``, or -1: two memchr scans, several
    times faster than a regex character class on multi-kilobyte frames."""
    eb = buf.find(_EB_BYTE, start)
    sb = buf.find(START_BLOCK, start, eb if eb >= 0 else len(buf))
    return sb if sb >= 0 else eb


class NeedData(enum.Enum):
    """Sentinel type of ``NEED_DATA``: nothing more can be decided until more bytes arrive."""

    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA


@dataclass(frozen=True, slots=True)
class Frame:
    """One complete MLLP frame; ``payload`` is the bytes between SB and EB CR, unaltered."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class JunkDiscarded:
    """Bytes that were not part of any delivered frame; for logging, never for acknowledging.

    ``reason`` is ``"between_frames"`` (bytes before an SB) or ``"frame_restarted"`` (a partial
    frame abandoned by a new SB; ``size`` then counts its SB). ``preview`` is at most the first
    32 bytes, enough to tell a TLS ClientHello or an HTTP request from line noise.
    """

    size: int
    preview: bytes
    reason: Literal["between_frames", "frame_restarted"]


@dataclass(frozen=True, slots=True)
class FrameTooLarge:
    """The current frame exceeded ``limit`` bytes; from now on input is dropped until close.

    ``head`` is the start of the payload (at most ``HEAD_BYTES``), so the caller can read the MSH
    segment and address its rejection; it may end mid-segment or mid-character.
    """

    limit: int
    head: bytes


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed. ``incomplete`` is True when a partly received frame was dropped (R11).

    After ``FrameTooLarge`` it is False: that frame was already reported.
    """

    incomplete: bool


Event = Frame | JunkDiscarded | FrameTooLarge | ConnectionClosed


class _State(enum.Enum):
    IDLE = "idle"  # between frames, looking for SB
    IN_FRAME = "in_frame"  # after SB, looking for EB CR
    DISCARDING = "discarding"  # after FrameTooLarge, dropping everything until close


def frame(payload: bytes) -> bytes:
    """Wrap ``payload`` for sending. Raises ``ValueError`` if it holds SB or EB (MLLP r2 §1.2.1).

    That error is always the caller's bug: an ACK built by ``adapters.hl7.ack`` never holds them.
    """
    if START_BLOCK in payload or b"\x1c" in payload:
        raise ValueError("an MLLP payload must not contain 0x0B or 0x1C")
    return START_BLOCK + payload + END_BLOCK


class MllpReceiver:
    """The receiving half of one MLLP connection; see the module docstring for the rules.

    Feed bytes with ``receive_data`` and drain ``next_event`` until ``NEED_DATA`` before feeding
    more; the buffer bound holds only under that discipline (as in h11).
    """

    def __init__(self, max_message_size: int = 16 * 1024 * 1024) -> None:
        if max_message_size < 0:
            raise ValueError("max_message_size must be >= 0")
        self.max_message_size = max_message_size
        self._state = _State.IDLE
        self._buf = bytearray()  # IN_FRAME: payload so far (SB already removed)
        self._scanned = 0  # IN_FRAME: bytes of _buf already known to hold no SB/EB decision
        self._closed = False
        self._close_event: ConnectionClosed | None = None

    @property
    def in_frame(self) -> bool:
        """True while a frame is partly received: the driver's per-frame timeout runs then."""
        return self._state is _State.IN_FRAME

    @property
    def buffered(self) -> int:
        """Bytes held in the receive buffer (for tests and metrics)."""
        return len(self._buf)

    def receive_data(self, data: bytes) -> None:
        """Add bytes read from the peer; ``b""`` means the peer closed its side."""
        if self._closed:
            if data:
                raise RuntimeError("receive_data() after the peer closed")
            return
        if not data:
            self._closed = True
        elif self._state is not _State.DISCARDING:
            self._buf += data

    def next_event(self) -> Event | NeedData:
        """Return the next event, or ``NEED_DATA``. Never raises on any input bytes."""
        if self._state is _State.IDLE and self._buf:
            event = self._leave_idle()
            if event is not None:
                return event
        if self._state is _State.IN_FRAME:
            in_frame_event = self._scan_frame()
            if in_frame_event is not None:
                return in_frame_event
        if self._closed:
            return self._closed_event()
        return NEED_DATA

    def _leave_idle(self) -> JunkDiscarded | None:
        start = self._buf.find(START_BLOCK)
        junk = len(self._buf) if start < 0 else start
        preview = bytes(self._buf[: min(junk, PREVIEW_BYTES)])
        del self._buf[: junk if start < 0 else junk + 1]
        if start >= 0:
            self._state = _State.IN_FRAME
            self._scanned = 0
        return JunkDiscarded(junk, preview, "between_frames") if junk else None

    def _scan_frame(self) -> Frame | JunkDiscarded | FrameTooLarge | None:
        buf = self._buf
        while (pos := _next_delimiter(buf, self._scanned)) >= 0:
            if pos > self.max_message_size:
                return self._too_large(pos)  # over the limit whatever follows
            if buf[pos] != _EB:  # a new SB: abandon the partial frame, start afresh
                preview = START_BLOCK + bytes(buf[: min(pos, PREVIEW_BYTES - 1)])
                del buf[: pos + 1]
                self._scanned = 0
                return JunkDiscarded(pos + 1, preview, "frame_restarted")
            if pos + 1 == len(buf):  # EB is the last byte so far: wait for what follows
                self._scanned = pos
                return None  # pos <= max_message_size: within the bound
            if buf[pos + 1] == _CR:
                payload = bytes(buf[:pos])
                del buf[: pos + 2]
                self._state = _State.IDLE
                self._scanned = 0
                return Frame(payload)
            self._scanned = pos + 1  # EB not followed by CR: kept as payload (rule 2)
        self._scanned = len(buf)
        return self._too_large(len(buf)) if len(buf) > self.max_message_size else None

    def _too_large(self, payload_end: int) -> FrameTooLarge:
        head = bytes(self._buf[: min(payload_end, HEAD_BYTES)])
        self._state = _State.DISCARDING
        self._buf = bytearray()
        self._scanned = 0
        return FrameTooLarge(self.max_message_size, head)

    def _closed_event(self) -> ConnectionClosed:
        if self._close_event is None:
            self._close_event = ConnectionClosed(incomplete=self._state is _State.IN_FRAME)
            self._state = _State.IDLE
            self._buf = bytearray()
        return self._close_event
