"""Operational alerts about devices: an analyzer gone silent, raised once and cleared by itself.

These alerts are for the practice's IT contact, not the on-call veterinarian, so they are never
escalated through the rota (``next_action_at`` stays NULL, which the pager's escalation step
skips): their pages are written here, one pending page per IT contact, and the pager's delivery
step sends them over the same channels as critical-value pages, with the same retries.

At most one open silence alert per device: a second check while the device is still quiet finds
it and does nothing. When the device is heard from again the alert is resolved and its unsent
pages are cancelled. Audited as ``alert.device_silent`` / ``alert.device_heard``. Never commits.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from vetgateway.analyzers.config import ContactConfig
from vetgateway.store.alerts import ENTITY
from vetgateway.store.audit import audit
from vetgateway.store.models import Alert, AlertKind, AlertState, Page, PageChannel, PageStatus

__all__ = ["clear_silence", "open_silence_alerts", "raise_silence"]

CLEARED = "cancelled: the device was heard from again"


def open_silence_alerts(session: Session) -> dict[uuid.UUID, uuid.UUID]:
    """Open or acknowledged (not yet resolved) silence alerts: device id → alert id."""
    rows = session.execute(
        sa.select(Alert.device_id, Alert.id).where(
            Alert.kind == AlertKind.OPERATIONAL,
            Alert.device_id.is_not(None),
            Alert.state != AlertState.RESOLVED,
            Alert.deleted_at.is_(None),
        )
    ).all()
    return {device_id: alert_id for device_id, alert_id in rows if device_id is not None}


def raise_silence(
    session: Session,
    *,
    device_id: uuid.UUID,
    clinic_id: uuid.UUID | None,
    summary: str,
    contacts: Sequence[ContactConfig],
    now: datetime,
) -> uuid.UUID:
    """Open the alert and queue one page per IT contact; returns the alert id."""
    alert = Alert(
        kind=AlertKind.OPERATIONAL,
        state=AlertState.OPEN,
        device_id=device_id,
        clinic_id=clinic_id,
        summary=summary,
        level=1,
        next_action_at=None,
    )
    session.add(alert)
    session.flush()
    session.add_all(
        Page(
            alert_id=alert.id,
            veterinarian_id=None,
            channel=PageChannel(contact.kind),
            target=contact.address,
            level=1,
            status=PageStatus.PENDING,
            attempts=0,
            next_attempt_at=now,
        )
        for contact in contacts
    )
    audit(
        session,
        actor="silence-watch",
        action="alert.device_silent",
        entity_type=ENTITY,
        entity_id=str(alert.id),
        details={"device_id": str(device_id), "contacts": len(contacts)},
    )
    return alert.id


def clear_silence(session: Session, alert_id: uuid.UUID, *, now: datetime) -> None:
    """Resolve the alert (the device sent again) and cancel its unsent pages."""
    alert = session.get(Alert, alert_id)
    if alert is None or alert.state is AlertState.RESOLVED:
        return
    alert.state = AlertState.RESOLVED
    session.execute(
        sa.update(Page)
        .where(Page.alert_id == alert_id, Page.status == PageStatus.PENDING)
        .values(status=PageStatus.FAILED, last_error=CLEARED, next_attempt_at=None)
    )
    audit(
        session,
        actor="silence-watch",
        action="alert.device_heard",
        entity_type=ENTITY,
        entity_id=str(alert_id),
        details={"device_id": str(alert.device_id), "at": now.isoformat()},
    )
