"""The initial migration on SQLite and PostgreSQL: it round-trips, agrees with the models, keeps
audit_log append-only, and the schema behaves as the conventions promise (UTC timestamps, owned
rows cascading, references set to NULL, ``updated_at`` moving on update)."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.orm import selectinload

from vetgateway.errors import StorageError
from vetgateway.store import migrate
from vetgateway.store.db import Database
from vetgateway.store.models import (
    AuditEntry,
    Base,
    CatalogueCategory,
    CatalogueTest,
    Clinic,
    Device,
    DeviceKind,
    DeviceProtocol,
    DiagnosticOrder,
    DiagnosticReport,
    LabResult,
    MappingStatus,
    OrderItem,
    ReportStatus,
    ResultStatus,
    Sex,
    ValueType,
    Veterinarian,
)

BOTH = pytest.mark.parametrize("fresh_database_url", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def fresh_db(fresh_database_url: str) -> Iterator[Database]:
    database = Database(fresh_database_url)
    yield database
    database.dispose()


def _tables(db: Database) -> set[str]:
    return set(sa.inspect(db.engine).get_table_names())


def _triggers(db: Database) -> set[str]:
    with db.engine.connect() as conn:
        if db.dialect == "sqlite":
            query = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
        else:
            query = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
        return set(conn.execute(sa.text(query)).scalars())


def _leftover_pg_objects(db: Database) -> list[str]:
    """Enum types and functions in the public schema: all of them belong to the migration."""
    with db.engine.connect() as conn:
        types = conn.execute(
            sa.text(
                "SELECT 'type ' || t.typname FROM pg_type t"
                " JOIN pg_namespace n ON n.oid = t.typnamespace"
                " WHERE n.nspname = 'public' AND t.typtype = 'e'"
            )
        ).scalars()
        functions = conn.execute(
            sa.text(
                "SELECT 'function ' || p.proname FROM pg_proc p"
                " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'"
            )
        ).scalars()
        return sorted([*types, *functions])


@BOTH
def test_upgrade_downgrade_upgrade(fresh_db: Database) -> None:
    expected = set(Base.metadata.tables)

    migrate.upgrade(fresh_db)
    assert expected <= _tables(fresh_db)
    assert migrate.current_revision(fresh_db) == migrate.head_revision() == "0009"
    installed_triggers = _triggers(fresh_db)
    assert installed_triggers

    migrate.downgrade(fresh_db)
    assert _tables(fresh_db) == {"alembic_version"}
    assert migrate.current_revision(fresh_db) is None
    assert _triggers(fresh_db) == set()
    if fresh_db.dialect == "postgresql":
        assert _leftover_pg_objects(fresh_db) == []

    migrate.upgrade(fresh_db)
    assert expected <= _tables(fresh_db)
    assert _triggers(fresh_db) == installed_triggers
    assert migrate.current_revision(fresh_db) == "0009"


def test_the_shipped_head_is_read_as_alembic_reads_it() -> None:
    assert migrate.shipped_head() == migrate.head_revision()


@BOTH
def test_upgrade_runs_alembic_only_when_the_database_is_behind(
    fresh_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database at the head is recognised without Alembic (a start-up saving); one behind it,
    or one whose version table says something else, still goes through Alembic."""
    import alembic.command
    import alembic.util

    ran: list[str] = []
    upgrade = alembic.command.upgrade

    def counted(config: Any, revision: str, **kwargs: Any) -> None:
        ran.append(revision)
        upgrade(config, revision, **kwargs)

    monkeypatch.setattr(alembic.command, "upgrade", counted)
    migrate.upgrade(fresh_db, "0008")
    migrate.upgrade(fresh_db)  # behind: Alembic upgrades it
    assert ran == ["0008", "head"]
    assert migrate.current_revision(fresh_db) == "0009"
    migrate.upgrade(fresh_db)  # at the head: nothing to do, Alembic not asked
    assert ran == ["0008", "head"]
    with fresh_db.engine.begin() as conn:  # a second row: not a state to second-guess
        conn.execute(sa.text("INSERT INTO alembic_version (version_num) VALUES ('0008')"))
    with pytest.raises(alembic.util.CommandError, match="overlaps"):
        migrate.upgrade(fresh_db)
    assert ran == ["0008", "head", "head"]


