"""The analyzer simulator against a real peer: a test-side station running ``e1381.Receiver`` (and,
for host-query answers, a ``Sender``) over a real TCP socket and over a real pseudo-terminal pair,
with the simulator on pyserial on the pty's slave side. What the peer received is the verdict.

The peer runs its own event loop in a thread; the simulator runs in the test's thread with
``asyncio.run``. Conditions on the peer's side are awaited with ``wait_until``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
import tty
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.gateway_process import VETGATEWAY, gateway_environment
from tests.waiting import wait_until
from vetgateway.adapters.astm.e1381 import (
    NEED_DATA,
    DuplicateFrame,
    FrameRejected,
    MessageAborted,
    MessageReceived,
    Receiver,
    Role,
)
from vetgateway.adapters.astm.e1381_sender import MessageSent, Sender
from vetgateway.adapters.astm.simulator import (
    SimulationReport,
    SimulatorOptions,
    format_summary,
    simulate,
)
from vetgateway.adapters.astm.simulator_faults import FaultSpec
from vetgateway.adapters.astm.simulator_lines import (
    Endpoint,
    SerialDevice,
    SimulatorError,
    TcpDial,
    TcpListen,
)
from vetgateway.adapters.astm.transcripts import has_query, read_transcript

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "astm" / "simulator"
T = TypeVar("T")

H = b"H|\\^&|||SIMVET^1|||||||P|LIS2-A2"
LONG_COMMENT = b"C|1|I|" + b"lipaemic sample, repeat advised " * 12 + b"|G"  # 390: ETB frames
M1 = b"\r".join([H, b"P|1||PMS-1", b"R|1|^^^GLU|5.4|mmol/L||N||F", LONG_COMMENT, b"L|1|N"]) + b"\r"
M2 = b"\r".join([H, b"P|1||PMS-2", b"R|1|^^^ALT|88|U/L||N||F", b"L|1|N"]) + b"\r"
QUERY = read_transcript((FIXTURES / "host_query.txt").read_bytes()).messages[0]
ANSWER = b"\r".join([b"H|\\^&|||VETGATEWAY", b"P|1", b"O|1|SMP-2001||^^^GLU|R", b"L|1|N"]) + b"\r"


class Peer:
    """The gateway's side of the line, as plain as LIS1-A allows: a ``Receiver`` that stores each
    message at once (then ACKs it), and a ``Sender`` (computer role) that answers a query.

    ``contend_once`` answers the simulator's first ENQ with an ENQ of its own (LIS1-A §6.2,
    contention); ``mute`` never answers anything (the simulator's 15 s timer must fire).
    """

    def __init__(
        self,
        *,
        answer: bytes | None = None,
        contend_once: bool = False,
        mute: bool = False,
        dials: int = 1,
    ) -> None:
        self.answer, self.contend, self.mute, self.dials = answer, contend_once, mute, dials
        self.messages: list[bytes] = []
        self.rejected: list[str] = []
        self.duplicates = 0
        self.aborted = 0
        self.connections = 0
        self.closed_mid_transfer = 0
        self.closed = 0
        self.answers_sent = 0
        self.received_bytes = bytearray()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def call(self, coro: Awaitable[T]) -> T:
        async def wrapper() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(10)

    def serve_tcp(self) -> int:
        async def start() -> asyncio.Server:
            return await asyncio.start_server(self._accepted, "127.0.0.1", 0)

        self._server = self.call(start())
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def dial(self, host: str, port: int) -> None:
        """Called from the simulator's loop: dial it from the peer's loop, and again after the
        line is cut, ``dials`` times in all (as a gateway dialling a converter does)."""

        async def connect() -> None:
            for _ in range(self.dials):
                reader, writer = await asyncio.open_connection(host, port)
                await self._accepted(reader, writer)

        self._loop.call_soon_threadsafe(self._spawn, connect())

    def serve_fd(self, fd: int) -> None:
        """Serve the master side of a pty."""

        def start() -> None:
            incoming: asyncio.Queue[bytes] = asyncio.Queue()
            self._loop.add_reader(fd, lambda: incoming.put_nowait(os.read(fd, 4096)))

            def write(data: bytes) -> None:
                os.write(fd, data)

            async def close() -> None:
                self._loop.remove_reader(fd)

            self._spawn(self._serve(incoming.get, write, close))

        self._loop.call_soon_threadsafe(start)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def close() -> None:
            writer.close()
            await writer.wait_closed()

        await self._serve(lambda: reader.read(4096), writer.write, close)

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def run() -> None:
            await coro

        task = self._loop.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(
        self,
        read: Callable[[], Awaitable[bytes]],
        write: Callable[[bytes], None],
        close: Callable[[], Awaitable[None]],
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        rx, tx = Receiver(), Sender(Role.COMPUTER)
        pending: bytes | None = None
        try:
            while True:
                try:
                    data = await asyncio.wait_for(read(), 0.02)
                except TimeoutError:
                    data = None
                if data == b"":
                    if not rx.idle:
                        self.closed_mid_transfer += 1
                    return
                now = time.monotonic()
                if data:
                    self.received_bytes += data
                    if self.mute:
                        continue
                    if self.contend and data == b"\x05":
                        self.contend = False
                        write(b"\x05")  # our own bid crossed theirs
                        continue
                    if tx.awaiting_reply:
                        tx.receive_data(data, now)
                        data = tx.take_unconsumed()
                    if data:
                        rx.receive_data(data, now)
                while (event := rx.next_event()) is not NEED_DATA:
                    if isinstance(event, MessageReceived):
                        self.messages.append(event.text)
                        rx.message_stored(now)
                        if self.answer is not None and has_query(event.text):
                            pending = self.answer
                    elif isinstance(event, FrameRejected):
                        self.rejected.append(event.reason)
                    elif isinstance(event, DuplicateFrame):
                        self.duplicates += 1
                    elif isinstance(event, MessageAborted):
                        self.aborted += 1
                write(rx.data_to_send())
                if pending is not None and rx.idle and not tx.busy:
                    tx.send_message(pending, now)
                    pending = None
                if rx.idle or tx.awaiting_reply:
                    tx.check_timeouts(now)
                while (sent := tx.next_event()) is not NEED_DATA:
                    self.answers_sent += isinstance(sent, MessageSent)
                write(tx.data_to_send())
        finally:
            self.closed += 1
            await close()

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        self.call(shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def peer_factory() -> Iterator[Callable[..., Peer]]:
    peers: list[Peer] = []

    def make(**kwargs: object) -> Peer:
        peer = Peer(**kwargs)  # type: ignore[arg-type]
        peers.append(peer)
        return peer

    yield make
    for peer in peers:
        peer.stop()


def run(
    endpoint: Endpoint, messages: list[bytes], *faults: str, **options: object
) -> SimulationReport:
    specs = tuple(FaultSpec.parse(f) for f in faults)
    opts = SimulatorOptions(faults=specs, **options)  # type: ignore[arg-type]
    return asyncio.run(simulate(endpoint, messages, opts))


def over_tcp(peer: Peer) -> TcpDial:
    return TcpDial("127.0.0.1", peer.serve_tcp())


# --- over TCP ----------------------------------------------------------------------------


def test_messages_reach_the_receiver_intact_in_order(peer_factory: Callable[..., Peer]) -> None:
    peer = peer_factory()
    report = run(over_tcp(peer), [M1, M2], repeat=2)
    assert peer.messages == [M1, M2, M1, M2]
    assert (report.sent, report.acknowledged, report.failed) == (4, 4, 0)
    assert report.stats.retransmissions == report.stats.naks_received == 0
    assert report.ok
    assert peer.rejected == []
    assert peer.connections == 1


def test_r25_bad_checksum_is_nakked_and_the_retransmit_stored(
    peer_factory: Callable[..., Peer],
) -> None:
    peer = peer_factory()
    report = run(over_tcp(peer), [M1, M2], "bad-checksum@2", seed=4)
    assert peer.messages == [M1, M2]
    assert peer.rejected == ["bad_checksum"]
    assert report.stats.naks_received == 1
    assert report.stats.retransmissions == 1
    assert report.corrupted_frames == 1
    assert report.ok


def test_r26_lost_ack_resends_the_same_frame_which_is_acked_and_discarded(
    peer_factory: Callable[..., Peer],
) -> None:
    peer = peer_factory()
    report = run(over_tcp(peer), [M1], "lost-ack", seed=1)
    assert peer.messages == [M1]
    assert peer.duplicates == 1
    assert peer.rejected == []
    assert report.stats.retransmissions == 1
    assert report.stats.naks_received == 0
    assert report.garbled_acks == 1


def test_r32_garbage_between_frames_is_ignored(peer_factory: Callable[..., Peer]) -> None:
    peer = peer_factory()
    report = run(over_tcp(peer), [M1, M2], "garbage", seed=9)
    assert peer.messages == [M1, M2]
    assert peer.rejected == []
    assert report.noise_bytes > 0
    assert report.stats.naks_received == 0


def test_r25_always_bad_checksum_stores_nothing_and_is_reported_as_expected(
    peer_factory: Callable[..., Peer],
) -> None:
    peer = peer_factory()
    report = run(over_tcp(peer), [M1, M2], "always-bad-checksum@1")
    assert peer.messages == [M2]  # the next message still goes through
    assert peer.rejected == ["bad_checksum"] * 6
    wait_until(lambda: peer.aborted == 1, what="the partial message discarded at EOT")
    assert report.stats.naks_received == 6
    assert report.stats.retransmissions == 5
    (first, second) = report.outcomes
    assert (first.delivered, first.reason, first.failure_expected) == (False, "too_many_naks", True)
    assert second.delivered
    assert (report.failed, report.expected_failures, report.unexpected) == (1, 1, 0)
    assert report.ok


def test_r30_drop_mid_message_delivers_it_once_complete(peer_factory: Callable[..., Peer]) -> None:
    peer = peer_factory()
    report = run(over_tcp(peer), [M1, M2], "drop-mid-message@1")
    assert peer.messages == [M1, M2]
    assert peer.connections == 2
    wait_until(lambda: peer.closed_mid_transfer == 1, what="the first connection cut mid-message")
    assert (report.drops, report.reconnects) == (1, 1)
    assert report.outcomes[0].attempts == 2
    assert report.ok


def test_r31_contention_the_instrument_wins(peer_factory: Callable[..., Peer]) -> None:
    peer = peer_factory(contend_once=True)
    # time_scale 5: the instrument's 1 s back-off (LIS1-A §6.2) takes 0.2 s.
    report = run(over_tcp(peer), [M2], time_scale=5.0)
    assert peer.messages == [M2]
    assert report.stats.contentions == 1
    assert report.ok


def test_no_reply_in_15_s_gives_up_with_eot(peer_factory: Callable[..., Peer]) -> None:
    peer = peer_factory(mute=True)
    report = run(over_tcp(peer), [M2], time_scale=60.0)  # LIS1-A §6.5.2's 15 s in 0.25 s
    (outcome,) = report.outcomes
    assert (outcome.delivered, outcome.reason) == (False, "timeout")
    assert not report.ok
    assert "result: FAILED: 1 message(s) went unexpectedly" in format_summary(report)
    wait_until(lambda: peer.received_bytes == b"\x05\x04", what="ENQ, then EOT after the timeout")


def test_host_query_answer_is_received(peer_factory: Callable[..., Peer]) -> None:
    peer = peer_factory(answer=ANSWER)
    report = run(over_tcp(peer), [QUERY, M2], expect_replies=True, reply_timeout=10.0)
    assert peer.messages == [QUERY, M2]
    assert report.replies == [ANSWER]
    assert report.replies_missing == 0
    assert peer.answers_sent == 1
    assert report.ok


def test_a_missing_answer_fails_the_run(peer_factory: Callable[..., Peer]) -> None:
    peer = peer_factory()
    report = run(over_tcp(peer), [QUERY], expect_replies=True, reply_timeout=0.2)
    assert report.acknowledged == 1
    assert report.replies_missing == 1
    assert not report.ok


def test_listen_waits_for_the_gateway_to_dial(peer_factory: Callable[..., Peer]) -> None:
    peer = peer_factory(dials=2)
    endpoint = TcpListen("127.0.0.1", 0, on_listening=peer.dial, accept_timeout=10.0)
    report = run(endpoint, [M1], "drop-mid-message", "bad-checksum", seed=2)
    assert peer.messages == [M1]
    assert peer.connections == 2  # the gateway dialled again after the cut
    assert peer.rejected == ["bad_checksum"]
    assert report.ok


def test_drop_mid_message_is_refused_on_a_serial_line() -> None:
    with pytest.raises(SimulatorError, match="drop-mid-message needs a TCP line"):
        run(SerialDevice("/dev/null"), [M1], "drop-mid-message")


def test_baud_pacing_writes_at_the_line_rate(peer_factory: Callable[..., Peer]) -> None:
    peer = peer_factory()
    endpoint = TcpDial("127.0.0.1", peer.serve_tcp(), pace=20000.0)
    report = run(endpoint, [M2])
    assert peer.messages == [M2]
    assert report.ok


# --- over a pseudo-terminal (serial) ------------------------------------------------------


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    try:
        yield master, os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


def test_serial_line_with_a_bad_checksum_and_an_answer(
    pty_pair: tuple[int, str], peer_factory: Callable[..., Peer]
) -> None:
    master, device = pty_pair
    peer = peer_factory(answer=ANSWER)
    peer.serve_fd(master)
    endpoint = SerialDevice(device, baud=9600, parity="E", bytesize=7, stopbits=1)
    report = run(endpoint, [M1, QUERY], "bad-checksum@1", expect_replies=True, seed=5)
    assert peer.messages == [M1, QUERY]
    assert peer.rejected == ["bad_checksum"]
    assert report.replies == [ANSWER]
    assert (report.stats.naks_received, report.stats.retransmissions) == (1, 1)
    assert report.ok


# --- the command line ---------------------------------------------------------------------


def test_cli_simulate_astm_over_tcp(tmp_path: Path, peer_factory: Callable[..., Peer]) -> None:
    peer = peer_factory()
    port = peer.serve_tcp()
    result = subprocess.run(
        [
            VETGATEWAY,
            "simulate",
            "astm",
            "--tcp",
            f"127.0.0.1:{port}",
            "--fault",
            "bad-checksum@1",
            "--fault",
            "always-bad-checksum@3",
            "--seed",
            "3",
            str(FIXTURES / "two_messages_crlf.txt"),
            str(FIXTURES / "framed_capture_retransmits.astm"),
        ],
        env=gateway_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == [
        "message 1: acknowledged; faults: bad-checksum",
        "message 2: acknowledged",
        "message 3: failed (too_many_naks); faults: always-bad-checksum",
    ]
    assert lines[3] == (
        "sent 3, acknowledged 2, failed 1 (1 expected), retransmissions 6, NAKs received 7"
    )
    assert lines[-1] == "result: ok"
    assert "framed_capture_retransmits.astm: frame 2: bad checksum" in result.stderr
    assert len(peer.messages) == 2


def test_cli_exits_1_when_a_message_fails_unexpectedly(
    tmp_path: Path, peer_factory: Callable[..., Peer]
) -> None:
    peer = peer_factory(mute=True)
    port = peer.serve_tcp()
    result = subprocess.run(
        [
            *(VETGATEWAY, "simulate", "astm", "--tcp", f"127.0.0.1:{port}"),
            *("--time-scale", "60", str(FIXTURES / "host_query.txt")),
        ],
        env=gateway_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "message 1: failed (timeout)" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("result: FAILED")
