"""Analyzer devices: kept in step with the config, looked up by the intake, watched for silence.

The config file is the source of truth for which analyzers exist (an installation's IT person
edits one file); ``sync_devices`` makes the ``devices`` table match it at start-up, so pages,
QC runs and messages can refer to a device row that outlives config edits: a device removed from
the config is deactivated, never deleted (its QC history stays attached). A device is identified
by its name.

``last_seen_at`` is written in batches (``record_last_seen``): the intake notes arrivals in
memory and the silence watch flushes them every few seconds, so a busy analyzer costs no extra
write per message. Like every store function these take a session and never commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from vetgateway.analyzers.config import AnalyzerConfig
from vetgateway.store.audit import audit
from vetgateway.store.models import Device, DeviceKind, DeviceProtocol

__all__ = [
    "DeviceView",
    "active_devices",
    "device_meta",
    "listener_device",
    "record_last_seen",
    "sync_devices",
]

ENTITY_TYPE = "device"


@dataclass(frozen=True, slots=True)
class DeviceView:
    """What the intake, the pipeline and the silence watch need of a device."""

    id: uuid.UUID
    name: str
    driver: str | None
    sender_id: str | None
    connection: str
    clinic_id: uuid.UUID | None
    quiet_limit_seconds: int | None
    last_seen_at: datetime | None
    created_at: datetime
    model: str | None = None


def _connection(config: AnalyzerConfig) -> dict[str, object]:
    fields: dict[str, object] = {"kind": config.connection}
    if config.connection == "tcp_client":
        fields |= {"host": config.host, "port": config.port}
    elif config.connection == "serial":
        fields |= {
            "port": config.serial_port,
            "baudrate": config.baudrate,
            "bytesize": config.bytesize,
            "parity": config.parity,
            "stopbits": config.stopbits,
            "xonxoff": config.xonxoff,
            "rtscts": config.rtscts,
        }
    return fields


def sync_devices(
    session: Session,
    analyzers: Sequence[AnalyzerConfig],
    protocols: Mapping[str, DeviceProtocol],
    clinics: Mapping[str, uuid.UUID],
    models: Mapping[str, str] | None = None,
) -> list[DeviceView]:
    """Create or update one device row per configured analyzer; deactivate the others.

    ``protocols`` gives each analyzer's protocol by name (from its driver), ``clinics`` the
    clinic ids by code, ``models`` the analyzer model its driver is for. Changes are audited
    (``device.configured`` / ``device.deactivated``). On PostgreSQL the sync holds a transaction
    lock, so gateways starting together take turns (a unique index backs it on both dialects).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SELECT pg_advisory_xact_lock(hashtextextended('devices', 0))"))
    existing = {
        d.name: d
        for d in session.scalars(
            sa.select(Device).where(
                Device.kind == DeviceKind.ANALYZER,
                Device.protocol.in_([DeviceProtocol.ASTM, DeviceProtocol.PLAIN_TEXT]),
                Device.deleted_at.is_(None),
            )
        )
    }
    for config in analyzers:
        values = {
            "driver": config.driver,
            "model": (models or {}).get(config.name),
            "protocol": protocols[config.name],
            "connection": _connection(config),
            "sender_id": config.sender_id,
            "quiet_limit_seconds": (
                None if config.quiet_minutes is None else round(config.quiet_minutes * 60)
            ),
            "clinic_id": clinics.get(config.clinic) if config.clinic else None,
            "active": True,
        }
        device = existing.pop(config.name, None)
        if device is None:
            device = Device(name=config.name, kind=DeviceKind.ANALYZER, **values)
            session.add(device)
        elif all(getattr(device, key) == value for key, value in values.items()):
            continue
        else:
            for key, value in values.items():
                setattr(device, key, value)
        session.flush()
        audit(
            session,
            actor="config",
            action="device.configured",
            entity_type=ENTITY_TYPE,
            entity_id=str(device.id),
            details={"name": config.name, "driver": config.driver},
        )
    for device in existing.values():
        if device.active:
            device.active = False
            audit(
                session,
                actor="config",
                action="device.deactivated",
                entity_type=ENTITY_TYPE,
                entity_id=str(device.id),
                details={"name": device.name},
            )
    session.flush()
    return active_devices(session)


def active_devices(session: Session) -> list[DeviceView]:
    """The active analyzers, by name."""
    rows = session.scalars(
        sa.select(Device)
        .where(
            Device.kind == DeviceKind.ANALYZER,
            Device.active.is_(True),
            Device.deleted_at.is_(None),
        )
        .order_by(Device.name)
    )
    return [
        DeviceView(
            id=d.id,
            name=d.name,
            driver=d.driver,
            sender_id=d.sender_id,
            connection=str((d.connection or {}).get("kind", "listener")),
            clinic_id=d.clinic_id,
            quiet_limit_seconds=d.quiet_limit_seconds,
            last_seen_at=d.last_seen_at,
            created_at=d.created_at,
            model=d.model,
        )
        for d in rows
    ]


def listener_device(session: Session, sender_id: str) -> DeviceView | None:
    """The active analyzer on the shared listener with this sender id (H-5), if configured."""
    return next(
        (
            d
            for d in active_devices(session)
            if d.connection == "listener" and d.sender_id == sender_id
        ),
        None,
    )


def device_meta(device: DeviceView, sender: str | None) -> dict[str, object]:
    """What a stored analyzer message's meta says of its device: the pipeline's driver, code
    map and clinic come from here (``pipeline/parse/results.py``)."""
    meta: dict[str, object] = {"device_id": str(device.id), "device": device.name}
    meta["driver"] = device.driver
    if device.clinic_id is not None:
        meta["clinic_id"] = str(device.clinic_id)
    if device.sender_id and sender and sender != device.sender_id:
        meta["sender_mismatch"] = f"configured {device.sender_id!r}, sent {sender!r}"
    return meta


def record_last_seen(session: Session, seen: Mapping[uuid.UUID, datetime]) -> None:
    """Move each device's ``last_seen_at`` forward to the time given (never back)."""
    for device_id, at in seen.items():
        session.execute(
            sa.update(Device)
            .where(
                Device.id == device_id,
                sa.or_(Device.last_seen_at.is_(None), Device.last_seen_at < at),
            )
            .values(last_seen_at=at)
        )
