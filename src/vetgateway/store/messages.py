"""Reading stored inbound messages and replaying them: what the messages API and
``vetgateway replay`` share.

*Replay* puts a stored message back into the pipeline's queue of record (the database, see
``models.messages``): status ``received``, ``attempts`` 0, ``next_attempt_at`` now, ``error`` and
``processed_at`` cleared; the sweeper hands it to the pipeline again. The previous status and error
go into the audit entry (``message.replayed``), so the row's history is kept there. The raw bytes
are never touched and nothing is deleted.

What may be replayed, and why not otherwise (``Replay.refused``):

- ``quarantined``, ``unmatched`` and ``processed`` messages: yes (a mapping was fixed, a policy
  changed, a collision was reviewed). Pipeline actors are idempotent on the message id, so a
  processed message replayed is re-evaluated, not duplicated.
- ``received``: refused, it is already waiting in the queue; replaying would only reset its retry
  count and hide that it keeps failing.
- ``duplicate``: refused, the row is a copy of another message (``duplicate_of_id``); replay the
  original instead.

Like every store function these take a session and never commit.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session, defer

from vetgateway.store.audit import audit
from vetgateway.store.devices import device_meta, listener_device
from vetgateway.store.models import AuditEntry, InboundMessage, MessageStatus
from vetgateway.store.models.base import utcnow

__all__ = [
    "ENTITY_TYPE",
    "REPLAYABLE",
    "Replay",
    "find_messages",
    "get_message",
    "message_history",
    "replay_message",
    "replay_refusal",
]

ENTITY_TYPE = "inbound_message"  # audit entries about a message use this and str(message id)
REPLAYABLE = frozenset(
    {MessageStatus.QUARANTINED, MessageStatus.UNMATCHED, MessageStatus.PROCESSED}
)


@dataclass(frozen=True, slots=True)
class Replay:
    """What ``replay_message`` did. ``refused`` says why nothing changed, for a 409 or the CLI."""

    message_id: int
    previous_status: MessageStatus
    previous_error: str | None
    refused: str | None = None

    @property
    def replayed(self) -> bool:
        return self.refused is None


def find_messages(
    session: Session,
    *,
    status: MessageStatus | None = None,
    control_id: str | None = None,
    channel: str | None = None,
    since: datetime | None = None,
    ids: Collection[int] | None = None,
    before_id: int | None = None,
    limit: int | None = None,
) -> Sequence[InboundMessage]:
    """Messages matching every filter given, newest (highest id) first.

    Keyset pagination: pass the last id of a page as ``before_id`` for the next one. ``since``
    compares with ``received_at`` (inclusive). The raw bytes are not loaded: touching ``raw`` on
    a returned row raises, so a list can never pull megabytes of PDF-carrying ORUs by accident.
    """
    statement = sa.select(InboundMessage).options(defer(InboundMessage.raw, raiseload=True))
    if status is not None:
        statement = statement.where(InboundMessage.status == status)
    if control_id is not None:
        statement = statement.where(InboundMessage.control_id == control_id)
    if channel is not None:
        statement = statement.where(InboundMessage.channel == channel)
    if since is not None:
        statement = statement.where(InboundMessage.received_at >= since)
    if ids is not None:
        statement = statement.where(InboundMessage.id.in_(list(ids)))
    if before_id is not None:
        statement = statement.where(InboundMessage.id < before_id)
    statement = statement.order_by(InboundMessage.id.desc())
    if limit is not None:
        statement = statement.limit(limit)
    return session.scalars(statement).all()


def get_message(session: Session, message_id: int) -> InboundMessage | None:
    """One message, raw bytes included, or None."""
    return session.get(InboundMessage, message_id)


def message_history(session: Session, message_id: int) -> Sequence[AuditEntry]:
    """The audit entries about one message, oldest first."""
    statement = (
        sa.select(AuditEntry)
        .where(AuditEntry.entity_type == ENTITY_TYPE, AuditEntry.entity_id == str(message_id))
        .order_by(AuditEntry.occurred_at, AuditEntry.id)
    )
    return session.scalars(statement).all()


def replay_message(
    session: Session, message_id: int, *, actor: str, now: datetime | None = None
) -> Replay | None:
    """Queue a stored message for the pipeline again and audit it; None for an unknown id.

    The row is locked (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite write transactions are
    exclusive already), so two concurrent replays, or a replay racing the pipeline's own status
    change, cannot interleave: the second one sees ``received`` and is refused.
    """
    message = session.get(
        InboundMessage,
        message_id,
        with_for_update=True,
        populate_existing=True,  # the locked row's status, not one read before the lock
        options=[defer(InboundMessage.raw, raiseload=True)],  # never loaded, never touched
    )
    if message is None:
        return None
    previous = Replay(message.id, message.status, message.error)
    refusal = replay_refusal(message)
    if refusal is not None:
        return Replay(message.id, message.status, message.error, refused=refusal)
    now = now or utcnow()
    details: dict[str, object] = {
        "previous_status": previous.previous_status.value,
        "previous_error": previous.previous_error,
    }
    if (device := _attribute_to_analyzer(session, message)) is not None:
        details["attributed_to_device"] = device
    message.status = MessageStatus.RECEIVED
    message.attempts = 0
    message.next_attempt_at = now
    message.processed_at = None
    message.error = None
    audit(
        session,
        actor=actor,
        action="message.replayed",
        entity_type=ENTITY_TYPE,
        entity_id=str(message.id),
        details=details,
    )
    session.flush()
    return previous


def _attribute_to_analyzer(session: Session, message: InboundMessage) -> str | None:
    """An ASTM message from a sender id nobody had configured was stored without a device
    (``adapters/analyzer/intake.py``): the fix is to add the analyzer and replay. Replaying then
    attributes it to that analyzer, as if it had just arrived: without the device the pipeline
    would read it with the generic driver and code map, and file it under no clinic. Returns the
    device's name, or None when there is nothing to attribute."""
    meta = dict(message.meta or {})
    sender = meta.get("sender_id")
    if message.message_type != "ASTM" or "device_id" in meta or not isinstance(sender, str):
        return None
    device = listener_device(session, sender)
    if device is None:
        return None
    message.meta = meta | device_meta(device, sender)
    message.sender = device.name
    return device.name


def replay_refusal(message: InboundMessage) -> str | None:
    """Why ``message`` may not be replayed, or None if it may."""
    if message.status is MessageStatus.RECEIVED:
        return "the message is already waiting in the pipeline's queue (status received)"
    if message.status is MessageStatus.DUPLICATE:
        original = message.duplicate_of_id
        target = f"message {original}" if original is not None else "the original message"
        return f"the message is a duplicate row; replay {target} instead"
    if message.status not in REPLAYABLE:  # a status added later must be decided on here
        return f"messages with status {message.status.value} cannot be replayed"
    return None
