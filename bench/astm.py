"""ASTM (LIS1-A / E1381) messages and records per second through the analyzer listener and the
inbox over TCP, beside a bare socket loop measured in the same run with the same clients and the
same bytes; then the gateway's CPU per analyzer at 115,200 baud, estimated and measured.

    .venv/bin/python bench/astm.py [--analyzers 8] [--messages 250] [--no-paced]
                                   [--paced-seconds 10] [--database-url URL]

Message: the Sysmex-style canine CBC of ``tests/fixtures/astm/written`` (21 records, about
1.3 kB framed, one record per frame), each analyzer with its own sender id in H-5 and each
message with its own sample number, so every message is a distinct row.

- **Throughput.** The gateway side is what ``vetgateway run`` puts on port 5001: an
  ``AnalyzerTcpServer`` with a fresh ``AstmStation`` per connection and the real
  ``AnalyzerIntake.listener_handler()`` over a real ``Inbox`` (a fresh SQLite file, WAL and
  synchronous=FULL; or a scratch PostgreSQL database), its analyzers configured by sender id and
  its logs formatted as in production (to /dev/null). N simulated instruments each send M
  messages with a real E1381 ``Sender(Role.INSTRUMENT)``, every frame waiting for its ACK (the
  ACK of a message's last frame waits for the commit), as fast as the ACKs come back.
- **Baseline.** The same clients and bytes against a bare asyncio loop that answers ACK to every
  ENQ and every frame end (LF) at once: no checksum, no state, no store, the least any receiver
  must do. ``x bare`` is link + inbox messages/s over bare messages/s.
- **CPU at 115,200 baud.** 8N1 is 10 bits per character, so a line carries at most 11,520 B/s.
  The estimate multiplies the gateway's CPU seconds per received byte in the throughput run by
  11,520 B/s (one analyzer sending without pause) and by 32. The paced run measures it: 32
  instruments each hold their writes to 11,520 B/s (a frame is written once it would have
  crossed the serial line) for ``--paced-seconds``, and the gateway process reports its own CPU
  time (user + system, all its threads) over that window. A paced line carries less than
  11,520 B/s, since each frame waits for its ACK; the estimate is also shown at the achieved rate.
  The bare receiver runs the same paced plan first: its CPU is the floor, what a receiver that
  only reads and answers pays the kernel and the event loop for these lines on this machine
  (waking per frame, one read and one write each), so the goal can be read against it.
- **Floors.** Two more receivers take the paced record-frame plan, each in a process of its
  own: a *checking* one (``CheckingReceiver``: every frame checked with the gateway's own
  ``whole_good_frame`` and its number, ACK or NAK) and a *checking+storing* one (the same, each
  message stored through a real ``Inbox``, with the analyzer intake's commit delay, before its
  last ACK). They keep none of the gateway's other promises (timeouts, the link state machine,
  devices, logs), so they are not receivers to run: they are the least the goal's work costs a
  Python receiver here. The ``reach`` line reads the goal against them: if checking alone takes
  10 %, no receiver that checks its frames meets the goal on this machine.

Servers and clients each run in a process of their own, all on the event loop the gateway picks
(``VETGATEWAY_EVENT_LOOP``, default uvloop where installed), so the bare receiver is the same loop
without the link or the store; "gateway CPU" is only the gateway
process's CPU. The machine's cores are shared by all of them: a client CPU near 100 % means the
client set the pace of the throughput lines, not the server. Goal (issue text): 32 analyzers at
115,200 baud on one core, using under 10 % of it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext, SpawnProcess
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa

from _processes import LOOP, LOOP_NAME, postgres_database
from vetgateway import event_loop
from vetgateway.adapters.analyzer.intake import COMMIT_DELAY, AnalyzerIntake
from vetgateway.adapters.analyzer.tcp import AnalyzerLimits, AnalyzerTcpServer
from vetgateway.adapters.astm.e1381 import NEED_DATA, MessageEnd, Role
from vetgateway.adapters.astm.e1381_frames import (
    EOT,
    STX,
    build_frame,
    split_message,
    whole_good_frame,
)
from vetgateway.adapters.astm.e1381_sender import MessageSent, Sender, SendFailed
from vetgateway.adapters.astm.station import AstmStation
from vetgateway.logs import configure_logging
from vetgateway.store import migrate
from vetgateway.store.db import Database
from vetgateway.store.devices import DeviceView
from vetgateway.store.inbox import Inbox
from vetgateway.store.models.base import utcnow

FIXTURE = (
    Path(__file__).resolve().parents[1] / "tests/fixtures/astm/written/sysmex_style_cbc_canine.astm"
)
SAMPLE_FIELD = b"                    42"  # the fixture's space-padded sample number, made unique
BAUD = 115_200
LINE_RATE = BAUD / 10  # 8N1: start bit, 8 data bits, stop bit per character
GOAL_ANALYZERS = 32
GOAL_SHARE = 0.10
WARM_UP_MESSAGES = 3
TIMEOUT = 300.0  # seconds any one step may take before the bench gives up

ENQ, ACK, NAK, LF = b"\x05", b"\x06", b"\x15", b"\n"


# --- the messages -------------------------------------------------------------------------------


def sender_id(analyzer: int) -> str:
    return f"XN-V-{analyzer:02d}"


def message_template(analyzer: int) -> bytes:
    """The fixture with H-5's first component set to this analyzer's sender id."""
    text = FIXTURE.read_bytes()
    header, rest = text.split(b"\r", 1)
    field, component = header[1:2], header[3:4]
    fields = header.split(field)
    components = fields[4].split(component)
    components[0] = sender_id(analyzer).encode()
    fields[4] = component.join(components)
    return field.join(fields) + b"\r" + rest


def framed_size(text: bytes, *, packed: bool = False) -> int:
    """Bytes on the line for one message: ENQ, its frames, EOT."""
    pieces = split_message(text, packed=packed)
    return 2 + sum(len(build_frame(n + 1, p, final=f)) for n, (p, f) in enumerate(pieces))


def with_sample(template: bytes, sample: int) -> bytes:
    return template.replace(SAMPLE_FIELD, f"{sample:>{len(SAMPLE_FIELD)}}".encode(), 1)


# --- the simulated instruments (client process) -------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What the clients do in one run."""

    analyzers: int
    messages: int | None = None  # per analyzer; None: keep sending until ``seconds`` passed
    seconds: float | None = None
    rate: float | None = None  # bytes/s each line may carry; None: as fast as ACKs come back
    packed: bool = False  # frames filled across records (see e1381_frames.split_message)
    first_sample: int = 0  # sample numbers start here, so runs never repeat a message


