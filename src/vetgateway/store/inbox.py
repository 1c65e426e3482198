"""The durable inbox: every adapter's one way to hand over what it received.

``Inbox.accept`` returns only once the raw bytes are committed (see ``store.db`` for the per-dialect
durability settings), so an adapter that acknowledges after it returns never acknowledges anything
that a crash could lose. It never rejects odd bytes: whatever arrived is stored as given.

**Group commit.** A commit costs one fsync (SQLite) or one WAL flush (PostgreSQL), and that, not
the INSERT, limits a single writer. Callers queue their rows; a caller that finds a free commit
slot becomes a *leader*: it takes everything queued so far (up to ``max_batch``), inserts it in one
transaction, commits, and releases each caller in that batch with its own id. Callers that arrive
meanwhile queue up, and when a leader finishes it hands its slot to the oldest waiting caller, who
leads the next batch. No caller returns before the commit that holds its row, and a single writer
pays no hand-off: it leads its own batch of one.

Asyncio callers (``receive_async``, the network listeners) never block their loop and never cost
a thread hop per message: their rows join the same queue, a small committer pool leads batches on
their behalf, and each batch settles all its futures with one ``call_soon_threadsafe`` per loop.

**Commit delay.** Group commit only helps callers that overlap. Analyzer messages arrive one by
one, each after a tenth of a second or more on its line, so at 32 analyzers nearly every message
paid a commit of its own: an fsync and two thread wake-ups. A caller may therefore offer to wait a
few milliseconds for company (``receive_async(commit_delay=...)``), as PostgreSQL's
``commit_delay`` does; the inbox takes the offer only while busy, and any caller that cannot
wait ends the wait (see ``receive_async``).

**Resends and collisions.** A message whose sender, control id and bytes equal a stored one is not
stored again: ``receive`` returns the original's id and time with ``duplicate=True``, so the adapter
can answer exactly as it did the first time (RELIABILITY R01, R07, R10). The same sender and control
id with *other* bytes is stored, quarantined for review and reported as ``collision_with`` (R08):
never merged, never dropped. Both are decided by the batch's own INSERT, at no extra commit.
On PostgreSQL batches commit side by side (two commit slots, or several gateways on one
database), and a transaction cannot see another's uncommitted row: two messages with the same
envelope in flight at once would each miss the other. So a batch first takes a transaction lock
for each (sender, control id) it carries, in one sorted order; the second of two such messages is
inserted only once the first is committed, and sees it. The lock and the INSERT go out together
in one pipelined flight, which the server commits at its end (``_BatchInsert.is_one_flight``).

**Commit slots** (``VETGATEWAY_INBOX_COMMIT_SLOTS``; how many batches may be in flight at once)
default to the back end's best: two on PostgreSQL, one on SQLite. A PostgreSQL batch is a string
of waits (the rows out, the WAL flush, the answer back), during which the CPU idles; a second slot
fills them. Measured with bench/mllp.py on 2 cores, 16 MLLP senders, gateway only storing and
dispatching: 4.2k-4.6k ACKs/s on one slot, 4.8k-5.2k on two, three no better than one (batches
get smaller). SQLite has a single writer lock, so a second slot would only wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NewType

import psycopg
import sqlalchemy as sa

from vetgateway.errors import StorageError, StorageUnavailable
from vetgateway.store.bulk import bind_processor, numbered_rows
from vetgateway.store.db import Database, PinnedConnection
from vetgateway.store.models import InboundMessage, MessageStatus
from vetgateway.store.models.base import utcnow

log = logging.getLogger(__name__)

MessageId = NewType("MessageId", int)


@dataclass(frozen=True, slots=True)
class MessageMeta:
    """What an adapter can say about a message without parsing its content."""

    control_id: str | None = None
    sender: str | None = None
    message_type: str | None = None
    # Set when the adapter knows the content is unusable: stored quarantined with this reason.
    quarantine_reason: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Receipt:
    """What the inbox did with one message; ``message_id`` is durable when this is returned."""

    message_id: MessageId
    received_at: datetime
    # The same sender, control id and bytes were stored before: message_id is that original.
    duplicate: bool = False
    # The same sender and control id with other bytes is stored as this one: held for review.
    collision_with: MessageId | None = None


class _Pending:
    """One caller's row. A thread caller waits on ``wake`` (set when its row is finished or when
    it must lead); an asyncio caller awaits ``future``, settled on its own loop, and has no
    ``wake``: an Event is a lock and a condition, a visible cost per message on the MLLP path."""

    __slots__ = ("error", "finished", "future", "loop", "promoted", "receipt", "row", "wake")

    def __init__(
        self,
        row: dict[str, Any],
        wake: threading.Event | None = None,
        future: asyncio.Future[Receipt] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.row = row
        self.wake = wake
        self.future = future
        self.loop = loop
        self.promoted = False
        self.finished = False
        self.receipt: Receipt | None = None
        self.error: BaseException | None = None


_COLUMNS = (
    "channel", "peer", "received_at", "raw", "size", "sha256", "control_id", "sender",
    "message_type", "meta", "status", "error", "attempts",
)  # fmt: skip

_KEY = "(sender, control_id, sha256)"
# The earliest stored message with the same sender and control id but other bytes.
_EARLIEST_COLLISION = (
    "(SELECT min(m.id) FROM inbound_messages m"
    " WHERE m.sender = inbound_messages.sender AND m.control_id = inbound_messages.control_id"
    " AND m.sha256 <> inbound_messages.sha256 AND m.id < inbound_messages.id)"
)


class _BatchInsert:
    """The hot-path INSERT at the driver level, with SQLAlchemy's own per-column bind processing
    (bar one faster equivalent, ``bulk.bind_processor``), so rows are stored exactly as the ORM
    reads them but without ORM or Core statement overhead.

    Each inserted row with a sender and a control id also returns the earliest stored message
    with the same two but other bytes (a collision). A resend (``ON CONFLICT DO NOTHING`` returns
    no row) is looked up afterwards in the same transaction; it is rare. A row lacking either
    can be neither, and is inserted plainly.

    SQLite is in-process, so one statement per row in a loop is cheap. PostgreSQL takes a whole
    batch in *one* statement: the server's cost per statement, not per byte, dominates small
    rows, and one multi-row INSERT stored 5 kB rows 10-35 % faster than the same rows pipelined
    one statement each (batches of 4-16, measured on 2 cores). One statement changes two things,
    both handled here:

    - Which returned id belongs to which row. The rows are inserted ``ORDER BY`` their position
      in the batch, so the sequence hands out ids in that order; sorted by id, the returned rows
      pair off with the inserted ones in order, and each pair's key (sender, control id, hash) is
      checked, so a mismatch fails the batch rather than give a caller someone else's id.
    - Collisions inside the batch. ``RETURNING``'s subquery sees only rows stored before the
      statement, so a row colliding with an earlier row of the same batch is found here, in
      Python, from the batch's own ids.
    """

    def __init__(self, dialect: sa.Dialect) -> None:
        table = InboundMessage.__table__
        self._pg = dialect.name == "postgresql"
        # Only a few columns need converting (time, JSON, enum); the rest pass as they are.
        self._processors = [
            (index, process)
            for index, name in enumerate(_COLUMNS)
            if (process := bind_processor(table.c[name], dialect)) is not None
        ]
        # PostgreSQL: one RawCursor serves the whole batch (see ``__call__``), so its
        # statements carry the server's own numbered placeholders.
        first, second, third = ("$1", "$2", "$3") if self._pg else ("?", "?", "?")
        # SQLite, one row per statement. Its RETURNING subquery sees rows committed earlier and
        # those this transaction inserted in earlier statements.
        insert = (
            f"INSERT INTO inbound_messages ({', '.join(_COLUMNS)})"
            f" VALUES ({', '.join('?' for _ in _COLUMNS)})"
        )
        self._insert = f"{insert} ON CONFLICT {_KEY} DO NOTHING RETURNING id, {_EARLIEST_COLLISION}"
        # A row without sender or control id can neither be a resend nor collide (NULLs never
        # match in the unique index), so it takes a plain INSERT and the driver's ``lastrowid``:
        # - the subquery must not run at all: SQLite 3.40 inside RETURNING walks every stored
        #   row whose sender or control id is NULL, so each envelope-less message (every ASTM
        #   and plain-text one) cost time in proportion to all such messages before it (0.2 ms
        #   per row at 2,000 rows);
        # - ON CONFLICT and RETURNING alone cost 5-6 us a row more than a plain INSERT.
        self._insert_envelope_less = insert
        self._find_original = (
            "SELECT id, received_at FROM inbound_messages"
            f" WHERE sender = {first} AND control_id = {second} AND sha256 = {third}"
        )
        self._quarantine = (
            f"UPDATE inbound_messages SET status = 'quarantined', error = {first}"
            f" WHERE id = {second}"
        )
        self._received_at = table.c.received_at.type._cached_result_processor(dialect, None)
        # PostgreSQL: each placeholder cast to its column's type (without a length, so an
        # oversized value still fails at the column rather than being cut), since a VALUES list
        # inside a SELECT has no target column to type its parameters; then the row's position.
        self._casts = (
            *(re.sub(r"\(.*\)", "", table.c[name].type.compile(dialect)) for name in _COLUMNS),
            "integer",
        )
        # The INSERT of each small batch size met so far: they recur, and the text of one is
        # a few kB built from a few hundred pieces.
        self._statements: dict[tuple[int, bool], str] = {}

    def is_one_flight(self, rows: list[dict[str, Any]]) -> bool:
        """Whether ``rows`` go out in one flight, committed by the server at its end
        (``Database.write(one_flight=...)``): on PostgreSQL, every batch in which no two rows
        share a sender and control id. Such a batch is its INSERT alone, or, with any enveloped
        row, its envelope locks and its INSERT pipelined; a collision with a stored message is
        quarantined by the INSERT itself, and a resend's original is looked up after the commit
        (it was committed before the INSERT skipped the resend). Two rows of one envelope in one
        batch (a lab resending at once, rare) need follow-ups inside the transaction, so that
        batch takes BEGIN ... COMMIT, as does every enveloped batch where psycopg runs on a
        libpq too old for pipelines (before 14: its pure-Python build on an old system).

        In one flight the id check after the INSERT can only refuse ids, no longer undo the
        rows, which the callers would send again (a mismatch is a can't-happen, checked for
        safety)."""
        if not self._pg:
            return False
        envelopes = [
            (row["sender"], row["control_id"])
            for row in rows
            if row["sender"] is not None and row["control_id"] is not None
        ]
        if not envelopes:
            return True
        return _PIPELINES and len(set(envelopes)) == len(envelopes)

    def params(self, row: dict[str, Any]) -> list[Any]:
        values = [row[name] for name in _COLUMNS]
        for index, process in self._processors:
            values[index] = process(values[index])
        return values

    def __call__(
        self, connection: Any, rows: list[dict[str, Any]], *, one_flight: bool = False
    ) -> list[Receipt]:
        """Insert ``rows`` and say what became of each. With ``one_flight`` (see
        ``is_one_flight``) the connection is in autocommit mode and the rows are committed
        once the INSERT's flight is back, before any resend is looked up."""
        cursor = psycopg.RawCursor(connection) if self._pg else connection.cursor()
        try:
            receipts = []
            found = self._insert_rows(cursor, rows, one_flight=one_flight)
            for row, (row_id, earlier) in zip(rows, found, strict=True):
                if row_id is None:
                    receipts.append(self._resend(cursor, row))
                    continue
                if earlier is not None and not one_flight:
                    self._hold_for_review(cursor, row_id, earlier)
                receipts.append(Receipt(row_id, row["received_at"], collision_with=earlier))
            return receipts
        finally:
            cursor.close()

    def _insert_rows(
        self, cursor: Any, rows: list[dict[str, Any]], *, one_flight: bool
    ) -> list[tuple[MessageId | None, MessageId | None]]:
        """(new id or None for a resend, earliest colliding id or None) for each row."""
        if self._pg:
            return self._insert_batch(cursor, rows, one_flight=one_flight)
        found: list[tuple[MessageId | None, MessageId | None]] = []
        for row in rows:
            if row["sender"] is None or row["control_id"] is None:
                cursor.execute(self._insert_envelope_less, self.params(row))
                found.append((MessageId(cursor.lastrowid), None))
                continue
            result = cursor.execute(self._insert, self.params(row)).fetchone()
            found.append((None, None) if result is None else _ids(*result))
        return found

    def _insert_batch(
        self, cursor: Any, rows: list[dict[str, Any]], *, one_flight: bool
    ) -> list[tuple[MessageId | None, MessageId | None]]:
        """PostgreSQL: the whole batch in one statement (see the class docstring), on a
        ``RawCursor``: psycopg re-parses a ``%s`` statement of over 50 parameters every time.
        The envelope locks go out on the same cursor; its results are the INSERT's, the last.

        In one flight with envelope locks to take, the lock and the INSERT are pipelined: both
        go out together and the server commits them as one implicit transaction at the
        pipeline's end (its Sync), so the locks are held until the rows are durable. Each
        statement still takes its own snapshot (READ COMMITTED), so the INSERT, run only once
        the locks are granted, sees a message of the same envelope that another batch
        committed while this one waited for its lock."""
        connection = cursor.connection
        locks = _envelope_locks(rows)
        pipeline = connection.pipeline() if one_flight and locks else contextlib.nullcontext()
        with pipeline:
            if locks:
                cursor.execute(_LOCK_ENVELOPES, (_ENVELOPE_LOCKS, locks))
            cursor.execute(
                self._pg_statement(len(rows), enveloped=bool(locks)),
                [value for n, row in enumerate(rows) for value in (*self.params(row), n)],
                # psycopg prepares a statement from its fifth use, one plan per batch size
                # and connection: worth it for the small batches that recur, not large ones.
                prepare=None if len(rows) <= _PREPARED_BATCH_ROWS else False,
            )
        inserted = iter(sorted(cursor.fetchall()))  # by id, which is batch order
        first_in_batch: dict[tuple[str, str], MessageId] = {}
        found: list[tuple[MessageId | None, MessageId | None]] = []
        returned = next(inserted, None)
        for row in rows:
            key = (row["sender"], row["control_id"], row["sha256"])
            if returned is None or tuple(returned[1:4]) != key:
                if None in key:  # nothing to conflict with, so it must have been inserted
                    raise RuntimeError("inbox batch: returned ids do not match the rows sent")
                found.append((None, None))  # a resend
                continue
            row_id, earlier = _ids(returned[0], returned[4])
            if key[0] is not None and key[1] is not None:
                # Rows of this batch sharing sender and control id all differ in bytes (equal
                # bytes would have been a resend), so the first of them collides with the rest.
                batch_first = first_in_batch.setdefault((key[0], key[1]), row_id)
                if batch_first != row_id and (earlier is None or batch_first < earlier):
                    earlier = batch_first
            found.append((row_id, earlier))
            returned = next(inserted, None)
        if returned is not None:
            raise RuntimeError("inbox batch: more ids returned than rows sent")
        return found

    def _pg_statement(self, count: int, *, enveloped: bool) -> str:
        """``_build_pg_statement``, kept for the batch sizes that are also prepared."""
        if count > _PREPARED_BATCH_ROWS:
            return self._build_pg_statement(count, enveloped=enveloped)
        statement = self._statements.get((count, enveloped))
        if statement is None:
            statement = self._build_pg_statement(count, enveloped=enveloped)
            self._statements[count, enveloped] = statement
        return statement

    def _build_pg_statement(self, count: int, *, enveloped: bool) -> str:
        """One INSERT for ``count`` rows, inserted in batch order.

        A batch in which no row has both sender and control id (analyzers', plain text) can
        neither hold a resend nor a collision, and goes without ``ON CONFLICT``: PostgreSQL's
        speculative insertion costs a WAL record and an index probe per row, 5-6 % of the rate
        (measured with psycopg alone, batches of 1 and 8 rows of 5 kB).

        An enveloped row that collides with a stored message is inserted already quarantined
        for review, so no follow-up statement is needed (``is_one_flight``).
        """
        columns = ", ".join(_COLUMNS)
        values = numbered_rows(len(self._casts), count, self._casts)
        batch = f"(VALUES {values}) AS batch({columns}, position)"
        if not enveloped:
            return (
                f"INSERT INTO inbound_messages ({columns}) SELECT {columns} FROM {batch}"
                " ORDER BY position RETURNING id, sender, control_id, sha256, NULL"
            )
        held = _COLLISION_REASON.replace("'", "''").format("%s")
        selected = ", ".join(
            {
                "status": "CASE WHEN collision.earlier IS NULL THEN batch.status"
                " ELSE 'quarantined' END",
                "error": "CASE WHEN collision.earlier IS NULL THEN batch.error"
                f" ELSE format('{held}', collision.earlier) END",
            }.get(name, f"batch.{name}")
            for name in _COLUMNS
        )
        return (
            f"INSERT INTO inbound_messages ({columns}) SELECT {selected} FROM {batch}"
            " LEFT JOIN LATERAL (SELECT min(m.id) AS earlier FROM inbound_messages m"
            " WHERE m.sender = batch.sender AND m.control_id = batch.control_id"
            " AND m.sha256 <> batch.sha256) AS collision ON true"
            f" ORDER BY position ON CONFLICT {_KEY} DO NOTHING"
            f" RETURNING id, sender, control_id, sha256, {_EARLIEST_COLLISION}"
        )

    def _resend(self, cursor: Any, row: dict[str, Any]) -> Receipt:
        cursor.execute(self._find_original, (row["sender"], row["control_id"], row["sha256"]))
        original_id, received_at = cursor.fetchone()
        if self._received_at is not None:
            received_at = self._received_at(received_at)
        return Receipt(MessageId(original_id), _as_utc(received_at), duplicate=True)

    def _hold_for_review(self, cursor: Any, message_id: MessageId, original: MessageId) -> None:
        cursor.execute(self._quarantine, (_COLLISION_REASON.format(original), message_id))


