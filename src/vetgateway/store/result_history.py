"""A patient's earlier results, for the delta check (issue 5): the latest current numeric
result of each test before a report, found by the patient's id (else PMS id, never by name),
and the flags written back onto the new results.

Like every store function these take a session and never commit.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from vetgateway.model import ResultStatus
from vetgateway.store.models import DiagnosticReport, LabResult
from vetgateway.store.models.reports import MappingStatus

__all__ = ["HistoryQuery", "previous_values", "previous_values_of_many", "record_deltas"]

_R = cast(sa.Table, DiagnosticReport.__table__)
_L = cast(sa.Table, LabResult.__table__)


def _previous_statement(patient: sa.ColumnElement[bool]) -> sa.Select[Any]:
    """SQLite's "previous values" query for one way of naming the patient, built once.

    The patient's earlier reports come first, through the (patient, observed_at) indexes, then
    their results through the report index, so the cost is the patient's history, never every
    result of these tests. A report without an observation time may still hold results with
    one, which the result-level bound judges. (PostgreSQL asks ``_PREVIOUS_OF_MANY``, which
    takes the same path and forces it.)
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
        # patient's results of the test, and a planner without statistics would walk it. The
        # tests come as one JSON array of their stored hex form, so the statement's text never
        # changes and SQLAlchemy renders no IN list per call (465 -> 265 us a call).
        sa.func.coalesce(_L.c.test_id, _L.c.test_id).in_(
            sa.select(sa.column("value")).select_from(
                sa.func.json_each(sa.bindparam("tests_json", type_=sa.String()))
            )
        ),
        # Two comparisons, not NOT IN (...): a literal list is also rendered per call.
        _L.c.status != ResultStatus.SUPERSEDED,
        _L.c.status != ResultStatus.CANCELLED,
        _L.c.mapping_status == MappingStatus.MAPPED,
        _L.c.value_numeric.is_not(None),
        _L.c.comparator.is_(None),
        _L.c.observed_at < before,
    ]
    columns = (_L.c.test_id, _L.c.value_numeric, _L.c.observed_at, _L.c.id)
    results = sa.select(*columns).select_from(reports.join(_L, sa.and_(*wanted))).subquery()
    latest = (
        sa.func.row_number()
        .over(
            partition_by=results.c.test_id,
            order_by=(results.c.observed_at.desc(), results.c.id.desc()),
        )
        .label("n")
    )
    ranked = sa.select(
        results.c.test_id, results.c.value_numeric, results.c.observed_at, latest
    ).subquery()
    return sa.select(ranked.c.test_id, ranked.c.value_numeric, ranked.c.observed_at).where(
        ranked.c.n == 1
    )


_PREVIOUS_BY_ID = _previous_statement(_R.c.patient_id == sa.bindparam("patient", type_=sa.Uuid()))
_PREVIOUS_BY_PMS_ID = _previous_statement(
    _R.c.patient_pms_id == sa.bindparam("patient", type_=_R.c.patient_pms_id.type)
)
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
    question = HistoryQuery(patient_id, patient_pms_id, frozenset(test_ids), before, exclude_report)
    return previous_values_of_many(session, [question])[0]


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """The arguments of one ``previous_values`` call."""

    patient_id: uuid.UUID | None
    patient_pms_id: str | None
    test_ids: frozenset[uuid.UUID]
    before: datetime
    exclude_report: uuid.UUID | None = None


def _report_branch(patient: str, timed: bool) -> str:
    """One quarter of the history: by patient id or PMS id (whichever the question uses: the
    ``IS [NOT] NULL`` test on ``q`` is decided once per question), observed before it or not
    timed at all."""
    use = "q.patient_id IS NOT NULL" if patient == "patient_id" else "q.patient_id IS NULL"
    column = "patient_id" if patient == "patient_id" else "pms_id"
    time = "d.observed_at < q.before" if timed else "d.observed_at IS NULL"
    return (
        f"SELECT d.id FROM diagnostic_reports d WHERE {use} AND d.{patient} = q.{column}"  # noqa: S608
        f" AND d.deleted_at IS NULL AND d.id <> q.exclude AND {time}"
    )