@dataclass(frozen=True)
class ClientResult:
    messages: int  # acknowledged
    records: int
    wire_bytes: int  # everything the instruments wrote: ENQ, frames, EOT
    failed: int  # messages the Sender gave up (too many NAKs, no reply in 15 s)
    elapsed: float
    cpu: float  # the client process's CPU seconds over ``elapsed``


class Instrument(asyncio.Protocol):
    """One analyzer: a LIS1-A sender that starts its next message as soon as the last one was
    acknowledged. With a ``rate``, each write waits until the bytes before it, and itself,
    would have crossed a serial line of that many bytes per second."""

    def __init__(self, rate: float | None, packed: bool) -> None:
        self.loop = asyncio.get_running_loop()
        self.sender = Sender(Role.INSTRUMENT, packed=packed)
        self.texts: Iterator[bytes] = iter(())
        self.rate = rate
        self.line_free_at = 0.0
        self.in_flight_records = 0
        self.messages = self.records = self.wire_bytes = self.failed = 0
        self.done: asyncio.Future[None] = self.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport on any loop (uvloop's do not subclass asyncio.Transport).
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError("the gateway closed the connection"))

    def start(self, texts: Iterator[bytes]) -> None:
        self.texts = texts
        self._next_message()
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.sender.receive_data(data, self.loop.time())
        self._after_step()

    def check_timeouts(self) -> None:
        self.sender.check_timeouts(self.loop.time())
        self._after_step()

    def _after_step(self) -> None:
        finished = False
        while (event := self.sender.next_event()) is not NEED_DATA:
            if isinstance(event, MessageSent):
                self.messages += 1
                self.records += self.in_flight_records
                finished = True
            elif isinstance(event, SendFailed):
                self.failed += 1
                finished = True
        if finished:
            self._next_message()
        self._flush()

    def _next_message(self) -> None:
        text = next(self.texts, None)
        if text is None:
            # Done once the last EOT has (virtually) crossed the line.
            self.loop.call_at(max(self.loop.time(), self.line_free_at), self._finish)
            return
        self.in_flight_records = text.count(b"\r")
        self.sender.send_message(text, self.loop.time())

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def _flush(self) -> None:
        out = self.sender.data_to_send()
        if not out:
            return
        self.wire_bytes += len(out)
        if self.rate is None:
            self.transport.write(out)
            return
        self.line_free_at = max(self.loop.time(), self.line_free_at) + len(out) / self.rate
        self.loop.call_at(self.line_free_at, self.transport.write, out)


