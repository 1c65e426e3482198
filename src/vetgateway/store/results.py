"""Reading results for a practice-management system, and the unmatched-results queue.

*Current* means what a PMS should show: results not superseded by a correction, of reports not
deleted. A report in the unmatched queue is the newest version of a report whose
``match_status`` is ``unmatched``. Resolving it (attach to an order or a patient, or reject) is a
human decision and goes into the audit log with who made it and why.

Like every store function these take a session and never commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from vetgateway.model import ResultStatus
from vetgateway.store.audit import audit
from vetgateway.store.models import (
    CatalogueTest,
    DiagnosticOrder,
    DiagnosticReport,
    InboundMessage,
    LabResult,
    ReportAttachment,
)
from vetgateway.store.models.messages import MessageStatus
from vetgateway.store.models.reports import MappingStatus, MatchStatus

AnyRow = sa.Row[*tuple[Any, ...]]

__all__ = [
    "Resolution",
    "find_results",
    "find_unmatched",
    "get_attachment",
    "get_report",
    "report_attachments",
    "report_results",
    "report_versions",
    "resolve_unmatched",
    "settle_message",
    "unmapped_codes",
]

_R = cast(sa.Table, DiagnosticReport.__table__)
_L = cast(sa.Table, LabResult.__table__)
_T = cast(sa.Table, CatalogueTest.__table__)
_A = cast(sa.Table, ReportAttachment.__table__)
_M = cast(sa.Table, InboundMessage.__table__)
_O = cast(sa.Table, DiagnosticOrder.__table__)

_RESULT_COLUMNS = (
    _L.c.id,
    _L.c.report_id,
    _L.c.source_code,
    _L.c.source_name,
    _T.c.code.label("test_code"),
    _T.c.name.label("test_name"),
    _T.c.loinc,
    _L.c.value_text,
    _L.c.value_numeric,
    _L.c.comparator,
    _L.c.unit,
    _L.c.source_unit,
    _L.c.value_type,
    _L.c.reference_range,
    _L.c.lab_low,
    _L.c.lab_high,
    _L.c.lab_flags,
    _L.c.interpretation,
    _L.c.reference_interval_id,
    _L.c.status,
    _L.c.mapping_status,
    _L.c.mapping_note,
    _L.c.delta_flag,
    _L.c.delta_note,
    _L.c.set_id,
    _L.c.sub_id,
    _L.c.observed_at,
    _L.c.version,
    _L.c.supersedes_id,
    _L.c.comments,
    _L.c.updated_at,
)


def find_results(
    session: Session,
    *,
    accession: str | None = None,
    patient_id: uuid.UUID | None = None,
    since: datetime | None = None,
    after_id: int | None = None,
    limit: int = 500,
) -> Sequence[AnyRow]:
    """Current results matching every filter given, oldest change first.

    ``accession`` is the report's own accession number (as the lab sent it) or that of the order
    the report is attached to: a lab often sends its own specimen number beside the clinic's
    order number, and a report matched by placer number would otherwise be invisible to a PMS
    asking by the accession number it ordered under.

    ``since`` compares with the result's last change, so a PMS polling with the time of its last
    poll also gets preliminary results that became final. Rows carry the report's numbers and
    patient id too (``accession_number``, ``patient_id``, ``report_status``).
    """
    statement = (
        sa.select(
            *_RESULT_COLUMNS,
            _R.c.accession_number,
            _R.c.patient_id,
            _R.c.order_id,
            _R.c.status.label("report_status"),
        )
        .join(_R, _R.c.id == _L.c.report_id)
        .outerjoin(_T, _T.c.id == _L.c.test_id)
        .where(
            _L.c.status != ResultStatus.SUPERSEDED,
            _L.c.deleted_at.is_(None),
            _R.c.deleted_at.is_(None),
        )
    )
    if accession is not None:
        # Two index lookups joined by UNION, not one OR: PostgreSQL reads a whole table for an
        # OR across two (test_query_plans).
        reports = sa.union(
            sa.select(_R.c.id).where(_R.c.accession_number == accession),
            sa.select(_R.c.id)
            .join(_O, _O.c.id == _R.c.order_id)
            .where(_O.c.accession_number == accession, _O.c.deleted_at.is_(None)),
        )
        statement = statement.where(_R.c.id.in_(reports))
    if patient_id is not None:
        statement = statement.where(_R.c.patient_id == patient_id)
    if since is not None:
        statement = statement.where(_L.c.updated_at >= since)
    if after_id is not None:
        statement = statement.where(_L.c.id > after_id)
    return session.execute(statement.order_by(_L.c.id).limit(limit)).all()


def get_report(session: Session, report_id: uuid.UUID) -> DiagnosticReport | None:
    report = session.get(DiagnosticReport, report_id)
    return None if report is None or report.deleted_at is not None else report


def report_results(session: Session, report_id: uuid.UUID) -> Sequence[AnyRow]:
    """Every result row of one report version (superseded ones of older versions are on those)."""
    statement = (
        sa.select(*_RESULT_COLUMNS)
        .outerjoin(_T, _T.c.id == _L.c.test_id)
        .where(_L.c.report_id == report_id, _L.c.deleted_at.is_(None))
        .order_by(_L.c.id)
    )
    return session.execute(statement).all()


def report_attachments(session: Session, report_id: uuid.UUID) -> Sequence[AnyRow]:
    statement = sa.select(_A.c.id, _A.c.content_type, _A.c.filename, _A.c.size, _A.c.sha256).where(
        _A.c.report_id == report_id
    )
    return session.execute(statement.order_by(_A.c.id)).all()


def get_attachment(session: Session, report_id: uuid.UUID, attachment_id: int) -> AnyRow | None:
    statement = sa.select(_A.c.content_type, _A.c.filename, _A.c.data).where(
        _A.c.report_id == report_id, _A.c.id == attachment_id
    )
    return session.execute(statement).first()


def report_versions(session: Session, report: DiagnosticReport) -> Sequence[AnyRow]:
    """All versions of the report (same ``report_key``), oldest first; just itself if no key."""
    if report.report_key is None:
        return session.execute(
            sa.select(_R.c.id, _R.c.version, _R.c.status).where(_R.c.id == report.id)
        ).all()
    return session.execute(
        sa.select(_R.c.id, _R.c.version, _R.c.status)
        .where(_R.c.report_key == report.report_key, _R.c.deleted_at.is_(None))
        .order_by(_R.c.version)
    ).all()


def _literally(column: Any, status: Any) -> sa.ColumnElement[bool]:
    """``column = 'status'`` with the value written into the SQL, not bound: a partial index
    (``WHERE match_status = 'unmatched'``) serves a query only when the planner can see that
    value, and a statement psycopg has prepared is planned without its parameters' values."""
    return cast(
        sa.ColumnElement[bool], column == sa.literal(status, column.type, literal_execute=True)
    )


