"""A full LIS1-A (ASTM E1381) station, sans-I/O: one ``Receiver`` and one ``Sender`` on one line.

The gateway both receives (results, host queries) and sends (host-query answers) over the same
half-duplex line, so it runs one of each and arbitrates between them as LIS1-A §6 requires:

1. **Routing.** Incoming bytes go to the ``Sender`` while it awaits a reply to its ENQ or to a
   frame; every other byte (and whatever the ``Sender`` did not consume) goes to the
   ``Receiver``. Replies of both sides leave through one ``data_to_send`` in the order they were
   produced, so our EOT always precedes our ACK to the peer's next ENQ.
2. **Turn-taking** (LIS1-A §6.2, establishment). Our ``Sender`` may bid for the line (ENQ) only
   while the ``Receiver`` is idle: neutral, with no message awaiting its storage decision. An
   ENQ from the peer is always answered by the ``Receiver`` when our ``Sender`` is not awaiting a
   reply, so the peer's transmission is never blocked by our queue.
3. **Contention** (LIS1-A §6.2, contention). Both sent ENQ: the computer system (our default
   ``role``) yields. Its ``Sender`` swallows the crossing ENQ and backs off for 20 s, the
   instrument re-sends its ENQ after 1 s, our ``Receiver`` ACKs that one and takes the message;
   our own message goes once the line is neutral again and the back-off has passed.
4. **Outgoing queue.** ``send_message`` queues; messages go one at a time in order, each when
   the line is neutral. A message given up by the ``Sender`` (``SendFailed``: six NAKs of one
   frame, LIS1-A §6.5.1, or no reply in 15 s, §6.5.2) is tried again after
   ``send_retry_delay`` seconds, at most ``send_attempts`` times in all; then
   ``MessageUndeliverable`` is emitted and the next message goes. A full queue refuses the new
   message the same way (reason ``queue_full``).
5. **Receiver interrupt** (LIS1-A §6.3), opt-in (``interrupt_to_reply``): when a message is
   stored while one of ours waits (a host-query answer), its completing frame is answered EOT
   instead of ACK, asking the analyzer to yield the line so the answer goes at once rather than
   after the analyzer's whole batch. Off by default: an analyzer that mishandles the request
   might resend the message.
6. **Line errors** (RELIABILITY R32). ``alarm_after`` frames rejected in a row (``FrameRejected``:
   noise, framing or checksum errors) emit one ``LinkAlarm``; any good frame resets the count,
   so the next run of errors alarms again.

Events of both sides come out of one ``next_event``. ``LinkEstablished`` is emitted by either
side; the Sender-only events are those of ``e1381_sender``. Only ``LinkUsageError`` is raised,
and only for the caller's misuse (a message text that cannot be framed, a storage decision with
nothing awaiting it).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final, Literal

from vetgateway.adapters.astm.e1381 import (
    NEED_DATA,
    RECEIVER_TIMEOUT,
    DuplicateFrame,
    FrameAccepted,
    FrameRejected,
    LinkUsageError,
    MessageEnd,
    MessageReceived,
    NeedData,
    Receiver,
    ReceiverEvent,
    Role,
)
from vetgateway.adapters.astm.e1381_frames import ACK, split_message
from vetgateway.adapters.astm.e1381_sender import MessageSent, Sender, SenderEvent, SendFailed

__all__ = [
    "ALARM_AFTER",
    "MAX_QUEUED",
    "SEND_ATTEMPTS",
    "SEND_RETRY_DELAY",
    "AstmStation",
    "LinkAlarm",
    "MessageUndeliverable",
    "StationEvent",
]

ALARM_AFTER: Final = 10
SEND_ATTEMPTS: Final = 3
SEND_RETRY_DELAY: Final = 30.0  # twice the reply timer: a peer that stalled gets time to recover
MAX_QUEUED: Final = 64
_ACK: Final = bytes((ACK,))


@dataclass(frozen=True, slots=True)
class LinkAlarm:
    """``count`` frames in a row were rejected (R32: noise or framing errors on the line, a
    wrong baud rate or parity); ``reason`` is the last rejection's. Emitted once per run."""

    count: int
    reason: str


@dataclass(frozen=True, slots=True)
class MessageUndeliverable:
    """An outgoing message was given up after ``attempts`` tries (``too_many_naks``,
    ``timeout``) or refused because the queue was full (``queue_full``, ``attempts`` 0).
    Only its size is kept: the text may name a patient."""

    reason: Literal["too_many_naks", "timeout", "queue_full"]
    attempts: int
    size: int


StationEvent = ReceiverEvent | SenderEvent | LinkAlarm | MessageUndeliverable


@dataclass(slots=True)
class _Outgoing:
    text: bytes
    attempts: int = 0
    not_before: float = 0.0


