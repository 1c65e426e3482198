"""The durable inbox: every adapter's one way to hand over what it received.

``Inbox.accept`` returns only once the raw bytes are committed (see ``store.db`` for the per-dialect
durability settings), so an adapter that acknowledges after it returns never acknowledges anything
that a crash could lose. It never rejects odd bytes: whatever arrived is stored as given.

**Group commit.** A commit costs one fsync (SQLite) or one WAL flush (PostgreSQL), and that, not
the INSERT, is what limits a single writer. When several adapters accept at once, the first caller
becomes the *leader*: it takes everything queued so far (up to ``max_batch``), inserts it in one
transaction, commits, and releases each caller with its own id. Callers that arrived during that
commit queue up, and the oldest of them leads the next batch. No caller returns before the commit
that holds its row, and a single writer pays no hand-off: it leads its own batch of one.
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
    """One caller's row, waiting for the commit that holds it."""

    __slots__ = ("done", "error", "leads_next", "message_id", "row")

    def __init__(self, row: dict[str, Any]) -> None:
        self.row = row
        self.done = threading.Event()
        self.leads_next = False
        self.message_id: MessageId | None = None
        self.error: BaseException | None = None


_TABLE = sa.Table("inbound_messages", InboundMessage.metadata)
# Core, not the ORM unit of work: one multi-row INSERT ... RETURNING per batch, ids in row order.
_INSERT = sa.insert(_TABLE).returning(_TABLE.c.id, sort_by_parameter_order=True)


class Inbox:
    """Durable, group-committed intake of raw messages. Safe to call from many threads."""

    def __init__(
        self,
        db: Database,
        *,
        max_batch: int = 256,
        clock: Callable[[], datetime] = utcnow,
        on_commit: Callable[[int], None] | None = None,
    ) -> None:
        self._db = db
        self._max_batch = max_batch
        self._clock = clock
        self._on_commit = on_commit
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._leader_active = False

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
            lead = not self._leader_active
            self._leader_active = True
        if not lead:
            pending.done.wait()
            lead = pending.leads_next
        if lead:
            self._lead()
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

    def _lead(self) -> None:
        """Commit one batch from the head of the queue, then hand leadership on."""
        with self._lock:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
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
            with self._lock:
                if self._queue:
                    successor = self._queue[0]
                    successor.leads_next = True
                    successor.done.set()
                else:
                    self._leader_active = False
            for p in batch:
                if not p.leads_next:
                    p.done.set()

    def _commit(self, rows: list[dict[str, Any]]) -> list[MessageId]:
        def insert(connection: sa.Connection) -> list[MessageId]:
            return [MessageId(row_id) for row_id in connection.execute(_INSERT, rows).scalars()]

        return self._db.write(insert)
