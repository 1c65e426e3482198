"""The instrument end of one simulated line, without I/O: a ``Sender`` for the simulator's
messages, a ``Receiver`` for what the host sends back, and the fault tap between Sender and line.

The two state machines share the line as ``e1381``'s module docstring prescribes: bytes go to the
Sender while ``Sender.awaiting_reply`` and to the Receiver otherwise (with what the Sender did not
need, from ``take_unconsumed``), and the Sender may start a transfer only while ``Receiver.idle``
(LIS1-A §6: one station sends at a time). The simulator plays the instrument, so it wins ENQ
contention and re-sends its ENQ after 1 s while the host yields (LIS1-A §6.2, contention).

Reply bytes reach the Sender one at a time and its output is taken after each, so every write is
one unit (ENQ, a frame, EOT): that is what lets ``FaultTap`` tell which frame it is tampering with.
That is also why this is not ``astm.station.AstmStation``: the simulator must stand between its
Sender and the line, and must report a failed message rather than retry it on its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from vetgateway.adapters.astm.e1381 import (
    NEED_DATA,
    RECEIVER_TIMEOUT,
    MessageReceived,
    Receiver,
    Role,
)
from vetgateway.adapters.astm.e1381_frames import NAK
from vetgateway.adapters.astm.e1381_sender import (
    Contention,
    EstablishmentRefused,
    FrameRetransmitted,
    MessageSent,
    Sender,
    SendFailed,
    SendInterrupted,
)
from vetgateway.adapters.astm.simulator_faults import FaultTap

__all__ = ["InstrumentStation", "LinkStats", "SendOutcome"]

log = logging.getLogger(__name__)

SendOutcome = MessageSent | SendFailed


@dataclass(slots=True)
class LinkStats:
    """What happened on the link over a whole run (all connections), for the summary."""

    retransmissions: int = 0
    naks_received: int = 0
    contentions: int = 0
    enq_refused: int = 0
    interruptions: int = 0


class InstrumentStation:
    """One connection's instrument end. ``send`` starts a message; ``outcome`` is set when the
    Sender is done with it; ``drop_requested`` when the fault tap asks for the line to be cut.

    Messages from the host are handed to ``on_received`` and acknowledged at once: the
    simulator's "storage" is the caller's list, which cannot fail.
    """

    def __init__(
        self,
        stats: LinkStats,
        on_received: Callable[[bytes], None],
        *,
        receiver_timeout: float = RECEIVER_TIMEOUT,
        packed: bool = False,
    ) -> None:
        self.sender = Sender(Role.INSTRUMENT, packed=packed)
        self.receiver = Receiver(timeout=receiver_timeout)
        self.outcome: SendOutcome | None = None
        self.drop_requested = False
        self._stats = stats
        self._on_received = on_received
        self._tap: FaultTap | None = None
        self._out = bytearray()

    @property
    def ready(self) -> bool:
        """True when a message may be started: nothing in flight either way."""
        return self.receiver.idle and not self.sender.busy and not self.drop_requested

    def send(self, message: bytes, tap: FaultTap, now: float) -> None:
        """Start sending ``message`` through ``tap``; wait for ``outcome``. Only when ``ready``."""
        self._tap = tap
        self.outcome = None
        self.sender.send_message(message, now)
        self._take_sender_output()

    def receive_data(self, data: bytes, now: float) -> None:
        """Route bytes read from the line to the Sender or the Receiver (module docstring)."""
        pos = 0
        while pos < len(data) and not self.drop_requested:
            if not self.sender.awaiting_reply:
                self.receiver.receive_data(data[pos:], now)
                break
            byte = data[pos]
            pos += 1
            if byte == NAK:
                self._stats.naks_received += 1
            told = self._tap.incoming(byte) if self._tap is not None else byte
            self.sender.receive_data(bytes((told,)), now)
            spill = self.sender.take_unconsumed()
            if spill:
                self.receiver.receive_data(spill, now)
            self._take_sender_output()
        self._take_receiver_output(now)

    def check_timeouts(self, now: float) -> None:
        """Run both timers. The Sender may open a transfer only on a neutral line, but its reply
        timer (LIS1-A §6.5.2) runs whenever it awaits a reply."""
        if self.drop_requested:
            return
        self.receiver.check_timeouts(now)
        if self.receiver.idle or self.sender.awaiting_reply:
            self.sender.check_timeouts(now)
            self._take_sender_output()
        self._take_receiver_output(now)

    def data_to_send(self) -> bytes:
        """Bytes to write to the line, in the order they were produced; cleared as returned."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def _take_sender_output(self) -> None:
        unit = self.sender.data_to_send()
        if unit and not self.drop_requested:
            tampered = self._tap.outgoing(unit) if self._tap is not None else unit
            if tampered is None:
                self.drop_requested = True
            else:
                self._out += tampered
        while (event := self.sender.next_event()) is not NEED_DATA:
            if isinstance(event, FrameRetransmitted):
                self._stats.retransmissions += 1
            elif isinstance(event, Contention):
                self._stats.contentions += 1
            elif isinstance(event, EstablishmentRefused):
                self._stats.enq_refused += 1
            elif isinstance(event, SendInterrupted):
                self._stats.interruptions += 1
            elif isinstance(event, MessageSent | SendFailed):
                self.outcome = event
            log.debug("sender event", extra={"event_type": type(event).__name__})

    def _take_receiver_output(self, now: float) -> None:
        while (event := self.receiver.next_event()) is not NEED_DATA:
            if isinstance(event, MessageReceived):
                self._on_received(event.text)
                self.receiver.message_stored(now)
            log.debug("receiver event", extra={"event_type": type(event).__name__})
        self._out += self.receiver.data_to_send()
