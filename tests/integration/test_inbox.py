"""The durable inbox on SQLite and PostgreSQL: what it stores, group commit, and failure."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.pgcluster import PostgresCluster
from tests.waiting import wait_until
from vetgateway.errors import StorageError, StorageUnavailable
from vetgateway.store import inbox as inbox_module
from vetgateway.store import migrate
from vetgateway.store.db import Database
from vetgateway.store.inbox import Inbox, MessageMeta, Receipt
from vetgateway.store.models import InboundMessage, MessageStatus

ODD_PAYLOADS = [
    b"",
    b"\x00\x01\x02\xff\xfe",
    b"MSH|^~\\&|LAB|\xe9\xe8|x\r",  # Latin-1 bytes that are not UTF-8
    bytes(range(256)) * 4,
]


def load(db: Database, message_id: int) -> InboundMessage:
    with db.session(readonly=True) as s:
        row = s.get(InboundMessage, message_id)
        assert row is not None
        return row


def test_accept_stores_bytes_and_envelope(db: Database) -> None:
    inbox = Inbox(db)
    raw = b"MSH|^~\\&|IDEXX|LAB|VG|CLINIC|20261126||ORU^R01|CTRL1|P|2.5.1\r"
    meta = MessageMeta(control_id="CTRL1", sender="IDEXX^LAB", message_type="ORU^R01")
    message_id = inbox.accept(raw, "mllp", "127.0.0.1:5555", meta)
    row = load(db, message_id)
    assert row.raw == raw
    assert row.size == len(raw)
    assert row.sha256 == hashlib.sha256(raw).hexdigest()
    assert (row.channel, row.peer) == ("mllp", "127.0.0.1:5555")
    assert (row.control_id, row.sender, row.message_type) == ("CTRL1", "IDEXX^LAB", "ORU^R01")
    assert row.status is MessageStatus.RECEIVED
    assert row.received_at.tzinfo is UTC
    assert row.attempts == 0


@pytest.mark.parametrize("raw", ODD_PAYLOADS, ids=["empty", "binary", "latin1", "all-bytes"])
def test_odd_bytes_are_stored_verbatim(db: Database, raw: bytes) -> None:
    message_id = Inbox(db).accept(raw, "file", "inbox/x.hl7")
    assert load(db, message_id).raw == raw


def test_quarantine_reason_is_stored_with_the_bytes(db: Database) -> None:
    meta = MessageMeta(quarantine_reason="MSH-10 (control id) is empty")
    message_id = Inbox(db).accept(b"MSH|^~\\&|A|B\r", "mllp", "peer", meta)
    row = load(db, message_id)
    assert row.status is MessageStatus.QUARANTINED
    assert row.error == "MSH-10 (control id) is empty"


def test_concurrent_writers_each_get_their_own_row(db: Database) -> None:
    inbox = Inbox(db)
    results: dict[bytes, int] = {}
    lock = threading.Lock()

    def writer(n: int) -> None:
        for i in range(40):
            raw = f"writer {n} message {i}".encode()
            message_id = inbox.accept(raw, "mllp", f"peer{n}")
            with lock:
                results[raw] = message_id

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results.values())) == 320
    with db.session(readonly=True) as s:
        stored = dict(s.execute(sa.select(InboundMessage.raw, InboundMessage.id)).all())
    assert stored == results


class GatedInbox(Inbox):
    """An inbox whose first commit waits for the test, so followers queue behind it."""

    def __init__(self, db: Database, **kwargs) -> None:
        self.batches: list[int] = []
        kwargs.setdefault("commit_slots", 1)
        super().__init__(db, on_commit=self.batches.append, **kwargs)
        self.gate = threading.Event()
        self.in_commit = threading.Event()
        self.commits_started = 0

    def _commit(self, rows):
        self.commits_started += 1
        self.in_commit.set()
        self.gate.wait(timeout=30)
        return super()._commit(rows)


def test_callers_arriving_during_a_commit_share_the_next_one(db: Database) -> None:
    inbox = GatedInbox(db)
    ids: list[int] = []
    leader = threading.Thread(target=lambda: ids.append(inbox.accept(b"first", "t", "p")))
    leader.start()
    assert inbox.in_commit.wait(timeout=10)
    followers = [
        threading.Thread(target=lambda n=n: ids.append(inbox.accept(f"f{n}".encode(), "t", "p")))
        for n in range(5)
    ]
    for t in followers:
        t.start()
    wait_until(lambda: len(inbox._queue) == 5)
    assert ids == []  # nobody is released before the commit that holds their row
    inbox.gate.set()
    for t in [leader, *followers]:
        t.join(timeout=30)
    assert inbox.batches == [1, 5]
    assert len(set(ids)) == 6


def test_batches_are_capped_at_max_batch(db: Database) -> None:
    inbox = GatedInbox(db, max_batch=2)
    threads = [threading.Thread(target=inbox.accept, args=(b"x", "t", "p")) for _ in range(6)]
    threads[0].start()
    assert inbox.in_commit.wait(timeout=10)
    for t in threads[1:]:
        t.start()
    wait_until(lambda: len(inbox._queue) == 5)
    inbox.gate.set()
    for t in threads:
        t.join(timeout=30)
    assert inbox.batches == [1, 2, 2, 1]


def test_two_commit_slots_let_a_second_batch_start_while_the_first_is_in_flight(
    db: Database,
) -> None:
    inbox = GatedInbox(db, commit_slots=2)
    threads = [
        threading.Thread(target=inbox.accept, args=(f"m{n}".encode(), "t", "p")) for n in range(7)
    ]
    for t in threads:
        t.start()
    wait_until(lambda: inbox.commits_started == 2 and len(inbox._queue) == 5)
    inbox.gate.set()
    for t in threads:
        t.join(timeout=30)
    assert sum(inbox.batches) == 7
    assert sorted(inbox.batches) == [1, 1, 5]  # two in flight at once, then the five queued
    assert inbox._leaders == 0


def test_unconfigured_slots_are_two_on_postgresql_and_one_on_sqlite(db: Database) -> None:
    inbox = Inbox(db)
    try:
        assert inbox._slots == (2 if db.dialect == "postgresql" else 1)
        assert len(inbox._pins) == inbox._slots
        assert inbox.accept(b"MSH|^~\\&|x", "t", "p") > 0
    finally:
        inbox.close()


@pytest.mark.parametrize("slots", [1, 2, 3])
def test_many_writers_many_slots_every_row_stored_once(db: Database, slots: int) -> None:
    inbox = Inbox(db, commit_slots=slots, max_batch=4)
    returned: list[int] = []

    def writer(n: int) -> None:
        for i in range(25):
            returned.append(inbox.accept(f"{n}/{i}".encode(), "t", "p"))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    with db.session(readonly=True) as s:
        stored = sorted(s.scalars(sa.select(InboundMessage.id)))
    assert sorted(returned) == stored
    assert len(stored) == 300
    assert inbox._leaders == 0


def unreachable_databases(tmp_path: Path) -> list[str]:
    directory = tmp_path / "a-directory-not-a-file"
    directory.mkdir()
    return [f"sqlite:///{directory}", "postgresql+psycopg://postgres@127.0.0.1:1/none"]


@pytest.mark.parametrize("which", [0, 1], ids=["sqlite", "postgresql"])
def test_unreachable_database_raises_storage_unavailable(tmp_path: Path, which: int) -> None:
    db = Database(unreachable_databases(tmp_path)[which])
    inbox = Inbox(db)
    for _ in range(2):  # the second call must not hang on a leader that never handed over
        with pytest.raises(StorageUnavailable):
            inbox.accept(b"MSH|", "mllp", "peer")
    db.dispose()


def test_a_failed_commit_fails_every_caller_in_its_batch(db: Database) -> None:
    class BrokenOnce(GatedInbox):
        def _commit(self, rows):
            self.in_commit.set()
            self.gate.wait(timeout=30)
            if not self.batches and len(rows) == 1:
                self.batches.append(-1)
                raise StorageUnavailable("disk full")
            return Inbox._commit(self, rows)

    inbox = BrokenOnce(db)
    outcomes: list[object] = []

    def call(raw: bytes) -> None:
        try:
            outcomes.append(inbox.accept(raw, "t", "p"))
        except StorageError as exc:
            outcomes.append(exc)

    first = threading.Thread(target=call, args=(b"first",))
    first.start()
    assert inbox.in_commit.wait(timeout=10)
    later = [threading.Thread(target=call, args=(f"l{n}".encode(),)) for n in range(3)]
    for t in later:
        t.start()
    wait_until(lambda: len(inbox._queue) == 3)
    inbox.gate.set()
    for t in [first, *later]:
        t.join(timeout=30)
    errors = [o for o in outcomes if isinstance(o, StorageError)]
    stored = [o for o in outcomes if isinstance(o, int)]
    assert len(errors) == 1
    assert len(stored) == 3
    with db.session(readonly=True) as s:
        raws = set(s.scalars(sa.select(InboundMessage.raw)))
    assert raws == {b"l0", b"l1", b"l2"}


WRITER = """
import sys
from vetgateway.store.db import Database
from vetgateway.store.inbox import Inbox
inbox = Inbox(Database(sys.argv[1]))
i = 0
while True:
    message_id = inbox.accept(f"kill-test {i}".encode(), "mllp", "peer")
    print(message_id, flush=True)
    i += 1
