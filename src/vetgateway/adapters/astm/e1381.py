"""Sans-I/O CLSI LIS1-A (ASTM E1381) link layer: the ``Receiver`` and what both sides share.

The ``Sender`` is in ``e1381_sender``; a full station (one of each on one line) in
``astm.station``. Neither class touches a socket, a serial port or a clock. The driver feeds bytes
with ``receive_data(data, now)``, drains ``next_event()`` until ``NEED_DATA``, writes
``data_to_send()`` to the line, and calls ``check_timeouts(now)`` on its tick. ``now`` is the
driver's monotonic clock in seconds, passed on every call that may start or check a timer.

The link is half-duplex in turn-taking (LIS1-A §6): one station sends, the other receives, and
the line returns to the neutral state with EOT. A station that both sends and receives runs one
``Sender`` and one ``Receiver`` on the same line; the driver routes incoming bytes to the
``Sender`` while ``Sender.awaiting_reply`` is True and to the ``Receiver`` otherwise (bytes the
``Sender`` did not need come back from ``Sender.take_unconsumed()``), and lets the ``Sender`` start
(``check_timeouts``) only while ``Receiver.idle``.

Receiver rules (the table in ``Receiver._pump``):

1. Neutral state: every byte but ENQ is ignored. ENQ → ``accept_link()``: True → ACK and
   ``LinkEstablished``; False (busy) → NAK and ``LinkRefused`` (LIS1-A §6.2, establishment).
2. Transfer state: bytes outside a frame are ignored; STX starts a frame; EOT ends the transfer
   (LIS1-A §6.4, termination).
3. A defective frame (checksum, trailer, restricted character, over 247 characters) → NAK and
   ``FrameRejected`` (LIS1-A §6.5.1, defective frames). A frame cut short by STX or EOT gets no
   reply.
4. A good frame with the expected number → ACK (and ``FrameAccepted`` when the caller asked for
   it with ``report_frames``). With the previous frame's number → ACK and discarded
   (``DuplicateFrame``): our ACK was lost and the sender retransmitted (LIS1-A §6.3, frame
   number). Any other number → NAK.
5. **Durability.** A good frame that completes a message is *not* acknowledged at once:
   ``MessageReceived(text)`` is emitted and the receiver pauses (further input
   is buffered, not processed, and its timer stops) until the caller calls ``message_stored(now)``
   (queues the ACK) or ``message_refused(now)`` (queues a NAK: the sender retransmits that frame,
   so the message is offered again, up to its retry limit). The caller must therefore commit the
   whole message (``inbox.accept``) *before* ``message_stored``, and within the sender's 15 s
   reply timer. Which frame completes a message is ``message_end``: the end frame (ETX) whose
   last record is the terminator record ``L`` (default: the LIS2-A message H … L), or every end
   frame (``MessageEnd.END_FRAME``, the E1381 message).
6. EOT: text received since the last delivered message is an unfinished message: it is discarded
   as ``MessageAborted("interrupted")`` (LIS1-A §6.4; the sender sends it again whole). Then
   ``LinkReleased``. An instrument that sends no terminator record therefore needs
   ``MessageEnd.END_FRAME``, or each of its messages would be discarded here.
7. 30 s without a frame or EOT in the transfer state → the same as rule 6 with
   ``MessageAborted("timeout")`` and ``LinkReleased(timed_out=True)`` (LIS1-A §6.5.2, timeouts).

Only ``LinkUsageError`` is ever raised, and only for the caller's misuse; bytes from the peer
are handled by the state machine (ignored or NAKed), never by an exception.
"""

from __future__ import annotations

import enum
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from vetgateway.adapters.astm.e1381_frames import (
    ACK,
    ENQ,
    EOT,
    NAK,
    STX,
    FrameBad,
    FrameOk,
    LinkUsageError,
    parse_frame,
    whole_good_frame,
)

