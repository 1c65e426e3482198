"""ASTM E1381 (CLSI LIS1-A) over real transports, RELIABILITY R25 to R32.

The gateway side runs on its own event-loop thread: ``AnalyzerTcpServer``, ``AnalyzerTcpClient``
or ``AnalyzerSerialLine`` around an ``AstmStation``, with an in-memory recording handler. The
instrument side is blocking test code on real sockets or a pseudo-terminal, speaking E1381 with
the ``Sender``/``Receiver`` classes or hand-built frames (``build_frame``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import select
import socket
import termios
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.waiting import wait_until
from vetgateway.adapters.analyzer.runner import Backoff, Delivery, LineStream, Redialler
from vetgateway.adapters.analyzer.serial_line import (
    AnalyzerSerialLine,
    SerialSettings,
    open_port,
)
from vetgateway.adapters.analyzer.tcp import AnalyzerLimits, AnalyzerTcpClient, AnalyzerTcpServer
from vetgateway.adapters.astm.e1381 import NEED_DATA, MessageEnd, MessageReceived, Receiver, Role
from vetgateway.adapters.astm.e1381_frames import build_frame, split_message
from vetgateway.adapters.astm.e1381_sender import (
    FrameRetransmitted,
    MessageSent,
    Sender,
    SendFailed,
)
from vetgateway.adapters.astm.station import AstmStation
from vetgateway.errors import StorageError

T = TypeVar("T")
ENQ, ACK, NAK, EOT = b"\x05", b"\x06", b"\x15", b"\x04"
H = b"H|\\^&|||VETCHEM^2.1|||||||P|1"
P = b"P|1||PMS-42"
R = b"R|1|^^^GLU|5.4|mmol/L||N||F"
L = b"L|1|N"
MESSAGE = b"\r".join([H, P, R, L]) + b"\r"
LONG = b"C|1|I|" + b"haemolysed sample, repeat requested; " * 18 + b"|G"  # > 247: ETB frames
LONG_MESSAGE = b"\r".join([H, LONG, L]) + b"\r"
ANSWER = b"H|\\^&|||VETGATEWAY\rO|1|S-1||^^^GLU\rL|1|N\r"


def frames(text: bytes) -> list[bytes]:
    return [build_frame(n + 1, t, final=f) for n, (t, f) in enumerate(split_message(text))]


def corrupt(frame: bytes) -> bytes:
    """The same frame with one text byte changed, so its checksum no longer fits."""
    return frame[:3] + (b"#" if frame[3:4] != b"#" else b"$") + frame[4:]


class Loop:
    """An event loop on its own thread: the gateway side of every test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=15)

    def call(self, fn: Callable[[], object]) -> None:
        self.loop.call_soon_threadsafe(fn)

    def close(self) -> None:
        self.run(self.loop.shutdown_default_executor())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=15)
        self.loop.close()


@pytest.fixture
def loop() -> Iterator[Loop]:
    running = Loop()
    yield running
    running.close()


_DIALLED: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _close_dialled_sockets() -> Iterator[None]:
    """Instruments' sockets are closed even when a test fails half-way."""
    yield
    while _DIALLED:
        _DIALLED.pop().close()


class Recorder:
    """The message handler: keeps what it was given, fails or blocks on demand."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.calls = 0
        self.storage_failures = 0  # raise StorageError this many times
        self.bugs = 0  # raise RuntimeError this many times
        self.replies: tuple[bytes, ...] = ()
        self.gate: asyncio.Event | None = None
        self.entered = threading.Event()

    async def __call__(self, text: bytes, peer: str) -> Delivery:
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.storage_failures:
            self.storage_failures -= 1
            raise StorageError("database unavailable")
        if self.bugs:
            self.bugs -= 1
            raise RuntimeError("a bug in the handler")
        self.messages.append(text)
        return Delivery(self.replies)


class Clock:
    """The gateway's monotonic clock, which a test may move forward instead of waiting."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


class Incidents(list[tuple[str, str, str]]):
    def __call__(self, kind: str, peer: str, detail: str) -> None:
        self.append((kind, peer, detail))

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self]


