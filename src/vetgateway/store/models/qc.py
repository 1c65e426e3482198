"""Quality control: control materials and lots, their target mean/SD per test (and device), the QC
runs an analyzer sends, per-test results with z-scores and Westgard violations, and the reviews.

Westgard rules are evaluated by a pure function (``pipeline/westgard.py``); these rows only keep
its inputs and verdict, so a reviewer can see why a run was rejected.
"""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from vetgateway.store.models.base import (
    Base,
    BigId,
    IdentityKey,
    SoftDelete,
    Timestamps,
    UuidKey,
    enum_type,
)


class QcStatus(enum.Enum):
    """Verdict on a QC run or one of its results."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    WARNING = "warning"
    REJECTED = "rejected"


class QcDecision(enum.Enum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class QcMaterial(UuidKey, Timestamps, Base):
    """A control product at one level, e.g. "Catalyst QC, level 2"."""

    __tablename__ = "qc_materials"

    name: Mapped[str] = mapped_column(sa.String(200))
    manufacturer: Mapped[str | None] = mapped_column(sa.String(200))
    level: Mapped[str | None] = mapped_column(sa.String(32))


class QcLot(UuidKey, Timestamps, Base):
    __tablename__ = "qc_lots"
    __table_args__ = (sa.UniqueConstraint("material_id", "lot_number"),)

    material_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("qc_materials.id", ondelete="CASCADE"), index=True
    )
    lot_number: Mapped[str] = mapped_column(sa.String(64))
    expires_on: Mapped[date | None] = mapped_column(sa.Date())


class QcTarget(UuidKey, Timestamps, Base):
    """Expected mean and SD of a lot for a test, optionally for one device (NULL: any device).

    Owned by its lot and by its test; a device-specific target goes with its device, since SET
    NULL would silently turn it into the target for every device.
    """

    __tablename__ = "qc_targets"

    lot_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("qc_lots.id", ondelete="CASCADE"), index=True
    )
    test_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("catalogue_tests.id", ondelete="CASCADE"), index=True
    )
    device_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("devices.id", ondelete="CASCADE"), index=True
    )
    mean: Mapped[Decimal]
    sd: Mapped[Decimal]
    unit: Mapped[str | None] = mapped_column(sa.String(32))


class QcRun(UuidKey, Timestamps, SoftDelete, Base):
    __tablename__ = "qc_runs"

    device_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("devices.id", ondelete="SET NULL"), index=True
    )
    lot_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("qc_lots.id", ondelete="SET NULL"), index=True
    )
    inbound_message_id: Mapped[int | None] = mapped_column(
        BigId, sa.ForeignKey("inbound_messages.id", ondelete="SET NULL"), index=True
    )
    # Indexed: a run sent again is recognised by its analyzer time first (``store.qc``).
    run_at: Mapped[datetime] = mapped_column(index=True)
    status: Mapped[QcStatus] = mapped_column(enum_type(QcStatus), default=QcStatus.PENDING)
    # As the analyzer sent them, before the run is linked to a configured lot.
    sample_id: Mapped[str | None] = mapped_column(sa.String(64))
    control: Mapped[str | None] = mapped_column(sa.String(200))
    lot_number: Mapped[str | None] = mapped_column(sa.String(64))


class QcResult(IdentityKey, Timestamps, SoftDelete, Base):
    __tablename__ = "qc_results"

    run_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("qc_runs.id", ondelete="CASCADE"), index=True
    )
    test_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("catalogue_tests.id", ondelete="SET NULL"), index=True
    )
    source_code: Mapped[str] = mapped_column(sa.String(64))
    value_numeric: Mapped[Decimal | None]
    value_text: Mapped[str] = mapped_column(sa.Text())
    unit: Mapped[str | None] = mapped_column(sa.String(32))
    # The analyzer's own flags, e.g. "H" or "A~<".
    abnormal_flags: Mapped[str | None] = mapped_column(sa.String(64))
    z_score: Mapped[Decimal | None]
    # Rule names violated, e.g. ["1_3s", "R_4s"]; empty when none.
    westgard_violations: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[QcStatus] = mapped_column(enum_type(QcStatus), default=QcStatus.PENDING)


class QcReview(UuidKey, Timestamps, Base):
    """A person's decision on a run, which overrides the automatic verdict."""

    __tablename__ = "qc_reviews"

    run_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("qc_runs.id", ondelete="CASCADE"), index=True
    )
    reviewer: Mapped[str] = mapped_column(sa.String(200))
    decision: Mapped[QcDecision] = mapped_column(enum_type(QcDecision))
    comment: Mapped[str | None] = mapped_column(sa.Text())
    reviewed_at: Mapped[datetime]
