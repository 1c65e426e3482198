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

PostgreSQL gets two commit slots by default, so one batch is being built and sent while the other
waits for its WAL flush (the server groups concurrent flushes itself). SQLite gets one: it has a
single writer lock, so a second slot would only queue on it.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NewType

import sqlalchemy as sa

from vetgateway.errors import StorageError
from vetgateway.store.db import Database
from vetgateway.store.models import InboundMessage, MessageStatus
from vetgateway.store.models.base import utcnow

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


class _Pending:
    """One caller's row. ``wake`` is set when the row is finished or the caller must lead."""

    __slots__ = ("error", "finished", "message_id", "promoted", "row", "wake")

    def __init__(self, row: dict[str, Any]) -> None:
        self.row = row
        self.wake = threading.Event()
        self.promoted = False
        self.finished = False
        self.message_id: MessageId | None = None
        self.error: BaseException | None = None


_COLUMNS = (
    "channel", "peer", "received_at", "raw", "size", "sha256", "control_id", "sender",
    "message_type", "meta", "status", "error", "attempts",
)  # fmt: skip


class _BatchInsert:
    """The hot-path INSERT at the driver level, with SQLAlchemy's own per-column bind processing,
    so rows are stored exactly as the ORM reads them but without ORM or Core statement overhead.

    PostgreSQL: ``executemany(..., returning=True)`` pipelines one INSERT per row in a single
    round trip and yields ids in row order. SQLite: the inserts are in-process, a loop is cheap.
    """

    def __init__(self, dialect: sa.Dialect) -> None:
        table = InboundMessage.__table__
        self._dialect = dialect.name
        self._processors = [table.c[name].type._cached_bind_processor(dialect) for name in _COLUMNS]
        if dialect.name == "postgresql":
            values = ", ".join("%s::messagestatus" if c == "status" else "%s" for c in _COLUMNS)
        else:
            values = ", ".join("?" for _ in _COLUMNS)
        columns = ", ".join(_COLUMNS)  # fixed names above, never input
        self._sql = f"INSERT INTO inbound_messages ({columns}) VALUES ({values}) RETURNING id"  # noqa: S608

    def params(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(
            row[name] if process is None else process(row[name])
            for name, process in zip(_COLUMNS, self._processors, strict=True)
        )

    def __call__(self, connection: sa.Connection, rows: list[dict[str, Any]]) -> list[MessageId]:
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            if self._dialect == "postgresql":
                cursor.executemany(self._sql, [self.params(r) for r in rows], returning=True)
                ids = []
                while True:
                    ids.append(MessageId(cursor.fetchone()[0]))
                    if not cursor.nextset():
                        break
                return ids
            ids = []
            for row in rows:
                cursor.execute(self._sql, self.params(row))
                ids.append(MessageId(cursor.fetchone()[0]))
            return ids
        finally:
            cursor.close()


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
        self._slots = commit_slots or (2 if db.dialect == "postgresql" else 1)
        self._clock = clock
        self._on_commit = on_commit
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._leaders = 0  # commit slots held, by leaders and by callers promoted to lead

    def accept(
        self, raw: bytes, channel: str, peer: str, meta: MessageMeta | None = None
    ) -> MessageId:
        """Store ``raw`` durably and return its id.

        Raises ``StorageError`` (``StorageUnavailable`` when the database is down or full) if the
        row could not be committed; the caller must then not acknowledge the sender.
        """
        pending = _Pending(self._row(raw, channel, peer, meta or MessageMeta()))
        with self._lock:
            self._queue.append(pending)
            lead = self._leaders < self._slots
            if lead:
                self._leaders += 1
        while True:
            if lead:
                self._lead_one_batch()
            pending.wake.wait()
            with self._lock:
                pending.wake.clear()
                lead = pending.promoted
                pending.promoted = False
                if pending.finished and not lead:
                    break
                if pending.finished:  # promoted too: lead the batch it was handed, then return
                    pending.wake.set()
        if pending.error is not None:
            raise pending.error
        assert pending.message_id is not None
        return pending.message_id

    def _row(self, raw: bytes, channel: str, peer: str, meta: MessageMeta) -> dict[str, Any]:
        quarantined = meta.quarantine_reason is not None
        return {
            "channel": channel,
            "peer": peer,
            "received_at": self._clock(),
            "raw": bytes(raw),
            "size": len(raw),
            "sha256": hashlib.sha256(raw).hexdigest(),
            "control_id": meta.control_id,
            "sender": meta.sender,
            "message_type": meta.message_type,
            "meta": dict(meta.extra),
            "status": MessageStatus.QUARANTINED if quarantined else MessageStatus.RECEIVED,
            "error": meta.quarantine_reason,
            "attempts": 0,
        }

    def _lead_one_batch(self) -> None:
        """Commit one batch from the head of the queue, release its callers, pass the slot on."""
        with self._lock:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
        try:
            if batch:
                self._commit_batch(batch)
        finally:
            with self._lock:
                for p in batch:
                    p.finished = True
                    p.wake.set()
                successor = next((p for p in self._queue if not p.promoted), None)
                if successor is None:
                    self._leaders -= 1
                else:
                    successor.promoted = True
                    successor.wake.set()

    def _commit_batch(self, batch: list[_Pending]) -> None:
        try:
            ids = self._commit([p.row for p in batch])
        except StorageError as exc:
            for p in batch:
                p.error = exc
        else:
            for p, message_id in zip(batch, ids, strict=True):
                p.message_id = message_id
            if self._on_commit is not None:
                self._on_commit(len(batch))
        finally:
            # Whatever happened (even our own bug), nobody waits forever and nobody is told
            # "stored" for a row that has no id.
            for p in batch:
                if p.message_id is None and p.error is None:
                    p.error = StorageError("inbox commit was interrupted; nothing was acknowledged")

    def _commit(self, rows: list[dict[str, Any]]) -> list[MessageId]:
        return self._db.write(lambda connection: self._insert(connection, rows))
