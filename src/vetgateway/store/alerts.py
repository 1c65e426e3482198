"""Critical-value alerts: open or merge, annotate, acknowledge, and read back with a timeline.

Merging (``raise_critical``). A finding joins an existing alert when all of these hold:

- same patient: ``patient_id`` when the finding has one, else the same ``patient_label``
  (an unmatched report's label carries the identifiers the lab sent);
- same test: ``test_id`` when the finding has one; else an alert without a test whose result's
  sender code (``lab_results.source_code``) is the finding's ``test_code``;
- same clinic (both unset counts as the same);
- the alert was created within ``merge_window`` of ``now`` and is open or acknowledged.

A merged open alert gets the new summary and ``result_id``. If the value differs from the one
last recorded for the alert (kept in the ``alert.created`` / ``alert.updated`` audit details) the
alert re-pages its current level at once (RELIABILITY R40: "re-page if a corrected value
changes"): ``level`` steps back one and ``next_action_at`` becomes ``now``, see
``pipeline/escalation.py``. The same value again changes nothing about paging ("no double page
for a duplicate"). A finding matching an *acknowledged* alert with the same value only updates it;
with a different value it opens a new alert, since nobody has acknowledged that value.

Acknowledging stops escalation: ``next_action_at`` is cleared and pages still pending are marked
``failed`` with the error "cancelled: alert acknowledged" (there is no separate cancelled status,
and a page nobody needs any more must not be sent). It is idempotent: a second acknowledgement
reports ``already`` and changes nothing.

Every change is audited (``alert.created``, ``alert.updated``, ``alert.annotated``,
``alert.acknowledged``). Store functions take a session and never commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

import sqlalchemy as sa
from sqlalchemy.orm import Session

from vetgateway.model import CriticalFinding
from vetgateway.numbers import plain
from vetgateway.store.audit import audit
from vetgateway.store.models import (
    AcknowledgementVia,
    Alert,
    AlertAcknowledgement,
    AlertKind,
    AlertState,
    AuditEntry,
    LabResult,
    Page,
    PageStatus,
)

__all__ = [
    "ENTITY",
    "AckOutcome",
    "AlertTimeline",
    "acknowledge",
    "get_alert_with_timeline",
    "list_alerts",
    "note_no_longer_critical",
    "raise_critical",
    "summary_text",
]

ENTITY = "alert"
"""``audit_log.entity_type`` of alert entries (``entity_id`` is the alert's UUID)."""

CANCELLED = "cancelled: alert acknowledged"


def summary_text(finding: CriticalFinding) -> str:
    """E.g. "CRITICAL K 7.8 mmol/L (critical high >= 6.5) — Rex (canine), Smith"."""
    value = finding.value_text if finding.unit is None else f"{finding.value_text} {finding.unit}"
    limit = None if finding.limit is None else plain(finding.limit)
    if finding.flag == "critical_low":
        bound = "critical low" if limit is None else f"critical low <= {limit}"
    elif finding.flag == "critical_high":
        bound = "critical high" if limit is None else f"critical high >= {limit}"
    else:
        bound = finding.flag.replace("_", " ")
    return f"CRITICAL {finding.test_code} {value} ({bound}) — {finding.patient_label}"


def _same_value(recorded: object, finding_value: Decimal | None, value_text: str) -> bool:
    if not isinstance(recorded, dict):
        return False
    text = recorded.get("value_text")
    number = recorded.get("value")
    if number is not None and finding_value is not None:
        try:
            return Decimal(str(number)) == finding_value
        except InvalidOperation:
            return False
    return isinstance(text, str) and text.strip() == value_text.strip()


def _value_details(finding: CriticalFinding) -> dict[str, object]:
    return {
        "value_text": finding.value_text,
        "value": None if finding.value is None else str(finding.value),
        "unit": finding.unit,
        "flag": finding.flag,
        "result_id": finding.result_id,
        "report_id": str(finding.report_id),
    }


def _matching(
    *,
    patient_id: uuid.UUID | None,
    patient_label: str | None,
    test_id: uuid.UUID | None,
    test_code: str | None,
    clinic_id: uuid.UUID | None,
    any_clinic: bool = False,
) -> sa.Select[Alert] | None:
    query = sa.select(Alert).where(
        Alert.kind == AlertKind.CRITICAL_VALUE, Alert.deleted_at.is_(None)
    )
    if not any_clinic:
        query = query.where(Alert.clinic_id.is_not_distinct_from(clinic_id))
    if patient_id is not None:
        query = query.where(Alert.patient_id == patient_id)
    elif patient_label:
        query = query.where(Alert.patient_id.is_(None), Alert.patient_label == patient_label)
    else:
        return None
    if test_id is not None:
        query = query.where(Alert.test_id == test_id)
    elif test_code:
        query = query.join(LabResult, LabResult.id == Alert.result_id).where(
            Alert.test_id.is_(None), LabResult.source_code == test_code
        )
    else:
        return None
    return query.order_by(Alert.created_at.desc(), Alert.id)


def _last_value(session: Session, alert_id: uuid.UUID) -> dict[str, object] | None:
    details = session.scalar(
        sa.select(AuditEntry.details)
        .where(
            AuditEntry.entity_type == ENTITY,
            AuditEntry.entity_id == str(alert_id),
            AuditEntry.action.in_(("alert.created", "alert.updated")),
        )
        .order_by(AuditEntry.id.desc())
        .limit(1)
    )
    return details


def raise_critical(
    session: Session,
    finding: CriticalFinding,
    *,
    now: datetime,
    merge_window: timedelta,
    actor: str = "pipeline",
) -> tuple[uuid.UUID, bool]:
    """Open an alert for ``finding`` or merge it into a recent one (rules in the module doc).

    Returns the alert's id and whether it was created. ``created_at`` is set to ``now`` so the
    merge window follows the caller's clock.
    """
    query = _matching(
        patient_id=finding.patient_id,
        patient_label=finding.patient_label,
        test_id=finding.test_id,
        test_code=finding.test_code,
        clinic_id=finding.clinic_id,
    )
    candidates: Sequence[Alert] = []
    if query is not None:
        query = query.where(
            Alert.state.in_((AlertState.OPEN, AlertState.ACKNOWLEDGED)),
            Alert.created_at >= now - merge_window,
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(of=Alert)
        candidates = session.scalars(query).all()
    summary = summary_text(finding)
    for alert in candidates:
        same = _same_value(_last_value(session, alert.id), finding.value, finding.value_text)
        if alert.state is AlertState.ACKNOWLEDGED and not same:
            continue  # a new value nobody has acknowledged: a new alert below
        repage = alert.state is AlertState.OPEN and not same
        alert.summary = summary
        alert.result_id = finding.result_id
        alert.report_id = finding.report_id
        if finding.patient_label:
            alert.patient_label = finding.patient_label
        if repage:
            alert.level = max(0, alert.level - 1)
            alert.next_action_at = now
        audit(
            session,
            actor=actor,
            action="alert.updated",
            entity_type=ENTITY,
            entity_id=str(alert.id),
            details={**_value_details(finding), "repage": repage, "level": alert.level},
        )
        return alert.id, False
    alert = Alert(
        kind=AlertKind.CRITICAL_VALUE,
        state=AlertState.OPEN,
        result_id=finding.result_id,
        report_id=finding.report_id,
        clinic_id=finding.clinic_id,
        test_id=finding.test_id,
        patient_id=finding.patient_id,
        patient_label=finding.patient_label,
        summary=summary,
        level=0,
        next_action_at=now,
        created_at=now,
    )
    session.add(alert)
    session.flush()
    audit(
        session,
        actor=actor,
        action="alert.created",
        entity_type=ENTITY,
        entity_id=str(alert.id),
        details=_value_details(finding),
    )
    return alert.id, True


def note_no_longer_critical(
    session: Session,
    *,
    patient_id: uuid.UUID | None,
    patient_label: str | None,
    test_id: uuid.UUID | None,
    value_text: str,
    now: datetime,
    test_code: str | None = None,
    clinic_id: uuid.UUID | None = None,
    actor: str = "pipeline",
) -> uuid.UUID | None:
    """Record on the newest open alert for this patient and test that a corrected result is no
    longer critical. The alert stays open and keeps escalating: a person must still see and
    acknowledge it. Returns the alert's id, or None when there is no open alert to annotate."""
    query = _matching(
        patient_id=patient_id,
        patient_label=patient_label,
        test_id=test_id,
        test_code=test_code,
        clinic_id=clinic_id,
        any_clinic=clinic_id is None,
    )
    if query is None:
        return None
    alert = session.scalars(query.where(Alert.state == AlertState.OPEN).limit(1)).first()
    if alert is None:
        return None
    alert.summary = f"{alert.summary} — corrected to {value_text}: no longer critical"
    audit(
        session,
        actor=actor,
        action="alert.annotated",
        entity_type=ENTITY,
        entity_id=str(alert.id),
        details={"value_text": value_text, "note": "no longer critical", "at": now.isoformat()},
    )
    return alert.id


@dataclass(frozen=True, slots=True)
class AckOutcome:
    """``found`` False: no such alert. ``already``: it was acknowledged (or resolved) before,
    and nothing changed. ``state`` is the alert's state afterwards."""

    found: bool
    already: bool
    state: AlertState | None


def acknowledge(
    session: Session,
    alert_id: uuid.UUID,
    *,
    veterinarian_id: uuid.UUID | None,
    actor: str,
    via: AcknowledgementVia,
    note: str | None,
    now: datetime,
) -> AckOutcome:
    """Acknowledge an open alert: escalation stops and pending pages are cancelled."""
    query = sa.select(Alert).where(Alert.id == alert_id, Alert.deleted_at.is_(None))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    alert = session.scalar(query)
    if alert is None:
        return AckOutcome(False, False, None)
    if alert.state is not AlertState.OPEN:
        return AckOutcome(True, True, alert.state)
    alert.state = AlertState.ACKNOWLEDGED
    alert.acknowledged_at = now
    alert.acknowledged_by_id = veterinarian_id
    alert.next_action_at = None
    session.add(
        AlertAcknowledgement(
            alert_id=alert.id,
            veterinarian_id=veterinarian_id,
            acknowledged_at=now,
            via=via,
            note=note,
        )
    )
    cancelled = session.execute(
        sa.update(Page)
        .where(Page.alert_id == alert.id, Page.status == PageStatus.PENDING)
        .values(status=PageStatus.FAILED, last_error=CANCELLED, next_attempt_at=None)
    )
    audit(
        session,
        actor=actor,
        action="alert.acknowledged",
        entity_type=ENTITY,
        entity_id=str(alert.id),
        details={
            "via": via.value,
            "veterinarian_id": None if veterinarian_id is None else str(veterinarian_id),
            "note": note,
            "level": alert.level,
            "pages_cancelled": int(cancelled.rowcount),  # type: ignore[attr-defined]
        },
    )
    return AckOutcome(True, False, AlertState.ACKNOWLEDGED)


def list_alerts(
    session: Session, *, state: AlertState | None = AlertState.OPEN, limit: int = 200
) -> list[Alert]:
    """Alerts, newest first; ``state=None`` for every state."""
    query = sa.select(Alert).where(Alert.deleted_at.is_(None))
    if state is not None:
        query = query.where(Alert.state == state)
    return list(session.scalars(query.order_by(Alert.created_at.desc(), Alert.id).limit(limit)))


@dataclass(frozen=True, slots=True)
class AlertTimeline:
    alert: Alert
    pages: list[Page]
    acknowledgements: list[AlertAcknowledgement]
    events: list[AuditEntry]


def get_alert_with_timeline(session: Session, alert_id: uuid.UUID) -> AlertTimeline | None:
    """The alert, its pages (oldest first), acknowledgements and audit entries, or None."""
    alert = session.scalar(sa.select(Alert).where(Alert.id == alert_id, Alert.deleted_at.is_(None)))
    if alert is None:
        return None
    pages = list(
        session.scalars(sa.select(Page).where(Page.alert_id == alert_id).order_by(Page.id))
    )
    acks = list(
        session.scalars(
            sa.select(AlertAcknowledgement)
            .where(AlertAcknowledgement.alert_id == alert_id)
            .order_by(AlertAcknowledgement.id)
        )
    )
    events = list(
        session.scalars(
            sa.select(AuditEntry)
            .where(AuditEntry.entity_type == ENTITY, AuditEntry.entity_id == str(alert_id))
            .order_by(AuditEntry.id)
        )
    )
    return AlertTimeline(alert, pages, acks, events)
