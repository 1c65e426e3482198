"""Acknowledged HL7 messages per second over MLLP: the real gateway process (SQLite, PostgreSQL)
beside a bare asyncio MLLP server that acknowledges without storing, measured in the same run
with the same client and the same messages; then ACK latency at a steady offered rate.

    .venv/bin/python bench/mllp.py [--seconds 3] [--rate 1000] [--postgres URL] [--amqp URL]

Gateways: ``sqlite`` and ``postgresql`` are ``vetgateway run`` on its own, so its in-process
pipeline parses, maps and stores every message it ACKs on the same two cores. ``pg+rabbitmq`` is
the scale-out set-up: PostgreSQL and a RabbitMQ broker (a scratch queue, deleted afterwards), with
the pipeline's workers on other hosts (none run here), so the gateway only stores, ACKs and
dispatches.

Messages: distinct ORU^R01 (unique MSH-10), about 5 kB with 20 OBX. Throughput: N senders, each on
its own connection, each sending its next message as soon as the previous one was acknowledged
(closed loop); only AAs are counted. Latency: an open-loop sender that schedules message i at
start + i/rate on a fixed clock, spread over several connections (pipelined, MLLP answers in
order), and measures from the *scheduled* time to the ACK, so a stall is not hidden by the sender
slowing down with it.

The gateway and the bare server each run in a process of their own; the client is one asyncio
process using transports and protocols, not streams. All three run on the event loop the gateway
picks (``VETGATEWAY_EVENT_LOOP``, default uvloop where installed), so the bare server is the same
loop without the store. Each line shows the client's CPU use: near
100 % means the client, not the server, set the pace. Goals (issue 3): PostgreSQL with 16 senders
>= 5,000 durable ACKs/s and >= 0.25x the bare server; p99 ACK latency < 20 ms at 1,000 msg/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import cast

from _processes import (
    ADMIN_URL,
    LOOP,
    LOOP_NAME,
    VETGATEWAY,
    delete_queues,
    gateway_env,
    postgres_database,
    process_listening,
    split,
)
from vetgateway import event_loop

START, END = b"\x0b", b"\x1c\r"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
SENDERS = (1, 16)
LATENCY_CONNECTIONS = 8


def oru_r01(control_id: str) -> bytes:
    """About 5 kB: MSH, PID, ORC, OBR and 20 OBX, each OBX with a reference-range comment."""
    segments = [
        f"MSH|^~\\&|IDEXX|REFLAB|VETGATEWAY|CLINIC|20261126120000||ORU^R01^ORU_R01|{control_id}"
        "|P|2.5.1||||||UNICODE UTF-8",
        "PID|1||PMS-4711^^^CLINIC^PI~985112345678901^^^ISO^MC||REX^^^^^^L|||M|||1 Main St^^"
        "Springfield^^12345||||||||||||||||||||CANINE^Canine^L|LABRADOR^Labrador retriever^L",
        f"ORC|RE|ORD-{control_id}|LAB-{control_id}||CM||||20261126113000|||1234^VET^ANNA",
        f"OBR|1|ORD-{control_id}|LAB-{control_id}|CHEM25^Chemistry panel 25^L|||20261126113000"
        "||||||||1234^VET^ANNA||||||20261126115500||CH|F",
    ]
    segments += [
        f"OBX|{i}|NM|{2300 + i}-{i % 10}^Analyte {i} in serum^LN^A{i}^Analyte {i}^L||"
        f"{4 + i / 10:.2f}|mmol/L^^UCUM|3.90-7.80|N|||F|||20261126115500|"
        "REFLAB^Reference laboratory^L|TECH01^Technician^One|CATALYST-ONE^IDEXX^SN-12345|"
        "20261126115400||||Adult dog reference interval"
        for i in range(1, 21)
    ]
    return ("\r".join(segments) + "\r").encode()


def framed(control_id: str) -> bytes:
    return START + oru_r01(control_id) + END


# --- the bare server: acknowledges each frame at once, stores nothing --------------------------


class BareMllp(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport on any loop (uvloop's do not subclass asyncio.Transport).
        self.transport = cast(asyncio.Transport, transport)
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(END)) >= 0:
            start = self.buffer.find(START, 0, end)
            message = bytes(self.buffer[start + 1 : end])
            del self.buffer[: end + 2]
            msh = message.split(b"\r", 1)[0].split(b"|")
            control_id = msh[9] if len(msh) > 9 else b""
            self.transport.write(
                START
                + b"MSH|^~\\&|VETGATEWAY|CLINIC|"
                + msh[2]
                + b"|"
                + msh[3]
                + b"|20261126120000||ACK^R01^ACK|BARE|P|2.5.1\rMSA|AA|"
                + control_id
                + b"\r"
                + END
            )


async def serve_bare() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(BareMllp, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"bare mllp://127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()


# --- the client ---------------------------------------------------------------------------------


class Connection(asyncio.Protocol):
    """One MLLP connection; each complete ACK resolves the oldest waiter (answers are in order)."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiters: deque[tuple[asyncio.Future[float], float]] = deque()
        self.not_aa = 0
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport on any loop (uvloop's do not subclass asyncio.Transport).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        now = time.perf_counter()
        while (end := self.buffer.find(END)) >= 0:
            ack = bytes(self.buffer[:end])
            del self.buffer[: end + 2]
            if b"\rMSA|AA|" not in ack and b"\rMSA|CA|" not in ack:
                self.not_aa += 1
            future, scheduled = self.waiters.popleft()
            if not future.done():
                future.set_result(now - scheduled)

    def connection_lost(self, exc: Exception | None) -> None:
        for future, _ in self.waiters:
            if not future.done():
                future.set_exception(ConnectionError("server closed the connection"))
        if not self.lost.done():
            self.lost.set_result(None)

    def send(self, data: bytes, scheduled: float) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiters.append((future, scheduled))
        self.transport.write(data)
        return future


async def connect(address: tuple[str, int], count: int) -> list[Connection]:
    loop = asyncio.get_running_loop()
    connections = []
    for _ in range(count):
        _, protocol = await loop.create_connection(Connection, *address)
        connections.append(protocol)
    return connections


def close(connections: list[Connection]) -> None:
    for c in connections:
        c.transport.close()


@contextlib.contextmanager
def cpu_meter() -> Iterator[list[float]]:
    """Yields a list that receives this process's CPU share (1.0 = one core) of the block."""
    result: list[float] = []
    cpu, wall = time.process_time(), time.perf_counter()
    yield result
    result.append((time.process_time() - cpu) / (time.perf_counter() - wall))


async def closed_loop(address: tuple[str, int], senders: int, seconds: float, tag: str) -> float:
    """AAs per second with ``senders`` connections, each waiting for its ACK before the next."""
    connections = await connect(address, senders)
    deadline = time.perf_counter() + seconds
    counts = [0] * senders
    run = uuid.uuid4().hex[:6]

    async def sender(k: int) -> None:
        c = connections[k]
        n = 0
        while time.perf_counter() < deadline:
            await c.send(framed(f"{tag}{run}-{k}-{n}"), 0.0)
            n += 1
        counts[k] = n - c.not_aa

    began = time.perf_counter()
    await asyncio.gather(*(sender(k) for k in range(senders)))
    elapsed = time.perf_counter() - began
    close(connections)
    return sum(counts) / elapsed


async def open_loop(
    address: tuple[str, int], rate: float, seconds: float, tag: str
) -> tuple[float, float, float, int]:
    """Send at ``rate``/s on a fixed clock; return p50, p99, max latency (s) and non-AA count."""
    connections = await connect(address, LATENCY_CONNECTIONS)
    loop = asyncio.get_running_loop()
    total = int(rate * seconds)
    run = uuid.uuid4().hex[:6]
    futures: list[asyncio.Future[float]] = []
    start = time.perf_counter() + 0.05
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        c = connections[i % LATENCY_CONNECTIONS]
        futures.append(c.send(framed(f"{tag}{run}-{i}"), scheduled))
    latencies = sorted(await asyncio.gather(*futures))
    not_aa = sum(c.not_aa for c in connections)
    close(connections)
    del loop

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    return pct(0.50), pct(0.99), latencies[-1], not_aa


# --- servers under test -------------------------------------------------------------------------


@contextlib.contextmanager
def bare_server() -> Iterator[tuple[str, int]]:
    command = [sys.executable, __file__, "--serve-bare"]
    with process_listening(command, dict(os.environ), "bare") as address:
        yield split(address)


@contextlib.contextmanager
def gateway(database_url: str, data_dir: Path, **settings: str) -> Iterator[tuple[str, int]]:
    env = gateway_env(data_dir, database_url=database_url, **settings)
    with process_listening([VETGATEWAY, "run"], env, "mllp") as address:
        yield split(address)


# --- the run ------------------------------------------------------------------------------------


def measure_throughput(
    address: tuple[str, int], senders: int, seconds: float
) -> tuple[float, float]:
    # Warm-up: connections, caches.
    event_loop.run(closed_loop(address, senders, 0.5, "W"), LOOP)
    with cpu_meter() as cpu:
        rate = event_loop.run(closed_loop(address, senders, seconds, "T"), LOOP)
    return rate, cpu[0]


def measure_latency(
    address: tuple[str, int], rate: float, seconds: float
) -> tuple[float, float, float, int, float]:
    event_loop.run(open_loop(address, rate, 0.5, "w"), LOOP)
    with cpu_meter() as cpu:
        p50, p99, worst, not_aa = event_loop.run(open_loop(address, rate, seconds, "L"), LOOP)
    return p50, p99, worst, not_aa, cpu[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--rate", type=float, default=1000.0, help="offered rate for latency")
    parser.add_argument("--postgres", default=ADMIN_URL, help="admin URL; '' skips PostgreSQL")
    parser.add_argument(
        "--amqp",
        default=AMQP_URL,
        help="RabbitMQ for the scale-out line (PostgreSQL, workers elsewhere); '' skips it",
    )
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        event_loop.run(serve_bare(), LOOP)
        return

    size = len(oru_r01("T0000000-0-0"))
    print(
        f"mllp bench: {size} B ORU^R01 (20 OBX), {args.seconds:g} s per measurement;"
        f" {os.cpu_count()} CPU cores shared by client and server processes; {LOOP_NAME} event loop"
    )
    rates: dict[tuple[str, int], float] = {}
    with bare_server() as address:
        for senders in SENDERS:
            rates["bare", senders], cpu = measure_throughput(address, senders, args.seconds)
            print(
                f"bare server   senders={senders:<2} {rates['bare', senders]:>8,.0f} AA/s"
                f"   client CPU {cpu:4.0%}",
                flush=True,
            )
    # (name, database URL, further settings)
    backends: list[tuple[str, str, dict[str, str]]] = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        backends.append(("sqlite", f"sqlite:///{Path(tmp) / 'bench.db'}", {}))
        if args.postgres:
            pg_url = stack.enter_context(postgres_database(args.postgres))
            backends.append(("postgresql", pg_url, {}))
            if args.amqp:
                # Scale-out: the gateway only stores, ACKs and dispatches; the pipeline's
                # workers run on other hosts (none here), so intake has this box to itself.
                queue = f"vgbench.{uuid.uuid4().hex[:8]}"
                stack.callback(delete_queues, args.amqp, queue)
                broker = {"broker_url": args.amqp, "broker_queue": queue}
                backends.append(
                    ("pg+rabbitmq", stack.enter_context(postgres_database(args.postgres)), broker)
                )
        for backend, url, settings in backends:
            with gateway(url, Path(tmp) / backend, **settings) as address:
                for senders in SENDERS:
                    rate, cpu = measure_throughput(address, senders, args.seconds)
                    rates[backend, senders] = rate
                    print(
                        f"{backend:<13} senders={senders:<2} {rate:>8,.0f} AA/s   client CPU"
                        f" {cpu:4.0%}   {rate / rates['bare', senders]:.2f}x bare",
                        flush=True,
                    )
                p50, p99, worst, not_aa, cpu = measure_latency(address, args.rate, args.seconds)
                print(
                    f"{backend:<13} at {args.rate:,.0f} msg/s over {LATENCY_CONNECTIONS}"
                    f" connections: ACK latency p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms,"
                    f" max {worst * 1000:.1f} ms; {not_aa} not AA   client CPU {cpu:4.0%}",
                    flush=True,
                )
    for backend in ("postgresql", "pg+rabbitmq"):
        if (backend, 16) in rates:
            pg = rates[backend, 16]
            print(
                f"goal: {backend} 16 senders >= 5,000 AA/s and >= 0.25x bare:"
                f" {pg:,.0f} AA/s, {pg / rates['bare', 16]:.2f}x"
            )
    print("goal: p99 ACK latency < 20 ms at 1,000 msg/s (see the latency lines)")


if __name__ == "__main__":
    main()
