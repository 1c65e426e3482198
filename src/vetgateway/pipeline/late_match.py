"""A report attached after it was stored is read again with what its order knows.

A report that waited in the unmatched queue was read without its order: often without a species
(many labs send none), so no reference interval applied and a critical value the lab did not
flag opened no alert; and what alerts it did open name an "unmatched patient" and page the
default clinic's rota. Once it is attached (its order arrived: ``rematch``; a technician attached
it: ``POST /api/v1/unmatched/{id}/resolve``) its current results are read again with the order's
animal and clinic:

- the report takes the order's species and clinic where it had none;
- each result's interpretation, interval and note are replaced by the new reading;
- the report's open and acknowledged alerts are relabelled for the animal now known (patient,
  label, clinic), keeping their state and level: an acknowledged alert stays acknowledged;
- a result critical now that had no alert opens (or merges into) one, exactly as on first
  reading, so the on-call veterinarian is paged;
- an alert whose result is no longer critical is kept (R23: a person closes an alert, never the
  gateway), and the re-reading is in the audit log.

Runs inside the caller's transaction, like every store function.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from vetgateway.model import CriticalFinding, ResultStatus
from vetgateway.pipeline.alerting import critical_findings, patient_label
from vetgateway.pipeline.interpret import IntervalTable, Reading, age_in_days, interpret
from vetgateway.pipeline.mapping import MappedObservation
from vetgateway.pipeline.matching import OrderedAnimal
from vetgateway.store.alerts import ENTITY as ALERT_ENTITY
from vetgateway.store.alerts import raise_critical, summary_text
from vetgateway.store.audit import audit
from vetgateway.store.intervals import interval_table
from vetgateway.store.models import (
    Alert,
    AlertState,
    CatalogueTest,
    DiagnosticOrder,
    DiagnosticReport,
    LabResult,
)
from vetgateway.store.models.reports import Interpretation, MappingStatus
from vetgateway.store.reports import report_clues, stored_observation

__all__ = ["read_again_after_match"]


def read_again_after_match(
    session: Session,
    report_id: uuid.UUID,
    *,
    now: datetime,
    merge_window: timedelta,
    default_clinic_id: uuid.UUID | None = None,
    intervals: IntervalTable | None = None,
) -> int:
    """Read the report's current results again (module docstring); the number of its results
    that are critical now. ``intervals`` saves re-reading them for several reports at once."""
    # Reloaded: the match was written with a Core UPDATE, which the session's copy missed.
    report = session.get(DiagnosticReport, report_id, populate_existing=True)
    if report is None or report.deleted_at is not None:
        return 0
    order = session.get(DiagnosticOrder, report.order_id) if report.order_id else None
    animal = (
        OrderedAnimal(order.species, order.breed, order.sex, order.birth_date)
        if order is not None
        else OrderedAnimal()
    )
    report.species = report.species or animal.species
    if report.clinic_id is None and order is not None:
        report.clinic_id = order.clinic_id
    table = intervals if intervals is not None else interval_table(session)
    clues = report_clues(report)
    label = patient_label(clues, report.species, matched=True)
    rows = session.scalars(
        sa.select(LabResult)
        .where(
            LabResult.report_id == report.id,
            LabResult.status != ResultStatus.SUPERSEDED,
            LabResult.deleted_at.is_(None),
        )
        .order_by(LabResult.id)
    ).all()
    tests = _tests(session, {row.test_id for row in rows if row.test_id is not None})
    birth_date = report.birth_date or animal.birth_date
    pairs: list[tuple[MappedObservation, Reading | None]] = []
    for row in rows:
        mapped = _mapped(row, tests)
        reading = interpret(
            mapped,
            table,
            species=report.species,
            breed=report.breed or animal.breed,
            sex=report.sex or animal.sex,
            age_days=age_in_days(birth_date, row.observed_at or report.observed_at),
            clinic_id=report.clinic_id or default_clinic_id,
            device_id=report.device_id,
        )
        row.interpretation = Interpretation(reading.interpretation)
        row.reference_interval_id = reading.interval_id
        row.interpretation_note = reading.note[:255] if reading.note else None
        row.updated_at = now
        pairs.append((mapped, reading))
    found = critical_findings(
        clues,
        pairs,
        report_id=report.id,
        species=report.species,
        matched=True,
        patient_id=report.patient_id,
        result_ids={(row.source_code, row.sub_id): row.id for row in rows},
    )
    findings = [dataclasses.replace(f, clinic_id=report.clinic_id) for f in found]
    alerted = _relabel_alerts(session, report, label, findings, now)
    for finding in findings:
        if finding.result_id not in alerted:
            raise_critical(session, finding, now=now, merge_window=merge_window)
    audit(
        session,
        actor="pipeline",
        action="report.read_again_on_match",
        entity_type="diagnostic_report",
        entity_id=str(report.id),
        details={
            "species": report.species,
            "results": len(rows),
            "critical": len(findings),
            "alerts_relabelled": len(alerted),
        },
    )
    return len(findings)


def _tests(session: Session, ids: set[uuid.UUID]) -> dict[uuid.UUID, tuple[str, str]]:
    if not ids:
        return {}
    found = session.execute(
        sa.select(CatalogueTest.id, CatalogueTest.code, CatalogueTest.name).where(
            CatalogueTest.id.in_(ids)
        )
    )
    return {test_id: (code, name) for test_id, code, name in found}


def _mapped(row: LabResult, tests: dict[uuid.UUID, tuple[str, str]]) -> MappedObservation:
    """A stored result as the interpretation stage sees a freshly mapped one."""
    code, name = tests.get(row.test_id, (None, None)) if row.test_id else (None, None)
    return MappedObservation(
        observation=stored_observation(row),
        test_id=row.test_id,
        test_code=code,
        test_name=name,
        value_numeric=row.value_numeric,
        unit=row.unit,
        mapped=row.mapping_status is MappingStatus.MAPPED,
        reason=row.mapping_note,
    )


def _relabel_alerts(
    session: Session,
    report: DiagnosticReport,
    label: str,
    findings: list[CriticalFinding],
    now: datetime,
) -> set[int | None]:
    """Point the report's live alerts at the animal now known; the result ids they cover."""
    current = {finding.result_id: finding for finding in findings}
    alerts = session.scalars(
        sa.select(Alert).where(
            Alert.report_id == report.id,
            Alert.state.in_((AlertState.OPEN, AlertState.ACKNOWLEDGED)),
            Alert.deleted_at.is_(None),
        )
    ).all()
    covered: set[int | None] = set()
    for alert in alerts:
        before = alert.patient_label
        alert.patient_id = report.patient_id
        alert.patient_label = label
        alert.clinic_id = alert.clinic_id or report.clinic_id
        finding = current.get(alert.result_id)
        if finding is not None:
            alert.summary = summary_text(finding)
            covered.add(alert.result_id)
        elif before and before in alert.summary:
            alert.summary = alert.summary.replace(before, label)
        audit(
            session,
            actor="pipeline",
            action="alert.patient_matched",
            entity_type=ALERT_ENTITY,
            entity_id=str(alert.id),
            details={"report_id": str(report.id), "at": now.isoformat()},
        )
    return covered