class AstmStation:
    """One end of a LIS1-A line that both receives and sends; implements ``LineStation``.

    ``message_end`` and ``receiver_timeout`` configure the ``Receiver`` (``e1381`` rules 5 and
    7), ``role`` the ``Sender``'s side in contention. The arbitration rules are in the module
    docstring.
    """

    def __init__(
        self,
        message_end: MessageEnd,
        role: Role = Role.COMPUTER,
        *,
        receiver_timeout: float = RECEIVER_TIMEOUT,
        alarm_after: int = ALARM_AFTER,
        send_attempts: int = SEND_ATTEMPTS,
        send_retry_delay: float = SEND_RETRY_DELAY,
        max_queued: int = MAX_QUEUED,
        interrupt_to_reply: bool = False,
    ) -> None:
        if alarm_after < 1 or send_attempts < 1 or max_queued < 1:
            raise LinkUsageError("alarm_after, send_attempts and max_queued must be at least 1")
        self._receiver = Receiver(
            message_end=message_end, timeout=receiver_timeout, report_frames=True
        )
        self._sender = Sender(role)
        self._alarm_after = alarm_after
        self._send_attempts = send_attempts
        self._send_retry_delay = send_retry_delay
        self._max_queued = max_queued
        self._interrupt_to_reply = interrupt_to_reply
        self._queue: deque[_Outgoing] = deque()
        self._current: _Outgoing | None = None
        self._rejected = 0
        self._out = bytearray()
        self._events: deque[StationEvent] = deque()

    @property
    def mid_message(self) -> bool:
        """True while part of an incoming message is in hand (received, not yet delivered or
        discarded) or awaits its storage decision: losing the line now loses it."""
        return self._receiver.in_message

    @property
    def unsent_messages(self) -> int:
        """Outgoing messages queued or in flight, not yet acknowledged by the peer."""
        return len(self._queue) + (self._current is not None)

    @property
    def idle(self) -> bool:
        """Neutral line, nothing held for storage, nothing to send."""
        return self._receiver.idle and not self._sender.busy and not self.unsent_messages

    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes read from the line at monotonic time ``now`` (rule 1)."""
        if self._sender.awaiting_reply:
            self._sender.receive_data(data, now)
            self._collect_sender(now)
            data = self._sender.take_unconsumed()
        if data:
            self._receiver.receive_data(data, now)
            self._collect_receiver()

    def reply_at_once(self, data: bytes, now: float) -> bytes | None:
        """``QuickReplies``: a frame in the middle of an incoming message, the read a line
        carries most (every frame but a message's last), is ACKed here in one step; ``None``
        for anything else. Nothing it skips could act: our ``Sender`` awaits no reply, the
        ``Receiver`` is mid-transfer (so nothing of ours may start, rule 2) and its timer has
        just been reset.
        """
        if self._sender.awaiting_reply or self._out or self._events:
            return None
        if not self._receiver.take_next_frame(data, now):
            return None
        self._rejected = 0
        return _ACK

    def next_event(self) -> StationEvent | NeedData:
        """Return the next event of either side, or ``NEED_DATA``. Never raises."""
        return self._events.popleft() if self._events else NEED_DATA

    def data_to_send(self) -> bytes:
        """Bytes to write to the line, in the order both sides produced them."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def check_timeouts(self, now: float) -> None:
        """Run both sides' timers and start the next outgoing message when its turn has come
        (rules 2 and 4). Call it on every tick and after every ``receive_data``."""
        self._receiver.check_timeouts(now)
        self._collect_receiver()
        self._start_next(now)
        if self._sender.awaiting_reply or (self._sender.busy and self._receiver.idle):
            self._sender.check_timeouts(now)
            self._collect_sender(now)

    def message_stored(self, now: float) -> None:
        """The last ``MessageReceived`` is durably stored: its completing frame is ACKed (or,
        with ``interrupt_to_reply`` and a message of ours waiting, answered EOT: rule 5)."""
        interrupt = self._interrupt_to_reply and self.unsent_messages > 0
        self._receiver.message_stored(now, interrupt=interrupt)
        self._collect_receiver()

    def message_refused(self, now: float) -> None:
        """The last ``MessageReceived`` could not be stored: its completing frame is NAKed, so
        the peer retransmits it (``e1381`` rule 5)."""
        self._receiver.message_refused(now)
        self._collect_receiver()

    def send_message(self, text: bytes, now: float) -> None:
        """Queue ``text`` (records each ending with CR) for the peer (rule 4).

        Text that cannot be framed raises ``LinkUsageError`` here, at the caller, rather than
        when its turn comes.
        """
        split_message(text)
        if self.unsent_messages >= self._max_queued:
            self._events.append(MessageUndeliverable("queue_full", 0, len(text)))
            return
        self._queue.append(_Outgoing(text))
        self._start_next(now)

    def _start_next(self, now: float) -> None:
        if self._current is not None or self._sender.busy or not self._receiver.idle:
            return
        if not self._queue or self._queue[0].not_before > now:
            return
        self._current = self._queue.popleft()
        self._current.attempts += 1
        self._sender.send_message(self._current.text, now)
        self._collect_sender(now)

    def _collect_sender(self, now: float) -> None:
        self._out += self._sender.data_to_send()
        while (event := self._sender.next_event()) is not NEED_DATA:
            self._events.append(event)
            if isinstance(event, MessageSent):
                self._current = None
            elif isinstance(event, SendFailed):
                self._on_send_failed(event, now)

    def _on_send_failed(self, event: SendFailed, now: float) -> None:
        failed, self._current = self._current, None
        if failed is None:  # the Sender only runs messages this station started
            return
        if failed.attempts >= self._send_attempts:
            self._events.append(
                MessageUndeliverable(event.reason, failed.attempts, len(failed.text))
            )
            return
        failed.not_before = now + self._send_retry_delay
        self._queue.appendleft(failed)

    def _collect_receiver(self) -> None:
        self._out += self._receiver.data_to_send()
        while (event := self._receiver.next_event()) is not NEED_DATA:
            if isinstance(event, FrameRejected):
                self._events.append(event)
                self._rejected += 1
                if self._rejected == self._alarm_after:
                    self._events.append(LinkAlarm(self._rejected, event.reason))
                continue
            if isinstance(event, FrameAccepted | DuplicateFrame | MessageReceived):
                self._rejected = 0
            if not isinstance(event, FrameAccepted):  # internal: only the count needs it
                self._events.append(event)