def find_unmatched(
    session: Session, *, before: datetime | None = None, limit: int = 100
) -> Sequence[DiagnosticReport]:
    """The unmatched queue: newest first; only each report's newest version."""
    newer = aliased(DiagnosticReport)
    statement = sa.select(DiagnosticReport).where(
        _literally(DiagnosticReport.match_status, MatchStatus.UNMATCHED),
        DiagnosticReport.deleted_at.is_(None),
        ~sa.exists().where(newer.supersedes_id == DiagnosticReport.id),
    )
    if before is not None:
        statement = statement.where(DiagnosticReport.created_at < before)
    statement = statement.order_by(DiagnosticReport.created_at.desc(), DiagnosticReport.id)
    return session.scalars(statement.limit(limit)).all()


def unmapped_codes(session: Session, *, limit: int = 500) -> Sequence[AnyRow]:
    """The mapping work list (RELIABILITY R36, R37): every (sender, code, unit) stored
    ``unmapped`` in a current result, with why, how often and when it was last seen, most
    frequent first. Adding a map row and replaying the messages clears an entry."""
    statement = (
        sa.select(
            _R.c.source,
            _L.c.source_code,
            _L.c.source_unit,
            sa.func.max(_L.c.source_name).label("source_name"),
            sa.func.max(_L.c.mapping_note).label("reason"),
            sa.func.count().label("results"),
            sa.func.min(_L.c.created_at).label("first_seen"),
            sa.func.max(_L.c.created_at).label("last_seen"),
        )
        .join(_R, _R.c.id == _L.c.report_id)
        .where(
            _literally(_L.c.mapping_status, MappingStatus.UNMAPPED),
            _L.c.status != ResultStatus.SUPERSEDED,
            _L.c.deleted_at.is_(None),
            _R.c.deleted_at.is_(None),
        )
        .group_by(_R.c.source, _L.c.source_code, _L.c.source_unit)
        .order_by(sa.func.count().desc(), _L.c.source_code)
        .limit(limit)
    )
    return session.execute(statement).all()