# PostgreSQL: every question of a batch in one round trip. For each row of ``q`` (one report
# being written) the patient's reports come through their (patient, observed_at) index, then
# their results through the report index, the latest per test kept by DISTINCT ON. The LATERAL
# joins, fenced with OFFSET 0 so the planner cannot pull them up and reorder, make that the only
# order: a plan PostgreSQL prepared while lab_results was small (a new installation, before
# autovacuum has analysed it) otherwise read every result of the tests in the clinic for each
# report written, and kept doing so as the table grew. Fixed text: names are the schema's,
# values parameters.
_PREVIOUS_OF_MANY = sa.text(
    f"""
    SELECT q.n, h.test_id, h.value_numeric, h.observed_at
    FROM unnest(
        CAST(:n AS integer[]), CAST(:patient_id AS uuid[]), CAST(:pms_id AS varchar[]),
        CAST(:before AS timestamptz[]), CAST(:exclude AS uuid[])
    ) AS q(n, patient_id, pms_id, before, exclude)
    CROSS JOIN LATERAL (
        SELECT DISTINCT ON (r.test_id) r.test_id, r.value_numeric, r.observed_at
        FROM (
            {_report_branch("patient_id", True)}
            UNION ALL {_report_branch("patient_id", False)}
            UNION ALL {_report_branch("patient_pms_id", True)}
            UNION ALL {_report_branch("patient_pms_id", False)}
        ) AS reports
        CROSS JOIN LATERAL (
            SELECT l.test_id, l.value_numeric, l.observed_at, l.id
            FROM lab_results l
            WHERE l.report_id = reports.id
              AND l.deleted_at IS NULL
              AND COALESCE(l.test_id, l.test_id) = ANY(CAST(:tests AS uuid[]))
              AND l.status NOT IN ('superseded', 'cancelled')
              AND l.mapping_status = 'mapped'
              AND l.value_numeric IS NOT NULL
              AND l.comparator IS NULL
              AND l.observed_at < q.before
            OFFSET 0
        ) AS r
        ORDER BY r.test_id, r.observed_at DESC, r.id DESC
    ) AS h
    """  # noqa: S608
).columns(
    n=sa.Integer(),
    test_id=sa.Uuid(),
    value_numeric=_L.c.value_numeric.type,
    observed_at=_L.c.observed_at.type,
)


def previous_values_of_many(
    session: Session, questions: Sequence[HistoryQuery]
) -> list[dict[uuid.UUID, tuple[Decimal, datetime]]]:
    """``previous_values`` for each question, in order: on PostgreSQL in one statement (a
    pipeline batch asks one per report it writes, each a round trip otherwise), on SQLite, where
    a query costs no round trip, one after another."""
    answers: list[dict[uuid.UUID, tuple[Decimal, datetime]]] = [{} for _ in questions]
    asked = [
        (n, q)
        for n, q in enumerate(questions)
        if q.test_ids and (q.patient_id is not None or q.patient_pms_id)
    ]
    if not asked:
        return answers
    if session.get_bind().dialect.name != "postgresql":
        for n, q in asked:
            answers[n] = _sqlite_previous_values(session, q)
        return answers
    rows = session.execute(
        _PREVIOUS_OF_MANY,
        {
            "n": [n for n, _q in asked],
            "patient_id": [q.patient_id for _n, q in asked],
            "pms_id": [q.patient_pms_id for _n, q in asked],
            "before": [q.before for _n, q in asked],
            "exclude": [q.exclude_report or _NO_REPORT for _n, q in asked],
            "tests": sorted(set().union(*(q.test_ids for _n, q in asked))),
        },
    )
    for row in rows:
        if row.test_id in questions[row.n].test_ids:  # the tests are asked of all at once
            answers[row.n][row.test_id] = (row.value_numeric, row.observed_at)
    return answers


def _sqlite_previous_values(
    session: Session, q: HistoryQuery
) -> dict[uuid.UUID, tuple[Decimal, datetime]]:
    statement = _PREVIOUS_BY_ID if q.patient_id is not None else _PREVIOUS_BY_PMS_ID
    # Through the session's connection: a Core statement needs none of the ORM's layer.
    rows = session.connection().execute(
        statement,
        {
            "patient": q.patient_id if q.patient_id is not None else q.patient_pms_id,
            "before": q.before,
            "exclude": q.exclude_report or _NO_REPORT,
            "tests_json": json.dumps(sorted(t.hex for t in q.test_ids)),
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
