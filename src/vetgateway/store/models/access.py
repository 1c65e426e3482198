"""Who may do what: API tokens (only their hashes) and the append-only audit log."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from vetgateway.store.models.base import (
    Base,
    IdentityKey,
    Timestamps,
    UTCDateTime,
    UuidKey,
    enum_type,
)


class Role(enum.Enum):
    ADMIN = "admin"
    VETERINARIAN = "veterinarian"
    TECHNICIAN = "technician"
    QC = "qc"
    DEVICE = "device"


class ApiToken(UuidKey, Timestamps, Base):
    """A bearer token. The secret is shown once at creation; only its SHA-256 is kept."""

    __tablename__ = "api_tokens"

    name: Mapped[str] = mapped_column(sa.String(200))
    role: Mapped[Role] = mapped_column(enum_type(Role))
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuditEntry(IdentityKey, Timestamps, Base):
    """One thing that happened, by whom, to what. Rows are never updated or deleted: the
    migration installs triggers that refuse UPDATE and DELETE on both SQLite and PostgreSQL."""

    __tablename__ = "audit_log"

    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    actor: Mapped[str] = mapped_column(sa.String(200))
    action: Mapped[str] = mapped_column(sa.String(100), index=True)
    entity_type: Mapped[str] = mapped_column(sa.String(64))
    entity_id: Mapped[str] = mapped_column(sa.String(64))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (sa.Index("ix_audit_log_entity", "entity_type", "entity_id"),)
