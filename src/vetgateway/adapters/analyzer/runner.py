"""The asyncio driver of one analyzer line: any ``LineStation`` over any ``LineStream``.

The station is sans-I/O; this loop is all the I/O it gets, and it is the same for a TCP
connection (``analyzer.tcp``) and a serial port (``analyzer.serial_line``):

- every read goes to ``station.receive_data``; ``station.check_timeouts`` runs after every read
  and on every ``tick`` (the station never sleeps: its timers are checked with ``clock()``);
- every ``MessageReceived`` is awaited through ``handler(text, peer)``, which returns only once
  the message is durably stored. Only then ``message_stored`` releases the ACK of the completing
  frame (RELIABILITY R02); the ``Delivery.replies`` (host-query answers) are then queued with
  ``send_message``. A ``StorageError`` refuses the message (NAK): the analyzer sends it again.
  Any other exception is our bug: it is logged with its traceback and the message refused too,
  never acknowledged, and the line stays up;
- bytes the station wants written are written and drained after each step, in its order;
- incidents (``on_incident(kind, peer, detail)``, the MLLP server's callback) report what an
  operator must see: ``link_alarm`` (R32), ``message_aborted`` (R25/R30),
  ``message_undeliverable``, ``connection_lost_mid_message``, ``replies_not_sent``, and for
  plain-text lines ``message_discarded`` and ``message_not_stored``. Details
  carry sizes and reasons, never message text (it names patients).

One read is outstanding at a time, awaited directly (a task and a timer per read cost more CPU
than the whole link, bench/astm.py); a small tick task beside it runs the timers, and the two
take turns through a lock. Only the end of the line cancels a read, so a stream's ``read`` needs
no cancellation safety of its own.

**Handing bytes over as they arrive.** A stream that can (``PushStream``: TCP) offers each read
to the line from its transport callback first. On a quiet line (no turn in progress, none waiting
with bytes in hand, the stream taking writes without waiting) the bytes go to the station and its
replies are written at once: a frame and its ACK cost no task wake-up, future or lock, and a
frame mid-message, the read a line carries most, is answered in one step where the station offers
it (``QuickReplies``; the read loop uses it too). The first
``MessageReceived`` starts a delivery task that holds the lock while the message is stored,
exactly as the read loop would have; bytes that arrive meanwhile, or on a line that is not quiet,
stay with the stream for ``read``, and the read loop handles them as above.

``run_line`` returns at end of stream and lets the stream's errors (``ConnectionError``,
``OSError``) propagate to the transport, which knows whether to reconnect; it never closes the
stream. ``Redialler`` is that reconnecting loop for the lines the gateway opens itself (a
converter it dials, a serial port).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, cast, runtime_checkable

from vetgateway.adapters.analyzer.station import LineStation, QuickReplies
from vetgateway.adapters.astm.e1381 import (
    NEED_DATA,
    FrameRejected,
    LinkUsageError,
    MessageAborted,
    MessageReceived,
)
from vetgateway.adapters.astm.e1381_sender import SendFailed
from vetgateway.adapters.astm.station import LinkAlarm, MessageUndeliverable
from vetgateway.adapters.plaintext.framer import MessageDiscarded, MessageNotStored
from vetgateway.errors import StorageError

__all__ = [
    "Backoff",
    "Delivery",
    "DialledLine",
    "IncidentHandler",
    "LineProgress",
    "LineStream",
    "MessageHandler",
    "PushStream",
    "Redialler",
    "ignore_incident",
    "run_line",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    """What the handler returns once a message is durable: messages to send back (host-query
    answers, each records ending with CR), in order."""

    replies: tuple[bytes, ...] = ()


# text, peer -> Delivery, returned only after the message is durably stored
MessageHandler = Callable[[bytes, str], Awaitable[Delivery]]
# what happened, peer, detail (for audit and alerts; never message text)
IncidentHandler = Callable[[str, str, str], None]


def ignore_incident(kind: str, peer: str, detail: str) -> None:
    """The default ``IncidentHandler``: the log line is all."""


class LineStream(Protocol):
    """A byte stream to an analyzer. ``read`` returns at least one byte, or ``b""`` at the end
    of the stream; errors are ``ConnectionError`` or ``OSError``."""

    async def read(self) -> bytes: ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class PushStream(Protocol):
    """A ``LineStream`` that can offer what it receives to a consumer before keeping it for
    ``read`` (see "Handing bytes over" in the module docstring)."""

    def push_to(self, take: Callable[[bytes], bool] | None) -> None:
        """From now on, offer each read to ``take`` first, while nothing is kept for ``read``;
        bytes ``take`` returns True for are consumed. ``None`` stops offering."""
        ...

    @property
    def writable_now(self) -> bool:
        """True when a write would be taken without waiting (``drain`` would return at once)."""
        ...


@runtime_checkable
class LineProgress(Protocol):
    """What a station may tell about the work a lost line takes with it. Optional: a station
    that has both properties (``AstmStation``) gets ``connection_lost_mid_message`` and
    ``replies_not_sent`` reported when its line ends."""

    @property
    def mid_message(self) -> bool: ...

    @property
    def unsent_messages(self) -> int: ...


async def run_line(
    stream: LineStream,
    station: LineStation,
    handler: MessageHandler,
    *,
    peer: str,
    on_incident: IncidentHandler | None,
    clock: Callable[[], float] = time.monotonic,
    tick: float = 0.25,
) -> None:
    """Drive ``station`` over ``stream`` until the end of the stream (see the module docstring)."""
    line = _Line(stream, station, handler, peer, on_incident, clock)
    pushing = stream if isinstance(stream, PushStream) else None
    if pushing is not None:
        pushing.push_to(line.take_now)
    ticker = asyncio.create_task(_tick(line, tick), name=f"analyzer line tick {peer}")
    try:
        while True:
            try:
                data = await stream.read()
            except TimeoutError:  # an idle timeout: a line whose message is being stored is not
                if line.delivering:
                    continue
                raise
            if not data:
                break
            line.busy += 1  # bytes in hand: nothing may overtake them (``take_now``)
            try:
                async with line.lock:
                    await line.take(data)
            finally:
                line.busy -= 1
        # The end of the stream may overtake a message being stored: it finishes first, and
        # its error (the line lost before its ACK went out) is this line's.
        await line.delivered()
        if line.failure is not None:
            raise line.failure
        if not ticker.done():
            log.info("analyzer line closed by the peer", extra={"peer": peer})
    finally:
        if pushing is not None:
            pushing.push_to(None)
        ticker.cancel()
        # ``wait``, not ``await ticker``: a cancellation of this task that arrives meanwhile
        # (the line closing) must propagate, not be taken for the ticker's own and swallowed.
        await asyncio.wait({ticker})
        await line.stop_delivering()
        line.report_loss()
        if not ticker.cancelled() and ticker.exception() is not None:
            raise cast(BaseException, ticker.exception())


async def _tick(line: _Line, tick: float) -> None:
    """The station's timers, checked every ``tick`` while no read arrives. A write error here
    closes the stream, so the read loop ends and ``run_line`` raises it."""
    try:
        while True:
            await asyncio.sleep(tick)
            async with line.lock:
                line.busy += 1
                try:
                    line.station.check_timeouts(line.clock())
                    await line.step()
                finally:
                    line.busy -= 1
    except (ConnectionError, OSError):
        line.stream.close()
        raise


class _Line:
    def __init__(
        self,
        stream: LineStream,
        station: LineStation,
        handler: MessageHandler,
        peer: str,
        on_incident: IncidentHandler | None,
        clock: Callable[[], float],
    ) -> None:
        self.stream = stream
        self.station = station
        self.handler = handler
        self.peer = peer
        self.on_incident = on_incident if on_incident is not None else ignore_incident
        self.clock = clock
        # The read loop, the timer tick and a delivery take turns: one event at a time reaches
        # the station.
        self.lock = asyncio.Lock()
        # Turns in progress or waiting with bytes in hand: while any, ``take_now`` declines.
        self.busy = 0
        self.delivery: asyncio.Task[None] | None = None  # the last one ``take_now`` started
        self.failure: Exception | None = None  # raised in ``take_now``; ends the line
        # A frame mid-message answered in one step (``QuickReplies``; ASTM stations have it).
        self.reply_at_once = station.reply_at_once if isinstance(station, QuickReplies) else None

    def take_now(self, data: bytes) -> bool:
        """``PushStream``'s consumer: handle ``data`` at once if the line is quiet, else return
        False, having done nothing, and the read loop gets it. Runs in the transport's callback,
        so nothing here may wait; a message to store is handed to a delivery task."""
        stream = cast(PushStream, self.stream)
        if self.busy or not stream.writable_now:
            return False
        station = self.station
        try:
            if self.answered_at_once(data):
                return True
            station.receive_data(data, self.clock())
            station.check_timeouts(self.clock())
            while True:
                out = station.data_to_send()
                if out:
                    self.stream.write(out)
                event = station.next_event()
                if event is NEED_DATA:
                    return True
                if isinstance(event, MessageReceived):
                    self.busy += 1
                    self.delivery = asyncio.get_running_loop().create_task(
                        self._deliver_and_step(event.text)
                    )
                    return True
                self.note(event)
        except Exception as exc:  # noqa: BLE001 - our bug: end the line as the read loop does
            self.failure = exc
            self.stream.close()
            return True

    def answered_at_once(self, data: bytes) -> bool:
        """Whether the station answered ``data`` in one step (``QuickReplies``); its reply is
        written, not drained."""
        if self.reply_at_once is None:
            return False
        reply = self.reply_at_once(data, self.clock())
        if reply is None:
            return False
        self.stream.write(reply)
        return True

    async def take(self, data: bytes) -> None:
        """The read loop's turn (under ``lock``): ``data`` to the station, and all it causes."""
        if self.answered_at_once(data):
            await self.stream.drain()
            return
        self.station.receive_data(data, self.clock())
        self.station.check_timeouts(self.clock())
        await self.step()

    async def _deliver_and_step(self, text: bytes) -> None:
        try:
            async with self.lock:
                await self.deliver(text)
                await self.step()
        except Exception:
            self.stream.close()  # the read loop ends, and ``delivered`` raises this
            raise
        finally:
            self.busy -= 1

    @property
    def delivering(self) -> bool:
        return self.delivery is not None and not self.delivery.done()

    async def delivered(self) -> None:
        """Wait for the last delivery task; raise what it raised."""
        if self.delivery is not None:
            await self.delivery

    async def stop_delivering(self) -> None:
        """The line is ending (an error, a cancellation): cancel a delivery still in flight. Its
        message was not acknowledged, so the analyzer sends it again."""
        delivery = self.delivery
        if delivery is None:
            return
        delivery.cancel()
        await asyncio.wait({delivery})
        if not delivery.cancelled():
            delivery.exception()  # retrieved: raised by ``delivered`` or superseded by another

    async def step(self) -> None:
        """Handle every pending event, writing what the station wants sent after each."""
        while True:
            await self.flush()
            event = self.station.next_event()
            if event is NEED_DATA:
                return
            if isinstance(event, MessageReceived):
                await self.deliver(event.text)
            else:
                self.note(event)

    async def flush(self) -> None:
        out = self.station.data_to_send()
        if out:
            self.stream.write(out)
            await self.stream.drain()

    async def deliver(self, text: bytes) -> None:
        try:
            delivery = await self.handler(text, self.peer)
        except StorageError as exc:
            log.warning(
                "analyzer message not stored; refused (NAK), the analyzer will resend",
                extra={"peer": self.peer, "size": len(text), "reason": str(exc)},
            )
            self.station.message_refused(self.clock())
            return
        except Exception:  # our bug, not the analyzer's: never ACK it, keep the line up
            log.exception(
                "analyzer message handler failed; refused (NAK)",
                extra={"peer": self.peer, "size": len(text)},
            )
            self.station.message_refused(self.clock())
            return
        now = self.clock()
        # Replies are queued first (they wait for a neutral line), so the station knows of them
        # when it answers the completing frame (a receiver interrupt may ask for the line).
        for reply in delivery.replies:
            try:
                self.station.send_message(reply, now)
            except LinkUsageError:  # a reply we cannot frame is our bug; the rest still go
                log.exception("analyzer reply not sendable; dropped", extra={"peer": self.peer})
        self.station.message_stored(now)
        await self.flush()

    def note(self, event: object) -> None:
        peer = self.peer
        if isinstance(event, LinkAlarm):
            detail = f"{event.count} frames in a row rejected, last: {event.reason}"
            log.error("analyzer line errors", extra={"peer": peer, "reason": detail})
            self.on_incident("link_alarm", peer, detail)
        elif isinstance(event, MessageAborted):
            detail = f"partial message discarded ({event.reason}, {event.discarded} bytes)"
            log.warning("analyzer message aborted", extra={"peer": peer, "reason": detail})
            self.on_incident("message_aborted", peer, detail)
        elif isinstance(event, MessageUndeliverable):
            detail = f"{event.size}-byte message given up after {event.attempts} attempts"
            detail += f": {event.reason}"
            log.error("analyzer reply undeliverable", extra={"peer": peer, "reason": detail})
            self.on_incident("message_undeliverable", peer, detail)
        elif isinstance(event, MessageDiscarded) and event.reason != "blank":
            detail = f"plain-text message discarded ({event.reason}, {event.discarded} bytes)"
            log.warning("analyzer message discarded", extra={"peer": peer, "reason": detail})
            self.on_incident("message_discarded", peer, detail)
        elif isinstance(event, MessageNotStored):
            detail = "plain-text message not stored; the analyzer cannot resend it"
            log.error("analyzer message lost", extra={"peer": peer, "reason": detail})
            self.on_incident("message_not_stored", peer, detail)
        elif isinstance(event, FrameRejected | SendFailed):
            log.info(
                "analyzer link: %s",
                type(event).__name__,
                extra={"peer": peer, "reason": event.reason},
            )
        else:
            log.debug("analyzer link: %s", type(event).__name__, extra={"peer": peer})

    def report_loss(self) -> None:
        """The line is gone: say what it took with it."""
        if not isinstance(self.station, LineProgress):
            return
        if self.station.mid_message:
            detail = "line lost mid-message: the partial message is discarded unacknowledged"
            log.warning("analyzer line lost mid-message", extra={"peer": self.peer})
            self.on_incident("connection_lost_mid_message", self.peer, detail)
        if self.station.unsent_messages:
            detail = f"{self.station.unsent_messages} replies not sent"
            log.warning("analyzer line lost with replies unsent", extra={"peer": self.peer})
            self.on_incident("replies_not_sent", self.peer, detail)