def texts_for(analyzer: int, plan: Plan, deadline: float) -> Iterator[bytes]:
    """This analyzer's messages: ``plan.messages`` of them, or as many as start before
    ``deadline``."""
    loop = asyncio.get_running_loop()
    template = message_template(analyzer)
    n = 0
    while (plan.messages is None or n < plan.messages) and loop.time() < deadline:
        yield with_sample(template, plan.first_sample + n)
        n += 1


async def run_plan(control: Connection, address: tuple[str, int], plan: Plan) -> ClientResult:
    """Connect every instrument, say ``ready``, wait for ``go``, run, return the totals."""
    loop = asyncio.get_running_loop()
    instruments: list[Instrument] = []
    for _ in range(plan.analyzers):
        _, instrument = await loop.create_connection(
            lambda: Instrument(plan.rate, plan.packed), *address
        )
        instruments.append(instrument)
    control.send("ready")
    if control.recv() != "go":
        raise RuntimeError("the bench did not say go")
    cpu, began = time.process_time(), loop.time()
    deadline = began + plan.seconds if plan.seconds is not None else float("inf")
    for k, instrument in enumerate(instruments):
        instrument.start(texts_for(k, plan, deadline))
    ticker = loop.create_task(_tick(instruments))
    try:
        await asyncio.wait_for(asyncio.gather(*(i.done for i in instruments)), TIMEOUT)
    finally:
        ticker.cancel()
        elapsed, cpu = loop.time() - began, time.process_time() - cpu
        for instrument in instruments:
            instrument.transport.close()
    return ClientResult(
        messages=sum(i.messages for i in instruments),
        records=sum(i.records for i in instruments),
        wire_bytes=sum(i.wire_bytes for i in instruments),
        failed=sum(i.failed for i in instruments),
        elapsed=elapsed,
        cpu=cpu,
    )


async def _tick(instruments: list[Instrument]) -> None:
    """The Sender's timers (15 s reply timeout): a stuck message fails instead of hanging."""
    while True:
        await asyncio.sleep(1.0)
        for instrument in instruments:
            instrument.check_timeouts()


def client_main(control: Connection) -> None:
    """The client process: runs the plans it is sent until told to stop."""
    while True:
        try:
            command = control.recv()
        except EOFError:
            return
        if command == "stop":
            return
        _, address, plan = command
        control.send(event_loop.run(run_plan(control, address, plan), LOOP))


# --- the servers (one process each) -------------------------------------------------------------


