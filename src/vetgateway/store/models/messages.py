"""Inbound messages: the raw bytes of everything received, the system of record for intake.

A row is written before the sender is acknowledged and is never deleted. Its ``status`` is the
pipeline's work queue: ``received`` rows are unfinished work that the sweeper re-enqueues.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from vetgateway.store.models.base import (
    Base,
    BigId,
    IdentityKey,
    Timestamps,
    UTCDateTime,
    enum_type,
    sparse_index,
)


class MessageStatus(enum.Enum):
    RECEIVED = "received"
    PROCESSED = "processed"
    UNMATCHED = "unmatched"
    QUARANTINED = "quarantined"
    DUPLICATE = "duplicate"


class InboundMessage(IdentityKey, Timestamps, Base):
    __tablename__ = "inbound_messages"
    __table_args__ = (
        sa.Index("ix_inbound_messages_status_next_attempt", "status", "next_attempt_at"),
        # A resend of the same message (same sender, control id and bytes) is one row: the
        # inbox's INSERT ... ON CONFLICT DO NOTHING finds the original and replays its answer.
        # It also serves the collision check (same sender and control id, other bytes).
        sa.Index(
            "uq_inbound_messages_sender_control_id_sha256",
            "sender",
            "control_id",
            "sha256",
            unique=True,
        ),
        sparse_index("inbound_messages", "duplicate_of_id"),
    )

    channel: Mapped[str] = mapped_column(sa.String(64))
    peer: Mapped[str] = mapped_column(sa.String(255), default="")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    raw: Mapped[bytes] = mapped_column(sa.LargeBinary())
    size: Mapped[int] = mapped_column(sa.Integer())
    sha256: Mapped[str] = mapped_column(sa.String(64))
    # What the adapter could read off the envelope without parsing the content.
    control_id: Mapped[str | None] = mapped_column(sa.String(199))
    sender: Mapped[str | None] = mapped_column(sa.String(255))
    message_type: Mapped[str | None] = mapped_column(sa.String(64))
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[MessageStatus] = mapped_column(
        enum_type(MessageStatus), default=MessageStatus.RECEIVED
    )
    error: Mapped[str | None] = mapped_column(sa.Text())
    attempts: Mapped[int] = mapped_column(sa.Integer(), default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The acknowledgement we sent, kept so a resend of the same message gets the same answer.
    ack: Mapped[bytes | None] = mapped_column(sa.LargeBinary())
    duplicate_of_id: Mapped[int | None] = mapped_column(
        BigId, sa.ForeignKey("inbound_messages.id", ondelete="SET NULL")
    )
