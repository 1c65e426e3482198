"""Diagnostic orders and their items: what a veterinarian asked for, against which results match.

Orders arrive from the PMS (HL7 ORM/OML) or are entered by hand; matching uses the accession,
placer and filler numbers, then the patient identifiers.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from vetgateway.store.models.base import Base, SoftDelete, Timestamps, UuidKey, enum_type
from vetgateway.store.models.patients import PatientIdentifiers


class OrderStatus(enum.Enum):
    PLACED = "placed"
    IN_PROGRESS = "in_progress"
    PARTIAL = "partial"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class OrderItemStatus(enum.Enum):
    ORDERED = "ordered"
    RESULTED = "resulted"
    CANCELLED = "cancelled"


class DiagnosticOrder(UuidKey, Timestamps, SoftDelete, PatientIdentifiers, Base):
    """One order (requisition) for one patient. ``items`` loads only when asked for
    (``selectinload``); touching it unloaded raises rather than issuing a query per order."""

    __tablename__ = "diagnostic_orders"
    # Matching's last rule finds an open order by owner surname and animal name, compared
    # trimmed and lower-cased (``store.orders.candidate_orders``): the index holds exactly that.
    __table_args__ = (
        sa.Index(
            "ix_diagnostic_orders_owner_patient_name",
            sa.text("lower(trim(owner_surname))"),
            sa.text("lower(trim(patient_name))"),
        ),
    )

    clinic_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("clinics.id", ondelete="SET NULL"), index=True
    )
    accession_number: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    placer_number: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    filler_number: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    ordering_veterinarian_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("veterinarians.id", ondelete="SET NULL"), index=True
    )
    ordered_at: Mapped[datetime | None]
    status: Mapped[OrderStatus] = mapped_column(enum_type(OrderStatus), default=OrderStatus.PLACED)
    # Where the order came from, e.g. "pms", "hl7", "manual".
    source: Mapped[str] = mapped_column(sa.String(64))

    items: Mapped[list[OrderItem]] = relationship(
        back_populates="order",
        lazy="raise",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="OrderItem.created_at",
    )


class OrderItem(UuidKey, Timestamps, SoftDelete, Base):
    """One ordered test. ``ordered_code`` keeps the code as ordered, mapped or not."""

    __tablename__ = "order_items"

    order_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("diagnostic_orders.id", ondelete="CASCADE"), index=True
    )
    test_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("catalogue_tests.id", ondelete="SET NULL"), index=True
    )
    ordered_code: Mapped[str] = mapped_column(sa.String(64))
    status: Mapped[OrderItemStatus] = mapped_column(
        enum_type(OrderItemStatus), default=OrderItemStatus.ORDERED
    )

    order: Mapped[DiagnosticOrder] = relationship(back_populates="items", lazy="raise")