class BareReceiver(asyncio.Protocol):
    """ACK for every ENQ and every frame end, at once; nothing checked, nothing kept.
    ENQ and LF never occur inside frame text (restricted characters), so counting is enough."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport on any loop (uvloop's do not subclass asyncio.Transport).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        acks = data.count(ENQ) + data.count(LF)
        if acks:
            self.transport.write(ACK * acks)


class CheckingReceiver(asyncio.Protocol):
    """The least a receiver that keeps the link's promises can do: ACK for ENQ; every frame
    checked (checksum, frame number, restricted characters, with the gateway's own
    ``whole_good_frame``), ACK or NAK; the frames' text gathered. With ``store``, a message's
    last frame is answered only once ``store`` returned (the message is durable). No state
    machine, no timers, no device lookup, no logging: a floor to read the gateway's CPU against,
    not a receiver to run. Reads that are not exactly one frame are split at LF first."""

    def __init__(self, store: Callable[[bytes], Awaitable[object]] | None = None) -> None:
        self.store = store
        self.pending = bytearray()
        self.text = bytearray()
        self.number = 0
        self.storing: set[asyncio.Future[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self.pending and data.endswith(LF) and data[0] == STX:
            self._frame(data)
            return
        self.pending += data
        while self.pending:
            first = self.pending[0]
            if first == STX:
                end = self.pending.find(LF)
                if end < 0:
                    return
                frame = bytes(self.pending[: end + 1])
                del self.pending[: end + 1]
                self._frame(frame)
                continue
            del self.pending[:1]
            if first == ENQ[0]:
                self.number = 0
                self.transport.write(ACK)
            elif first == EOT:
                self.text.clear()

    def _frame(self, data: bytes) -> None:
        frame = whole_good_frame(data)
        if frame is None or frame.number != (self.number + 1) % 8:
            self.transport.write(NAK)
            return
        self.number = frame.number
        self.text += frame.text
        if frame.final and self.store is not None and _ends_with_l_record(self.text):
            text = bytes(self.text)
            self.text.clear()
            self.storing.add(task := asyncio.ensure_future(self._store_then_ack(text)))
            task.add_done_callback(self.storing.discard)
            return
        self.transport.write(ACK)

    async def _store_then_ack(self, text: bytes) -> None:
        assert self.store is not None
        await self.store(text)
        self.transport.write(ACK)


def _ends_with_l_record(text: bytearray) -> bool:
    last = text.rstrip(b"\r").rsplit(b"\r", 1)[-1]
    return last[:1] == b"L"


async def serve(
    control: Connection,
    start: Callable[[], Awaitable[tuple[str, int]]],
    close: Callable[[], Awaitable[None]],
    count: Callable[[], dict[str, int]],
) -> None:
    """Listen, send the address, then answer ``cpu`` and ``count`` until ``stop`` (or EOF)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_command() -> None:
        try:
            command = control.recv()
        except EOFError:  # the bench is gone: stop too
            stop.set()
            return
        if command == "cpu":
            control.send((time.process_time(), time.perf_counter()))
        elif command == "count":
            control.send(count())
        else:
            stop.set()

    address = await start()
    loop.add_reader(control.fileno(), on_command)
    control.send(address)
    await stop.wait()
    loop.remove_reader(control.fileno())
    await close()


def serve_protocol(
    control: Connection,
    factory: Callable[[], asyncio.Protocol],
    count: Callable[[], dict[str, int]] = dict,
) -> None:
    """``serve`` a plain asyncio server of ``factory``'s protocols on a free local port."""
    server: asyncio.Server | None = None

    async def start() -> tuple[str, int]:
        nonlocal server
        loop = asyncio.get_running_loop()
        server = await loop.create_server(factory, "127.0.0.1", 0, backlog=256)
        host, port = server.sockets[0].getsockname()[:2]
        return host, port

    async def close() -> None:
        assert server is not None
        server.close()

    event_loop.run(serve(control, start, close, count), LOOP)


def bare_main(control: Connection) -> None:
    serve_protocol(control, BareReceiver)


def floor_main(control: Connection, database_url: str) -> None:
    """``CheckingReceiver`` on its own port; with a ``database_url``, storing each message in
    a real ``Inbox`` with the analyzer intake's commit delay."""
    inbox: Inbox | None = None
    db: Database | None = None
    if database_url:
        db = Database(database_url)
        migrate.upgrade(db)
        inbox = Inbox(db)

    def receiver() -> CheckingReceiver:
        if inbox is None:
            return CheckingReceiver()
        return CheckingReceiver(
            lambda text: inbox.receive_async(text, "astm", "floor", commit_delay=COMMIT_DELAY)
        )

    def count() -> dict[str, int]:
        if db is None:
            return {}
        with db.session(readonly=True) as session:
            stored = session.execute(sa.text("SELECT count(*) FROM inbound_messages")).scalar()
        return {"stored": int(stored or 0)}

    try:
        serve_protocol(control, receiver, count)
    finally:
        if inbox is not None:
            inbox.close()
        if db is not None:
            db.dispose()