def test_a_command_at_the_head_does_not_import_alembic(tmp_path: Path) -> None:
    """Importing Alembic pulls in Mako and Pygments: most of a second on a small box, paid by
    every start of the gateway unless the database is behind."""
    url = f"sqlite:///{tmp_path / 'at-head.db'}"
    db = Database(url)
    migrate.upgrade(db)
    db.dispose()
    probe = (
        "import sys\n"
        "from vetgateway.store import migrate\n"
        "from vetgateway.store.db import Database\n"
        f"db = Database({url!r})\n"
        "migrate.upgrade(db)\n"
        "print(sorted(m for m in ('alembic', 'mako', 'pygments') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]", done.stderr


def _flatten(diffs: list[Any]) -> Iterator[tuple[Any, ...]]:
    # compare_metadata groups the changes to one column into a list.
    for diff in diffs:
        if isinstance(diff, list):
            yield from diff
        else:
            yield diff


def _unavoidable(dialect: str, diff: tuple[Any, ...]) -> bool:
    # SQLite has no identity columns: an INTEGER PRIMARY KEY is the rowid alias and numbers
    # itself, so reflection can never report the Identity() the models declare for PostgreSQL.
    return (
        dialect == "sqlite"
        and diff[0] == "modify_default"
        and diff[3] == "id"
        and isinstance(diff[6], sa.Identity)
    )


def _expressions(index: sa.Index) -> list[str]:
    """An expression index's terms, as the database writes them back or as declared: lower
    case, no blanks, PostgreSQL's ``TRIM(BOTH FROM x)`` read as ``trim(x)``."""
    terms = [str(getattr(e, "text", e)) for e in index.expressions]
    return [re.sub(r"\s+", "", t.lower()).replace("bothfrom", "") for t in terms]


def _without_rewritten_expressions(diffs: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Drop the remove/add pair autogenerate reports for an expression index the database
    stores in its own spelling (PostgreSQL), when the two say the same thing."""
    removed = {d[1].name: d for d in diffs if d[0] == "remove_index" and d[1].expressions}
    same = {
        name
        for d in diffs
        if d[0] == "add_index"
        and (name := d[1].name) in removed
        and _expressions(removed[name][1]) == _expressions(d[1])
    }
    return [d for d in diffs if not (d[0] in ("add_index", "remove_index") and d[1].name in same)]


@BOTH
# SQLAlchemy cannot reflect SQLite's expression indexes, so it and Alembic skip them with these
# warnings; test_the_owner_and_animal_name_index_holds_the_matching_expressions checks that one.
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based")
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
def test_migration_matches_the_models(fresh_db: Database) -> None:
    migrate.upgrade(fresh_db)
    with fresh_db.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        diffs = _without_rewritten_expressions(
            list(_flatten(compare_metadata(context, Base.metadata)))
        )
    remaining = [d for d in diffs if not _unavoidable(fresh_db.dialect, d)]
    assert remaining == [], "models and migration 0001 disagree:\n" + "\n".join(map(str, remaining))


def _index_sql(db: Database, name: str) -> str | None:
    query = (
        "SELECT indexdef FROM pg_indexes WHERE indexname = :name"
        if db.dialect == "postgresql"
        else "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :name"
    )
    with db.engine.connect() as conn:
        return conn.execute(sa.text(query), {"name": name}).scalar()


@BOTH
def test_mostly_null_references_are_indexed_only_where_set(fresh_db: Database) -> None:
    migrate.upgrade(fresh_db)
    for name, column in (
        ("ix_lab_results_supersedes_id", "supersedes_id"),
        ("ix_diagnostic_reports_supersedes_id", "supersedes_id"),
        ("ix_inbound_messages_duplicate_of_id", "duplicate_of_id"),
        ("ix_alerts_device_id", "device_id"),
    ):
        sql = _index_sql(fresh_db, name)
        assert sql is not None, name
        assert f"WHERE ({column} IS NOT NULL)" in sql or f"WHERE {column} IS NOT NULL" in sql
    assert _index_sql(fresh_db, "ix_inbound_messages_sha256") is None
    migrate.downgrade(fresh_db, "0006")
    assert "WHERE" not in (_index_sql(fresh_db, "ix_lab_results_supersedes_id") or "WHERE")
    assert _index_sql(fresh_db, "ix_inbound_messages_sha256") is not None


@BOTH
def test_the_owner_and_animal_name_index_holds_the_matching_expressions(fresh_db: Database) -> None:
    migrate.upgrade(fresh_db)
    sql = re.sub(
        r"\s+", "", (_index_sql(fresh_db, "ix_diagnostic_orders_owner_patient_name") or "")
    )
    sql = sql.lower().replace("bothfrom", "")
    assert "(lower(trim(owner_surname)),lower(trim(patient_name)))" in sql, sql
    migrate.downgrade(fresh_db, "0008")
    assert _index_sql(fresh_db, "ix_diagnostic_orders_owner_patient_name") is None


@BOTH
def test_timestamp_columns_are_timezone_aware(fresh_db: Database) -> None:
    migrate.upgrade(fresh_db)
    naive = [
        f"{table}.{column['name']}"
        for table in Base.metadata.tables
        for column in sa.inspect(fresh_db.engine).get_columns(table)
        if isinstance(column["type"], sa.DateTime) and not column["type"].timezone
    ]
    # SQLite keeps no zone at all (UTCDateTime stores UTC and attaches it when reading).
    assert naive == [] or fresh_db.dialect == "sqlite"


def _audit_row(db: Database) -> int:
    with db.session() as s:
        entry = AuditEntry(
            occurred_at=datetime.now(UTC),
            actor="dr.a",
            action="alert.acknowledge",
            entity_type="alert",
            entity_id="1",
            details={"via": "api"},
        )
        s.add(entry)
        s.flush()
        return entry.id


def test_audit_log_refuses_update(db: Database) -> None:
    entry_id = _audit_row(db)
    with (
        pytest.raises(StorageError, match="audit_log is append-only: UPDATE refused"),
        db.session() as s,
    ):
        s.execute(sa.update(AuditEntry).where(AuditEntry.id == entry_id).values(actor="mallory"))
    with db.session() as s:
        assert s.get_one(AuditEntry, entry_id).actor == "dr.a"


def test_audit_log_refuses_delete(db: Database) -> None:
    entry_id = _audit_row(db)
    with (
        pytest.raises(StorageError, match="audit_log is append-only: DELETE refused"),
        db.session() as s,
    ):
        s.execute(sa.delete(AuditEntry).where(AuditEntry.id == entry_id))
    with db.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(AuditEntry)) == 1


def test_timestamps_come_back_as_utc(db: Database) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    with db.session() as s:
        clinic = Clinic(code="north", name="North Street Veterinary")
        s.add(clinic)
    with db.session() as s:
        stored = s.get_one(Clinic, clinic.id)
    after = datetime.now(UTC)
    for value in (stored.created_at, stored.updated_at):
        assert value.tzinfo is not None
        assert value.utcoffset() == timedelta(0)
        # Set by the database clock, so within this test's window (SQLite keeps whole seconds).
        assert before <= value <= after


def _seed(db: Database) -> dict[str, Any]:
    """One clinic, veterinarian, device and test; an order with two items; two reports with
    results (the second is there to show a cascade stays within its parent)."""
    with db.session() as s:
        clinic = Clinic(code="north", name="North Street Veterinary")
        vet = Veterinarian(name="Dr A. Example", licence_number="12345", licence_state="CA")
        device = Device(
            name="Chemistry analyzer",
            kind=DeviceKind.ANALYZER,
            protocol=DeviceProtocol.ASTM,
            connection={"port": "/dev/ttyUSB0", "baud": 9600},
            sender_id="CATALYST-1",
        )
        glucose = CatalogueTest(
            code="GLU",
            name="Glucose",
            category=CatalogueCategory.CHEMISTRY,
            unit="mmol/L",
            value_type=ValueType.NUMERIC,
            decimals=1,
        )
        s.add_all([clinic, vet, device, glucose])
        s.flush()
        device.clinic_id = clinic.id
        order = DiagnosticOrder(
            clinic_id=clinic.id,
            accession_number="A-1",
            ordering_veterinarian_id=vet.id,
            patient_id=uuid.uuid4(),
            patient_microchip="985112000000001",
            species="canine",
            sex=Sex.FEMALE_SPAYED,
            source="manual",
            items=[
                OrderItem(test_id=glucose.id, ordered_code="GLU"),
                OrderItem(test_id=None, ordered_code="XYZ"),
            ],
        )
        s.add(order)
        s.flush()
        reports = []
        for value in ("5.4", "<0.5"):
            numeric = Decimal(value.lstrip("<"))
            report = DiagnosticReport(
                order_id=order.id,
                device_id=device.id,
                clinic_id=clinic.id,
                status=ReportStatus.FINAL,
                results=[
                    LabResult(
                        test_id=glucose.id,
                        source_code="GLU",
                        value_numeric=numeric,
                        value_text=value,
                        comparator="<" if value.startswith("<") else None,
                        unit="mmol/L",
                        status=ResultStatus.FINAL,
                        mapping_status=MappingStatus.MAPPED,
                    ),
                    LabResult(
                        source_code="NOTE",
                        value_text="haemolysed",
                        status=ResultStatus.FINAL,
                        mapping_status=MappingStatus.UNMAPPED,
                    ),
                ],
            )
            s.add(report)
            reports.append(report)
        s.flush()
        return {
            "vet": vet.id,
            "order": order.id,
            "reports": [r.id for r in reports],
        }


def _count(db: Database, model: type[Base], *where: sa.ColumnElement[bool]) -> int:
    with db.session(readonly=True) as s:
        return s.scalar(sa.select(sa.func.count()).select_from(model).where(*where)) or 0


def test_round_trip_keeps_values(db: Database) -> None:
    ids = _seed(db)
    with db.session(readonly=True) as s:
        order = s.scalars(
            sa.select(DiagnosticOrder)
            .where(DiagnosticOrder.id == ids["order"])
            .options(selectinload(DiagnosticOrder.items))
        ).one()
        report = s.scalars(
            sa.select(DiagnosticReport)
            .where(DiagnosticReport.id == ids["reports"][1])
            .options(selectinload(DiagnosticReport.results))
        ).one()
    assert sorted(item.ordered_code for item in order.items) == ["GLU", "XYZ"]
    assert order.sex is Sex.FEMALE_SPAYED
    numeric, note = report.results
    assert (numeric.value_numeric, numeric.value_text, numeric.comparator) == (
        Decimal("0.5"),
        "<0.5",
        "<",
    )
    assert note.value_numeric is None
    assert note.mapping_status is MappingStatus.UNMAPPED


def test_unloaded_collections_refuse_to_lazy_load(db: Database) -> None:
    ids = _seed(db)
    with db.session(readonly=True) as s:
        order = s.get_one(DiagnosticOrder, ids["order"])
        with pytest.raises(sa.exc.InvalidRequestError, match="lazy='raise'"):
            _ = order.items


def test_deleting_a_report_deletes_its_results_only(db: Database) -> None:
    ids = _seed(db)
    doomed, kept = ids["reports"]
    with db.session() as s:
        s.delete(s.get_one(DiagnosticReport, doomed))
    assert _count(db, LabResult, LabResult.report_id == doomed) == 0
    assert _count(db, LabResult, LabResult.report_id == kept) == 2


def test_deleting_an_order_deletes_its_items_and_unlinks_reports(db: Database) -> None:
    ids = _seed(db)
    with db.session() as s:
        s.delete(s.get_one(DiagnosticOrder, ids["order"]))
    assert _count(db, OrderItem) == 0
    assert _count(db, DiagnosticReport) == 2
    assert _count(db, DiagnosticReport, DiagnosticReport.order_id.is_not(None)) == 0


def test_deleting_a_veterinarian_nulls_the_ordering_vet(db: Database) -> None:
    ids = _seed(db)
    with db.session() as s:
        s.delete(s.get_one(Veterinarian, ids["vet"]))
    with db.session(readonly=True) as s:
        order = s.get_one(DiagnosticOrder, ids["order"])
    assert order.ordering_veterinarian_id is None
    assert order.accession_number == "A-1"


def test_updated_at_moves_on_update(db: Database) -> None:
    ids = _seed(db)
    with db.session(readonly=True) as s:
        original = s.get_one(DiagnosticOrder, ids["order"]).updated_at
    before_update = datetime.now(UTC)
    with db.session() as s:
        s.get_one(DiagnosticOrder, ids["order"]).accession_number = "A-2"
    with db.session(readonly=True) as s:
        order = s.get_one(DiagnosticOrder, ids["order"])
    assert order.updated_at >= before_update > original
    assert order.created_at == original


@pytest.mark.parametrize("fresh_database_url", ["postgresql"], indirect=True)
def test_raw_messages_are_lz4_compressed_on_postgresql(fresh_database_url: str) -> None:
    db = Database(fresh_database_url)
    migrate.upgrade(db)
    with db.engine.connect() as conn:
        method = conn.execute(
            sa.text(
                "SELECT attcompression FROM pg_attribute"
                " WHERE attrelid = 'inbound_messages'::regclass AND attname = 'raw'"
            )
        ).scalar()
    db.dispose()
    assert method == "l"
