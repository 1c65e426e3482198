"""The analyzer simulator: replays ASTM messages to the gateway as an instrument would, over a real
line (TCP or serial) with real E1381 framing and timing, optionally injecting line faults.

For each message the instrument end (``simulator_station.InstrumentStation``: a ``Sender`` in the
instrument role and a ``Receiver``) bids for the line with ENQ, sends the frames one at a time
(records over 247 characters split by the Sender, LIS1-A §6.3), waits for each ACK, honours NAK
by retransmitting (at most six times, LIS1-A §6.5.1), and closes with EOT (LIS1-A §6.4).
Whatever the gateway sends back (a host-query answer is a full transfer: ENQ, frames, EOT) is
received, acknowledged and handed to ``on_received``.

This module is the I/O driver, so the LIS1-A timers run on the event loop's monotonic clock in
real time: 15 s for a reply to ENQ or a frame, 30 s in the receiver (LIS1-A §6.5.2), 1 s before
the instrument re-sends ENQ after contention (LIS1-A §6.2). ``time_scale`` runs that protocol clock
faster, for tests: every timer shrinks by the same factor, so their ratios, which the protocol
relies on, stay as the standard sets them. ``interval`` and ``reply_timeout`` are not protocol
timers and stay in real seconds.

Three tasks serve each connection (read, write, tick); the station's state is only touched from
the event loop, so they need no locks. The run waits on conditions ("the Sender is done", "a
reply came") that every change re-checks, never on guessed delays.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from vetgateway.adapters.astm.e1381 import RECEIVER_TIMEOUT
from vetgateway.adapters.astm.e1381_frames import split_message
from vetgateway.adapters.astm.e1381_sender import MessageSent, SendFailed
from vetgateway.adapters.astm.simulator_faults import (
    FaultKind,
    FaultSpec,
    FaultTap,
    MessageFaults,
    plan_faults,
)
from vetgateway.adapters.astm.simulator_lines import Endpoint, Line, SimulatorError
from vetgateway.adapters.astm.simulator_report import (
    MessageOutcome,
    SimulationReport,
    format_summary,
)
from vetgateway.adapters.astm.simulator_station import InstrumentStation, SendOutcome
from vetgateway.adapters.astm.transcripts import has_query

__all__ = [
    "MessageOutcome",
    "SimulationReport",
    "Simulator",
    "SimulatorOptions",
    "format_summary",
    "simulate",
]

log = logging.getLogger(__name__)

_TICK: Final = 0.02  # real seconds between timer checks: fine enough for 1 s back-offs
_CLOSE_GRACE: Final = 5.0  # real seconds to let queued bytes (the last EOT) reach the line


@dataclass(frozen=True, slots=True)
class SimulatorOptions:
    """How a run goes; the defaults replay each message once, at once, with no faults."""

    interval: float = 0.0  # real seconds between two messages
    repeat: int = 1  # the whole list of messages, this many times
    faults: tuple[FaultSpec, ...] = ()
    seed: int | None = None  # for faults with a probability, and which frame each fault hits
    expect_replies: bool = False  # after a message with a Q record, wait for the host's answer
    reply_timeout: float = 30.0  # real seconds to wait for that answer
    time_scale: float = 1.0  # protocol seconds per real second (tests only; see the docstring)
    max_reconnects: int = 3  # per message, after a drop or a lost line
    reconnect_delay: float = 1.0  # real seconds between two failed attempts to reconnect
    packed: bool = False  # fill 247-byte frames across records (e1381_frames.split_message)


class _LineGone(Exception):
    """The line was lost and could not be made again: the run stops."""


class _Connection:
    """One open line, its station, and the read, write and tick tasks that serve them."""

    def __init__(
        self,
        line: Line,
        station: InstrumentStation,
        clock: Callable[[], float],
        changed: asyncio.Event,
    ) -> None:
        self.line = line
        self.station = station
        self.lost = False
        self.failure: BaseException | None = None
        self._closed = False
        self._clock = clock
        self._changed = changed
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._tasks = [
            asyncio.create_task(self._read_loop()),
            asyncio.create_task(self._tick_loop()),
            asyncio.create_task(self._write_loop()),
        ]
        for task in self._tasks:
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        # An exception here is our bug (the station raises only on misuse): surface it through
        # ``failure`` rather than leave the run waiting on a dead task.
        if not task.cancelled() and task.exception() is not None:
            self.failure = task.exception()
            self._lose()

    def flush(self) -> None:
        """Queue what the station has to write, and wake whoever waits on a condition."""
        out = self.station.data_to_send()
        if out:
            self._outbox.put_nowait(out)
        self._changed.set()

    async def _read_loop(self) -> None:
        while data := await self.line.read():
            self.station.receive_data(data, self._clock())
            self.flush()
        self._lose()

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(_TICK)
            self.station.check_timeouts(self._clock())
            self.flush()

    async def _write_loop(self) -> None:
        while True:
            data = await self._outbox.get()
            try:
                await self.line.write(data)
            except OSError:
                self._lose()
                return
            finally:
                self._outbox.task_done()

    def _lose(self) -> None:
        self.lost = True
        self._changed.set()

    async def close(self, *, abort: bool) -> None:
        """Stop serving; unless ``abort``, first let queued bytes out (the final EOT). Closing
        twice does nothing more."""
        if self._closed:
            return
        self._closed = True
        if not abort and not self.lost:
            try:
                await asyncio.wait_for(self._outbox.join(), _CLOSE_GRACE)
            except TimeoutError:
                log.warning("closing with bytes unsent")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.line.close(abort=abort)
        self.lost = True


class Simulator:
    """One run: ``messages`` (texts, records ending with CR) sent over ``endpoint``.

    ``on_received`` is told each message the host sends; ``on_outcome`` each message's fate as
    it is decided. ``run`` raises ``SimulatorError`` only when the line cannot be opened at all
    (or the options ask for what the line cannot do); later line losses are in the report.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        messages: Sequence[bytes],
        options: SimulatorOptions | None = None,
        *,
        on_received: Callable[[bytes], None] | None = None,
        on_outcome: Callable[[MessageOutcome], None] | None = None,
    ) -> None:
        for message in messages:
            split_message(message)  # a text that cannot be framed fails here, not mid-run
        self._endpoint = endpoint
        self._messages = list(messages)
        self._options = options or SimulatorOptions()
        self._on_received = on_received
        self._on_outcome = on_outcome
        self._report = SimulationReport()
        self._changed = asyncio.Event()
        self._conn: _Connection | None = None
        self._clock: Callable[[], float] = lambda: 0.0

    @property
    def report(self) -> SimulationReport:
        """The report so far (complete once ``run`` returned); readable after an interruption."""
        return self._report

    async def run(self) -> SimulationReport:
        """Send every message, then wait until the line is neutral, and close it."""
        opts = self._options
        if not self._endpoint.can_drop and any(
            spec.kind is FaultKind.DROP_MID_MESSAGE for spec in opts.faults
        ):
            raise SimulatorError(
                f"drop-mid-message needs a TCP line: the peer of {self._endpoint.description} "
                "cannot see a serial line being cut"
            )
        schedule = [m for _ in range(opts.repeat) for m in self._messages]
        plan = plan_faults(
            opts.faults, [len(split_message(m, packed=opts.packed)) for m in schedule], opts.seed
        )
        loop = asyncio.get_running_loop()
        start = loop.time()
        self._clock = lambda: (loop.time() - start) * opts.time_scale
        try:
            self._conn = await self._open()
            for number, (message, faults) in enumerate(zip(schedule, plan, strict=True), 1):
                if number > 1 and opts.interval > 0:
                    await asyncio.sleep(opts.interval)
                try:
                    await self._send_and_await_reply(number, message, faults)
                except _LineGone as exc:
                    self._report.line_error = str(exc)
                    for rest in range(number, len(schedule) + 1):
                        planned = plan[rest - 1]
                        self._record(
                            MessageOutcome(
                                rest, False, "line lost", planned.kinds, planned.failure_expected, 0
                            )
                        )
                    break
            conn = self._conn
            if conn is not None:
                await self._wait(
                    lambda: conn.lost or conn.station.receiver.idle,
                    RECEIVER_TIMEOUT / opts.time_scale,
                )
        finally:
            if self._conn is not None:
                await self._conn.close(abort=False)
            await self._endpoint.aclose()
        return self._report

    async def _send_and_await_reply(
        self, number: int, message: bytes, faults: MessageFaults
    ) -> None:
        replies_before = len(self._report.replies)
        outcome = await self._send(number, message, faults)
        self._record(outcome)
        if self._options.expect_replies and outcome.delivered and has_query(message):
            came = await self._wait(
                lambda: len(self._report.replies) > replies_before, self._options.reply_timeout
            )
            if not came:
                log.warning("no reply to a query", extra={"message_number": number})
                self._report.replies_missing += 1

    async def _send(self, number: int, message: bytes, faults: MessageFaults) -> MessageOutcome:
        """Send one message to its end, reconnecting and starting it over after a drop or a
        lost line (the receiver discarded the partial message, LIS1-A §6.4)."""
        tap = FaultTap(faults)
        attempts = 0
        outcome: SendOutcome | None = None
        try:
            for _ in range(self._options.max_reconnects + 1):
                conn = await self._connected()
                if await self._attempt(conn, message, tap):
                    attempts += 1
                outcome = conn.station.outcome
                if outcome is not None:
                    break
                if conn.station.drop_requested:
                    log.info("dropping the line mid-message", extra={"message_number": number})
                    self._report.drops += 1
                    await conn.close(abort=True)
        finally:
            self._report.corrupted_frames += tap.corrupted
            self._report.garbled_acks += tap.garbled
            self._report.noise_bytes += tap.noise_bytes
        delivered = isinstance(outcome, MessageSent)
        reason = None
        if not delivered:
            reason = outcome.reason if isinstance(outcome, SendFailed) else "line lost"
        return MessageOutcome(
            number, delivered, reason, faults.kinds, faults.failure_expected, attempts
        )

    async def _attempt(self, conn: _Connection, message: bytes, tap: FaultTap) -> bool:
        """Send ``message`` once on ``conn`` when the line is neutral; wait until the Sender is
        done, the tap asks for a drop, or the line is lost. False if it never got to start."""
        await self._wait(lambda: conn.lost or conn.station.ready)
        if conn.lost:
            return False
        conn.station.send(message, tap, self._clock())
        conn.flush()
        station = conn.station
        await self._wait(lambda: conn.lost or station.outcome is not None or station.drop_requested)
        return True

    def _record(self, outcome: MessageOutcome) -> None:
        self._report.outcomes.append(outcome)
        if not outcome.delivered:
            log.warning(
                "message not delivered",
                extra={"message_number": outcome.number, "reason": outcome.reason},
            )
        if self._on_outcome is not None:
            self._on_outcome(outcome)

    async def _connected(self) -> _Connection:
        """The open connection, or a new one after a loss (``max_reconnects`` tries)."""
        if self._conn is not None and not self._conn.lost:
            return self._conn
        if self._conn is not None:
            await self._conn.close(abort=True)
            self._conn = None
        error = "no attempt made"
        for attempt in range(1, self._options.max_reconnects + 1):
            try:
                self._conn = await self._open()
            except SimulatorError as exc:
                error = str(exc)
                log.warning("reconnect failed", extra={"attempt": attempt})
                await asyncio.sleep(self._options.reconnect_delay)
                continue
            self._report.reconnects += 1
            return self._conn
        raise _LineGone(error)

    async def _open(self) -> _Connection:
        line = await self._endpoint.open()
        station = InstrumentStation(self._report.stats, self._received, packed=self._options.packed)
        return _Connection(line, station, self._clock, self._changed)

    def _received(self, text: bytes) -> None:
        self._report.replies.append(text)
        if self._on_received is not None:
            self._on_received(text)

    async def _wait(self, condition: Callable[[], bool], timeout: float | None = None) -> bool:
        """Wait until ``condition`` holds (True) or ``timeout`` real seconds pass (False). Every
        change to a connection sets ``_changed``, so the condition is checked after each."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if self._conn is not None and self._conn.failure is not None:
                raise self._conn.failure
            if condition():
                return True
            self._changed.clear()
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return condition()


async def simulate(
    endpoint: Endpoint,
    messages: Sequence[bytes],
    options: SimulatorOptions | None = None,
    *,
    on_received: Callable[[bytes], None] | None = None,
    on_outcome: Callable[[MessageOutcome], None] | None = None,
) -> SimulationReport:
    """Run the simulator once (see ``Simulator``)."""
    simulator = Simulator(
        endpoint, messages, options, on_received=on_received, on_outcome=on_outcome
    )
    return await simulator.run()
