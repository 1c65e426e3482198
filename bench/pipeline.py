"""End-to-end results per second: MLLP send → results committed, beside the pure stages.

    .venv/bin/python bench/pipeline.py [--messages 2000] [--senders 8] [--postgres URL]
                                       [--amqp URL] [--skip-embedded]

Every message is a distinct ORU^R01 of 20 OBX (about 2.5 kB) from the example reference lab of
the shipped catalogue, so every result is mapped (and converted from US units); each has an
order, placed through the store beforehand, so matching attaches it by accession. Measured:

1. **pure**: ``parse_oru`` + ``map_observations`` over the same messages in this process, one
   core: the ceiling the pipeline is compared with.
2. **embedded**: ``vetgateway run`` on SQLite with its in-process worker.
3. **PostgreSQL + RabbitMQ** with 1 and with 2 ``vetgateway worker`` processes.

For 2 and 3 the clock starts at the first send and stops when the last message's status is no
longer ``received`` (polled in the database every 20 ms); ``N senders`` each send their next
message once the previous one is ACKed. Printed: messages/s, results/s and the pure rate divided
by the end-to-end rate (the pipeline's overhead); then the CPU time each part used per message
over that window (gateway, workers, PostgreSQL, RabbitMQ, and this process: the MLLP senders
and the finish-line poll), since on two shared cores their sum sets the rate. Goals (issue 4):
PostgreSQL + RabbitMQ with 2 workers >= 500 messages/s (10,000 results/s); embedded >= 250
messages/s; overhead <= 3x.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from _processes import (
    ADMIN_URL,
    VETGATEWAY,
    cpu_by_role,
    delete_queues,
    gateway_env,
    postgres_database,
    process_listening,
    process_ready,
    split,
)
from vetgateway.pipeline.mapping import map_observations, source_key
from vetgateway.pipeline.parse.orm import OrderIn
from vetgateway.pipeline.parse.oru import parse_oru
from vetgateway.store import migrate
from vetgateway.store.catalogue import load_catalogue, mapping_table
from vetgateway.store.db import Database
from vetgateway.store.orders import upsert_order

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
START, END = b"\x0b", b"\x1c\r"
PANEL = (
    ("GLUC", "97", "mg/dL"), ("BUN", "18", "mg/dL"), ("CREAT", "1.1", "mg/dL"),
    ("ALT", "45", "U/L"), ("ALKP", "210", "U/L"), ("AST", "30", "U/L"), ("GGT", "4", "U/L"),
    ("TBILI", "0.3", "mg/dL"), ("TPRO", "6.5", "g/dL"), ("ALB", "3.1", "g/dL"),
    ("GLOB", "3.4", "g/dL"), ("CHOL", "220", "mg/dL"), ("TRIG", "80", "mg/dL"),
    ("AMYL", "700", "U/L"), ("LIPA", "300", "U/L"), ("CK", "150", "U/L"),
    ("PHOS", "4.2", "mg/dL"), ("CA", "9.9", "mg/dL"), ("NA", "147", "mEq/L"),
    ("K", "4.5", "mEq/L"),
)  # fmt: skip


def oru(n: int, run: str) -> bytes:
    accession = f"{run}-{n}"
    segments = [
        f"MSH|^~\\&|LIS|EXAMPLE_REFLAB|VETGATEWAY|CLINIC|20261126120000||ORU^R01^ORU_R01|"
        f"{accession}|P|2.5.1",
        "PID|1||PMS-4711^^^CLINIC^PI||Smith^Rex||20200301|M",
        f"ORC|RE|{accession}|{accession}-F",
        f"OBR|1|{accession}|{accession}-F|CHEM^Chemistry panel|||20261126113000|||||||||||"
        f"{accession}||||20261126115500||CH|F",
    ]
    segments += [
        f"OBX|{i}|NM|{code}^{code}^L||{value}|{unit}|1-999|N|||F|||20261126113000"
        for i, (code, value, unit) in enumerate(PANEL, start=1)
    ]
    return ("\r".join(segments) + "\r").encode()


def prepare(database_url: str, run: str, count: int) -> None:
    """Schema, catalogue and one order per message, as a PMS would have placed them."""
    db = Database(database_url)
    try:
        migrate.upgrade(db)
        with db.session() as session:
            load_catalogue(session)
        with db.session() as session:
            for n in range(count):
                upsert_order(
                    session,
                    OrderIn(
                        source="PMS",
                        accession_number=f"{run}-{n}",
                        placer_number=f"{run}-{n}",
                        ordered_at=datetime(2026, 11, 26, 9, tzinfo=UTC),
                        patient_pms_id="PMS-4711",
                        patient_name="Rex",
                        species="canine",
                    ),
                    actor="bench",
                )
    finally:
        db.dispose()


def pure_rate(messages: list[bytes]) -> float:
    with tempfile.TemporaryDirectory() as folder:
        db = Database(f"sqlite:///{folder}/catalogue.db")
        migrate.upgrade(db)
        with db.session() as session:
            load_catalogue(session)
        with db.session(readonly=True) as session:
            table = mapping_table(session)
        db.dispose()
    started = time.perf_counter()
    for raw in messages:
        parsed = parse_oru(raw)
        source = source_key(parsed.sending_facility, parsed.sending_application)
        for report in parsed.reports:
            map_observations(report.observations, source, table)
    return len(messages) / (time.perf_counter() - started)


def send_all(address: tuple[str, int], messages: list[bytes], senders: int) -> None:
    """Each sender on its own connection, next message once the previous one is ACKed."""
    chunks = [messages[i::senders] for i in range(senders)]
    errors: list[str] = []

    def sender(chunk: list[bytes]) -> None:
        with socket.create_connection(address, timeout=60) as sock:
            buffer = b""
            for raw in chunk:
                sock.sendall(START + raw + END)
                while END not in buffer:
                    data = sock.recv(65536)
                    if not data:
                        errors.append("connection closed")
                        return
                    buffer += data
                ack, _, buffer = buffer.partition(END)
                if b"MSA|AA" not in ack and b"MSA|CA" not in ack:
                    errors.append(ack.decode(errors="replace"))

    threads = [threading.Thread(target=sender, args=(c,)) for c in chunks if c]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} messages not accepted, e.g. {errors[0]!r}")


def wait_processed(database_url: str, count: int, timeout: float = 600) -> dict[str, int]:
    """Wait until none of the ``count`` stored messages is still ``received``; their statuses.

    The finish line is polled through the status index (a count of the few still waiting),
    not by grouping every stored message: that scan, every 20 ms, took a fifth of a core from
    the PostgreSQL the pipeline was being measured on."""
    engine = sa.create_engine(database_url)
    waiting = sa.text("SELECT count(*) FROM inbound_messages WHERE status = 'received'")
    stored = sa.text("SELECT count(*) FROM inbound_messages")
    statuses = sa.text("SELECT status, count(*) FROM inbound_messages GROUP BY status")
    deadline = time.monotonic() + timeout
    try:
        with engine.connect() as conn:
            if conn.execute(stored).scalar_one() < count:
                raise RuntimeError("fewer messages stored than were acknowledged")
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                if conn.execute(waiting).scalar_one() == 0:
                    break
            time.sleep(0.02)  # a bench polling its finish line, not a test racing
        with engine.connect() as conn:
            return {str(s): int(n) for s, n in conn.execute(statuses)}
    finally:
        engine.dispose()


def end_to_end(
    name: str,
    database_url: str,
    env_settings: dict[str, str],
    workers: int,
    messages: list[bytes],
    senders: int,
    pure: float,
) -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        env = gateway_env(Path(data_dir), database_url=database_url, **env_settings)
        with contextlib.ExitStack() as stack:
            address = stack.enter_context(process_listening([VETGATEWAY, "run"], env, "mllp"))
            for _ in range(workers):
                stack.enter_context(process_ready([VETGATEWAY, "worker"], env, "worker ready"))
            cpu_before = cpu_by_role()
            started = time.perf_counter()
            send_all(split(address), messages, senders)
            acked = time.perf_counter() - started
            counts = wait_processed(database_url, len(messages))
            elapsed = time.perf_counter() - started
            cpu_after = cpu_by_role()
    rate = len(messages) / elapsed
    print(
        f"{name:<34} {rate:8,.0f} msg/s {rate * len(PANEL):9,.0f} results/s   "
        f"(all ACKed after {acked:5.2f} s)   overhead {pure / rate:5.1f}x pure   {counts}"
    )
    per_message = {
        role: (cpu_after[role] - cpu_before[role]) / len(messages) * 1000 for role in cpu_after
    }
    print(
        f"{'':34} CPU per message: "
        + ", ".join(f"{role} {ms:.2f} ms" for role, ms in per_message.items() if ms >= 0.005)
        + f"; {sum(per_message.values()):.2f} ms in all, pure {1000 / pure:.2f} ms"
    )


@contextlib.contextmanager
def sqlite_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as folder:
        yield f"sqlite:///{folder}/bench.db"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--postgres", default=ADMIN_URL, help="admin URL; '' skips PostgreSQL")
    parser.add_argument("--amqp", default=AMQP_URL)
    parser.add_argument("--skip-embedded", action="store_true")
    args = parser.parse_args()

    run = uuid.uuid4().hex[:6]
    messages = [oru(n, run) for n in range(args.messages)]
    pure = pure_rate(messages)
    print(f"{args.messages} ORU^R01 x {len(PANEL)} OBX, {args.senders} MLLP senders")
    print(
        f"{'pure parse_oru + map (one core)':<34} {pure:8,.0f} msg/s "
        f"{pure * len(PANEL):9,.0f} results/s"
    )
    if not args.skip_embedded:
        with sqlite_database() as url:
            prepare(url, run, len(messages))
            end_to_end("embedded (SQLite, in-process)", url, {}, 0, messages, args.senders, pure)
    if args.postgres:
        for workers in (1, 2):
            with postgres_database(args.postgres) as url:
                prepare(url, run, len(messages))
                queue = f"bench.{uuid.uuid4().hex[:8]}"
                settings = {"broker_url": args.amqp, "broker_queue": queue}
                try:
                    end_to_end(
                        f"PostgreSQL + RabbitMQ, {workers} worker(s)",
                        url,
                        settings,
                        workers,
                        messages,
                        args.senders,
                        pure,
                    )
                finally:
                    delete_queues(args.amqp, queue)
    print("goals: PG + RabbitMQ 2 workers >= 500 msg/s; embedded >= 250 msg/s; overhead <= 3x")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
