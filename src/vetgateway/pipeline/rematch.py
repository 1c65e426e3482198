"""Results that arrived before their order: matched again when the order comes.

In-house analyzers often run a sample before the practice-management system has sent the order,
and a reference lab's report can overtake an order sent late. Such a report waits in the
unmatched queue; when an order is stored (``POST /api/v1/orders`` or HL7 ORM/OML) the unmatched
reports that carry one of its numbers, its patient's PMS id or microchip, or its animal's and
owner's names, are put through the same matching rules again. What the rules now attach leaves
the queue, audited as ``report.matched_on_order`` and read again with what the order knows
(``late_match``); the rest stays for a human, with fresh candidates (the names only ever propose).

Runs inside the caller's transaction (the order's), like every store function.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

from vetgateway.pipeline.interpret import IntervalTable
from vetgateway.pipeline.late_match import read_again_after_match
from vetgateway.pipeline.matching import decide_match
from vetgateway.store.audit import audit
from vetgateway.store.intervals import interval_table
from vetgateway.store.models import DiagnosticOrder, DiagnosticReport
from vetgateway.store.models.reports import MatchStatus
from vetgateway.store.orders import candidate_orders
from vetgateway.store.reports import apply_match, report_clues
from vetgateway.store.results import settle_message

__all__ = ["rematch_for_order"]

DEFAULT_ALERT_MERGE = timedelta(hours=1)  # Settings.alert_merge_minutes' default
_WAITING_AT_MOST = 200  # reports re-examined per order: a bound, not a business rule


def _folded(column: InstrumentedAttribute[str | None]) -> sa.ColumnElement[str]:
    """Trimmed and lower-case, as ``candidate_orders`` compares names."""
    return sa.func.lower(sa.func.trim(column))


def rematch_for_order(
    session: Session,
    order: DiagnosticOrder,
    *,
    window: timedelta,
    now: datetime,
    alert_merge: timedelta = DEFAULT_ALERT_MERGE,
    default_clinic_id: uuid.UUID | None = None,
    intervals: IntervalTable | None = None,
) -> list[uuid.UUID]:
    """Match again the waiting reports this order might belong to; the ids now matched. Each
    one matched is read again with what its order knows (``late_match``): a critical value it
    hid for want of a species opens its alert now."""
    numbers = [n for n in (order.accession_number, order.placer_number, order.filler_number) if n]
    clues: list[sa.ColumnElement[bool]] = []
    if numbers:
        clues += [
            DiagnosticReport.accession_number.in_(numbers),
            DiagnosticReport.placer_number.in_(numbers),
            DiagnosticReport.filler_number.in_(numbers),
        ]
    if order.patient_pms_id:
        clues.append(DiagnosticReport.patient_pms_id == order.patient_pms_id)
    if order.patient_microchip:
        clues.append(DiagnosticReport.patient_microchip == order.patient_microchip)
    if order.patient_name and order.owner_surname:
        # The last rule only proposes, but the person working the queue should see the
        # order as a candidate once it exists.
        clues.append(
            sa.and_(
                _folded(DiagnosticReport.patient_name) == order.patient_name.strip().lower(),
                _folded(DiagnosticReport.owner_surname) == order.owner_surname.strip().lower(),
            )
        )
    if not clues:
        return []
    newer = aliased(DiagnosticReport)
    waiting = session.scalars(
        sa.select(DiagnosticReport)
        .where(
            DiagnosticReport.match_status == MatchStatus.UNMATCHED,
            DiagnosticReport.deleted_at.is_(None),
            ~sa.exists().where(newer.supersedes_id == DiagnosticReport.id),
            sa.or_(*clues),
        )
        .order_by(DiagnosticReport.created_at)
        .limit(_WAITING_AT_MOST)
    ).all()
    matched = []
    for row in waiting:
        report = report_clues(row)
        observed_at = row.observed_at or row.created_at
        candidates = candidate_orders(
            session, report, row.species, observed_at=observed_at, window=window
        )
        decision = decide_match(
            report, row.species, candidates, observed_at=observed_at, window=window
        )
        if not decision.matched:
            if decision.candidates:  # fresh candidates and reason for the person deciding
                apply_match(session, row.id, decision, now=now)
            continue
        apply_match(session, row.id, decision, now=now)
        audit(
            session,
            actor="pipeline",
            action="report.matched_on_order",
            entity_type="diagnostic_report",
            entity_id=str(row.id),
            details={"order_id": str(decision.order_id), "rule": decision.rule},
        )
        if row.inbound_message_id is not None:
            settle_message(session, row.inbound_message_id)
        intervals = intervals or interval_table(session)
        read_again_after_match(
            session,
            row.id,
            now=now,
            merge_window=alert_merge,
            default_clinic_id=default_clinic_id,
            intervals=intervals,
        )
        matched.append(row.id)
    return matched
