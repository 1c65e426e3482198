"""Clinics and the people who are paged: veterinarians, their contact channels, the on-call rota.

Escalation reads these tables to decide whom to page next, so a veterinarian's channels carry a
``priority`` (lowest first) and the rota says who is primary, backup or lead at a given time.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from vetgateway.store.models.base import Base, SoftDelete, Timestamps, UuidKey, enum_type


class ContactKind(enum.Enum):
    EMAIL = "email"
    SMS = "sms"
    WEBHOOK = "webhook"
    PHONE = "phone"


class OnCallLevel(enum.Enum):
    PRIMARY = "primary"
    BACKUP = "backup"
    LEAD = "lead"


class Clinic(UuidKey, Timestamps, SoftDelete, Base):
    """A practice site. Devices, orders, reports and alerts are scoped to one."""

    __tablename__ = "clinics"

    code: Mapped[str] = mapped_column(sa.String(64), unique=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    # IANA zone, used to read local times sent by devices that omit an offset (HL7 TS, DICOM DA/TM).
    timezone: Mapped[str] = mapped_column(sa.String(64), default="UTC")


class Veterinarian(UuidKey, Timestamps, SoftDelete, Base):
    """A veterinarian who orders tests and receives critical-value pages."""

    __tablename__ = "veterinarians"
    __table_args__ = (sa.UniqueConstraint("licence_state", "licence_number"),)

    name: Mapped[str] = mapped_column(sa.String(200))
    licence_number: Mapped[str | None] = mapped_column(sa.String(64))
    # Licensing jurisdiction (e.g. a US state code); licence numbers are only unique within one.
    licence_state: Mapped[str | None] = mapped_column(sa.String(16))
    dea_registration: Mapped[str | None] = mapped_column(sa.String(16))


class VeterinarianContact(UuidKey, Timestamps, Base):
    """One way to reach a veterinarian; escalation tries channels in ``priority`` order."""

    __tablename__ = "veterinarian_contacts"

    veterinarian_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("veterinarians.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[ContactKind] = mapped_column(enum_type(ContactKind))
    address: Mapped[str] = mapped_column(sa.String(500))
    priority: Mapped[int] = mapped_column(sa.Integer(), default=0)


class OnCallEntry(UuidKey, Timestamps, Base):
    """Who is on call at a clinic, at which level, over ``[starts_at, ends_at)``.

    The entry belongs to both the veterinarian and the clinic's rota, so it cascades from either.
    """

    __tablename__ = "on_call_entries"
    __table_args__ = (
        sa.CheckConstraint("ends_at > starts_at", name="ends_after_start"),
        sa.Index("ix_on_call_entries_clinic_window", "clinic_id", "starts_at", "ends_at"),
    )

    clinic_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("clinics.id", ondelete="CASCADE"), index=True
    )
    veterinarian_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("veterinarians.id", ondelete="CASCADE"), index=True
    )
    level: Mapped[OnCallLevel] = mapped_column(enum_type(OnCallLevel))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