def gateway_main(control: Connection, database_url: str, analyzers: int, log_level: str) -> None:
    with open(os.devnull, "w") as sink:
        configure_logging(log_level, stream=sink)
        db = Database(database_url)
        migrate.upgrade(db)
        inbox = Inbox(db)
        now = utcnow()
        devices = [
            DeviceView(
                id=uuid.uuid4(),
                name=f"bench-{k:02d}",
                driver="sysmex_xn_v",
                sender_id=sender_id(k),
                connection="listener",
                clinic_id=None,
                quiet_limit_seconds=None,
                last_seen_at=None,
                created_at=now,
            )
            for k in range(analyzers)
        ]
        intake = AnalyzerIntake(inbox, devices)
        # All bench clients share 127.0.0.1; in a clinic each converter has its own address.
        # Room for a run's connections while the last run's are still closing.
        limits = AnalyzerLimits(
            max_connections=4 * analyzers, max_connections_per_peer=4 * analyzers
        )
        server = AnalyzerTcpServer(
            lambda: AstmStation(MessageEnd.TERMINATOR_RECORD),
            intake.listener_handler(),
            host="127.0.0.1",
            port=0,
            limits=limits,
        )

        async def start() -> tuple[str, int]:
            await server.start()
            return server.address

        def count() -> dict[str, int]:
            query = sa.text("SELECT status, count(*) FROM inbound_messages GROUP BY status")
            with db.session(readonly=True) as session:
                return {str(status): n for status, n in session.execute(query)}

        try:
            event_loop.run(serve(control, start, server.close, count), LOOP)
        finally:
            inbox.close()
            db.dispose()


# --- the bench process: starting, asking and stopping the others --------------------------------


class Child:
    """A child process and the bench's end of its control pipe."""

    def __init__(self, ctx: SpawnContext, target: Callable[..., None], *args: Any) -> None:
        self.control, theirs = ctx.Pipe()
        self.process: SpawnProcess = ctx.Process(target=target, args=(theirs, *args), daemon=True)
        self.process.start()
        theirs.close()

    def ask(self, command: Any) -> Any:
        self.control.send(command)
        return self.answer()

    def answer(self) -> Any:
        if not self.control.poll(TIMEOUT):
            raise RuntimeError(f"no answer from {self.process.name} in {TIMEOUT:g} s")
        return self.control.recv()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.control.send("stop")
        self.process.join(30)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()
        self.control.close()


@contextlib.contextmanager
def child(ctx: SpawnContext, target: Callable[..., None], *args: Any) -> Iterator[Child]:
    c = Child(ctx, target, *args)
    try:
        yield c
    finally:
        c.stop()


@dataclass(frozen=True)
class Measurement:
    client: ClientResult
    server_cpu: float  # seconds of the server process over the run
    server_wall: float

    @property
    def messages_per_second(self) -> float:
        return self.client.messages / self.client.elapsed

    @property
    def server_share(self) -> float:
        """The server's CPU as a share of one core over the run."""
        return self.server_cpu / self.server_wall


def measure(clients: Child, server: Child, address: tuple[str, int], plan: Plan) -> Measurement:
    """One run: the server's CPU is read once every client is connected and after the last one
    finished, so connecting and process start-up stay out of it."""
    clients.control.send(("run", address, plan))
    if clients.answer() != "ready":
        raise RuntimeError("the clients did not connect")
    cpu0, wall0 = server.ask("cpu")
    clients.control.send("go")
    result: ClientResult = clients.answer()
    cpu1, wall1 = server.ask("cpu")
    return Measurement(result, cpu1 - cpu0, wall1 - wall0)


def _measure_floors(
    clients: Child, plan: Plan, *floors: tuple[Child, tuple[str, int]]
) -> list[Measurement]:
    """The paced plan against the checking receiver, then the checking and storing one."""
    results: list[Measurement] = []
    for (server, address), what in zip(floors, FLOORS, strict=True):
        m = measure(clients, server, address, plan)
        print(paced_line(f"paced {what[0]}", m), flush=True)
        stored = server.ask("count").get("stored")
        kept = "" if stored is None else f" ({stored:,} stored, {m.client.messages:,} acknowledged)"
        print(
            f"measured      {what[0]} receiver CPU {m.server_share:.1%} of a core: {what[1]}{kept}",
            flush=True,
        )
        results.append(m)
    return results