def station(**kwargs: Any) -> Callable[[], AstmStation]:
    return lambda: AstmStation(MessageEnd.TERMINATOR_RECORD, **kwargs)


@contextmanager
def served(
    loop: Loop,
    handler: Recorder,
    *,
    station_factory: Callable[[], AstmStation] | None = None,
    limits: AnalyzerLimits | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[tuple[tuple[str, int], Incidents]]:
    incidents = Incidents()
    server = AnalyzerTcpServer(
        station_factory or station(),
        handler,
        host="127.0.0.1",
        port=0,
        limits=limits,
        on_incident=incidents,
        clock=clock,
        tick=0.02,
    )
    loop.run(server.start())
    try:
        yield server.address, incidents
    finally:
        loop.run(server.close())


class Instrument:
    """The analyzer end over a blocking byte pipe (a TCP socket, or a pty master fd)."""

    sock: socket.socket  # when dialled over TCP

    def __init__(self, send: Callable[[bytes], None], recv: Callable[[float], bytes]) -> None:
        self.send = send
        self._recv = recv
        self._buf = b""

    @classmethod
    def dial(cls, address: tuple[str, int]) -> Instrument:
        sock = socket.create_connection(address, timeout=10)
        _DIALLED.append(sock)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        instrument = cls(sock.sendall, lambda timeout: sock.recv(4096))
        instrument.sock = sock
        return instrument

    def read(self, size: int = 1) -> bytes:
        while len(self._buf) < size:
            data = self._recv(10.0)
            if not data:
                raise ConnectionError("the gateway closed the line")
            self._buf += data
        out, self._buf = self._buf[:size], self._buf[size:]
        return out

    def expect(self, data: bytes) -> None:
        assert self.read(len(data)) == data

    def quiet_for(self, seconds: float) -> bool:
        """True when nothing arrives within ``seconds`` (only for asserting an absence that a
        correct gateway guarantees; a wrong one is caught, not a right one failed)."""
        if self._buf:
            return False
        readable, _, _ = select.select([self.sock], [], [], seconds)
        return not readable

    def send_message(self, text: bytes) -> list[object]:
        """Send ``text`` as an instrument does (``Sender``), until delivered or given up."""
        tx = Sender(Role.INSTRUMENT)
        tx.send_message(text, time.monotonic())
        events: list[object] = []
        while True:
            if out := tx.data_to_send():
                self.send(out)
            while (event := tx.next_event()) is not NEED_DATA:
                events.append(event)
            if events and isinstance(events[-1], MessageSent | SendFailed):
                return events
            tx.receive_data(self.read(), time.monotonic())

    def receive_message(self) -> bytes:
        """Answer the gateway's ENQ and take one message, as an instrument does (``Receiver``)."""
        rx = Receiver()
        assert self.read() == ENQ
        rx.receive_data(ENQ, time.monotonic())
        self.send(rx.data_to_send())
        while True:
            rx.receive_data(self.read(), time.monotonic())
            while (event := rx.next_event()) is not NEED_DATA:
                if isinstance(event, MessageReceived):
                    rx.message_stored(time.monotonic())
                    self.send(rx.data_to_send())
                    self.expect(EOT)
                    return event.text
            self.send(rx.data_to_send())

    def close(self) -> None:
        self.sock.close()


def establish(instrument: Instrument) -> None:
    instrument.send(ENQ)
    instrument.expect(ACK)


# --- over TCP: the listener --------------------------------------------------------------


def test_message_from_a_real_sender_is_delivered_once(loop: Loop) -> None:
    recorder = Recorder()
    with served(loop, recorder) as (address, incidents):
        instrument = Instrument.dial(address)
        events = instrument.send_message(LONG_MESSAGE)
        assert events[-1] == MessageSent()
        assert recorder.messages == [LONG_MESSAGE]
        instrument.close()
    assert incidents == []


def test_r25_bad_checksum_naked_then_retransmit_accepted(loop: Loop) -> None:
    recorder = Recorder()
    with served(loop, recorder) as (address, incidents):
        instrument = Instrument.dial(address)
        first, *middle, last = frames(MESSAGE)
        establish(instrument)
        instrument.send(first)
        instrument.expect(ACK)
        for frame in middle:
            instrument.send(corrupt(frame))
            instrument.expect(NAK)
            instrument.send(frame)
            instrument.expect(ACK)
        instrument.send(corrupt(last))
        instrument.expect(NAK)
        assert recorder.calls == 0
        instrument.send(last)
        instrument.expect(ACK)
        instrument.send(EOT)
        assert recorder.messages == [MESSAGE]
        instrument.close()
    assert incidents == []


def test_r25_six_failures_partial_not_stored(loop: Loop) -> None:
    recorder = Recorder()
    with served(loop, recorder) as (address, incidents):
        instrument = Instrument.dial(address)
        first, second, *_ = frames(MESSAGE)
        establish(instrument)
        instrument.send(first)
        instrument.expect(ACK)
        for _ in range(6):
            instrument.send(corrupt(second))
            instrument.expect(NAK)
        instrument.send(EOT)  # LIS1-A §6.5.1: the sender aborts after the sixth
        wait_until(lambda: "message_aborted" in incidents.kinds(), what="abort reported")
        assert "interrupted" in incidents[0][2]
        establish(instrument)  # the line is neutral again
        assert recorder.calls == 0
        instrument.close()


def test_r26_retransmission_after_lost_ack_acked_not_stored_twice(loop: Loop) -> None:
    recorder = Recorder()
    with served(loop, recorder) as (address, _):
        instrument = Instrument.dial(address)
        first, *rest = frames(MESSAGE)
        establish(instrument)
        instrument.send(first)
        instrument.expect(ACK)
        instrument.send(first)  # our ACK was "lost": the same frame number again
        instrument.expect(ACK)
        for frame in rest:
            instrument.send(frame)
            instrument.expect(ACK)
        instrument.send(rest[-1])  # the completing frame again: ACKed, not delivered again
        instrument.expect(ACK)
        instrument.send(EOT)
        establish(instrument)
        assert recorder.messages == [MESSAGE]
        assert recorder.calls == 1
        instrument.close()


def test_r27_frame_number_skip_naked(loop: Loop) -> None:
    recorder = Recorder()
    with served(loop, recorder) as (address, _):
        instrument = Instrument.dial(address)
        one, two, three, four = frames(MESSAGE)
        establish(instrument)
        for frame in (one, two):
            instrument.send(frame)
            instrument.expect(ACK)
        instrument.send(four)  # 2 → 4
        instrument.expect(NAK)
        for frame in (three, four):
            instrument.send(frame)
            instrument.expect(ACK)
        instrument.send(EOT)
        assert recorder.messages == [MESSAGE]
        instrument.close()


def test_r28_corrupt_intermediate_etb_frame_naked_at_once(loop: Loop) -> None:
    recorder = Recorder()
    with served(loop, recorder) as (address, _):
        instrument = Instrument.dial(address)
        sent = frames(LONG_MESSAGE)
        etb = [i for i, frame in enumerate(sent) if frame[-5:-4] == b"\x17"]
        assert len(etb) >= 2
        establish(instrument)
        for i, frame in enumerate(sent):
            if i == etb[1]:
                instrument.send(corrupt(frame))
                instrument.expect(NAK)  # answered now, not when the record is joined
            instrument.send(frame)
            instrument.expect(ACK)
        instrument.send(EOT)
        assert recorder.messages == [LONG_MESSAGE]
        instrument.close()


def test_r29_frame_over_247_chars_or_with_a_control_char_naked(loop: Loop) -> None:
    recorder = Recorder()
    with served(loop, recorder) as (address, incidents):
        instrument = Instrument.dial(address)
        body = b"1" + b"R|1|" + b"9" * 244 + b"\x03"  # 248 text characters
        too_long = b"\x02" + body + b"%02X\r\n" % (sum(body) % 256)
        body = b"1" + b"R|1|^^^GLU|5\x114\r\x03"  # DC1 inside the text, checksum right
        control = b"\x02" + body + b"%02X\r\n" % (sum(body) % 256)
        establish(instrument)
        instrument.send(too_long)
        instrument.expect(NAK)
        instrument.send(control)
        instrument.expect(NAK)
        for frame in frames(MESSAGE):
            instrument.send(frame)
            instrument.expect(ACK)
        instrument.send(EOT)
        assert recorder.messages == [MESSAGE]
        instrument.close()
    assert incidents == []


def test_r30_silence_after_ack_discards_and_returns_to_neutral(loop: Loop) -> None:
    recorder = Recorder()
    factory = station(receiver_timeout=0.3)  # the 30 s timer of LIS1-A §6.5.2, shortened
    with served(loop, recorder, station_factory=factory) as (address, incidents):
        instrument = Instrument.dial(address)
        first, second, *_ = frames(MESSAGE)
        establish(instrument)
        instrument.send(first)
        instrument.expect(ACK)
        wait_until(lambda: "message_aborted" in incidents.kinds(), what="receiver timeout")
        assert "timeout" in incidents[0][2]
        instrument.send(second)  # too late: the line is neutral, the frame is noise
        establish(instrument)  # a new transfer starts from frame 1
        instrument.send(build_frame(1, L + b"\r", final=True))
        instrument.expect(ACK)
        assert recorder.messages == [L + b"\r"]  # nothing of the discarded message
        instrument.close()


def test_r30_eot_before_terminator_record_delivers_nothing(loop: Loop) -> None:
    recorder = Recorder()
    with served(loop, recorder) as (address, incidents):
        instrument = Instrument.dial(address)
        establish(instrument)
        for frame in frames(MESSAGE)[:3]:  # H, P, R: end frames, but no L record
            instrument.send(frame)
            instrument.expect(ACK)
        instrument.send(EOT)
        wait_until(lambda: "message_aborted" in incidents.kinds(), what="abort reported")
        establish(instrument)
        assert recorder.calls == 0
        instrument.close()


def test_r31_enq_contention_gateway_yields(loop: Loop) -> None:
    recorder, clock = Recorder(), Clock()
    recorder.replies = (ANSWER,)  # a host-query answer the gateway must send
    with served(loop, recorder, clock=clock) as (address, incidents):
        instrument = Instrument.dial(address)
        assert instrument.send_message(MESSAGE)[-1] == MessageSent()
        recorder.replies = ()  # one answer only
        instrument.expect(ENQ)  # the gateway bids for the line for its answer ...
        instrument.send(ENQ)  # ... and so does the instrument: contention
        instrument.send(ENQ)  # the instrument won; it bids again (after its 1 s)
        instrument.expect(ACK)  # the gateway yielded: it ACKs the next ENQ, not the crossing one
        for frame in frames(LONG_MESSAGE):
            instrument.send(frame)
            instrument.expect(ACK)
        instrument.send(EOT)
        assert recorder.messages == [MESSAGE, LONG_MESSAGE]
        clock.offset += 20.0  # the computer system's back-off (LIS1-A §6.2), not waited for
        assert instrument.receive_message() == ANSWER  # its own send, retried later
        instrument.close()
    assert incidents == []


def test_r32_tcp_coalesced_and_split_frames(loop: Loop) -> None:
    recorder = Recorder()
    stream = ENQ + b"".join(frames(LONG_MESSAGE)) + EOT
    replies = 1 + len(frames(LONG_MESSAGE))
    with served(loop, recorder) as (address, incidents):

        @settings(max_examples=25, deadline=None)
        @given(st.lists(st.integers(0, len(stream)), max_size=12))
        @example([])  # everything coalesced into one segment
        @example(list(range(len(stream))))  # one byte per segment
        def exchange(cuts: list[int]) -> None:
            before = len(recorder.messages)
            instrument = Instrument.dial(address)
            points = [0, *sorted(set(cuts)), len(stream)]
            for start, end in itertools.pairwise(points):
                if end > start:
                    instrument.send(stream[start:end])
            instrument.expect(ACK * replies)
            assert recorder.messages[before:] == [LONG_MESSAGE]
            instrument.close()

        exchange()
    assert "message_aborted" not in incidents.kinds()


def test_garbage_between_frames_is_ignored(loop: Loop) -> None:
    recorder = Recorder()
    with served(loop, recorder) as (address, incidents):
        instrument = Instrument.dial(address)
        instrument.send(b"\x00\xff noise on a neutral line \r\n")
        establish(instrument)
        for frame in frames(MESSAGE):
            instrument.send(b"\xfe\x00junk\r\n" + frame + b"\x13\x11")
            instrument.expect(ACK)
        instrument.send(EOT)
        assert recorder.messages == [MESSAGE]
        instrument.close()
    assert incidents == []


def test_link_dropped_mid_message_nothing_delivered(loop: Loop) -> None:
    recorder = Recorder()
    with served(loop, recorder) as (address, incidents):
        instrument = Instrument.dial(address)
        *head, last = frames(MESSAGE)
        establish(instrument)
        for frame in head:
            instrument.send(frame)
            instrument.expect(ACK)
        instrument.send(last[: len(last) // 2])  # the completing frame, cut by the drop
        instrument.sock.shutdown(socket.SHUT_WR)
        assert instrument.sock.recv(16) == b""  # closed by the gateway: no ACK for it
        wait_until(lambda: "connection_lost_mid_message" in incidents.kinds())
        assert recorder.calls == 0
        instrument.close()


def test_storage_error_naks_and_the_retransmit_is_delivered_once_stored(loop: Loop) -> None:
    recorder = Recorder()
    recorder.storage_failures = 2
    with served(loop, recorder) as (address, _):
        instrument = Instrument.dial(address)
        events = instrument.send_message(MESSAGE)
        assert events[-1] == MessageSent()
        assert sum(1 for e in events if isinstance(e, FrameRetransmitted)) == 2
        assert recorder.calls == 3
        assert recorder.messages == [MESSAGE]
        instrument.close()


def test_handler_bug_is_logged_naked_and_the_line_stays_up(
    loop: Loop, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()
    recorder.bugs = 1
    with served(loop, recorder) as (address, _):
        instrument = Instrument.dial(address)
        assert instrument.send_message(MESSAGE)[-1] == MessageSent()  # after one NAK
        assert recorder.calls == 2
        assert recorder.messages == [MESSAGE]
        instrument.close()
    failures = [r for r in caplog.records if r.exc_info and "handler failed" in r.getMessage()]
    assert len(failures) == 1


def gated(loop: Loop, recorder: Recorder) -> asyncio.Event:
    """Make ``recorder`` hold every message until the returned event is set (on ``loop``)."""

    async def make_gate() -> asyncio.Event:
        return asyncio.Event()

    recorder.gate = loop.run(make_gate())
    return recorder.gate


def send_until_stored(instrument: Instrument, recorder: Recorder, *, then: bytes = b"") -> None:
    """Send MESSAGE frame by frame, the completing one followed by ``then``, and return once the
    handler holds it (its ACK is not due before the handler returns)."""
    *head, last = frames(MESSAGE)
    establish(instrument)
    for frame in head:
        instrument.send(frame)
        instrument.expect(ACK)
    instrument.send(last + then)
    wait_until(recorder.entered.is_set, what="handler called")


def test_completing_frame_ack_written_only_after_the_handler_returned(loop: Loop) -> None:
    recorder = Recorder()
    gate = gated(loop, recorder)
    with served(loop, recorder) as (address, _):
        instrument = Instrument.dial(address)
        send_until_stored(instrument, recorder, then=EOT)
        assert instrument.quiet_for(0.2)  # the handler has not returned: no ACK yet
        loop.call(gate.set)
        instrument.expect(ACK)
        assert recorder.messages == [MESSAGE]
        instrument.close()


def test_connection_limit_per_peer_refuses_and_reports(loop: Loop) -> None:
    recorder = Recorder()
    limits = AnalyzerLimits(max_connections_per_peer=1)
    with served(loop, recorder, limits=limits) as (address, incidents):
        first = Instrument.dial(address)
        establish(first)  # the first is being served
        second = Instrument.dial(address)
        assert second.sock.recv(16) == b""  # closed at once
        assert incidents.kinds() == ["connection_refused"]
        first.close()
        second.close()


def test_an_idle_connection_is_closed_when_an_idle_timeout_is_set(loop: Loop) -> None:
    with served(loop, Recorder(), limits=AnalyzerLimits(idle_timeout=0.2)) as (address, _):
        instrument = Instrument.dial(address)
        establish(instrument)
        assert instrument.sock.recv(16) == b""  # nothing more sent: closed by the gateway
        instrument.close()


def test_a_slow_sender_whose_transfer_outlasts_the_idle_timeout_stays_open(
    loop: Loop,
) -> None:
    """Frames taken straight from the transport callback count as activity: a sender whose
    whole transfer lasts longer than the idle timeout, but never pauses that long, is served."""
    idle = 0.6
    recorder = Recorder()
    with served(loop, recorder, limits=AnalyzerLimits(idle_timeout=idle)) as (address, _):
        instrument = Instrument.dial(address)
        began = time.monotonic()
        establish(instrument)
        for frame in frames(MESSAGE):
            # The input this test is about: pauses a third of the timeout long, so a loaded
            # machine has 0.4 s of slack before a correct gateway could time the line out.
            time.sleep(idle / 3)
            instrument.send(frame)
            instrument.expect(ACK)
        instrument.send(EOT)
        assert time.monotonic() - began > idle
        assert recorder.messages == [MESSAGE]
        instrument.close()


def test_a_message_stored_for_longer_than_the_idle_timeout_is_still_acknowledged(
    loop: Loop,
) -> None:
    """An analyzer waiting for the ACK of its completing frame is not idle: the line stays
    open however long the store takes, and the ACK goes out once it is stored."""
    recorder = Recorder()
    gate = gated(loop, recorder)
    with served(loop, recorder, limits=AnalyzerLimits(idle_timeout=0.2)) as (address, _):
        instrument = Instrument.dial(address)
        send_until_stored(instrument, recorder)
        assert instrument.quiet_for(0.6)  # neither an ACK nor a close (EOF reads as readable)
        loop.call(gate.set)
        instrument.expect(ACK)
        assert recorder.messages == [MESSAGE]
        instrument.close()


class BuggyStation(AstmStation):
    """A station with a bug that a given byte sequence triggers."""

    def receive_data(self, data: bytes, now: float) -> None:
        if b"BUG" in data:
            raise RuntimeError("a bug in the station")
        super().receive_data(data, now)


def test_a_station_bug_closes_that_line_only_and_is_logged(
    loop: Loop, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()
    factory = lambda: BuggyStation(MessageEnd.TERMINATOR_RECORD)  # noqa: E731
    with served(loop, recorder, station_factory=factory) as (address, _):
        broken = Instrument.dial(address)
        establish(broken)
        broken.send(b"BUG")
        assert broken.sock.recv(16) == b""  # closed by the gateway
        other = Instrument.dial(address)
        assert other.send_message(MESSAGE)[-1] == MessageSent()
        assert recorder.messages == [MESSAGE]
        other.close()
        broken.close()
    failures = [r for r in caplog.records if r.exc_info and "connection failed" in r.getMessage()]
    assert len(failures) == 1
    assert "a bug in the station" in str(failures[0].exc_info[1])  # type: ignore[index]


def test_a_peer_flooding_while_its_message_is_stored_is_paused_not_buffered(loop: Loop) -> None:
    """While the completing frame waits for its commit the gateway stops reading at a bound, so
    TCP pushes back on the sender; once stored, the ACK goes out and the line carries on."""
    recorder = Recorder()
    gate = gated(loop, recorder)
    with served(loop, recorder) as (address, _):
        instrument = Instrument.dial(address)
        send_until_stored(instrument, recorder)
        flood, sent, limit = b"\x00" * 65536, 0, 256 * 1024 * 1024
        instrument.sock.setblocking(False)
        while sent < limit:  # until TCP refuses more: the gateway is not reading
            if not select.select([], [instrument.sock], [], 1.0)[1]:
                break
            sent += instrument.sock.send(flood)
        assert sent < limit, "the gateway kept reading while its handler was busy"
        instrument.sock.setblocking(True)
        instrument.sock.settimeout(10)
        loop.call(gate.set)
        instrument.expect(ACK)  # the completing frame, once stored
        assert recorder.messages == [MESSAGE]
        instrument.close()


# --- over TCP: the client, dialling a converter ------------------------------------------


def test_tcp_client_reconnects_after_the_converter_restarts(loop: Loop) -> None:
    recorder, incidents = Recorder(), Incidents()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    client = AnalyzerTcpClient(
        station(),
        recorder,
        host="127.0.0.1",
        port=port,
        backoff=Backoff(initial=0.02, maximum=0.1),
        on_incident=incidents,
        tick=0.02,
    )
    loop.run(client.start())
    try:
        listener.settimeout(10)
        conn, _ = listener.accept()
        wait_until(lambda: client.connected, what="client connected")
        converter = Instrument(conn.sendall, lambda timeout: conn.recv(4096))
        assert converter.send_message(MESSAGE)[-1] == MessageSent()
        listener.close()  # the converter goes away (first its port, so no redial lands) ...
        conn.close()
        wait_until(lambda: not client.connected, what="loss noticed")
        wait_until(lambda: "line_down" in incidents.kinds(), what="redial refused")
        listener = socket.create_server(("127.0.0.1", port))  # ... and comes back
        listener.settimeout(10)
        conn, _ = listener.accept()
        wait_until(lambda: client.connected and client.connections == 2, what="reconnected")
        converter = Instrument(conn.sendall, lambda timeout: conn.recv(4096))
        assert converter.send_message(LONG_MESSAGE)[-1] == MessageSent()
        assert recorder.messages == [MESSAGE, LONG_MESSAGE]
        assert incidents.kinds()[0] == "connection_lost"
        conn.close()
    finally:
        loop.run(client.close())
        listener.close()


def test_redial_backoff_grows_to_its_maximum_and_resets_after_a_healthy_line() -> None:
    delays: list[float] = []
    opened: list[str] = []
    clock = Clock()
    outcomes = ["fail", "fail", "fail", "fail", "short", "fail", "long", "fail", "stop"]

    class Ended:
        def __init__(self, lasts: float) -> None:
            self.lasts = lasts

        async def read(self) -> bytes:
            clock.offset += self.lasts  # how long the line stayed up, without waiting
            return b""

        def write(self, data: bytes) -> None: ...

        async def drain(self) -> None: ...

        def close(self) -> None: ...

    async def open_stream() -> LineStream:
        outcome = outcomes.pop(0)
        opened.append(outcome)
        if outcome == "fail":
            raise ConnectionRefusedError("refused")
        if outcome == "stop":
            raise asyncio.CancelledError
        return Ended(31.0 if outcome == "long" else 1.0)  # past healthy_after, or not

    async def sleep(delay: float) -> None:
        delays.append(delay)

    async def main() -> None:
        line = Redialler(
            open_stream,
            station(),
            Recorder(),
            peer="test",
            backoff=Backoff(initial=1.0, maximum=5.0, healthy_after=30.0),
            on_incident=None,
            clock=clock,
            sleep=sleep,
        )
        line.start()
        task = line._task
        assert task is not None
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 1.0, 2.0]


# --- over a serial line: a pseudo-terminal pair ------------------------------------------


class Pty:
    """A pseudo-terminal pair; the gateway opens ``link`` (a symlink to the slave) with pyserial,
    the test plays the instrument on the master side."""

    def __init__(self, link: Path) -> None:
        self.master, slave = os.openpty()
        self.slave_name = os.ttyname(slave)
        os.close(slave)
        tmp = link.with_suffix(".new")
        tmp.symlink_to(self.slave_name)
        tmp.replace(link)
        self.instrument = Instrument(self._write, self._read)

    def _write(self, data: bytes) -> None:
        os.write(self.master, data)

    def _read(self, timeout: float) -> bytes:
        readable, _, _ = select.select([self.master], [], [], timeout)
        if not readable:
            raise TimeoutError("nothing from the gateway")
        return os.read(self.master, 4096)

    def close(self) -> None:
        if self.master >= 0:
            os.close(self.master)
            self.master = -1

    def settings(self) -> list[Any]:
        fd = os.open(self.slave_name, os.O_RDWR | os.O_NOCTTY)
        try:
            return termios.tcgetattr(fd)
        finally:
            os.close(fd)


@contextmanager
def serial_line(
    loop: Loop, tmp_path: Path, recorder: Recorder, **station_args: Any
) -> Iterator[tuple[AnalyzerSerialLine, Pty, Incidents]]:
    link = tmp_path / "ttyANALYZER"
    pty, incidents = Pty(link), Incidents()
    settings = SerialSettings(str(link), baudrate=19200, bytesize=7, parity="E", stopbits=2)
    line = AnalyzerSerialLine(
        settings,
        station(**station_args),
        recorder,
        backoff=Backoff(initial=0.02, maximum=0.1),
        on_incident=incidents,
        tick=0.02,
    )
    loop.run(line.start())
    try:
        wait_until(lambda: line.connected, what="port open")
        yield line, pty, incidents
    finally:
        loop.run(line.close())
        pty.close()


def test_serial_message_delivered_with_the_configured_line_settings(
    loop: Loop, tmp_path: Path
) -> None:
    recorder = Recorder()
    with serial_line(loop, tmp_path, recorder) as (line, pty, incidents):
        attrs = pty.settings()  # what the gateway set on the device
        assert attrs[4] == attrs[5] == termios.B19200
        assert attrs[2] & termios.CSTOPB
        # A pty forces 8 bits without parity whatever it is told, so those two are checked on
        # the port object the same settings open (on a pty of its own).
        spare = Pty(tmp_path / "spare")
        port = open_port(dataclasses.replace(line.settings, port=str(tmp_path / "spare")))
        assert (port.bytesize, port.parity, port.stopbits, port.baudrate) == (7, "E", 2, 19200)
        port.close()
        spare.close()
        assert pty.instrument.send_message(LONG_MESSAGE)[-1] == MessageSent()
        assert recorder.messages == [LONG_MESSAGE]
    assert incidents == []


def test_r32_noise_on_serial_naked_and_alarm(loop: Loop, tmp_path: Path) -> None:
    recorder = Recorder()
    with serial_line(loop, tmp_path, recorder, alarm_after=3) as (_, pty, incidents):
        instrument = pty.instrument
        instrument.send(b"\xff\x00\x7f")  # noise on the neutral line: ignored
        establish(instrument)
        first, *rest = frames(MESSAGE)
        noisy = first[:5] + b"\xf3\x1c" + first[5:]  # two bytes of noise inside the frame
        for _ in range(3):
            instrument.send(noisy)
            instrument.expect(NAK)
        wait_until(lambda: "link_alarm" in incidents.kinds(), what="link alarm")
        assert "3 frames in a row" in dict((k, d) for k, _, d in incidents)["link_alarm"]
        for frame in (first, *rest):
            instrument.send(frame)
            instrument.expect(ACK)
        instrument.send(EOT)
        assert recorder.messages == [MESSAGE]
        assert incidents.kinds() == ["link_alarm"]


def test_serial_port_reopened_after_it_disappears(loop: Loop, tmp_path: Path) -> None:
    recorder = Recorder()
    with serial_line(loop, tmp_path, recorder) as (line, pty, incidents):
        pty.close()  # the USB adapter is pulled: the device goes away
        wait_until(lambda: "connection_lost" in incidents.kinds(), what="loss noticed")
        wait_until(lambda: "line_down" in incidents.kinds(), what="reopen refused")
        replugged = Pty(tmp_path / "ttyANALYZER")  # plugged in again, at a new device node
        try:
            wait_until(lambda: line.connected and line.connections == 2, what="reopened")
            assert replugged.instrument.send_message(MESSAGE)[-1] == MessageSent()
            assert recorder.messages == [MESSAGE]
        finally:
            replugged.close()