@dataclass(frozen=True)
class Backoff:
    """Delays between attempts to (re)open a line: ``initial``, times ``factor`` after each
    failure, at most ``maximum``; back to ``initial`` after a line stayed up ``healthy_after``
    seconds (a converter that accepts and drops at once must not be dialled in a tight loop)."""

    initial: float = 1.0
    maximum: float = 60.0
    factor: float = 2.0
    healthy_after: float = 30.0


class Redialler:
    """Keeps one line open: ``open_stream``, run a fresh station over it, and after the end of
    the stream, a line error or a failed open, wait per ``backoff`` and open it again.

    ``open_stream`` raises ``OSError`` (``ConnectionError``, ``TimeoutError``) when the line
    cannot be opened. A failed open is reported once per run of failures (``line_down``), a
    lost line as ``connection_lost``. Any other exception is our bug: logged with its traceback,
    then the line is reopened like after an error, so one bad message cannot silence a line.
    """

    def __init__(
        self,
        open_stream: Callable[[], Awaitable[LineStream]],
        station_factory: Callable[[], LineStation],
        handler: MessageHandler,
        *,
        peer: str,
        backoff: Backoff,
        on_incident: IncidentHandler | None,
        clock: Callable[[], float] = time.monotonic,
        tick: float = 0.25,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._open_stream = open_stream
        self._station_factory = station_factory
        self._handler = handler
        self.peer = peer
        self._backoff = backoff
        self._on_incident = on_incident if on_incident is not None else ignore_incident
        self._clock = clock
        self._tick = tick
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None
        self.connected = False
        self.connections = 0  # lines opened so far, for health and tests

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._keep_open())

    async def close(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        await asyncio.wait({self._task})  # a cancellation of the closer itself still propagates
        self._task = None

    async def _keep_open(self) -> None:
        delay = self._backoff.initial
        failing = False
        while True:
            try:
                stream = await self._open_stream()
            except Exception as exc:
                if not isinstance(exc, OSError):  # our bug: say so, and keep trying
                    log.exception("analyzer line open failed", extra={"peer": self.peer})
                if not failing:
                    self._on_incident("line_down", self.peer, f"cannot open: {exc}")
                failing = True
                log.warning(
                    "analyzer line not opened", extra={"peer": self.peer, "reason": str(exc)}
                )
                await self._sleep(delay)
                delay = min(delay * self._backoff.factor, self._backoff.maximum)
                continue
            failing = False
            if await self._run(stream) >= self._backoff.healthy_after:
                delay = self._backoff.initial
            await self._sleep(delay)
            delay = min(delay * self._backoff.factor, self._backoff.maximum)

    async def _run(self, stream: LineStream) -> float:
        """Run the line until it ends; return how long it was up."""
        self.connected = True
        self.connections += 1
        started = self._clock()
        log.info("analyzer line open", extra={"peer": self.peer})
        try:
            await run_line(
                stream,
                self._station_factory(),
                self._handler,
                peer=self.peer,
                on_incident=self._on_incident,
                clock=self._clock,
                tick=self._tick,
            )
            reason = "closed by the peer"
        except OSError as exc:
            reason = str(exc) or type(exc).__name__
        except Exception:  # our bug: log it, then reopen like after a line error
            log.exception("analyzer line failed", extra={"peer": self.peer})
            reason = "internal error"
        finally:
            self.connected = False
            stream.close()
        log.warning("analyzer line lost", extra={"peer": self.peer, "reason": reason})
        self._on_incident("connection_lost", self.peer, reason)
        return self._clock() - started


class DialledLine:
    """A line the gateway opens itself (a converter it dials, a serial port), kept open by a
    ``Redialler``. Subclasses say how to open it (``open_stream``); ``connected`` tells whether
    it is open now, ``connections`` how many times it was opened."""

    def __init__(
        self,
        station_factory: Callable[[], LineStation],
        handler: MessageHandler,
        *,
        peer: str,
        backoff: Backoff | None,
        on_incident: IncidentHandler | None,
        clock: Callable[[], float],
        tick: float,
    ) -> None:
        self._line = Redialler(
            self.open_stream,
            station_factory,
            handler,
            peer=peer,
            backoff=backoff or Backoff(),
            on_incident=on_incident,
            clock=clock,
            tick=tick,
        )

    async def open_stream(self) -> LineStream:
        raise NotImplementedError

    @property
    def connected(self) -> bool:
        return self._line.connected

    @property
    def connections(self) -> int:
        return self._line.connections

    async def start(self) -> None:
        self._line.start()

    async def close(self) -> None:
        await self._line.close()