"""


def test_every_returned_id_survives_sigkill(db: Database) -> None:
    """What accept() returned before a SIGKILL is in the database afterwards."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    acknowledged: list[int] = []
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, db.url], stdout=subprocess.PIPE, text=True, env=env
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            acknowledged.append(int(line))
            if len(acknowledged) >= 200:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with db.session(readonly=True) as s:
        stored = set(s.scalars(sa.select(InboundMessage.id)))
    assert set(acknowledged) <= stored


ORU = b"MSH|^~\\&|LAB|IDEXX|VG|CLINIC|20261126||ORU^R01|CTRL7|P|2.5.1\rPID|1||P1\r"
IDEXX = MessageMeta(control_id="CTRL7", sender="LAB^IDEXX")
ASTM = MessageMeta(sender="ANALYZER-1")  # as the analyzer listener stores: no control id


def test_identical_resend_returns_the_original_and_stores_nothing_new(db: Database) -> None:
    inbox = Inbox(db)
    first = inbox.receive(ORU, "mllp", "peer-a", IDEXX)
    again = inbox.receive(ORU, "mllp", "peer-b", IDEXX)
    assert not first.duplicate
    assert again.duplicate
    assert (again.message_id, again.received_at) == (first.message_id, first.received_at)
    with db.session(readonly=True) as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(InboundMessage)) == 1


