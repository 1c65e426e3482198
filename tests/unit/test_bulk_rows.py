"""``store.bulk``: processing each distinct value of a batch once gives exactly what processing
every value gives, on both dialects, for every column type the pipeline's tables use."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, cast

import pytest
import sqlalchemy as sa

from vetgateway.model import ReportStatus, ResultStatus
from vetgateway.store import bulk
from vetgateway.store.models import DiagnosticReport, LabResult
from vetgateway.store.models.reports import Interpretation, MappingStatus, MatchStatus

NOW = datetime(2026, 11, 27, 3, 30, 0, 123456, tzinfo=UTC)
SAME_INSTANT_ELSEWHERE = NOW.astimezone(timezone(timedelta(hours=2)))
DIALECTS = {
    "sqlite": sa.create_engine("sqlite://").dialect,
    "postgresql": sa.create_engine("postgresql+psycopg://nobody@/nothing").dialect,
}


def result_rows() -> list[dict[str, Any]]:
    report = uuid.uuid4()
    return [
        {
            "report_id": report if n < 6 else uuid.uuid4(),
            "source_code": f"C{n % 3}",
            # equal numbers written differently, and one that is not equal to itself
            "value_numeric": [Decimal("1.0"), Decimal("1.00"), Decimal("NaN"), None][n % 4],
            "value_text": str(n),
            "interpretation": [Interpretation.NORMAL, Interpretation.CRITICAL_HIGH][n % 2],
            "status": ResultStatus.FINAL,
            "mapping_status": MappingStatus.MAPPED,
            "delta_flag": [True, False, None][n % 3],
            # the same instant in two zones, and a later one
            "observed_at": [NOW, SAME_INSTANT_ELSEWHERE, NOW + timedelta(seconds=n)][n % 3],
            "version": 1,
            "created_at": NOW,
            "updated_at": NOW,
        }
        for n in range(12)
    ]


def report_rows() -> list[dict[str, Any]]:
    return [
        {
            "id": uuid.uuid4(),
            "status": ReportStatus.FINAL,
            "match_status": MatchStatus.UNMATCHED,
            "match_candidates": [{"order": "A", "score": n}],  # JSON: not hashable
            "observed_at": NOW,
            "version": 1,
            "created_at": NOW,
            "updated_at": NOW,
        }
        for n in range(4)
    ]


def one_by_one(table: sa.Table, rows: list[dict[str, Any]], dialect: sa.Dialect) -> list[Any]:
    out = []
    for row in rows:
        values = []
        for name, value in row.items():
            process = bulk.bind_processor(table.c[name], dialect)
            values.append(value if process is None else process(value))
        out.append(values)
    return out


@pytest.mark.parametrize("dialect", list(DIALECTS))
@pytest.mark.parametrize(
    ("model", "make_rows"), [(LabResult, result_rows), (DiagnosticReport, report_rows)]
)
def test_a_batch_is_processed_as_each_row_would_be(
    dialect: str, model: type, make_rows: Any
) -> None:
    table = cast(sa.Table, model.__table__)
    rows = make_rows()
    statement = bulk._statement(table, tuple(rows[0]), DIALECTS[dialect])
    assert statement is not None
    together, alone = statement.rows(rows), one_by_one(table, rows, DIALECTS[dialect])
    assert repr(together) == repr(alone)  # repr: NaN is not equal to itself
    assert together[0] is not together[1]  # each row its own list
