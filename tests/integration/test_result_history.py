"""``store.result_history.previous_values``: what it finds, and that its cost is the patient's
matching history, not everything the patient ever had (both back ends)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from tests.integration.test_query_plans import sent
from vetgateway.model import ReportStatus, ResultStatus
from vetgateway.store.db import Database
from vetgateway.store.models import CatalogueTest, DiagnosticReport, LabResult
from vetgateway.store.models.catalogue import CatalogueCategory, ValueType
from vetgateway.store.models.reports import MappingStatus
from vetgateway.store.result_history import HistoryQuery, previous_values, previous_values_of_many

PATIENT = uuid.UUID("7c1d8a52-0000-4000-8000-000000000001")
PMS_ID = "PMS-HISTORY"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _test(db: Database, code: str) -> uuid.UUID:
    with db.session() as s:
        test = CatalogueTest(
            code=code, name=code, category=CatalogueCategory.CHEMISTRY, value_type=ValueType.NUMERIC
        )
        s.add(test)
        s.flush()
        return test.id


def _reports(
    db: Database,
    test_id: uuid.UUID,
    values: list[tuple[datetime | None, datetime, str]],
    *,
    patient: tuple[uuid.UUID, str] = (PATIENT, PMS_ID),
) -> None:
    """One report per ``(report observed_at, result observed_at, value)`` for ``patient``."""
    with db.session() as s:
        for report_at, result_at, value in values:
            result = LabResult(
                test_id=test_id,
                source_code="CREA",
                value_numeric=Decimal(value),
                value_text=value,
                status=ResultStatus.FINAL,
                mapping_status=MappingStatus.MAPPED,
                observed_at=result_at,
            )
            s.add(
                DiagnosticReport(
                    status=ReportStatus.FINAL,
                    patient_id=patient[0],
                    patient_pms_id=patient[1],
                    observed_at=report_at,
                    results=[result],
                )
            )


def _previous(db: Database, test_id: uuid.UUID, before: datetime, **who: Any) -> dict:
    with db.session(readonly=True) as s:
        return previous_values(s, test_ids={test_id}, before=before, **who)


BY_ID = {"patient_id": PATIENT, "patient_pms_id": None}
BY_PMS_ID = {"patient_id": None, "patient_pms_id": PMS_ID}


@pytest.mark.parametrize("who", [BY_ID, BY_PMS_ID], ids=["patient id", "PMS id"])
def test_the_latest_earlier_value_is_found_by_either_identifier(db: Database, who: dict) -> None:
    crea = _test(db, "CREA")
    _reports(
        db,
        crea,
        [
            (T0, T0, "90"),
            (T0 + timedelta(days=2), T0 + timedelta(days=2), "110"),
            # No report time: the result's own time decides (the day before the new one).
            (None, T0 + timedelta(days=4), "120"),
            (T0 + timedelta(days=9), T0 + timedelta(days=9), "300"),  # after: never "previous"
        ],
    )
    found = _previous(db, crea, T0 + timedelta(days=5), **who)
    assert found == {crea: (Decimal("120"), T0 + timedelta(days=4))}
    found = _previous(db, crea, T0 + timedelta(days=3), **who)
    assert found == {crea: (Decimal("110"), T0 + timedelta(days=2))}
    assert _previous(db, crea, T0, **who) == {}


# -- cost ----------------------------------------------------------------------------------------


@pytest.fixture
def captured(db: Database) -> Iterator[list[tuple[str, Any]]]:
    """The history statements ``previous_values`` sends, with their parameters."""
    with sent(db, "value_numeric IS NOT NULL") as statements:
        yield statements


def _rows_read(db: Database, statement: str, parameters: Any, *, generic: bool) -> int:
    """Table rows the statement reads: those each scan returns plus those it read and threw
    away, summed over the plan and its loops (PostgreSQL's EXPLAIN ANALYZE)."""
    with db.engine.connect() as c:
        if generic:  # as once psycopg has prepared it: PostgreSQL's plan for any parameters
            c.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        (plan,) = c.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters).one()
        c.rollback()
    if isinstance(plan, str):
        plan = json.loads(plan)

    def walk(node: dict) -> int:
        own = 0
        if "Relation Name" in node:
            loops = node.get("Actual Loops", 1)
            own = (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)) * loops
        return own + sum(walk(child) for child in node.get("Plans", []))

    return walk(plan[0]["Plan"])


