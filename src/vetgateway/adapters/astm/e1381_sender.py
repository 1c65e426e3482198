"""The sending station of a LIS1-A (ASTM E1381) link, sans-I/O: ``Sender`` and its events.

The driver contract is the one in ``e1381`` (``receive_data(data, now)``, ``next_event()`` until
``NEED_DATA``, ``data_to_send()``, ``check_timeouts(now)``); a station that also receives runs a
``Receiver`` beside it and routes bytes as ``e1381``'s docstring and ``astm.station`` describe.

Sender rules:

1. Establishment (LIS1-A §6.2): ENQ, then wait for the reply. ACK → transfer; NAK → ENQ again
   after 10 s; ENQ (contention) → the computer system yields and retries after 20 s, the
   instrument retries after 1 s. Anything else while awaiting the reply is line noise, ignored.
2. Transfer (LIS1-A §6.3): each frame waits for the reply. ACK → next frame, and after the last
   one EOT (LIS1-A §6.4, termination). NAK → retransmit the same frame; the sixth NAK of one
   frame aborts with EOT (LIS1-A §6.5.1). Any other byte is a "NAK condition" and is treated as
   a NAK: a reply garbled on the line is neither trusted as an ACK nor left to the 15 s timer.
3. Receiver interrupt (LIS1-A §6.3): EOT as the reply to a frame counts as its ACK. If frames
   remain, the sender honours it: EOT, and the whole message again after 15 s (the receiver
   discarded the partial message).
4. Timeouts (LIS1-A §6.5.2): no reply within 15 s to ENQ or a frame → EOT and
   ``SendFailed("timeout")``.

Only ``LinkUsageError`` is ever raised, and only for the caller's misuse.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Final, Literal

from vetgateway.adapters.astm.e1381 import NEED_DATA, LinkEstablished, NeedData, Role
from vetgateway.adapters.astm.e1381_frames import (
    ACK,
    ENQ,
    EOT,
    NAK,
    LinkUsageError,
    build_frame,
    split_message,
)

__all__ = [
    "CONTENTION_BACKOFF_COMPUTER",
    "CONTENTION_BACKOFF_INSTRUMENT",
    "ENQ_NAK_RETRY",
    "INTERRUPT_BACKOFF",
    "MAX_FAILURES",
    "REPLY_TIMEOUT",
    "Contention",
    "EstablishmentRefused",
    "FrameRetransmitted",
    "MessageSent",
    "SendFailed",
    "SendInterrupted",
    "Sender",
    "SenderEvent",
]

REPLY_TIMEOUT: Final = 15.0  # LIS1-A §6.5.2: sender waits 15 s for a reply to ENQ or a frame
ENQ_NAK_RETRY: Final = 10.0  # LIS1-A §6.2: after NAK to ENQ, wait at least 10 s
CONTENTION_BACKOFF_COMPUTER: Final = 20.0  # LIS1-A §6.2 (contention): the computer yields
CONTENTION_BACKOFF_INSTRUMENT: Final = 1.0  # LIS1-A §6.2 (contention): the instrument re-sends
INTERRUPT_BACKOFF: Final = 15.0  # LIS1-A §6.3 (receiver interrupts): wait before re-establishing
MAX_FAILURES: Final = 6  # LIS1-A §6.5.1: a frame not accepted six times aborts the message

_ENQ: Final = bytes((ENQ,))
_EOT: Final = bytes((EOT,))


@dataclass(frozen=True, slots=True)
class EstablishmentRefused:
    """Sender: ENQ was answered with NAK; ENQ goes again at ``retry_at`` (LIS1-A §6.2)."""

    retry_at: float


@dataclass(frozen=True, slots=True)
class Contention:
    """Sender: the peer sent ENQ while we waited for a reply to ours (LIS1-A §6.2, contention).

    ``won`` is True for the instrument, which ignores the peer's ENQ and re-sends its own at
    ``retry_at`` (1 s later). The computer system yields (``won`` False): it stops awaiting a
    reply, its ``Receiver`` answers the peer's next ENQ, and its own ENQ goes again at
    ``retry_at`` (20 s later).
    """

    won: bool
    retry_at: float


@dataclass(frozen=True, slots=True)
class FrameRetransmitted:
    """Sender: frame ``number`` was NAKed and sent again; ``failures`` NAKs so far for it."""

    number: int
    failures: int


@dataclass(frozen=True, slots=True)
class MessageSent:
    """Sender: every frame was acknowledged and EOT sent; the message is delivered."""


@dataclass(frozen=True, slots=True)
class SendInterrupted:
    """Sender: the receiver asked to stop mid-message (EOT as a reply, LIS1-A §6.3, receiver
    interrupts). We sent EOT; the whole message goes again from the first frame at ``retry_at``,
    since the receiver discards the partial message."""

    retry_at: float


@dataclass(frozen=True, slots=True)
class SendFailed:
    """Sender: the message was given up and EOT sent; the caller decides whether to retry.

    ``reason`` is ``too_many_naks`` (one frame NAKed ``MAX_FAILURES`` times, LIS1-A §6.5.1) or
    ``timeout`` (no reply within 15 s to ENQ or a frame, LIS1-A §6.5.2).
    """

    reason: Literal["too_many_naks", "timeout"]


SenderEvent = (
    LinkEstablished
    | EstablishmentRefused
    | Contention
    | FrameRetransmitted
    | MessageSent
    | SendInterrupted
    | SendFailed
)


class _TxState(enum.Enum):
    IDLE = "idle"  # no message
    WAITING = "waiting"  # a message, ENQ not before ``_deadline``
    ENQ_SENT = "enq_sent"  # awaiting the reply to ENQ until ``_deadline``
    FRAME_SENT = "frame_sent"  # awaiting the reply to frame ``_index`` until ``_deadline``


class Sender:
    """The sending station of one LIS1-A link; the rules are in the module docstring.

    One message at a time: ``send_message`` while another is in flight raises
    ``LinkUsageError``. Wait for ``MessageSent`` or ``SendFailed``. ENQ goes out from
    ``send_message`` or, after a back-off, from ``check_timeouts``.
    """

    def __init__(
        self, role: Role = Role.COMPUTER, *, max_failures: int = MAX_FAILURES, packed: bool = False
    ) -> None:
        if max_failures < 1:
            raise LinkUsageError("max_failures must be at least 1")
        self._role = role
        self._packed = packed  # frame layout, see ``split_message``
        self._max_failures = max_failures
        self._state = _TxState.IDLE
        self._frames: list[bytes] = []
        self._index = 0
        self._failures = 0
        self._deadline = 0.0
        self._out = bytearray()
        self._unconsumed = bytearray()
        self._events: deque[SenderEvent] = deque()

    @property
    def awaiting_reply(self) -> bool:
        """True while ENQ or a frame awaits its reply: incoming bytes are the Sender's then."""
        return self._state in (_TxState.ENQ_SENT, _TxState.FRAME_SENT)

    @property
    def busy(self) -> bool:
        """True from ``send_message`` until ``MessageSent`` or ``SendFailed``."""
        return self._state is not _TxState.IDLE

    def send_message(self, text: bytes, now: float) -> None:
        """Start sending ``text`` (records each ending with CR); see ``split_message``."""
        if self.busy:
            raise LinkUsageError("a message is already being sent")
        self._frames = [
            build_frame(n + 1, piece, final=final)
            for n, (piece, final) in enumerate(split_message(text, packed=self._packed))
        ]
        self._state = _TxState.WAITING
        self._deadline = now
        self.check_timeouts(now)

    def receive_data(self, data: bytes, now: float) -> None:
        """Take bytes read from the line. Bytes not awaited go to ``take_unconsumed``."""
        for pos, byte in enumerate(data):
            if not self.awaiting_reply:
                self._unconsumed += data[pos:]
                return
            if self._state is _TxState.ENQ_SENT:
                self._on_enq_reply(byte, now)
            else:
                self._on_frame_reply(byte, now)

    def take_unconsumed(self) -> bytes:
        """Bytes that arrived while no reply was awaited: the driver hands them to its
        ``Receiver`` (the peer may have started sending). Cleared as they are returned."""
        data = bytes(self._unconsumed)
        self._unconsumed.clear()
        return data

    def next_event(self) -> SenderEvent | NeedData:
        """Return the next event, or ``NEED_DATA``. Never raises."""
        return self._events.popleft() if self._events else NEED_DATA

    def data_to_send(self) -> bytes:
        """Bytes to write to the line (ENQ, frames, EOT), cleared as they are returned."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def check_timeouts(self, now: float) -> None:
        """Send a due ENQ, or give up on a reply that did not come in 15 s (LIS1-A §6.5.2)."""
        if now < self._deadline:
            return
        if self._state is _TxState.WAITING:
            self._out += _ENQ
            self._state = _TxState.ENQ_SENT
            self._deadline = now + REPLY_TIMEOUT
        elif self.awaiting_reply:
            self._finish(SendFailed("timeout"))

    def _on_enq_reply(self, byte: int, now: float) -> None:
        if byte == ACK:
            self._events.append(LinkEstablished())
            self._index = 0
            self._failures = 0
            self._send_frame(now)
        elif byte == NAK:
            self._wait(now + ENQ_NAK_RETRY, EstablishmentRefused(now + ENQ_NAK_RETRY))
        elif byte == ENQ:
            won = self._role is Role.INSTRUMENT
            delay = CONTENTION_BACKOFF_INSTRUMENT if won else CONTENTION_BACKOFF_COMPUTER
            self._wait(now + delay, Contention(won, now + delay))
        # Anything else is line noise while awaiting the reply: ignored.

    def _on_frame_reply(self, byte: int, now: float) -> None:
        if byte == ACK or (byte == EOT and self._index == len(self._frames) - 1):
            self._index += 1
            self._failures = 0
            if self._index == len(self._frames):
                self._finish(MessageSent())
            else:
                self._send_frame(now)
        elif byte == EOT:  # receiver interrupt with frames left: honour it
            self._out += _EOT
            self._wait(now + INTERRUPT_BACKOFF, SendInterrupted(now + INTERRUPT_BACKOFF))
        else:  # NAK, or any other character: a NAK condition (LIS1-A §6.5.1)
            self._failures += 1
            if self._failures >= self._max_failures:
                self._finish(SendFailed("too_many_naks"))
            else:
                number = (self._index + 1) % 8
                self._events.append(FrameRetransmitted(number, self._failures))
                self._send_frame(now)

    def _send_frame(self, now: float) -> None:
        self._out += self._frames[self._index]
        self._state = _TxState.FRAME_SENT
        self._deadline = now + REPLY_TIMEOUT

    def _wait(self, until: float, event: SenderEvent) -> None:
        self._state = _TxState.WAITING
        self._deadline = until
        self._events.append(event)

    def _finish(self, event: SenderEvent) -> None:
        self._out += _EOT  # LIS1-A §6.4: termination returns the line to neutral
        self._state = _TxState.IDLE
        self._frames = []
        self._deadline = 0.0
        self._events.append(event)
