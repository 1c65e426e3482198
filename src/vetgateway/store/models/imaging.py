"""Imaging studies received over DICOM: study → series → instance, as in the DICOM information
model (PS3.3 §A.1.2). Pixel data stays in the object store; a row keeps where, how big and its
SHA-256, so a re-sent instance is recognised by its SOP Instance UID.
"""

from __future__ import annotations

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
)
from vetgateway.store.models.patients import PatientIdentifiers

# DICOM UIDs are at most 64 characters (PS3.5 §9.1).
_UID = sa.String(64)


class ImagingStudy(UuidKey, Timestamps, SoftDelete, PatientIdentifiers, Base):
    """One study. ``study_at`` is StudyDate + StudyTime converted to UTC (with the
    TimezoneOffsetFromUTC attribute, or the clinic's zone when the modality omits it)."""

    __tablename__ = "imaging_studies"

    study_instance_uid: Mapped[str] = mapped_column(_UID, unique=True)
    accession_number: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    modality: Mapped[str | None] = mapped_column(sa.String(16))
    body_part: Mapped[str | None] = mapped_column(sa.String(64))
    description: Mapped[str | None] = mapped_column(sa.String(255))
    study_at: Mapped[datetime | None]
    device_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("devices.id", ondelete="SET NULL"), index=True
    )
    order_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("diagnostic_orders.id", ondelete="SET NULL"), index=True
    )
    clinic_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("clinics.id", ondelete="SET NULL"), index=True
    )

    series: Mapped[list[ImagingSeries]] = relationship(
        back_populates="study",
        lazy="raise",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="ImagingSeries.number",
    )


class ImagingSeries(UuidKey, Timestamps, SoftDelete, Base):
    __tablename__ = "imaging_series"

    study_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("imaging_studies.id", ondelete="CASCADE"), index=True
    )
    series_instance_uid: Mapped[str] = mapped_column(_UID, unique=True)
    modality: Mapped[str | None] = mapped_column(sa.String(16))
    body_part: Mapped[str | None] = mapped_column(sa.String(64))
    number: Mapped[int | None] = mapped_column(sa.Integer())
    description: Mapped[str | None] = mapped_column(sa.String(255))

    study: Mapped[ImagingStudy] = relationship(back_populates="series", lazy="raise")
    instances: Mapped[list[ImagingInstance]] = relationship(
        back_populates="series",
        lazy="raise",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="ImagingInstance.id",
    )


class ImagingInstance(IdentityKey, Timestamps, SoftDelete, Base):
    """One stored DICOM object (an image, a structured report …)."""

    __tablename__ = "imaging_instances"

    series_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("imaging_series.id", ondelete="CASCADE"), index=True
    )
    sop_instance_uid: Mapped[str] = mapped_column(_UID, unique=True)
    sop_class_uid: Mapped[str] = mapped_column(_UID)
    transfer_syntax_uid: Mapped[str] = mapped_column(_UID)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    size: Mapped[int] = mapped_column(sa.BigInteger())
    # Relative to the DICOM object store's root, so the store can move.
    storage_path: Mapped[str] = mapped_column(sa.String(1024))
    inbound_message_id: Mapped[int | None] = mapped_column(
        BigId, sa.ForeignKey("inbound_messages.id", ondelete="SET NULL"), index=True
    )

    series: Mapped[ImagingSeries] = relationship(back_populates="instances", lazy="raise")