# Whether this psycopg can pipeline (libpq 14 or later; the binary build bundles one).
_PIPELINES = psycopg.Pipeline.is_supported()

# The largest batch whose INSERT may be prepared on the server (see ``_insert_batch``).
_PREPARED_BATCH_ROWS = 32

# The first key of the inbox's two-key advisory locks ("VGIB"): a space of its own, apart from
# the single-key locks that orders and devices take.
_ENVELOPE_LOCKS = 0x56474942


# Why a message is held: the same sender and control id as message {} but other bytes (R08).
_COLLISION_REASON = (
    "control id collision: message {} from the same sender has the same control id with"
    " different content; held for review, not processed"
)

# Serialises a batch with any other in flight that carries the same sender and control id (see
# "Resends and collisions" above). The locks last until commit or rollback; taken in sorted
# order, so two batches never wait for each other in a circle.
_LOCK_ENVELOPES = "SELECT pg_advisory_xact_lock($1, k) FROM unnest($2::integer[]) AS k"


def _envelope_locks(rows: list[dict[str, Any]]) -> list[int]:
    """The sorted lock keys of the batch's envelopes (rows with sender and control id)."""
    return sorted(
        {
            _envelope_lock(row["sender"], row["control_id"])
            for row in rows
            if row["sender"] is not None and row["control_id"] is not None
        }
    )


