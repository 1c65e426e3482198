"""Alerts and the paging that escalates them until someone acknowledges.

An alert is opened by a critical value, a patient collision, an operational fault or an unmapped
code. The escalation sweeper picks alerts whose ``next_action_at`` has passed, pages the next
``level`` of the on-call rota and records each attempt as a ``Page``; an acknowledgement (API call
or a signed link in the page) stops it.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from vetgateway.store.models.base import (
    Base,
    BigId,
    IdentityKey,
    SoftDelete,
    Timestamps,
    UuidKey,
    enum_type,
    sparse_index,
)


class AlertKind(enum.Enum):
    CRITICAL_VALUE = "critical_value"
    COLLISION = "collision"
    OPERATIONAL = "operational"
    UNMAPPED = "unmapped"


class AlertState(enum.Enum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class PageChannel(enum.Enum):
    WEBHOOK = "webhook"
    EMAIL = "email"
    SMS = "sms"


class PageStatus(enum.Enum):
    PENDING = "pending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"


class AcknowledgementVia(enum.Enum):
    API = "api"
    LINK = "link"


class Alert(UuidKey, Timestamps, SoftDelete, Base):
    """``patient_label`` is what a page may show (e.g. "Rex (canine), Smith"); logs never do."""

    __tablename__ = "alerts"
    __table_args__ = (
        sa.Index("ix_alerts_state_next_action", "state", "next_action_at"),
        # A new critical finding merges into a live alert raised within the merge window, and
        # the alert lists page newest first by state.
        sa.Index("ix_alerts_state_created_at", "state", "created_at"),
        # Only device (silence) alerts have a device: the clinical ones cost no entry.
        sparse_index("alerts", "device_id"),
    )

    kind: Mapped[AlertKind] = mapped_column(enum_type(AlertKind))
    state: Mapped[AlertState] = mapped_column(enum_type(AlertState), default=AlertState.OPEN)
    result_id: Mapped[int | None] = mapped_column(
        BigId, sa.ForeignKey("lab_results.id", ondelete="SET NULL"), index=True
    )
    report_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("diagnostic_reports.id", ondelete="SET NULL"), index=True
    )
    clinic_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("clinics.id", ondelete="SET NULL"), index=True
    )
    test_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("catalogue_tests.id", ondelete="SET NULL"), index=True
    )
    patient_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid(), index=True)
    # Operational alerts about a device (an analyzer gone silent).
    device_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("devices.id", ondelete="SET NULL")
    )
    patient_label: Mapped[str | None] = mapped_column(sa.String(200))
    summary: Mapped[str] = mapped_column(sa.Text())
    # Escalation level reached so far: 0 before the first page.
    level: Mapped[int] = mapped_column(sa.Integer(), default=0)
    next_action_at: Mapped[datetime | None]
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("veterinarians.id", ondelete="SET NULL"), index=True
    )

    pages: Mapped[list[Page]] = relationship(
        back_populates="alert",
        lazy="raise",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Page.id",
    )


class Page(IdentityKey, Timestamps, Base):
    """One notification to one person on one channel, retried until delivered or given up."""

    __tablename__ = "pages"
    __table_args__ = (sa.Index("ix_pages_status_next_attempt", "status", "next_attempt_at"),)

    alert_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("alerts.id", ondelete="CASCADE"), index=True
    )
    veterinarian_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("veterinarians.id", ondelete="SET NULL"), index=True
    )
    channel: Mapped[PageChannel] = mapped_column(enum_type(PageChannel))
    # The address used, copied so a later change to the contact does not rewrite history.
    target: Mapped[str] = mapped_column(sa.String(500))
    level: Mapped[int] = mapped_column(sa.Integer())
    status: Mapped[PageStatus] = mapped_column(enum_type(PageStatus), default=PageStatus.PENDING)
    attempts: Mapped[int] = mapped_column(sa.Integer(), default=0)
    last_error: Mapped[str | None] = mapped_column(sa.Text())
    sent_at: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime | None]

    alert: Mapped[Alert] = relationship(back_populates="pages", lazy="raise")


class AlertAcknowledgement(IdentityKey, Timestamps, Base):
    __tablename__ = "alert_acknowledgements"

    alert_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("alerts.id", ondelete="CASCADE"), index=True
    )
    veterinarian_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("veterinarians.id", ondelete="SET NULL"), index=True
    )
    acknowledged_at: Mapped[datetime]
    via: Mapped[AcknowledgementVia] = mapped_column(enum_type(AcknowledgementVia))
    note: Mapped[str | None] = mapped_column(sa.Text())