def test_identical_messages_in_one_batch_are_one_row(db: Database) -> None:
    inbox = GatedInbox(db)
    leader = threading.Thread(target=inbox.receive, args=(b"x", "t", "p"))
    leader.start()
    assert inbox.in_commit.wait(timeout=10)
    twins: list = []
    threads = [
        threading.Thread(target=lambda: twins.append(inbox.receive(ORU, "t", "p", IDEXX)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    wait_until(lambda: len(inbox._queue) == 2)
    inbox.gate.set()
    for t in [leader, *threads]:
        t.join(timeout=30)
    assert inbox.batches == [1, 2]  # both twins went into the same transaction
    assert twins[0].message_id == twins[1].message_id
    assert sorted(r.duplicate for r in twins) == [False, True]


def test_resends_collisions_and_envelope_less_twins_in_one_batch(db: Database) -> None:
    """One transaction holding every kind of row at once: each caller still gets the id of the
    row with its own bytes, a collision inside the batch is held for review against the batch's
    first such message, and messages without an envelope are never merged."""
    inbox = GatedInbox(db)
    leader = threading.Thread(target=inbox.receive, args=(b"x", "t", "p"))
    leader.start()
    assert inbox.in_commit.wait(timeout=10)
    changed = ORU.replace(b"P1", b"P2")
    sent = [ORU, ORU, changed, b"no envelope", b"no envelope", b"other"]
    receipts: dict[int, Receipt] = {}
    metas = [IDEXX, IDEXX, IDEXX, None, None, MessageMeta(control_id="CTRL7", sender="OTHER")]

    def send(n: int) -> None:
        receipts[n] = inbox.receive(sent[n], "t", f"p{n}", metas[n])

    threads = [threading.Thread(target=send, args=(n,)) for n in range(len(sent))]
    for queued, t in enumerate(threads, start=1):  # one at a time: the batch is in this order
        t.start()
        wait_until(lambda queued=queued: len(inbox._queue) == queued)
    inbox.gate.set()
    for t in [leader, *threads]:
        t.join(timeout=30)
    assert inbox.batches == [1, len(sent)]
    for n, receipt in receipts.items():
        assert load(db, receipt.message_id).raw == sent[n]
    twins = receipts[0], receipts[1]
    assert twins[0].message_id == twins[1].message_id
    assert [r.duplicate for r in twins] == [False, True]
    assert [r.collision_with for r in twins] == [None, None]
    assert receipts[2].collision_with == twins[0].message_id
    assert load(db, receipts[2].message_id).status is MessageStatus.QUARANTINED
    assert receipts[3].message_id != receipts[4].message_id
    for n in (3, 4, 5):
        assert (receipts[n].duplicate, receipts[n].collision_with) == (False, None)
        assert load(db, receipts[n].message_id).status is MessageStatus.RECEIVED


def test_same_control_id_other_bytes_is_stored_and_held_for_review(db: Database) -> None:
    inbox = Inbox(db)
    original = inbox.receive(ORU, "mllp", "peer", IDEXX)
    changed = inbox.receive(ORU.replace(b"P1", b"P2"), "mllp", "peer", IDEXX)
    assert changed.message_id != original.message_id
    assert changed.collision_with == original.message_id
    assert not changed.duplicate
    row = load(db, changed.message_id)
    assert row.status is MessageStatus.QUARANTINED
    assert row.error is not None
    assert f"message {original.message_id}" in row.error
    assert load(db, original.message_id).status is MessageStatus.RECEIVED


def _advisory_lock_waiters(db: Database) -> int:
    with db.engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        ).scalar_one()


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_a_collision_committed_side_by_side_is_still_held_for_review(db: Database) -> None:
    """Two batches in flight at once (two commit slots, or two gateways on one database), each
    with a message of the same envelope: the second must not miss the first just because the
    first had not committed when the second was inserted. The first is another gateway's batch
    caught between its INSERT and its commit: the inbox's own insert, in a transaction left
    open on a connection of its own. The second goes out in one flight (lock and INSERT
    pipelined), so it must wait for the lock *and* then see the row committed meanwhile."""
    inbox = Inbox(db)
    other_gateway = db.engine.raw_connection()
    receipts: dict[str, Receipt] = {}
    second_done = threading.Event()
    changed = ORU.replace(b"P1", b"P2")

    def send_second() -> None:
        receipts["second"] = inbox.receive(changed, "mllp", "second", IDEXX)
        second_done.set()

    second = threading.Thread(target=send_second)
    try:
        first_rows = [inbox._row(ORU, "mllp", "first", IDEXX)]
        (receipts["first"],) = inbox._insert(other_gateway.driver_connection, first_rows)
        assert inbox._insert.is_one_flight([inbox._row(changed, "mllp", "second", IDEXX)])
        second.start()
        # The second batch either waits for the first's envelope lock or (without it) finishes.
        wait_until(lambda: second_done.is_set() or _advisory_lock_waiters(db) > 0)
        other_gateway.commit()
        second.join(timeout=30)
    finally:
        other_gateway.close()
        inbox.close()
    assert receipts["second"].collision_with == receipts["first"].message_id
    held = load(db, receipts["second"].message_id)
    assert held.status is MessageStatus.QUARANTINED
    assert held.error is not None
    assert f"message {receipts['first'].message_id}" in held.error
    assert load(db, receipts["first"].message_id).status is MessageStatus.RECEIVED


@pytest.mark.parametrize(
    "meta",
    [MessageMeta(), MessageMeta(control_id="CTRL7", sender="OTHER^LAB")],
    ids=["no-control-id", "other-sender"],
)
def test_only_the_same_sender_and_control_id_make_a_resend(db: Database, meta: MessageMeta) -> None:
    inbox = Inbox(db)
    first = inbox.receive(ORU, "file", "a.hl7", IDEXX)
    second = inbox.receive(ORU, "file", "b.hl7", meta)
    assert second.message_id != first.message_id
    assert not second.duplicate
    assert second.collision_with is None


def test_messages_without_sender_or_control_id_never_collide(db: Database) -> None:
    """Regression: SQLite reported every second envelope-less message as a collision with the
    first (a NULL test inside RETURNING), quarantining, e.g., ASTM records and unknown bytes."""
    inbox = Inbox(db)
    first = inbox.receive(b"first message", "test", "peer")
    second = inbox.receive(b"second message", "test", "peer")
    only_control_id = inbox.receive(b"third message", "test", "peer", MessageMeta(control_id="C"))
    assert [r.collision_with for r in (first, second, only_control_id)] == [None, None, None]
    statuses = {load(db, r.message_id).status for r in (first, second, only_control_id)}
    assert statuses == {MessageStatus.RECEIVED}


def _kept_connection(db: Database, inbox: Inbox) -> Any:
    """The driver connection the inbox keeps between commits (taken on its first commit)."""
    connections: list[Any] = []

    def watch(dbapi_connection: Any, *_: object) -> None:
        connections.append(dbapi_connection)

    sa.event.listen(db.engine, "checkout", watch)
    try:
        inbox.accept(b"first", "test", "peer")
    finally:
        sa.event.remove(db.engine, "checkout", watch)
    assert len(connections) == 1
    return connections[0]


def _sqlite_steps(connection: Any, work: Callable[[], object]) -> int:
    """SQLite virtual-machine instructions that ``work`` runs on ``connection``: a count of
    work done that, unlike time, does not depend on the machine's load."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0  # go on

    connection.set_progress_handler(count, 1)
    try:
        work()
    finally:
        connection.set_progress_handler(None, 1)
    return steps


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_an_envelope_less_message_costs_the_same_however_many_are_stored(db: Database) -> None:
    """Regression: on SQLite the collision check inside RETURNING walked every stored message
    without sender or control id, so each ASTM or plain-text message took longer than the last
    (0.2 ms more per row at 2,000 rows, growing without bound)."""
    inbox = Inbox(db)
    meta = MessageMeta(sender="ANALYZER")  # as the ASTM listener stores: no control id
    try:
        connection = _kept_connection(db, inbox)
        early = _sqlite_steps(connection, lambda: inbox.accept(b"H|early", "test", "peer", meta))
        for n in range(300):
            inbox.accept(f"H|filler {n}".encode(), "test", "peer", meta)
        late = _sqlite_steps(connection, lambda: inbox.accept(b"H|late", "test", "peer", meta))
    finally:
        inbox.close()
    assert early > 0
    assert late < early + 50, (early, late)


# -- asyncio callers -----------------------------------------------------------------------------


def test_async_callers_share_commits_and_each_get_their_row(db: Database) -> None:
    import asyncio

    batches: list[int] = []
    inbox = Inbox(db, on_commit=batches.append)

    async def main() -> list:
        return await asyncio.gather(
            *(inbox.receive_async(f"async {n}".encode(), "mllp", "peer") for n in range(200))
        )

    receipts = asyncio.run(main())
    inbox.close()
    assert len({r.message_id for r in receipts}) == 200
    assert sum(batches) == 200
    assert len(batches) < 200  # grouped: 200 concurrent callers never need 200 commits
    with db.session(readonly=True) as s:
        stored = dict(s.execute(sa.select(InboundMessage.id, InboundMessage.raw)).all())
    assert {stored[r.message_id] for r in receipts} == {f"async {n}".encode() for n in range(200)}


def test_async_and_thread_callers_mixed(db: Database) -> None:
    import asyncio

    inbox = Inbox(db, commit_slots=2, max_batch=8)
    thread_ids: list[int] = []

    def thread_writer(n: int) -> None:
        for i in range(20):
            thread_ids.append(inbox.accept(f"t{n}/{i}".encode(), "file", "p"))

    async def main() -> list:
        return await asyncio.gather(
            *(inbox.receive_async(f"a{n}".encode(), "mllp", "p") for n in range(120))
        )

    threads = [threading.Thread(target=thread_writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    receipts = asyncio.run(main())
    for t in threads:
        t.join(timeout=60)
    inbox.close()
    ids = thread_ids + [r.message_id for r in receipts]
    assert len(set(ids)) == 200
    assert inbox._leaders == 0
    with db.session(readonly=True) as s:
        assert sorted(s.scalars(sa.select(InboundMessage.id))) == sorted(ids)


def test_async_caller_gets_the_storage_error(tmp_path: Path) -> None:
    import asyncio

    db = Database(unreachable_databases(tmp_path)[0])
    inbox = Inbox(db)

    async def main() -> None:
        for _ in range(2):
            with pytest.raises(StorageUnavailable):
                await inbox.receive_async(b"MSH|", "mllp", "peer")

    asyncio.run(main())
    inbox.close()
    db.dispose()


def test_a_cancelled_async_caller_still_has_its_row_stored(db: Database) -> None:
    import asyncio

    inbox = GatedInbox(db)

    async def main() -> None:
        task = asyncio.ensure_future(inbox.receive_async(b"cancelled", "mllp", "peer"))
        await asyncio.to_thread(inbox.in_commit.wait, 10)
        task.cancel()
        inbox.gate.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    inbox.close()
    assert [r.raw for r in [load(db, 1)]] == [b"cancelled"]


# -- PostgreSQL: a batch goes out in one flight, committed by the server at its end -----------


def _protocol_trace(connection: Any, work: Callable[[], object], tmp_path: Path) -> bytes:
    """What libpq sent and received on ``connection`` during ``work`` (``PQtrace``)."""
    path = tmp_path / "libpq.trace"
    with path.open("wb") as trace:
        connection.pgconn.trace(trace.fileno())
        try:
            work()
        finally:
            connection.pgconn.untrace()
    return path.read_bytes()


def _messages(trace: bytes) -> list[tuple[str, str]]:
    """(direction F or B, message type) for each message of a ``PQtrace``."""
    return [
        (fields[1].decode(), fields[3].decode())
        for fields in (line.split(b"\t") for line in trace.splitlines())
    ]


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_a_batch_goes_out_in_one_flight_without_begin_or_commit(
    db: Database, tmp_path: Path
) -> None:
    inbox = Inbox(db)
    try:
        connection = _kept_connection(db, inbox)
        envelope_less = _protocol_trace(
            connection, lambda: inbox.accept(b"H|one", "astm", "peer", ASTM), tmp_path
        )
        enveloped = _protocol_trace(
            connection, lambda: inbox.accept(b"MSH|two", "mllp", "peer", IDEXX), tmp_path
        )
        twins = [
            inbox._row(b"MSH|three", "mllp", "peer", IDEXX),
            inbox._row(b"MSH|four", "mllp", "peer", IDEXX),
        ]
        in_transaction = _protocol_trace(connection, lambda: inbox._commit(twins), tmp_path)
        assert connection.autocommit is False  # left as the pool expects it
    finally:
        inbox.close()
    # One statement (one Bind, whether the INSERT is prepared on this connection yet or not).
    assert envelope_less.count(b"\tBind\t") == 1
    assert b'CommandComplete\t "INSERT 0 1"' in envelope_less
    assert b"BEGIN" not in envelope_less
    assert b"COMMIT" not in envelope_less
    # The envelope lock and the INSERT pipelined: both are sent, and synced once, before
    # anything comes back, and the server's Sync is the commit. (By name once prepared, so the
    # trace need not show their text.)
    flight = _messages(enveloped)
    sent = [kind for direction, kind in flight if direction == "F"]
    assert sent.count("Execute") == 2
    assert sent.count("Sync") == 1
    assert max(i for i, (d, _) in enumerate(flight) if d == "F") < min(
        i for i, (d, _) in enumerate(flight) if d == "B"
    )
    assert b"BEGIN" not in enveloped
    assert b"COMMIT" not in enveloped
    # Two rows of one envelope in one batch: a transaction, for the follow-ups inside it.
    assert b"BEGIN" in in_transaction
    assert b"COMMIT" in in_transaction
    assert len(_stored(db)) == 5  # "first", and the four above


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_without_pipelines_an_enveloped_batch_takes_a_transaction(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """psycopg's pure-Python build on a libpq before 14 cannot pipeline: the envelope lock and
    the INSERT then go in BEGIN ... COMMIT, and a collision is still held for review."""
    monkeypatch.setattr(inbox_module, "_PIPELINES", False)
    inbox = Inbox(db)
    receipts: list[Receipt] = []
    try:
        connection = _kept_connection(db, inbox)
        first = inbox.receive(ORU, "mllp", "peer", IDEXX)
        trace = _protocol_trace(
            connection,
            lambda: receipts.append(inbox.receive(ORU.replace(b"P1", b"P2"), "mllp", "p", IDEXX)),
            tmp_path,
        )
    finally:
        inbox.close()
    assert b"BEGIN" in trace
    assert b"COMMIT" in trace
    assert receipts[0].collision_with == first.message_id
    assert load(db, receipts[0].message_id).status is MessageStatus.QUARANTINED


def _stored(db: Database) -> list[bytes]:
    with db.session(readonly=True) as s:
        return list(s.execute(sa.select(InboundMessage.raw).order_by(InboundMessage.id)).scalars())


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
@pytest.mark.parametrize("meta", [ASTM, IDEXX], ids=["statement", "pipeline"])
def test_a_failed_flight_is_not_retried_and_leaves_no_autocommit(
    db: Database, meta: MessageMeta
) -> None:
    """A pipelined flight that fails at its INSERT rolls back its lock too: the implicit
    transaction ends at the Sync, and the connection is usable again."""
    inbox = Inbox(db)
    try:
        with pytest.raises(StorageError, match="rejected"):
            inbox.accept(b"H|x", "c" * 100, "peer", meta)  # channel is VARCHAR(64)
        assert inbox.accept(b"H|y", "astm", "peer", meta) > 0
    finally:
        inbox.close()
    assert _stored(db) == [b"H|y"]
    for _ in range(3):  # whatever the pool hands out next is back in transaction mode
        pooled = db.engine.raw_connection()
        try:
            assert pooled.driver_connection.autocommit is False  # type: ignore[union-attr]
        finally:
            pooled.close()


@pytest.mark.parametrize("meta", [ASTM, IDEXX], ids=["statement", "pipeline"])
def test_r03_after_a_restart_the_next_message_is_stored_on_first_try(
    pg_cluster: PostgresCluster, meta: MessageMeta
) -> None:
    """The flight is its own commit and is never sent twice; the connection the restart
    killed is recognised before anything is sent, and replaced."""
    db = Database(pg_cluster.create_database("vetgateway"))
    migrate.upgrade(db)
    inbox = Inbox(db)
    after = MessageMeta(control_id="CTRL8", sender=meta.sender) if meta.control_id else meta
    try:
        inbox.accept(b"H|before", "astm", "peer", meta)
        pg_cluster.stop("fast")
        pg_cluster.start()
        inbox.accept(b"H|after", "astm", "peer", after)  # no StorageError: stale one replaced
    finally:
        inbox.close()
        stored = _stored(db)
        db.dispose()
    assert stored == [b"H|before", b"H|after"]


# -- commit delay: rows that can wait share a commit while the inbox is busy ---------------------

NEVER = 600.0  # a commit delay no test waits out: each ends it another way or fails its deadline


def _delayed(inbox: Inbox, raw: bytes, peer: str = "analyzer 2") -> Any:
    import asyncio

    return asyncio.ensure_future(inbox.receive_async(raw, "astm", peer, commit_delay=NEVER))


def test_a_lone_message_is_committed_at_once_whatever_its_delay(db: Database) -> None:
    import asyncio

    batches: list[int] = []
    inbox = Inbox(db, on_commit=batches.append)

    async def main() -> Receipt:
        return await asyncio.wait_for(_delayed(inbox, b"lone"), 30)

    receipt = asyncio.run(main())
    inbox.close()
    assert batches == [1]
    assert load(db, receipt.message_id).raw == b"lone"


def test_while_busy_delayed_rows_wait_together_until_a_caller_that_cannot_wait(
    db: Database,
) -> None:
    import asyncio

    batches: list[int] = []
    inbox = Inbox(db, on_commit=batches.append)

    async def main() -> list[Receipt]:
        first = await asyncio.wait_for(_delayed(inbox, b"first", "analyzer 1"), 30)  # alone
        waiting = [_delayed(inbox, f"delayed {n}".encode()) for n in range(3)]
        await asyncio.sleep(0)  # one turn of the loop: each has queued its row
        # Busy (another analyzer sent a row moments ago): a committer waits for company.
        assert inbox._delaying
        assert len(inbox._queue) == 3
        hurried = await asyncio.wait_for(inbox.receive_async(b"now", "mllp", "p"), 30)
        rest = await asyncio.wait_for(asyncio.gather(*waiting), 30)
        return [first, *rest, hurried]

    receipts = asyncio.run(main())
    inbox.close()
    assert batches == [1, 4]  # the three delayed rows and the hurried one: one commit
    assert [load(db, r.message_id).raw for r in receipts] == [
        b"first", b"delayed 0", b"delayed 1", b"delayed 2", b"now"
    ]  # fmt: skip
    assert inbox._leaders == 0
    assert not inbox._delaying


def test_a_delayed_batch_commits_once_it_has_enough_company(db: Database) -> None:
    import asyncio

    batches: list[int] = []
    inbox = Inbox(db, on_commit=batches.append)

    async def main() -> None:
        await asyncio.wait_for(_delayed(inbox, b"first", "analyzer 1"), 30)
        waiting = [_delayed(inbox, f"d{n}".encode()) for n in range(inbox_module.ENOUGH_COMPANY)]
        await asyncio.wait_for(asyncio.gather(*waiting), 30)

    asyncio.run(main())
    inbox.close()
    assert batches == [1, inbox_module.ENOUGH_COMPANY]


def test_a_thread_caller_ends_the_delay_and_every_row_is_stored(db: Database) -> None:
    import asyncio

    inbox = Inbox(db)

    async def main() -> list[int]:
        await asyncio.wait_for(_delayed(inbox, b"first", "analyzer 1"), 30)
        waiting = [_delayed(inbox, f"d{n}".encode()) for n in range(2)]
        await asyncio.sleep(0)
        assert inbox._delaying
        from_thread = await asyncio.wait_for(
            asyncio.to_thread(inbox.accept, b"file", "file", "p"), 30
        )
        delayed = await asyncio.wait_for(asyncio.gather(*waiting), 30)
        return [from_thread, *(r.message_id for r in delayed)]

    ids = asyncio.run(main())
    inbox.close()
    assert [load(db, i).raw for i in ids] == [b"file", b"d0", b"d1"]
    assert inbox._leaders == 0


def test_a_delay_nobody_ends_runs_its_course(db: Database) -> None:
    import asyncio
    import time

    batches: list[int] = []
    inbox = Inbox(db, on_commit=batches.append)
    delay = 0.2

    async def main() -> float:
        await inbox.receive_async(b"first", "astm", "analyzer 1", commit_delay=delay)
        began = time.monotonic()
        await asyncio.wait_for(inbox.receive_async(b"second", "astm", "p", commit_delay=delay), 30)
        return time.monotonic() - began

    waited = asyncio.run(main())
    inbox.close()
    assert batches == [1, 1]
    assert waited >= delay  # it did wait (a lower bound: no race to win)


def test_closing_the_inbox_commits_a_delayed_batch(db: Database) -> None:
    import asyncio

    inbox = Inbox(db)

    async def main() -> Receipt:
        await asyncio.wait_for(_delayed(inbox, b"first", "analyzer 1"), 30)
        waiting = _delayed(inbox, b"at shutdown")
        await asyncio.sleep(0)
        assert inbox._delaying
        await asyncio.wait_for(asyncio.to_thread(inbox.close), 30)
        return await asyncio.wait_for(waiting, 30)

    receipt = asyncio.run(main())
    assert load(db, receipt.message_id).raw == b"at shutdown"


def test_a_lone_analyzer_sending_its_backlog_is_never_delayed(db: Database) -> None:
    """Busy means other senders (as PostgreSQL's commit_siblings): one analyzer's messages back
    to back have nobody to share a commit with, so none of them waits."""
    import asyncio

    batches: list[int] = []
    inbox = Inbox(db, on_commit=batches.append)

    async def main() -> None:
        for n in range(5):
            await asyncio.wait_for(_delayed(inbox, f"backlog {n}".encode(), "analyzer 1"), 30)
            assert not inbox._delaying

    asyncio.run(main())
    inbox.close()
    assert batches == [1] * 5


def test_closing_while_batches_are_queued_stores_every_queued_row(db: Database) -> None:
    """``close()`` during a shutdown, with more asyncio callers queued than one batch holds:
    the batch in flight finishes and every queued row after it is still committed and
    answered, rather than left waiting for a committer job that can no longer start."""
    import asyncio

    inbox = Inbox(db, max_batch=1, commit_slots=1)
    gate = threading.Event()
    commit = inbox._commit

    def held_first(rows: list[dict[str, Any]]) -> list[Receipt]:
        gate.wait(30)
        return commit(rows)

    inbox._commit = held_first  # type: ignore[method-assign]

    async def main() -> list[Receipt]:
        callers = [
            asyncio.ensure_future(inbox.receive_async(f"queued {n}".encode(), "mllp", "p"))
            for n in range(5)
        ]
        await asyncio.sleep(0)
        assert len(inbox._queue) == 4  # the first is in flight, held at the gate
        closing = asyncio.ensure_future(asyncio.to_thread(inbox.close))
        await asyncio.to_thread(wait_until, lambda: inbox._committer._shutdown, 30, "shutdown")
        gate.set()
        receipts = await asyncio.wait_for(asyncio.gather(*callers), 30)
        await asyncio.wait_for(closing, 30)
        return receipts

    receipts = asyncio.run(main())
    assert [load(db, r.message_id).raw for r in receipts] == [
        f"queued {n}".encode() for n in range(5)
    ]
    assert inbox._leaders == 0


def test_a_closed_inbox_refuses_rows_so_nobody_acknowledges_them(db: Database) -> None:
    import asyncio

    inbox = Inbox(db)
    inbox.accept(b"before", "file", "p")
    inbox.close()
    with pytest.raises(StorageUnavailable, match="shutting down"):
        inbox.accept(b"after, thread", "file", "p")
    with pytest.raises(StorageUnavailable, match="shutting down"):
        asyncio.run(inbox.receive_async(b"after, asyncio", "mllp", "p"))
    assert inbox._queue == []
    with db.session(readonly=True) as s:
        assert list(s.scalars(sa.select(InboundMessage.raw))) == [b"before"]


def test_a_committer_interrupted_mid_batch_leaves_no_caller_behind_it_waiting(
    db: Database,
) -> None:
    """An interrupt (not an Exception) escaping a commit job: its caller is told the commit was
    interrupted, and the rows queued behind it are still committed by another job."""
    import asyncio

    inbox = Inbox(db, max_batch=1, commit_slots=1)
    gate = threading.Event()
    commit = inbox._commit
    calls = 0

    def interrupted_first(rows: list[dict[str, Any]]) -> list[Receipt]:
        nonlocal calls
        calls += 1
        if calls == 1:
            gate.wait(30)
            raise KeyboardInterrupt
        return commit(rows)

    inbox._commit = interrupted_first  # type: ignore[method-assign]

    async def main() -> list[Receipt | BaseException]:
        callers = [
            asyncio.ensure_future(inbox.receive_async(f"row {n}".encode(), "mllp", "p"))
            for n in range(3)
        ]
        await asyncio.sleep(0)
        assert len(inbox._queue) == 2  # the first is in flight, held at the gate
        gate.set()
        return await asyncio.wait_for(asyncio.gather(*callers, return_exceptions=True), 30)

    first, *rest = asyncio.run(main())
    inbox.close()
    assert isinstance(first, StorageError)
    assert [load(db, r.message_id).raw for r in rest if isinstance(r, Receipt)] == [
        b"row 1",
        b"row 2",
    ]