__all__ = [
    "HELD_BUFFER_LIMIT",
    "NEED_DATA",
    "RECEIVER_TIMEOUT",
    "DuplicateFrame",
    "FrameAccepted",
    "FrameRejected",
    "LinkEstablished",
    "LinkRefused",
    "LinkReleased",
    "LinkUsageError",
    "MessageAborted",
    "MessageEnd",
    "MessageReceived",
    "NeedData",
    "Receiver",
    "ReceiverEvent",
    "Role",
]

RECEIVER_TIMEOUT: Final = 30.0  # LIS1-A §6.5.2: receiver waits 30 s for a frame or EOT
HELD_BUFFER_LIMIT: Final = 1024

_FRAME_START_RE: Final = re.compile(bytes((ord("["), STX, EOT, ord("]"))))
_ACK: Final = bytes((ACK,))
_NAK: Final = bytes((NAK,))
_EOT: Final = bytes((EOT,))
_ENQ: Final = bytes((ENQ,))


class NeedData(enum.Enum):
    """Sentinel type of ``NEED_DATA``: no event until more bytes, a timer or a decision."""

    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA


class Role(enum.Enum):
    """Which side of the link we are; it decides who wins ENQ contention (LIS1-A §6.2)."""

    INSTRUMENT = "instrument"
    COMPUTER = "computer"


class MessageEnd(enum.Enum):
    """Which good frame completes a message, and so has its ACK held for ``message_stored``."""

    TERMINATOR_RECORD = "terminator_record"  # an ETX frame whose last record is ``L`` (H … L)
    END_FRAME = "end_frame"  # every ETX frame (an E1381 message)


@dataclass(frozen=True, slots=True)
class LinkEstablished:
    """ENQ was answered with ACK: the transfer phase begins (LIS1-A §6.2)."""


@dataclass(frozen=True, slots=True)
class LinkRefused:
    """Receiver: ``accept_link`` said busy, so ENQ was answered with NAK (LIS1-A §6.2)."""


@dataclass(frozen=True, slots=True)
class FrameAccepted:
    """Receiver, only with ``report_frames``: a good frame in sequence was ACKed and its text
    kept (rule 4). The frame completing a message is reported as ``MessageReceived`` instead."""

    number: int


@dataclass(frozen=True, slots=True)
class FrameRejected:
    """Receiver: a frame was answered with NAK; ``reason`` names why (for the log)."""

    reason: str


@dataclass(frozen=True, slots=True)
class DuplicateFrame:
    """Receiver: the previous frame came again (our ACK was lost); ACKed and discarded."""

    number: int


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """Receiver: a complete message (the frame texts joined). Store ``text`` verbatim, then call
    ``message_stored``; the ACK of the completing frame waits for that call (rule 5)."""

    text: bytes

    @property
    def records(self) -> list[bytes]:
        """The records, each without its CR."""
        body = self.text[:-1] if self.text.endswith(b"\r") else self.text
        return body.split(b"\r")


@dataclass(frozen=True, slots=True)
class MessageAborted:
    """Receiver: a partial message was discarded (EOT before its end frame, or the 30 s timer).

    Only the size is kept: the text may name a patient.
    """

    reason: Literal["interrupted", "timeout"]
    discarded: int


@dataclass(frozen=True, slots=True)
class LinkReleased:
    """Receiver: the line is neutral again (EOT received, or the receiver timer expired)."""

    timed_out: bool = False


ReceiverEvent = (
    LinkEstablished
    | LinkRefused
    | FrameAccepted
    | FrameRejected
    | DuplicateFrame
    | MessageReceived
    | MessageAborted
    | LinkReleased
)


_ACCEPTED: Final = tuple(FrameAccepted(number) for number in range(8))


class _RxState(enum.Enum):
    NEUTRAL = "neutral"
    TRANSFER = "transfer"


def _ends_with_terminator(text: bytes) -> bool:
    """Whether the last record is the terminator record ``L``: found without copying the
    message, since every end frame asks."""
    end = len(text) - 1 if text.endswith(b"\r") else len(text)
    start = text.rfind(b"\r", 0, end) + 1
    return text[start : start + 1] == b"L" and (
        end - start == 1 or not text[start + 1 : start + 2].isalnum()
    )