def _history_nobody_needs(db: Database, crea: uuid.UUID) -> None:
    """300 reports of the patient after T0, and 300 other patients' results before it."""
    later = T0 + timedelta(days=1)
    _reports(db, crea, [(later, later, str(n)) for n in range(300)])
    earlier = T0 - timedelta(days=1)
    for n in range(300):
        _reports(db, crea, [(earlier, earlier, str(n))], patient=(uuid.uuid4(), f"PMS-{n}"))


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
@pytest.mark.parametrize("who", [BY_ID, BY_PMS_ID], ids=["patient id", "PMS id"])
def test_only_the_patients_earlier_history_is_read(
    db: Database, captured: list[tuple[str, Any]], who: dict
) -> None:
    """Regression, on tables PostgreSQL has no statistics for yet (a new installation; every
    bench run): its plans filtered the patient's whole history through the single-column
    patient index to find the reports without a time, and read every result of the tests in
    the clinic before looking at reports at all; a prepared (generic) plan kept doing so as the
    tables grew. In bench/pipeline.py that was 1,500 and 6,000 rows per report written."""
    crea = _test(db, "CREA")
    _history_nobody_needs(db, crea)
    assert _previous(db, crea, T0, **who) == {}
    ((statement, parameters),) = captured
    for generic in (False, True):
        assert _rows_read(db, statement, parameters, generic=generic) < 10, generic


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_on_sqlite_the_cost_does_not_grow_with_history_nobody_needs(db: Database) -> None:
    crea = _test(db, "CREA")
    _reports(db, crea, [(T0 - timedelta(days=1), T0 - timedelta(days=1), "90")])

    def steps() -> int:
        count = 0

        def tick() -> int:
            nonlocal count
            count += 1
            return 0

        with db.session(readonly=True) as s:
            connection = s.connection().connection.driver_connection
            assert connection is not None
            connection.set_progress_handler(tick, 1)
            try:
                assert previous_values(s, test_ids={crea}, before=T0, **BY_PMS_ID)
            finally:
                connection.set_progress_handler(None, 1)
        return count

    small = steps()
    _history_nobody_needs(db, crea)
    assert small > 0
    assert steps() < small + 100, small


# -- many questions at once -------------------------------------------------------------------


def _seed_two_patients(db: Database) -> tuple[uuid.UUID, uuid.UUID, list[uuid.UUID]]:
    """Two patients' histories of two tests, with every kind of result the check must skip."""
    crea, glu = _test(db, "CREA"), _test(db, "GLU")
    other = (uuid.UUID("7c1d8a52-0000-4000-8000-000000000002"), "PMS-OTHER")
    day = timedelta(days=1)
    skipped = [
        {"status": ResultStatus.SUPERSEDED},
        {"status": ResultStatus.CANCELLED},
        {"mapping_status": MappingStatus.UNMAPPED},
        {"comparator": "<"},
        {"value_numeric": None},
    ]
    report_ids = []
    with db.session() as s:
        for n in range(12):
            for patient in ((PATIENT, PMS_ID), other, (None, PMS_ID)):
                at = T0 + n * day
                results = [
                    LabResult(
                        test_id=test,
                        source_code=str(test)[:8],
                        value_numeric=Decimal(n * 10 + k),
                        value_text=str(n),
                        status=ResultStatus.FINAL,
                        mapping_status=MappingStatus.MAPPED,
                        observed_at=at,
                    )
                    for k, test in enumerate((crea, glu))
                ]
                if n % 4 == 3:  # this report's results are all of kinds the check skips
                    for result in results:
                        for name, value in skipped[n % len(skipped)].items():
                            setattr(result, name, value)
                report = DiagnosticReport(
                    status=ReportStatus.FINAL,
                    patient_id=patient[0],
                    patient_pms_id=patient[1],
                    observed_at=None if n == 5 else at,  # one report without a time
                    deleted_at=T0 if n == 7 else None,  # and one deleted
                    results=results,
                )
                s.add(report)
                s.flush()
                report_ids.append(report.id)
    return crea, glu, report_ids


def test_many_questions_get_the_answers_each_would_get_alone(db: Database) -> None:
    crea, glu, report_ids = _seed_two_patients(db)
    day = timedelta(days=1)
    questions = [
        HistoryQuery(
            patient_id=patient_id,
            patient_pms_id=pms_id,
            test_ids=frozenset(tests),
            before=T0 + hours * timedelta(hours=1),
            exclude_report=exclude,
        )
        for patient_id, pms_id in ((PATIENT, PMS_ID), (None, PMS_ID), (None, "PMS-OTHER"))
        for tests in ({crea}, {crea, glu})
        for hours in (0, 30, 100, 200, 1000)
        for exclude in (None, report_ids[9])
    ]
    questions.append(HistoryQuery(None, None, frozenset({crea}), T0 + 5 * day))  # nobody
    questions.append(HistoryQuery(PATIENT, PMS_ID, frozenset(), T0 + 5 * day))  # no tests
    with db.session(readonly=True) as s:
        together = previous_values_of_many(s, questions)
        alone = [
            previous_values(
                s,
                patient_id=q.patient_id,
                patient_pms_id=q.patient_pms_id,
                test_ids=q.test_ids,
                before=q.before,
                exclude_report=q.exclude_report,
            )
            for q in questions
        ]
    assert together == alone
    assert sum(bool(answer) for answer in alone) > len(questions) // 2  # mostly not empty


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_many_questions_read_only_their_patients_earlier_history(
    db: Database, captured: list[tuple[str, Any]]
) -> None:
    crea = _test(db, "CREA")
    _history_nobody_needs(db, crea)
    questions = [HistoryQuery(PATIENT, PMS_ID, frozenset({crea}), T0)] * 3 + [
        HistoryQuery(None, PMS_ID, frozenset({crea}), T0)
    ] * 3
    with db.session(readonly=True) as s, sent(db, "unnest") as seen:
        assert previous_values_of_many(s, questions) == [{}] * 6
    ((statement, parameters),) = seen
    for generic in (False, True):
        assert _rows_read(db, statement, parameters, generic=generic) < 10, generic