FLOORS = (
    ("checking", "bare, plus every frame checked and ACK or NAK"),
    (
        "checking+storing",
        "also each message stored in the inbox before its last ACK; no state machine, timers,"
        " devices or logs",
    ),
)


def throughput_line(name: str, m: Measurement, analyzers: int) -> str:
    c = m.client
    per_message = m.server_cpu / max(c.messages, 1)
    failed = f"   {c.failed} failed" if c.failed else ""
    return (
        f"{name:<13} analyzers={analyzers:<3} {m.messages_per_second:>7,.0f} msg/s"
        f" {c.records / c.elapsed:>8,.0f} records/s   server CPU {m.server_share:4.0%}"
        f" ({per_message * 1e3:.3f} ms/msg, {m.server_cpu / c.wire_bytes * 1e6:.2f} µs/B)"
        f"   client CPU {c.cpu / c.elapsed:4.0%}{failed}"
    )


def paced_line(name: str, m: Measurement) -> str:
    c = m.client
    line_rate = c.wire_bytes / c.elapsed / GOAL_ANALYZERS
    return (
        f"{name} analyzers={GOAL_ANALYZERS:<3} {m.messages_per_second:>7,.0f} msg/s"
        f" {c.records / c.elapsed:>8,.0f} records/s over {c.elapsed:.1f} s; each line"
        f" {line_rate:,.0f} B/s ({line_rate / LINE_RATE:.0%} of {BAUD:,} baud)"
        + (f"; {c.failed} failed" if c.failed else "")
    )


