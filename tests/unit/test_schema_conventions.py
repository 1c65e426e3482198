"""CONVENTIONS.md §4, checked on the models: every rule is a function that lists its offenders.

Each check runs twice: on ``Base.metadata``, where it must find nothing, and on a small schema
that breaks the rule on purpose, so a check that silently stopped looking would fail here too.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.orm import configure_mappers

from vetgateway.store.models import Base
from vetgateway.store.models.base import BigId, UTCDateTime

# PostgreSQL truncates longer identifiers silently, which later confuses migrations.
PG_MAX_IDENTIFIER = 63

SOFT_DELETED = {
    "clinics",
    "veterinarians",
    "devices",
    "catalogue_tests",
    "reference_intervals",
    "diagnostic_orders",
    "order_items",
    "diagnostic_reports",
    "lab_results",
    "imaging_studies",
    "imaging_series",
    "imaging_instances",
    "qc_runs",
    "qc_results",
    "alerts",
}

IDENTITY_KEYED = {
    "inbound_messages",
    "audit_log",
    "lab_results",
    "report_attachments",
    "imaging_instances",
    "qc_results",
    "pages",
    "alert_acknowledgements",
}

Check = Callable[[sa.MetaData], list[str]]


def _is_identity_key(column: sa.Column[object]) -> bool:
    return (
        isinstance(column.type, sa.BigInteger)
        and column.identity is not None
        # SQLite only autoincrements an INTEGER PRIMARY KEY (the rowid alias), never BIGINT.
        and isinstance(column.type._variant_mapping.get("sqlite"), sa.Integer)
        and not isinstance(column.type._variant_mapping.get("sqlite"), sa.BigInteger)
    )


def fk_columns_without_index(metadata: sa.MetaData) -> list[str]:
    offenders = []
    for table in metadata.sorted_tables:
        leading = {index.columns[0].name for index in table.indexes if index.columns}
        for fk in table.foreign_keys:
            if fk.parent.name not in leading:
                offenders.append(f"{table.name}.{fk.parent.name}")
    return offenders


def tables_without_timestamps(metadata: sa.MetaData) -> list[str]:
    offenders = []
    for table in metadata.sorted_tables:
        created = table.columns.get("created_at")
        updated = table.columns.get("updated_at")
        if created is None or created.nullable or created.server_default is None:
            offenders.append(f"{table.name}.created_at (NOT NULL, server default)")
        if updated is None or updated.nullable or updated.onupdate is None:
            offenders.append(f"{table.name}.updated_at (NOT NULL, set on update)")
    return offenders


def tables_with_wrong_primary_key(metadata: sa.MetaData) -> list[str]:
    offenders = []
    for table in metadata.sorted_tables:
        columns = list(table.primary_key.columns)
        if len(columns) != 1:
            offenders.append(f"{table.name}: primary key {[c.name for c in columns]}")
            continue
        (key,) = columns
        if not (isinstance(key.type, sa.Uuid) or _is_identity_key(key)):
            offenders.append(f"{table.name}.{key.name}: {key.type!r}")
    return offenders


def foreign_keys_with_wrong_ondelete(metadata: sa.MetaData) -> list[str]:
    offenders = []
    for table in metadata.sorted_tables:
        for fk in table.foreign_keys:
            name = f"{table.name}.{fk.parent.name}"
            ondelete = (fk.ondelete or "").upper()
            if ondelete not in {"CASCADE", "SET NULL"}:
                offenders.append(f"{name}: ondelete={fk.ondelete!r}")
            elif ondelete == "SET NULL" and not fk.parent.nullable:
                offenders.append(f"{name}: SET NULL on a NOT NULL column")
    return offenders


def _describe(type_: sa.types.TypeEngine[object]) -> str:
    """A type with its per-dialect variants (``repr`` leaves the variants out)."""
    variants = "".join(f", {name}: {v!r}" for name, v in sorted(type_._variant_mapping.items()))
    return f"{type_!r}{variants}"


def foreign_keys_with_mismatched_type(metadata: sa.MetaData) -> list[str]:
    """A column pointing at a BigId key must be a BigId too (BIGINT on PostgreSQL, INTEGER on
    SQLite), and one pointing at a UUID a UUID."""
    offenders = []
    for table in metadata.sorted_tables:
        for fk in table.foreign_keys:
            parent, target = fk.parent, fk.column
            if isinstance(target.type, sa.Uuid):
                ok = isinstance(parent.type, sa.Uuid)
            else:
                ok = _describe(parent.type) == _describe(target.type)
            if not ok:
                wrong = f"{_describe(parent.type)} → {_describe(target.type)}"
                offenders.append(f"{table.name}.{parent.name}: {wrong}")
    return offenders


def naive_datetime_columns(metadata: sa.MetaData) -> list[str]:
    return [
        f"{table.name}.{column.name}"
        for table in metadata.sorted_tables
        for column in table.columns
        if isinstance(column.type, sa.DateTime) and not isinstance(column.type, UTCDateTime)
    ]


def badly_mapped_enums(metadata: sa.MetaData) -> list[str]:
    offenders = []
    for table in metadata.sorted_tables:
        for column in table.columns:
            if not isinstance(column.type, sa.Enum):
                continue
            name = f"{table.name}.{column.name}"
            if column.type.enum_class is None or not column.type.native_enum:
                offenders.append(f"{name}: not a native enum of a Python enum.Enum")
            elif bad := [v for v in column.type.enums if not re.fullmatch(r"[a-z][a-z0-9_]*", v)]:
                offenders.append(f"{name}: values not lower-case words: {bad}")
    return offenders


def overlong_names(metadata: sa.MetaData) -> list[str]:
    names = [table.name for table in metadata.sorted_tables]
    for table in metadata.sorted_tables:
        names += [str(c.name) for c in table.constraints if isinstance(c.name, str)]
        names += [str(i.name) for i in table.indexes if isinstance(i.name, str)]
    return [name for name in names if len(name) > PG_MAX_IDENTIFIER]


CHECKS: list[Check] = [
    fk_columns_without_index,
    tables_without_timestamps,
    tables_with_wrong_primary_key,
    foreign_keys_with_wrong_ondelete,
    foreign_keys_with_mismatched_type,
    naive_datetime_columns,
    badly_mapped_enums,
    overlong_names,
]


def _offenders(metadata: sa.MetaData) -> dict[str, list[str]]:
    found = {check.__name__: check(metadata) for check in CHECKS}
    return {name: offenders for name, offenders in found.items() if offenders}


def test_the_schema_follows_the_conventions() -> None:
    offenders = _offenders(Base.metadata)
    assert not offenders, "\n".join(
        f"{check}: {', '.join(names)}" for check, names in offenders.items()
    )


class _Colour(enum.Enum):
    RED = "Red"


def _broken_schema() -> sa.MetaData:
    metadata = sa.MetaData()
    sa.Table("parents", metadata, sa.Column("id", sa.Integer(), primary_key=True))
    sa.Table(
        "children",
        metadata,
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("parent_id", BigId, sa.ForeignKey("parents.id"), nullable=False),
        sa.Column("other_id", sa.Integer(), sa.ForeignKey("parents.id", ondelete="SET NULL")),
        sa.Column("seen_at", sa.DateTime()),
        sa.Column("colour", sa.Enum(_Colour, native_enum=False)),
        sa.Index("ix_" + "x" * PG_MAX_IDENTIFIER, "other_id"),
    )
    return metadata


def test_each_check_names_every_offender() -> None:
    offenders = _offenders(_broken_schema())
    assert offenders == {
        "fk_columns_without_index": ["children.parent_id"],
        "tables_without_timestamps": [
            "parents.created_at (NOT NULL, server default)",
            "parents.updated_at (NOT NULL, set on update)",
            "children.created_at (NOT NULL, server default)",
            "children.updated_at (NOT NULL, set on update)",
        ],
        "tables_with_wrong_primary_key": ["parents.id: Integer()"],
        "foreign_keys_with_wrong_ondelete": ["children.parent_id: ondelete=None"],
        "foreign_keys_with_mismatched_type": [
            "children.parent_id: BigInteger(), sqlite: Integer() → Integer()"
        ],
        "naive_datetime_columns": ["children.seen_at"],
        "badly_mapped_enums": ["children.colour: not a native enum of a Python enum.Enum"],
        "overlong_names": ["ix_" + "x" * PG_MAX_IDENTIFIER],
    }


def test_set_null_on_a_required_column_is_reported() -> None:
    metadata = sa.MetaData()
    sa.Table("a", metadata, sa.Column("id", sa.Uuid(), primary_key=True))
    sa.Table(
        "b",
        metadata,
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("a_id", sa.Uuid(), sa.ForeignKey("a.id", ondelete="SET NULL"), nullable=False),
    )
    assert foreign_keys_with_wrong_ondelete(metadata) == ["b.a_id: SET NULL on a NOT NULL column"]


def test_clinical_records_are_soft_deleted() -> None:
    missing = sorted(
        name
        for name in SOFT_DELETED
        if "deleted_at" not in Base.metadata.tables[name].columns
        or not Base.metadata.tables[name].columns["deleted_at"].nullable
    )
    assert not missing, f"clinical tables without a nullable deleted_at: {missing}"


def test_high_volume_rows_have_identity_keys_and_the_rest_uuids() -> None:
    identity = {
        name
        for name, table in Base.metadata.tables.items()
        if _is_identity_key(next(iter(table.primary_key.columns)))
    }
    assert identity == IDENTITY_KEYED


def test_patients_are_referenced_without_a_foreign_key() -> None:
    assert "patients" not in Base.metadata.tables
    with_fk = [
        f"{table.name}.patient_id"
        for table in Base.metadata.sorted_tables
        if "patient_id" in table.columns and table.columns["patient_id"].foreign_keys
    ]
    assert not with_fk, with_fk


def test_relationships_never_lazy_load_silently() -> None:
    configure_mappers()
    lazy = [
        f"{mapper.class_.__name__}.{rel.key}: lazy={rel.lazy!r}"
        for mapper in Base.registry.mappers
        for rel in mapper.relationships
        if rel.lazy not in ("raise", "raise_on_sql", "selectin")
    ]
    assert not lazy, lazy
