"""Durable accepts per second through ``Inbox.accept``, beside the same driver's bare
INSERT + COMMIT loop, measured in the same run on the same database.

    .venv/bin/python bench/inbox.py [--seconds 3] [--size 5000] [--rounds 3] [--postgres URL]

Prints, for SQLite (WAL, synchronous=FULL) and PostgreSQL (synchronous_commit=on), at 1 and 8
concurrent writers: inbox rate, bare-driver rate and their ratio; then the group-commit gain on
PostgreSQL (8 writers over 1). Each is measured ``--rounds`` times, alternated, and printed as the
median with its range; a ratio is taken within each round, then its median. Goals (issue 2):
inbox >= 0.8x bare; PostgreSQL 8 writers >= 3x 1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sqlite3
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from statistics import median

import psycopg
import sqlalchemy as sa

from vetgateway.store import migrate
from vetgateway.store.db import Database
from vetgateway.store.inbox import Inbox, MessageMeta

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
WRITERS = (1, 8)

BARE_SQL = (
    "INSERT INTO inbound_messages (channel, peer, received_at, raw, size, sha256, meta, status,"
    " attempts) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, 'received', 0)"
)


def payload(size: int, n: int) -> bytes:
    head = f"MSH|^~\\&|LAB|FAC|VG|CLINIC|20261126||ORU^R01|C{n}|P|2.5.1\r".encode()
    return head + b"OBX|1|NM|GLU^Glucose||5.4|mmol/L|3.9-7.8|N|||F\r" * (size // 48)


def run_writers(writers: int, seconds: float, work: Callable[[int, int], None]) -> float:
    """Run ``work(writer, n)`` in a loop on each writer thread; return calls per second."""
    counts = [0] * writers
    stop = threading.Event()
    start_line = threading.Barrier(writers + 1)

    def loop(w: int) -> None:
        start_line.wait()
        n = 0
        while not stop.is_set():
            work(w, n)
            n += 1
        counts[w] = n

    threads = [threading.Thread(target=loop, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    start_line.wait()
    began = time.perf_counter()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - began)


def inbox_rate(db: Database, writers: int, seconds: float, size: int) -> float:
    inbox = Inbox(db)

    def work(w: int, n: int) -> None:
        inbox.accept(payload(size, n), "bench", f"writer{w}", MessageMeta(control_id=f"C{n}"))

    return run_writers(writers, seconds, work)


def bare_rate(
    connect: Callable[[], object], placeholder: str, writers: int, seconds: float, size: int
) -> float:
    sql = BARE_SQL.format(p=placeholder)
    connections = [connect() for _ in range(writers)]

    def work(w: int, n: int) -> None:
        raw = payload(size, n)
        conn = connections[w]
        params = (
            "bench",
            f"writer{w}",
            datetime.now(UTC).isoformat(),
            raw,
            len(raw),
            hashlib.sha256(raw).hexdigest(),
            json.dumps({}),
        )
        conn.execute(sql, params)  # type: ignore[attr-defined]
        conn.commit()  # type: ignore[attr-defined]

    try:
        return run_writers(writers, seconds, work)
    finally:
        for conn in connections:
            conn.close()  # type: ignore[attr-defined]


def sqlite_connect(path: Path) -> Callable[[], sqlite3.Connection]:
    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    return connect


@dataclass
class Rounds:
    """One backend's rates over several rounds, inbox and bare driver taking turns to go first
    within each round, so a drift in the machine's speed (a neighbour's load, the disk's flush
    time) falls on both alike. Shared VMs swing by half between runs minutes apart; the median
    and the spread say more than any single run."""

    inbox: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    bare: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))

    def measure(
        self, writers: int, round_: int, inbox: Callable[[], float], bare: Callable[[], float]
    ) -> None:
        if round_ % 2:
            self.bare[writers].append(bare())
            self.inbox[writers].append(inbox())
        else:
            self.inbox[writers].append(inbox())
            self.bare[writers].append(bare())

    def report(self, backend: str, writers: int) -> None:
        inbox, bare = self.inbox[writers], self.bare[writers]
        paired = [i / b for i, b in zip(inbox, bare, strict=True)]
        print(
            f"{backend:<10} writers={writers:<2} inbox {median(inbox):>7,.0f}/s"
            f" ({min(inbox):,.0f}-{max(inbox):,.0f})   bare driver {median(bare):>7,.0f}/s"
            f" ({min(bare):,.0f}-{max(bare):,.0f})   ratio {median(paired):.2f}x"
            f" ({min(paired):.2f}-{max(paired):.2f})",
            flush=True,
        )


def measure_rounds(
    db: Database,
    connect: Callable[[], object],
    placeholder: str,
    seconds: float,
    size: int,
    rounds: int,
) -> Rounds:
    """Inbox and bare driver at each writer count, ``rounds`` times over."""
    results = Rounds()
    for round_ in range(rounds):
        for writers in WRITERS:
            results.measure(
                writers,
                round_,
                partial(inbox_rate, db, writers, seconds, size),
                partial(bare_rate, connect, placeholder, writers, seconds, size),
            )
    return results


def bench_sqlite(seconds: float, size: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        db = Database(f"sqlite:///{path}")
        migrate.upgrade(db)
        results = measure_rounds(db, sqlite_connect(path), "?", seconds, size, rounds)
        for writers in WRITERS:
            results.report("sqlite", writers)
        db.dispose()


def bench_postgres(admin_url: str, seconds: float, size: int, rounds: int) -> None:
    name = f"vgbench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(admin_url).set(database=name)
    try:
        db = Database(url.render_as_string(hide_password=False), pool_size=16)
        migrate.upgrade(db)
        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)

        def connect() -> psycopg.Connection:
            return psycopg.connect(dsn, options="-c synchronous_commit=on")

        results = measure_rounds(db, connect, "%s", seconds, size, rounds)
        for writers in WRITERS:
            results.report("postgresql", writers)
        gains = [eight / one for one, eight in zip(results.inbox[1], results.inbox[8], strict=True)]
        print(
            f"postgresql group commit: 8 writers / 1 writer = {median(gains):.2f}x"
            f" ({min(gains):.2f}-{max(gains):.2f} over {rounds} rounds; goal >= 3x)"
        )
        db.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--size", type=int, default=5000, help="message size in bytes")
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each, alternated")
    parser.add_argument("--postgres", default=ADMIN_URL, help="admin URL; '' skips PostgreSQL")
    args = parser.parse_args()
    print(
        f"inbox bench: {args.size} B messages, {args.seconds:g} s per measurement,"
        f" {args.rounds} rounds; medians, (min-max), ratios paired within a round"
    )
    bench_sqlite(args.seconds, args.size, args.rounds)
    if args.postgres:
        bench_postgres(args.postgres, args.seconds, args.size, args.rounds)


if __name__ == "__main__":
    main()
