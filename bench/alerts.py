"""Critical-value page latency: from the ACK of a critical result to the page at the on-call
veterinarian's webhook, with background traffic.

    .venv/bin/python bench/alerts.py [--seconds 20] [--postgres URL] [--amqp URL]

The gateway runs with an on-call file whose primary is paged by webhook to an HTTP sink in this
process. One critical ORU (feline potassium 8.1 mmol/L, critical high 7.5) is sent per second
for ``--seconds``, beside background ORUs that are not critical at 1 and at 100 messages/s, on
the embedded defaults and on PostgreSQL + RabbitMQ with one ``vetgateway worker``. Each critical
report is unmatched, so its page names the accession, which ties page to message. Printed: p50,
p99 and max latency, and how many critical pages arrived. The baseline in the same run is the
MLLP ACK latency of the same critical messages. Goal (issue 5): p99 under 1 s at 100 msg/s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import socket
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from _processes import (
    ADMIN_URL,
    VETGATEWAY,
    delete_queues,
    gateway_env,
    postgres_database,
    process_listening,
    process_ready,
    split,
)

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
START, END = b"\x0b", b"\x1c\r"
ACCESSION = re.compile(r"accession (CRIT-[0-9a-f]+-\d+)")


def oru(accession: str, potassium: str) -> bytes:
    pid = ["PID", "1", "", "", "", "Smith^Tom", "", "20200301", "M", *[""] * 26, "Feline"]
    segments = [
        "MSH|^~\\&|LIS|EXAMPLE_REFLAB|VETGATEWAY|CLINIC|20261126120000||ORU^R01^ORU_R01|"
        f"{accession}|P|2.5.1",
        "|".join(pid),
        f"OBR|1|{accession}||CHEM^Chemistry|||20261126113000|||||||||||{accession}||||"
        "20261126115500||CH|F",
        f"OBX|1|NM|K^Potassium^L||{potassium}|mEq/L|3.5-5.8|N|||F",
        "OBX|2|NM|NA^Sodium^L||150|mEq/L|144-160|N|||F",
    ]
    return ("\r".join(segments) + "\r").encode()


class Sink:
    """Records when each critical page arrived, by accession."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                found = ACCESSION.search(json.loads(body).get("text", ""))
                if found:
                    sink.arrived.setdefault(found.group(1), time.perf_counter())
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/pager"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def oncall_file(folder: Path, webhook: str) -> Path:
    now = datetime.now(UTC)
    starts = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    ends = (now + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    path = folder / "oncall.toml"
    path.write_text(
        '[[clinics]]\ncode = "main"\nname = "Bench"\ntimezone = "UTC"\n\n'
        '[[veterinarians]]\nkey = "ada"\nname = "Dr Ada"\n'
        f'contacts = [{{ kind = "webhook", address = "{webhook}", priority = 0 }}]\n\n'
        '[[on_call]]\nclinic = "main"\nveterinarian = "ada"\nlevel = "primary"\n'
        f"starts = {starts}\nends = {ends}\n"
    )
    return path


def exchange(sock: socket.socket, raw: bytes) -> None:
    sock.sendall(START + raw + END)
    buffer = b""
    while END not in buffer:
        data = sock.recv(65536)
        if not data:
            raise RuntimeError("connection closed")
        buffer += data
    if b"MSA|AA" not in buffer and b"MSA|CA" not in buffer:
        raise RuntimeError(buffer.decode(errors="replace"))


def background(address: tuple[str, int], rate: float, stop: threading.Event) -> None:
    with socket.create_connection(address, timeout=60) as sock:
        started, n = time.perf_counter(), 0
        while not stop.is_set():
            exchange(sock, oru(f"BG-{uuid.uuid4().hex[:12]}", "4.5"))
            n += 1
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)  # pacing the offered load, not waiting for a result


def measure(
    address: tuple[str, int], sink: Sink, rate: float, seconds: int
) -> tuple[list[float], list[float]]:
    """(ACK -> page latencies, the ACK latencies of the same critical messages: the baseline)."""
    run = uuid.uuid4().hex[:6]
    stop = threading.Event()
    loader = threading.Thread(target=background, args=(address, rate, stop), daemon=True)
    loader.start()
    acked: dict[str, float] = {}
    ack_latencies: list[float] = []
    with socket.create_connection(address, timeout=60) as sock:
        for n in range(seconds):
            accession = f"CRIT-{run}-{n}"
            sent = time.perf_counter()
            exchange(sock, oru(accession, "8.1"))
            acked[accession] = time.perf_counter()
            ack_latencies.append(acked[accession] - sent)
            time.sleep(1.0)  # one critical result per second, as in the brief
    deadline = time.perf_counter() + 30
    while time.perf_counter() < deadline and not all(a in sink.arrived for a in acked):
        time.sleep(0.05)  # a bench polling its finish line
    stop.set()
    loader.join(timeout=30)
    return [sink.arrived[a] - t for a, t in acked.items() if a in sink.arrived], ack_latencies


def report(name: str, rate: float, measured: tuple[list[float], list[float]], sent: int) -> None:
    latencies, acks = measured
    if not latencies:
        print(f"{name:<34} {rate:5.0f} msg/s background: no page arrived")
        return
    ms = sorted(1000 * x for x in latencies)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    print(
        f"{name:<34} {rate:5.0f} msg/s background: ACK -> page p50 {statistics.median(ms):6.0f} ms"
        f"  p99 {p99:6.0f} ms  max {ms[-1]:6.0f} ms  ({len(ms)}/{sent} pages)"
        f"   baseline: their ACK p50 {1000 * statistics.median(acks):5.1f} ms"
    )


@contextlib.contextmanager
def site(settings: dict[str, str], workers: int, sink: Sink) -> Iterator[tuple[str, int]]:
    with tempfile.TemporaryDirectory() as data_dir, contextlib.ExitStack() as stack:
        folder = Path(data_dir)
        env = gateway_env(
            folder,
            oncall_file=str(oncall_file(folder, sink.url)),
            signing_key="bench-key",
            **settings,
        )
        address = stack.enter_context(process_listening([VETGATEWAY, "run"], env, "mllp"))
        for _ in range(workers):
            stack.enter_context(process_ready([VETGATEWAY, "worker"], env, "worker ready"))
        yield split(address)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--postgres", default=ADMIN_URL, help="admin URL; '' skips PostgreSQL")
    parser.add_argument("--amqp", default=AMQP_URL)
    args = parser.parse_args()
    sink = Sink()
    try:
        for rate in (1.0, 100.0):
            with site({}, 0, sink) as address:
                report(
                    "embedded (SQLite)",
                    rate,
                    measure(address, sink, rate, args.seconds),
                    args.seconds,
                )
            if args.postgres:
                with postgres_database(args.postgres) as url:
                    queue = f"bench.{uuid.uuid4().hex[:8]}"
                    settings = {"database_url": url, "broker_url": args.amqp, "broker_queue": queue}
                    try:
                        with site(settings, 1, sink) as address:
                            latencies = measure(address, sink, rate, args.seconds)
                        report("PostgreSQL + RabbitMQ, 1 worker", rate, latencies, args.seconds)
                    finally:
                        delete_queues(args.amqp, queue)
    finally:
        sink.close()
    print("goal: p99 under 1 s at 100 msg/s of background load")


if __name__ == "__main__":
    main()