class Receiver:
    """The receiving station of one LIS1-A link; the rules are in the module docstring.

    ``accept_link`` is asked on every ENQ in the neutral state; returning False answers NAK
    (the station is busy). Events come out of ``next_event`` in order; replies out of
    ``data_to_send``. ``report_frames`` adds a ``FrameAccepted`` event per accepted frame, for a
    caller that counts consecutive line errors (``astm.station``); it changes nothing else.
    """

    def __init__(
        self,
        *,
        accept_link: Callable[[], bool] | None = None,
        message_end: MessageEnd = MessageEnd.TERMINATOR_RECORD,
        timeout: float = RECEIVER_TIMEOUT,
        report_frames: bool = False,
    ) -> None:
        self._accept_link = accept_link
        self._report_frames = report_frames
        self._message_end = message_end
        self._timeout = timeout
        self._state = _RxState.NEUTRAL
        self._buf = bytearray()
        self._out = bytearray()
        self._events: deque[ReceiverEvent] = deque()
        self._text = b""  # text since the last delivered message
        self._last_number: int | None = None  # number of the last accepted frame this transfer
        self._last_activity = 0.0
        self._held: int | None = None  # number of the completing frame whose ACK is held

    @property
    def idle(self) -> bool:
        """True in the neutral state with no message awaiting a storage decision."""
        return self._state is _RxState.NEUTRAL and self._held is None

    @property
    def awaiting_storage(self) -> bool:
        """True between ``MessageReceived`` and ``message_stored``/``message_refused``."""
        return self._held is not None

    @property
    def in_message(self) -> bool:
        """True while part of a message is in hand: text received but neither delivered nor
        discarded yet, or a message awaiting its storage decision. A line lost now loses it."""
        return bool(self._text) or self._held is not None

    def receive_data(self, data: bytes, now: float) -> None:
        """Add bytes read from the line at monotonic time ``now``.

        While a message awaits storage the sender is silent (it waits for our reply), so what
        arrives then is kept only up to ``HELD_BUFFER_LIMIT`` bytes: a flooding peer cannot grow
        the buffer.
        """
        self._buf += data
        if self._held is not None:
            del self._buf[HELD_BUFFER_LIMIT:]
        self._pump(now)

    def take_next_frame(self, data: bytes, now: float) -> bool:
        """The usual read of a transfer, decided at once: True when ``data`` is exactly the
        next good frame of a message and not its last, which is then accepted as
        ``receive_data`` would accept it (rule 4) except that its ACK is the caller's to write
        and no ``FrameAccepted`` is emitted; False, having changed nothing, for anything else
        (feed it to ``receive_data``), or while anything is pending.
        """
        if (
            self._state is not _RxState.TRANSFER
            or self._held is not None
            or self._buf
            or self._out
            or self._events
        ):
            return False
        frame = whole_good_frame(data)
        if frame is None:
            return False
        if frame.number != (1 if self._last_number is None else (self._last_number + 1) % 8):
            return False
        text = self._text + frame.text
        if frame.final and (
            self._message_end is MessageEnd.END_FRAME or _ends_with_terminator(text)
        ):
            return False  # it completes a message: its ACK waits for storage (rule 5)
        self._text = text
        self._last_number = frame.number
        self._last_activity = now
        return True

    def next_event(self) -> ReceiverEvent | NeedData:
        """Return the next event, or ``NEED_DATA``. Never raises."""
        return self._events.popleft() if self._events else NEED_DATA

    def data_to_send(self) -> bytes:
        """Bytes to write to the line (ACK, NAK), cleared as they are returned."""
        if not self._out:
            return b""
        out = bytes(self._out)
        self._out.clear()
        return out

    def message_stored(self, now: float, *, interrupt: bool = False) -> None:
        """The last ``MessageReceived`` is durably stored: ACK its completing frame (rule 5).

        ``interrupt``: reply EOT instead, a receiver interrupt (LIS1-A §6.3, receiver
        interrupts): as positive as an ACK for that frame, and a request that the sender stop
        and give us the line (we have something to send). The sender may honour it with EOT or
        go on with its next frame; either is handled as usual.
        """
        self._last_number = self._take_held()
        self._out += _EOT if interrupt else _ACK
        self._text = b""
        self._resume(now)

    def message_refused(self, now: float) -> None:
        """The last ``MessageReceived`` could not be stored: NAK its completing frame, so the
        sender retransmits it and the message is offered again (rule 5)."""
        self._take_held()
        self._out += _NAK
        self._resume(now)

    def check_timeouts(self, now: float) -> None:
        """Apply the receiver timer (rule 7). It does not run while a message awaits storage."""
        if (
            self._held is None
            and self._state is _RxState.TRANSFER
            and now - self._last_activity >= self._timeout
        ):
            self._buf.clear()
            self._close_transfer(timed_out=True)

    def _take_held(self) -> int:
        if self._held is None:
            raise LinkUsageError("no received message is awaiting a storage decision")
        held, self._held = self._held, None
        return held

    def _resume(self, now: float) -> None:
        self._last_activity = now
        self._pump(now)

    def _pump(self, now: float) -> None:
        buf = self._buf
        while self._held is None and buf:
            if self._state is _RxState.NEUTRAL:
                enq = buf.find(_ENQ)
                if enq < 0:
                    buf.clear()  # rule 1: noise on a neutral line
                    return
                del buf[: enq + 1]
                self._establish(now)
                continue
            found = _FRAME_START_RE.search(buf)
            start = -1 if found is None else found.start()
            if start < 0:
                buf.clear()  # rule 2: noise between frames
                return
            if buf[start] == EOT:
                del buf[: start + 1]
                self._close_transfer(timed_out=False)
                continue
            del buf[:start]
            parsed = parse_frame(buf)
            if parsed is None:
                return
            outcome, consumed = parsed
            del buf[:consumed]
            if isinstance(outcome, FrameBad):
                self._reply(_NAK, now, FrameRejected(outcome.reason))
            elif isinstance(outcome, FrameOk):
                self._on_frame(outcome, now)

    def _establish(self, now: float) -> None:
        if self._accept_link is not None and not self._accept_link():
            self._out += _NAK
            self._events.append(LinkRefused())
            return
        self._state = _RxState.TRANSFER
        self._text = b""
        self._last_number = None
        self._reply(_ACK, now, LinkEstablished())

    def _reply(self, reply: bytes, now: float, event: ReceiverEvent) -> None:
        self._out += reply
        self._last_activity = now
        self._events.append(event)

    def _on_frame(self, frame: FrameOk, now: float) -> None:
        expected = 1 if self._last_number is None else (self._last_number + 1) % 8
        if frame.number != expected:
            if frame.number == self._last_number:
                self._reply(_ACK, now, DuplicateFrame(frame.number))  # rule 4
            else:
                self._reply(_NAK, now, FrameRejected("unexpected_frame_number"))
            return
        self._last_activity = now
        text = self._text + frame.text
        if frame.final and (
            self._message_end is MessageEnd.END_FRAME or _ends_with_terminator(text)
        ):
            self._held = frame.number  # rule 5: the ACK waits for message_stored
            self._events.append(MessageReceived(text))
            return
        self._text = text
        self._last_number = frame.number
        self._out += _ACK
        if self._report_frames:
            self._events.append(_ACCEPTED[frame.number])

    def _close_transfer(self, *, timed_out: bool) -> None:
        if self._text:
            reason: Literal["interrupted", "timeout"] = "timeout" if timed_out else "interrupted"
            self._events.append(MessageAborted(reason, len(self._text)))
        self._state = _RxState.NEUTRAL
        self._text = b""
        self._last_number = None
        self._events.append(LinkReleased(timed_out=timed_out))
