"""A patient's earlier results, for the delta check (issue 5): the latest current numeric
result of each test before a report, found by the patient's id (else PMS id, never by name),
and the flags written back onto the new results.

Like every store function these take a session and never commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from vetgateway.model import ResultStatus
from vetgateway.store.models import DiagnosticReport, LabResult
from vetgateway.store.models.reports import MappingStatus

__all__ = ["previous_values", "record_deltas"]

_R = cast(sa.Table, DiagnosticReport.__table__)
_L = cast(sa.Table, LabResult.__table__)


def _previous_statement(patient: sa.ColumnElement[bool], *, lateral: bool) -> sa.Select[Any]:
    """The "previous values" query for one way of naming the patient, built once: the delta
    check runs it for every report with a threshold, inside the write transaction.

    The patient's earlier reports come first, through the (patient, observed_at) indexes, then
    their results through the report index, so the cost is the patient's history, never every
    result of these tests. A report without an observation time may still hold results with
    one, which the result-level bound judges. ``lateral`` (PostgreSQL) makes that order the
    only one the planner may take: a plan PostgreSQL prepared while ``lab_results`` was small
    (a new installation, before autovacuum has analysed it) otherwise read every result of the
    tests in the clinic for each report written, and kept doing so as the table grew. SQLite
    takes this order by itself.
    """
    before = sa.bindparam("before", type_=_L.c.observed_at.type)
    live = [patient, _R.c.deleted_at.is_(None), _R.c.id != sa.bindparam("exclude", type_=sa.Uuid())]
    reports = sa.union_all(
        sa.select(_R.c.id).where(*live, _R.c.observed_at < before),
        sa.select(_R.c.id).where(*live, _R.c.observed_at.is_(None)),
    ).subquery("reports")
    wanted = [
        _L.c.report_id == reports.c.id,
        _L.c.deleted_at.is_(None),
        # Deliberately not indexable (COALESCE): lab_results' test_id index holds every
        # patient's results of the test, and a planner without statistics would walk it.
        sa.func.coalesce(_L.c.test_id, _L.c.test_id).in_(
            sa.bindparam("tests", expanding=True, type_=sa.Uuid())
        ),
        _L.c.status.not_in([ResultStatus.SUPERSEDED, ResultStatus.CANCELLED]),
        _L.c.mapping_status == MappingStatus.MAPPED,
        _L.c.value_numeric.is_not(None),
        _L.c.comparator.is_(None),
        _L.c.observed_at < before,
    ]
    columns = (_L.c.test_id, _L.c.value_numeric, _L.c.observed_at, _L.c.id)
    results: sa.FromClause
    if lateral:
        # OFFSET 0: PostgreSQL would otherwise pull a subquery this simple up into the join
        # and choose the order again.
        results = sa.select(*columns).where(*wanted).offset(0).lateral("results")
        source: sa.FromClause = reports.join(results, sa.true())
    else:
        results = sa.select(*columns).select_from(reports.join(_L, sa.and_(*wanted))).subquery()
        source = results
    latest = (
        sa.func.row_number()
        .over(
            partition_by=results.c.test_id,
            order_by=(results.c.observed_at.desc(), results.c.id.desc()),
        )
        .label("n")
    )
    ranked = (
        sa.select(results.c.test_id, results.c.value_numeric, results.c.observed_at, latest)
        .select_from(source)
        .subquery()
    )
    return sa.select(ranked.c.test_id, ranked.c.value_numeric, ranked.c.observed_at).where(
        ranked.c.n == 1
    )


_BY_ID = _R.c.patient_id == sa.bindparam("patient", type_=sa.Uuid())
_BY_PMS_ID = _R.c.patient_pms_id == sa.bindparam("patient", type_=_R.c.patient_pms_id.type)
# (by patient id?, lateral?) -> statement
_PREVIOUS = {
    (by_id, lateral): _previous_statement(_BY_ID if by_id else _BY_PMS_ID, lateral=lateral)
    for by_id in (True, False)
    for lateral in (True, False)
}
_NO_REPORT = uuid.UUID(int=0)


def previous_values(
    session: Session,
    *,
    patient_id: uuid.UUID | None,
    patient_pms_id: str | None,
    test_ids: Collection[uuid.UUID],
    before: datetime,
    exclude_report: uuid.UUID | None = None,
) -> dict[uuid.UUID, tuple[Decimal, datetime]]:
    """The patient's latest earlier value of each test, for the delta check: ``{test_id: (value,
    observed_at)}`` in the test's canonical unit.

    Only current (neither superseded nor cancelled), mapped, numeric results without a comparator
    (``<0.1`` is no value to subtract from), of live reports, observed strictly before ``before``.
    The patient is found by ``patient_id`` when known, else by PMS id; never by name, and nothing
    is returned when neither is given. ``exclude_report`` leaves out the report being written.
    """
    if not test_ids or (patient_id is None and not patient_pms_id):
        return {}
    lateral = session.get_bind().dialect.name == "postgresql"
    statement = _PREVIOUS[(patient_id is not None, lateral)]
    rows = session.execute(
        statement,
        {
            "patient": patient_id if patient_id is not None else patient_pms_id,
            "before": before,
            "exclude": exclude_report or _NO_REPORT,
            "tests": sorted(test_ids),
        },
    )
    return {r.test_id: (r.value_numeric, r.observed_at) for r in rows}


def record_deltas(session: Session, outcomes: Sequence[tuple[int, bool, str | None]]) -> None:
    """Write delta-check outcomes ``(result id, flag, note)`` with one executemany UPDATE.

    ``updated_at`` is kept as it is: the delta is derived from the row and its patient's history,
    and a resend that changed nothing must not look like a change to a PMS polling ``since``.
    """
    if not outcomes:
        return
    session.execute(
        sa.update(_L)
        .where(_L.c.id == sa.bindparam("result_id"))
        .values(
            delta_flag=sa.bindparam("flag"),
            delta_note=sa.bindparam("note"),
            updated_at=_L.c.updated_at,
        ),
        [
            {"result_id": result_id, "flag": flag, "note": None if note is None else note[:255]}
            for result_id, flag, note in outcomes
        ],
    )
