"""The audit log: who did what to which record, when. Append-only (the migration's triggers
refuse UPDATE and DELETE); store functions add entries in the caller's transaction."""

from __future__ import annotations

from sqlalchemy.orm import Session

from vetgateway.store.models import AuditEntry
from vetgateway.store.models.base import utcnow


def audit(
    session: Session,
    *,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: str,
    details: dict[str, object] | None = None,
) -> AuditEntry:
    """Append one audit entry (the table refuses updates and deletes)."""
    entry = AuditEntry(
        occurred_at=utcnow(),
        actor=actor,
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        details=dict(details or {}),
    )
    session.add(entry)
    return entry