def _envelope_lock(sender: str, control_id: str) -> int:
    """A 32-bit lock key for one envelope; two envelopes sharing one only wait for each other."""
    digest = hashlib.blake2b(
        f"{sender}\x00{control_id}".encode("utf-8", "backslashreplace"), digest_size=4
    ).digest()
    return int.from_bytes(digest, "big", signed=True)


def _ids(new: int, earlier: int | None) -> tuple[MessageId, MessageId | None]:
    return MessageId(new), None if earlier is None else MessageId(earlier)


def _settle(pendings: list[_Pending]) -> None:
    """On the caller's loop: hand each asyncio caller its receipt or error."""
    for p in pendings:
        assert p.future is not None
        if p.future.done():  # the caller gave up (cancelled); its row is stored all the same
            continue
        if p.error is not None:
            p.future.set_exception(p.error)
        else:
            assert p.receipt is not None
            p.future.set_result(p.receipt)


_events = threading.local()


def _thread_event() -> threading.Event:
    """This thread's wake-up event, cleared: a thread waits in one ``receive`` at a time, and
    once that returns nobody sets its event again (its row is out of the queue), so one Event
    per thread serves every call instead of a new lock and condition per message."""
    event: threading.Event | None = getattr(_events, "event", None)
    if event is None:
        event = _events.event = threading.Event()
    event.clear()
    return event


