"""Devices: in-house analyzers, reference-lab interfaces and imaging modalities.

Adapters identify the sending device by ``sender_id`` (ASTM H-record sender, HL7 MSH-4 facility or
the DICOM calling AE title). ``quiet_limit_seconds`` and ``last_seen_at`` drive the "device went
silent" operational alert.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from vetgateway.store.models.base import Base, SoftDelete, Timestamps, UuidKey, enum_type


class DeviceKind(enum.Enum):
    ANALYZER = "analyzer"
    REFERENCE_LAB = "reference_lab"
    MODALITY = "modality"


class DeviceProtocol(enum.Enum):
    HL7_MLLP = "hl7_mllp"
    HL7_HTTP = "hl7_http"
    HL7_FILE = "hl7_file"
    ASTM = "astm"
    PLAIN_TEXT = "plain_text"
    DICOM = "dicom"


class Device(UuidKey, Timestamps, SoftDelete, Base):
    """One connected device and how to talk to it."""

    __tablename__ = "devices"
    # One live device per name: the config names analyzers, and two gateways syncing the same
    # config at once must not create one twice (``store.devices.sync_devices``).
    __table_args__ = (
        sa.Index(
            "uq_devices_name_live",
            "name",
            unique=True,
            postgresql_where=sa.text("deleted_at IS NULL"),
            sqlite_where=sa.text("deleted_at IS NULL"),
        ),
    )

    clinic_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("clinics.id", ondelete="SET NULL"), index=True
    )
    name: Mapped[str] = mapped_column(sa.String(200))
    kind: Mapped[DeviceKind] = mapped_column(enum_type(DeviceKind))
    manufacturer: Mapped[str | None] = mapped_column(sa.String(200))
    model: Mapped[str | None] = mapped_column(sa.String(200))
    serial_number: Mapped[str | None] = mapped_column(sa.String(100))
    protocol: Mapped[DeviceProtocol] = mapped_column(enum_type(DeviceProtocol))
    # The parser/driver that understands this model's dialect (e.g. "idexx_catalyst").
    driver: Mapped[str | None] = mapped_column(sa.String(100))
    # Transport settings: serial port and baud rate, host and port, drop folder … per protocol.
    connection: Mapped[dict[str, Any]] = mapped_column(default=dict)
    sender_id: Mapped[str | None] = mapped_column(sa.String(200), index=True)
    quiet_limit_seconds: Mapped[int | None] = mapped_column(sa.Integer())
    last_seen_at: Mapped[datetime | None]
    active: Mapped[bool] = mapped_column(sa.Boolean(), default=True)
