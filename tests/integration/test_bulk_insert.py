"""Driver-level multi-row INSERTs (``store.bulk``): what the ORM reads back is what was meant."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, cast

import pytest
import sqlalchemy as sa

from vetgateway.model import ReportStatus, ResultStatus
from vetgateway.store import bulk
from vetgateway.store.db import Database
from vetgateway.store.models import DiagnosticReport, LabResult
from vetgateway.store.models.reports import Interpretation, MappingStatus, MatchStatus

NOW = datetime(2026, 11, 26, 12, 30, 15, 123456, tzinfo=UTC)
REPORTS = cast(sa.Table, DiagnosticReport.__table__)
RESULTS = cast(sa.Table, LabResult.__table__)


def report_row(n: int) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "source": "REFLAB",
        "report_key": f"REFLAB|LAB-{n}",
        "status": ReportStatus.FINAL,
        "match_status": MatchStatus.UNMATCHED,
        "match_candidates": [{"order": f"ORD-{n}", "score": n / 2}],
        "patient_name": "Rex Ñandú",  # not ASCII
        "birth_date": date(2020, 2, 29),
        "observed_at": NOW,
        "version": 1,
        "created_at": NOW,
        "updated_at": NOW,
    }


def result_row(report_id: uuid.UUID, n: int) -> dict[str, Any]:
    return {
        "report_id": report_id,
        "source_code": f"A{n}",
        "value_numeric": Decimal(f"{n}.125"),
        "value_text": f"{n}.125",
        "interpretation": Interpretation.CRITICAL_HIGH if n % 2 else Interpretation.NORMAL,
        "status": ResultStatus.FINAL,
        "mapping_status": MappingStatus.MAPPED,
        "delta_flag": n % 3 == 0,
        "observed_at": NOW,
        "version": 1,
        "created_at": NOW,
        "updated_at": NOW,
    }


def insert(db: Database, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    with db.session() as session:
        bulk.insert_rows(session, table, rows)


def test_rows_read_back_as_written(db: Database) -> None:
    reports = [report_row(n) for n in range(3)]
    results = [result_row(r["id"], n) for r in reports for n in range(15)]
    insert(db, REPORTS, reports)
    insert(db, RESULTS, results)
    with db.session(readonly=True) as s:
        stored = {r.id: r for r in s.scalars(sa.select(DiagnosticReport))}
        values = s.execute(
            sa.select(
                LabResult.report_id,
                LabResult.source_code,
                LabResult.value_numeric,
                LabResult.interpretation,
                LabResult.delta_flag,
                LabResult.observed_at,
            ).order_by(LabResult.id)
        ).all()
    assert set(stored) == {r["id"] for r in reports}
    for row in reports:
        report = stored[row["id"]]
        assert (report.status, report.match_status) == (ReportStatus.FINAL, MatchStatus.UNMATCHED)
        assert report.match_candidates == row["match_candidates"]
        assert (report.patient_name, report.birth_date) == ("Rex Ñandú", date(2020, 2, 29))
        assert report.observed_at == NOW
    assert [tuple(v) for v in values] == [
        (
            r["report_id"],
            r["source_code"],
            r["value_numeric"],
            r["interpretation"],
            r["delta_flag"],
            NOW,
        )
        for r in results
    ]


def test_many_rows_keep_their_order_and_their_awkward_text(db: Database) -> None:
    """Ids follow the order given (the delta check and the API list results by id), and text
    that COPY's format would take for delimiters (tab, newline, backslash, \\N) or an empty
    string comes back as sent, NULL as NULL."""
    report = report_row(1)
    insert(db, REPORTS, [report])
    awkward = ["tab\there", "two\nlines", "back\\slash", "\\N", "", None, "CR\rLF\n"]
    rows = [result_row(report["id"], n) for n in range(2500)]
    for n, row in enumerate(rows):
        row["source_name"] = awkward[n % len(awkward)]
    insert(db, RESULTS, rows)
    with db.session(readonly=True) as s:
        stored = s.execute(
            sa.select(LabResult.source_code, LabResult.source_name).order_by(LabResult.id)
        ).all()
    assert [tuple(r) for r in stored] == [(r["source_code"], r["source_name"]) for r in rows]


def test_a_missing_column_with_a_python_default_gets_its_default(db: Database) -> None:
    report = report_row(1)
    insert(db, REPORTS, [report])
    rows = [result_row(report["id"], n) for n in range(3)]
    for row in rows:
        del row["version"], row["interpretation"]  # both have defaults on the model only
    insert(db, RESULTS, rows)
    with db.session(readonly=True) as s:
        stored = s.execute(sa.select(LabResult.version, LabResult.interpretation)).all()
    assert [tuple(r) for r in stored] == [(1, Interpretation.NOT_INTERPRETED)] * 3


def test_rows_roll_back_with_their_transaction(db: Database) -> None:
    report = report_row(1)

    def failing_batch() -> None:
        with db.session() as session:
            bulk.insert_rows(session, REPORTS, [report])
            raise RuntimeError("the rest of the batch failed")

    with pytest.raises(RuntimeError):
        failing_batch()
    with db.session(readonly=True) as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(DiagnosticReport)) == 0