# CPython's hashlib lets go of the GIL while it hashes 2,048 bytes or more (HASHLIB_GIL_MINSIZE).
_GIL_FREE_CHUNK = 2047
_HASH_WITHOUT_GIL_FROM = 64 * 1024


def sha256_hex(raw: bytes) -> str:
    """``hashlib.sha256(raw).hexdigest()``, holding the GIL for messages under 64 KiB.

    Hashing a 5 kB message takes about 3 us; letting go of the GIL for it and taking it back
    costs more than that once other threads want it (the event loop, the commit threads, the
    dispatcher): the hash is fed in pieces too small for hashlib to let go. Measured with 16
    MLLP senders on PostgreSQL + RabbitMQ, gateway only (three A/B rounds of three runs):
    3,790-4,180 ACKs/s and 188-213 us of gateway CPU a message before, 4,030-4,500 and
    163-185 us after. A larger message (a report with a PDF) is hashed the usual way, so a long
    hash never holds up the other threads.
    """
    if len(raw) >= _HASH_WITHOUT_GIL_FROM:
        return hashlib.sha256(raw).hexdigest()
    digest = hashlib.sha256()
    view = memoryview(raw)
    for start in range(0, len(raw), _GIL_FREE_CHUNK):
        digest.update(view[start : start + _GIL_FREE_CHUNK])
    return digest.hexdigest()