def run(args: argparse.Namespace, database_url: str, backend: str, floor_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    analyzers = max(args.analyzers, GOAL_ANALYZERS if args.paced else 0)
    plan = Plan(args.analyzers, messages=args.messages, first_sample=1000)
    warm_up = Plan(args.analyzers, messages=WARM_UP_MESSAGES)
    acknowledged = 0
    with (
        child(ctx, client_main) as clients,
        child(ctx, bare_main) as bare,
        child(ctx, gateway_main, database_url, analyzers, args.log_level) as gateway,
        child(ctx, floor_main, "") as checking,
        child(ctx, floor_main, floor_url) as storing,
    ):
        bare_address, gateway_address = bare.answer(), gateway.answer()
        checking_address, storing_address = checking.answer(), storing.answer()
        measure(clients, bare, bare_address, warm_up)
        base = measure(clients, bare, bare_address, plan)
        print(throughput_line("bare receiver", base, args.analyzers), flush=True)
        acknowledged += measure(clients, gateway, gateway_address, warm_up).client.messages
        full = measure(clients, gateway, gateway_address, plan)
        acknowledged += full.client.messages
        ratio = full.messages_per_second / base.messages_per_second
        print(
            f"{throughput_line('link + inbox', full, args.analyzers)}   {ratio:.2f}x bare",
            flush=True,
        )
        per_byte = full.server_cpu / full.client.wire_bytes
        one = per_byte * LINE_RATE
        print(
            f"estimate at {BAUD:,} baud ({LINE_RATE:,.0f} B/s, no pause): {one:.2%} of a core"
            f" per analyzer, {one * GOAL_ANALYZERS:.1%} for {GOAL_ANALYZERS}",
            flush=True,
        )
        paced_share: float | None = None
        floor_shares: list[float] = []
        if args.paced:
            # One record per frame (the goal's measurement), then the same analyzers sending
            # their messages in full 247-byte frames: fewer frames, fewer turn-arounds.
            for packed, first in ((False, 10**6), (True, 2 * 10**6)):
                paced_plan = Plan(
                    GOAL_ANALYZERS,
                    seconds=args.paced_seconds,
                    rate=LINE_RATE,
                    packed=packed,
                    first_sample=first,
                )
                layout = "packed frames" if packed else "record frames"
                floor = measure(clients, bare, bare_address, paced_plan)
                print(paced_line(f"paced bare, {layout}", floor), flush=True)
                print(
                    f"measured      bare receiver CPU {floor.server_share:.1%} of a core: the"
                    " least these lines cost a receiver on this machine",
                    flush=True,
                )
                if not packed:
                    floors = _measure_floors(
                        clients,
                        paced_plan,
                        (checking, checking_address),
                        (storing, storing_address),
                    )
                paced = measure(clients, gateway, gateway_address, paced_plan)
                acknowledged += paced.client.messages
                print(paced_line(f"paced, {layout}", paced), flush=True)
                line_rate = paced.client.wire_bytes / paced.client.elapsed / GOAL_ANALYZERS
                print(
                    f"measured      gateway CPU {paced.server_share:.1%} of a core for"
                    f" {GOAL_ANALYZERS} analyzers, {paced.server_share / GOAL_ANALYZERS:.2%} per"
                    f" analyzer, {paced.server_share / floor.server_share:.1f}x the bare receiver"
                    + (
                        ""
                        if packed
                        else f"; estimate at that rate {per_byte * line_rate * GOAL_ANALYZERS:.1%}"
                    ),
                    flush=True,
                )
                if not packed:
                    paced_share = paced.server_share
                    floor_shares = [m.server_share for m in floors]
        stored = gateway.ask("count")
        total = sum(stored.values())
        quarantined = sum(n for status, n in stored.items() if "quarantined" in status.lower())
        print(
            f"{backend}: {total:,} messages stored, {acknowledged:,} acknowledged,"
            f" {quarantined} quarantined"
        )
    share = paced_share if paced_share is not None else one * GOAL_ANALYZERS
    how = "measured (paced)" if paced_share is not None else "estimated"
    verdict = "met" if share < GOAL_SHARE else "not met"
    print(
        f"goal: {GOAL_ANALYZERS} analyzers at {BAUD:,} baud under {GOAL_SHARE:.0%} of one core:"
        f" {how} {share:.1%}, {verdict}"
    )
    if floor_shares:
        print(_reach(*floor_shares))


def _reach(checking: float, storing: float) -> str:
    """Whether the goal can be met on this machine, read off the two floors."""
    if checking >= GOAL_SHARE:
        return (
            f"reach: out of reach on this machine: only reading and checking the frames takes"
            f" {checking:.1%}, before anything is stored"
        )
    if storing >= GOAL_SHARE:
        return (
            f"reach: out of reach on this machine with this inbox: checking the frames and"
            f" storing the messages takes {storing:.1%}"
        )
    return f"reach: within reach: checking and storing take {storing:.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--analyzers", type=int, default=8, help="instruments in the throughput run"
    )
    parser.add_argument("--messages", type=int, default=250, help="messages per instrument")
    parser.add_argument(
        "--paced",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"also run {GOAL_ANALYZERS} instruments held to {LINE_RATE:,.0f} B/s each",
    )
    parser.add_argument("--paced-seconds", type=float, default=10.0, help="length of the paced run")
    parser.add_argument(
        "--database-url",
        default="",
        help="'' (default): a fresh SQLite file in a temporary folder; a postgresql+psycopg://"
        " URL: a scratch database created on that server and dropped afterwards",
    )
    parser.add_argument(
        "--log-level", default="INFO", help="the gateway's log level (logs go to /dev/null)"
    )
    args = parser.parse_args()
    if args.analyzers < 1 or args.messages < 1 or args.paced_seconds <= 0:
        parser.error("--analyzers, --messages and --paced-seconds must be positive")
    if args.database_url and not args.database_url.startswith(("postgresql", "postgres:")):
        parser.error("--database-url takes a PostgreSQL URL (SQLite is the default)")

    text = message_template(0)
    records = text.count(b"\r")
    print(
        f"astm bench: {FIXTURE.name}, {len(text):,} B, {records} records,"
        f" {framed_size(text):,} B framed ({framed_size(text, packed=True):,} packed);"
        f" {args.analyzers} analyzers x {args.messages} messages;"
        f" {os.cpu_count()} CPU cores shared by client and server processes;"
        f" {LOOP_NAME} event loop",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        if args.database_url:
            url, backend = stack.enter_context(postgres_database(args.database_url)), "postgresql"
            floor_url = stack.enter_context(postgres_database(args.database_url))
        else:
            url, backend = f"sqlite:///{Path(tmp) / 'bench.db'}", "sqlite"
            floor_url = f"sqlite:///{Path(tmp) / 'floor.db'}"
        run(args, url, backend, floor_url)


if __name__ == "__main__":
    main()
