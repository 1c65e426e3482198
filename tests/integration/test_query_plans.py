"""Lookups that run per message, per report or per poll reach their rows through an index, on
both back ends, instead of reading a whole table: the statements are the ones the store really
sends (captured), the plans the databases' own (EXPLAIN). An audit against 2 million messages
and 9 million results found each of these scanning a table (migration 0009 says what it cost).

On PostgreSQL the plan is asked with sequential scans priced out (``enable_seqscan = off``), so
the tiny tables of a test cannot make a scan look cheap: a table is read whole only when no
index can answer the query. Both the plan for these parameters and the generic one (what a
statement prepared by psycopg gets) are checked. On SQLite, which keeps no statistics here, the
plan is the one a clinic's database gets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from tests.integration.test_orders import report as order_free_report
from vetgateway.pipeline.parse.orm import OrderIn
from vetgateway.pipeline.rematch import rematch_for_order
from vetgateway.store.db import Database
from vetgateway.store.device_alerts import open_silence_alerts
from vetgateway.store.models import Base
from vetgateway.store.orders import candidate_orders, upsert_order
from vetgateway.store.results import find_results, find_unmatched, unmapped_codes

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
WINDOW = timedelta(days=30)


@contextmanager
def sent(db: Database, *words: str) -> Iterator[list[tuple[str, Any]]]:
    """The statements (with parameters) sent inside the block that contain every one of
    ``words``."""
    captured: list[tuple[str, Any]] = []

    def watch(_c: object, _cur: object, statement: str, parameters: Any, *_: object) -> None:
        if all(word in statement for word in words):
            captured.append((statement, parameters))

    sa.event.listen(db.engine, "before_cursor_execute", watch)
    try:
        yield captured
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", watch)


def _pg_plan(db: Database, statement: str, parameters: Any, *, generic: bool) -> dict[str, Any]:
    with db.engine.connect() as c:
        c.exec_driver_sql("SET enable_seqscan = off")
        if generic:
            c.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        (plan,) = c.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, parameters).one()
        c.rollback()
    return (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]


def _partial_indexes() -> set[str]:
    """Indexes holding only some rows (``WHERE ...``): walking one whole reads only those."""
    return {
        str(index.name)
        for table in Base.metadata.tables.values()
        for index in table.indexes
        if index.dialect_options["sqlite"].get("where") is not None
    }


def _pg_whole_reads(node: dict[str, Any]) -> set[str]:
    """Tables a plan reads whole: a sequential scan, or a full index walked without a
    condition."""
    found: set[str] = set()
    kind = node.get("Node Type", "")
    walked = kind.startswith("Index") and "Index Cond" not in node
    if kind == "Seq Scan" or (walked and node["Index Name"] not in _partial_indexes()):
        found.add(node["Relation Name"])
    for child in node.get("Plans", []):
        found |= _pg_whole_reads(child)
    return found


def whole_reads(db: Database, statement: str, parameters: Any) -> set[str]:
    """The tables the database would read whole to answer ``statement``."""
    if db.dialect == "postgresql":
        found = set()
        for generic in (False, True):
            found |= _pg_whole_reads(_pg_plan(db, statement, parameters, generic=generic))
        return found
    with db.engine.connect() as c:
        details = [
            row[-1] for row in c.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
        ]
    # "SCAN t" and "SCAN t USING INDEX i" both visit every row ("SEARCH t ..." does not),
    # unless i is a partial index.
    return {
        words[1]
        for words in (d.split() for d in details)
        if words[0] == "SCAN"
        and words[1] in Base.metadata.tables
        and not _partial_indexes() & set(words[2:])
    }


def only(captured: list[tuple[str, Any]]) -> tuple[str, Any]:
    assert len(captured) == 1, [statement for statement, _ in captured]
    return captured[0]


def test_a_new_order_finds_the_reports_waiting_for_it_through_indexes(db: Database) -> None:
    """Per order placed (HL7 ORM, the orders API): by any of its numbers, PMS id or microchip."""
    order = OrderIn(
        source="pms:test",
        placer_number="P-1",
        filler_number="F-1",
        accession_number="A-1",
        ordered_at=T0,
        patient_pms_id="PMS-1",
        patient_microchip="985112345678901",
        patient_name="Bella",
        species="canine",
    )
    with db.session() as session, sent(db, "FROM diagnostic_reports", "match_status") as seen:
        row, _created = upsert_order(session, order, actor="test")
        rematch_for_order(session, row, window=WINDOW, now=T0)
    assert "diagnostic_reports" not in whole_reads(db, *only(seen))


def test_matching_by_owner_and_animal_name_reads_the_name_index(db: Database) -> None:
    """Per report that no number matched: the last rule, names compared trimmed and lower-case."""
    report = order_free_report(name=" Bella ", owner_surname="SMITH")
    with db.session(readonly=True) as session, sent(db, "lower(trim(") as seen:
        candidate_orders(session, report, "canine", observed_at=T0, window=WINDOW)
    assert "diagnostic_orders" not in whole_reads(db, *only(seen))


def _pg_conditions(node: dict[str, Any], table: str) -> list[str]:
    """The index conditions by which a plan reaches ``table`` (its indexes are ``ix_<table>_*``,
    and a bitmap index scan names only the index)."""
    own = node.get("Relation Name") == table or node.get("Index Name", "").startswith(
        f"ix_{table}_"
    )
    found = [node["Index Cond"]] if own and "Index Cond" in node else []
    for child in node.get("Plans", []):
        found += _pg_conditions(child, table)
    return found


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_a_practice_system_polling_for_changes_reads_only_the_changes(db: Database) -> None:
    """``GET /api/v1/results?since=``: on PostgreSQL through the updated_at index, whichever
    table the plan starts from (without it, every result was read and filtered).

    SQLite still walks lab_results in id order for this one (the page's ORDER BY id wins over
    the index), so it is not checked there; see migration 0009."""
    with db.session(readonly=True) as session, sent(db, "lab_results.updated_at >=") as seen:
        find_results(session, since=T0)
    statement, parameters = only(seen)
    for generic in (False, True):
        plan = _pg_plan(db, statement, parameters, generic=generic)
        assert any("updated_at" in c for c in _pg_conditions(plan, "lab_results")), generic


def test_results_by_accession_are_found_through_indexes(db: Database) -> None:
    """``GET /api/v1/results?accession=``: the report's own accession or its order's, each by
    its index (an OR over two tables is where planners fall back to reading everything)."""
    with (
        db.session(readonly=True) as session,
        sent(db, "UNION") as seen,
    ):
        find_results(session, accession="A-1")
    statement, parameters = only(seen)
    assert not {"lab_results", "diagnostic_reports", "diagnostic_orders"} & whole_reads(
        db, statement, parameters
    )


def test_the_silence_watch_reads_only_device_alerts(db: Database) -> None:
    """Every 30 s: the open alerts of silent devices, a handful among every alert ever raised."""
    with db.session(readonly=True) as session, sent(db, "FROM alerts") as seen:
        open_silence_alerts(session)
    assert "alerts" not in whole_reads(db, *only(seen))


def test_the_unmatched_queue_reads_only_unmatched_reports(db: Database) -> None:
    """Every page a technician opens, newest first."""
    with db.session(readonly=True) as session, sent(db, "FROM diagnostic_reports") as seen:
        find_unmatched(session, before=T0)
    assert "diagnostic_reports" not in whole_reads(db, *only(seen))


def test_the_mapping_work_list_reads_only_unmapped_results(db: Database) -> None:
    with db.session(readonly=True) as session, sent(db, "FROM lab_results") as seen:
        unmapped_codes(session)
    assert "lab_results" not in whole_reads(db, *only(seen))