@dataclass(frozen=True, slots=True)
class Resolution:
    """What ``resolve_unmatched`` did, or why it refused (``refused`` → HTTP 409/404)."""

    report_id: uuid.UUID
    match_status: MatchStatus
    refused: str | None = None
    not_found: bool = False


def resolve_unmatched(
    session: Session,
    report_id: uuid.UUID,
    *,
    action: Literal["attach", "reject"],
    actor: str,
    order_id: uuid.UUID | None = None,
    patient_id: uuid.UUID | None = None,
    reason: str | None = None,
) -> Resolution:
    """A technician's decision on an unmatched report, audited with the candidates it had.

    ``attach`` needs an order (its patient comes along) or a patient id; ``reject`` needs a
    reason. When no report of the inbound message is left unmatched, the message becomes
    ``processed``.
    """
    report = session.get(DiagnosticReport, report_id, with_for_update=True)
    if report is None or report.deleted_at is not None:
        return Resolution(report_id, MatchStatus.UNMATCHED, "no such report", not_found=True)
    if report.match_status is not MatchStatus.UNMATCHED:
        return Resolution(
            report_id,
            report.match_status,
            f"the report is not waiting in the unmatched queue (it is {report.match_status.value})",
        )
    before = {
        "match_reason": report.match_reason,
        "candidates": report.match_candidates,
    }
    if action == "attach":
        if order_id is None and patient_id is None:
            return Resolution(report_id, report.match_status, "attach needs order_id or patient_id")
        if order_id is not None:
            order = session.get(DiagnosticOrder, order_id)
            if order is None or order.deleted_at is not None:
                return Resolution(report_id, report.match_status, f"no such order: {order_id}")
            report.order_id = order.id
            report.patient_id = patient_id or order.patient_id
        else:
            report.patient_id = patient_id
        report.match_status = MatchStatus.MATCHED
        report.match_rule = "manual"
        report.match_reason = reason or "attached by hand"
    else:
        if not reason:
            return Resolution(report_id, report.match_status, "reject needs a reason")
        report.match_status = MatchStatus.REJECTED
        report.match_reason = reason
    audit(
        session,
        actor=actor,
        action=f"report.{'matched_by_hand' if action == 'attach' else 'rejected'}",
        entity_type="diagnostic_report",
        entity_id=str(report.id),
        details={
            "order_id": str(report.order_id) if report.order_id else None,
            "patient_id": str(report.patient_id) if report.patient_id else None,
            "reason": reason,
            "before": before,
        },
    )
    session.flush()
    if report.inbound_message_id is not None:
        settle_message(session, report.inbound_message_id)
    return Resolution(report_id, report.match_status)


def settle_message(session: Session, message_id: int) -> None:
    """An ``unmatched`` message with no unmatched report left is ``processed``."""
    waiting = session.execute(
        sa.select(sa.func.count())
        .select_from(_R)
        .where(
            _R.c.inbound_message_id == message_id,
            _R.c.match_status == MatchStatus.UNMATCHED,
            _R.c.deleted_at.is_(None),
        )
    ).scalar_one()
    if waiting == 0:
        session.execute(
            sa.update(_M)
            .where(_M.c.id == message_id, _M.c.status == MessageStatus.UNMATCHED)
            .values(status=MessageStatus.PROCESSED)
        )