# A commit delay applies when another sender's row came within this many delays: rows are
# arriving often enough that one is likely to share the commit.
BUSY_GAP = 4
# A delayed batch this large commits at once: a commit's cost is shared eight ways already, and
# every caller in it is waiting.
ENOUGH_COMPANY = 8


def default_commit_slots(dialect: str) -> int:
    """Batches in flight at once when not configured (see the module docstring)."""
    return 2 if dialect == "postgresql" else 1


def _as_utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class Inbox:
    """Durable, group-committed intake of raw messages. Safe to call from many threads."""

    def __init__(
        self,
        db: Database,
        *,
        max_batch: int = 256,
        commit_slots: int | None = None,
        clock: Callable[[], datetime] = utcnow,
        on_commit: Callable[[int], None] | None = None,
    ) -> None:
        self._db = db
        self._insert = _BatchInsert(db.engine.dialect)
        self._max_batch = max_batch
        self._slots = commit_slots or default_commit_slots(db.engine.dialect.name)
        self._clock = clock
        self._on_commit = on_commit
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._leaders = 0  # commit slots held: by leading threads, promoted ones, committer jobs
        self._closed = False
        self._committer = ThreadPoolExecutor(self._slots, thread_name_prefix="inbox-commit")
        # Commit delay (``receive_async``): a committer job holding its slot while it waits for
        # company; ``_hurry`` ends the wait early.
        self._delaying = False
        self._hurry = threading.Event()
        # The latest row's peer and monotonic time, and the latest from any other peer: whether
        # another sender is active (``receive_async``'s commit delay).
        self._latest: tuple[str, float] = ("", -math.inf)
        self._latest_other = -math.inf
        # One kept connection per commit slot: never more leaders than slots, so never empty.
        self._pins = [PinnedConnection() for _ in range(self._slots)]

    def close(self) -> None:
        """Commit every row already queued, answer its caller, and give the kept connections
        back; call once the adapters stopped. A caller arriving later gets
        ``StorageUnavailable``, so it does not acknowledge."""
        with self._lock:
            self._closed = True
            self._hurry_delayed_batch()
        self._committer.shutdown(wait=True)
        with self._lock:
            for pin in self._pins:
                pin.release()

    def accept(
        self, raw: bytes, channel: str, peer: str, meta: MessageMeta | None = None
    ) -> MessageId:
        """Store ``raw`` durably and return its id (the original's, for an identical resend).

        Raises ``StorageError`` (``StorageUnavailable`` when the database is down or full) if the
        row could not be committed; the caller must then not acknowledge the sender.
        """
        return self.receive(raw, channel, peer, meta).message_id

    def receive(
        self, raw: bytes, channel: str, peer: str, meta: MessageMeta | None = None
    ) -> Receipt:
        """Like ``accept``, with what an adapter needs to answer: time, resend, collision."""
        wake = _thread_event()
        pending = _Pending(self._row(raw, channel, peer, meta or MessageMeta()), wake)
        with self._lock:
            self._refuse_if_closed()
            self._queue.append(pending)
            self._arrived(peer, time.monotonic())
            self._hurry_delayed_batch()
            lead = self._leaders < self._slots
            if lead:
                self._leaders += 1
        while True:
            if lead and self._lead_one_batch():
                self._hand_slot_to_committer()
            wake.wait()
            with self._lock:
                wake.clear()
                lead = pending.promoted
                pending.promoted = False
                if pending.finished and not lead:
                    break
                if pending.finished:  # promoted too: lead the batch it was handed, then return
                    wake.set()
        if pending.error is not None:
            raise pending.error
        assert pending.receipt is not None
        return pending.receipt

    async def receive_async(
        self,
        raw: bytes,
        channel: str,
        peer: str,
        meta: MessageMeta | None = None,
        *,
        commit_delay: float = 0.0,
    ) -> Receipt:
        """``receive`` for asyncio callers: the same promise, without blocking the loop.

        ``commit_delay``: seconds this caller's answer may wait for other rows to share its
        commit, as PostgreSQL's ``commit_delay`` (and ``commit_siblings``) trade a little
        latency for fewer commits under load. It applies only while the inbox is busy (another
        row from another peer arrived within ``BUSY_GAP`` delays, as ``commit_siblings``) and a
        commit slot is free, so a lone message, or a lone analyzer sending its backlog, is
        committed at once; rows that arrive meanwhile join the waiting batch, and a caller that
        cannot wait (no delay: an MLLP sender, a file-drop thread) ends the wait at once. An
        analyzer line, whose message took a tenth of a second or more on the wire, loses
        nothing to a few milliseconds before its last ACK; each commit saved is an fsync and
        two thread wake-ups (see ``bench/astm.py``).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Receipt] = loop.create_future()
        pending = _Pending(
            self._row(raw, channel, peer, meta or MessageMeta()), future=future, loop=loop
        )
        delay = 0.0
        with self._lock:
            self._refuse_if_closed()
            self._queue.append(pending)
            now = time.monotonic()
            busy = now - self._arrived(peer, now) < BUSY_GAP * commit_delay
            if not commit_delay or len(self._queue) >= ENOUGH_COMPANY:
                self._hurry_delayed_batch()
            start_job = self._leaders < self._slots and not self._delaying
            if start_job:
                self._leaders += 1
                if busy:
                    delay = commit_delay
                    self._delaying = True
        if start_job:
            if delay:
                self._committer.submit(self._lead_delayed_batch, delay)
            else:
                self._committer.submit(self._lead_batches)
        return await future

    def _refuse_if_closed(self) -> None:
        """Under ``_lock``: a row offered after ``close`` is refused before it is queued."""
        if self._closed:
            raise StorageUnavailable("the inbox is closed: the gateway is shutting down")

    def _arrived(self, peer: str, now: float) -> float:
        """Under ``_lock``: note a row from ``peer``; return when another peer's row came last."""
        latest_peer, latest = self._latest
        if peer != latest_peer:
            self._latest_other, other = latest, latest
        else:
            other = self._latest_other
        self._latest = (peer, now)
        return other

    def _lead_delayed_batch(self, delay: float) -> None:
        """A committer job: wait up to ``delay`` for company (or to be hurried), then lead."""
        self._hurry.wait(delay)
        with self._lock:
            self._delaying = False
            self._hurry.clear()
        self._lead_batches()

    def _lead_batches(self) -> None:
        """A committer job: lead batches while asyncio callers wait, then free the slot. One
        job drains a backlog: no hop to another job between batches, and ``close``, which
        waits for the jobs, finds nothing left queued when they end."""
        while self._lead_one_batch():
            pass

    def _hand_slot_to_committer(self) -> None:
        """A leading thread whose slot is left to asyncio callers: a committer job takes it, so
        the thread returns to its own caller; once ``close`` stopped the jobs, the thread
        drains the queue itself."""
        try:
            self._committer.submit(self._lead_batches)
        except RuntimeError:  # shut down: no job will start
            self._lead_batches()

    def _hurry_delayed_batch(self) -> None:
        """Under ``_lock``: end a commit delay now (a caller that cannot wait has queued)."""
        if self._delaying:
            self._hurry.set()

    def _row(self, raw: bytes, channel: str, peer: str, meta: MessageMeta) -> dict[str, Any]:
        quarantined = meta.quarantine_reason is not None
        return {
            "channel": channel,
            "peer": peer,
            "received_at": self._clock(),
            "raw": bytes(raw),
            "size": len(raw),
            "sha256": sha256_hex(raw),
            "control_id": meta.control_id,
            "sender": meta.sender,
            "message_type": meta.message_type,
            "meta": dict(meta.extra),
            "status": MessageStatus.QUARANTINED if quarantined else MessageStatus.RECEIVED,
            "error": meta.quarantine_reason,
            "attempts": 0,
        }

    def _lead_one_batch(self) -> bool:
        """Commit one batch from the head of the queue, release its callers, pass the slot on:
        to the oldest waiting thread, or, when asyncio callers wait, back to the leader, which
        returns True and must lead again (``_lead_batches``) or find a job that will."""
        with self._lock:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
        interrupted = True
        try:
            if batch:
                self._commit_batch(batch)
            interrupted = False
        finally:
            settle: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}
            with self._lock:
                for p in batch:
                    p.finished = True
                    if p.loop is not None:
                        settle.setdefault(p.loop, []).append(p)
                    elif p.wake is not None:
                        p.wake.set()
                # The slot passes to the oldest waiting thread not already leading, or stays
                # with this leader for waiting asyncio callers; with nobody waiting it is freed.
                successor = next((p for p in self._queue if not p.promoted), None)
                if successor is None:
                    self._leaders -= 1
                elif successor.wake is not None:
                    successor.promoted = True
                    successor.wake.set()
            for loop, pendings in settle.items():
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                    loop.call_soon_threadsafe(_settle, pendings)
            keep = successor is not None and successor.wake is None
            if keep and interrupted:  # this leader is unwinding: a job leads for the waiting
                with contextlib.suppress(RuntimeError):  # shut down: nothing more can start
                    self._committer.submit(self._lead_batches)
        return keep

    def _commit_batch(self, batch: list[_Pending]) -> None:
        try:
            receipts = self._commit([p.row for p in batch])
        except StorageError as exc:
            for p in batch:
                p.error = exc
        except Exception:  # our bug: logged with its traceback; the callers answer "retry later"
            log.exception("inbox commit failed unexpectedly", extra={"batch": len(batch)})
        else:
            for p, receipt in zip(batch, receipts, strict=True):
                p.receipt = receipt
            if self._on_commit is not None:
                self._on_commit(len(batch))
        finally:
            # Whatever happened (even our own bug), nobody waits forever and nobody is told
            # "stored" for a row that has no id.
            for p in batch:
                if p.receipt is None and p.error is None:
                    p.error = StorageError("inbox commit was interrupted; nothing was acknowledged")

    def _commit(self, rows: list[dict[str, Any]]) -> list[Receipt]:
        with self._lock:
            pin = self._pins.pop()
        try:
            one_flight = self._insert.is_one_flight(rows)
            return self._db.write(
                lambda connection: self._insert(connection, rows, one_flight=one_flight),
                pin=pin,
                one_flight=one_flight,
            )
        finally:
            with self._lock:
                self._pins.append(pin)
