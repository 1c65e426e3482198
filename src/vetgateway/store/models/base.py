"""The declarative base and the column conventions every table follows (CONVENTIONS.md §4).

- Main entities get a UUID key (``UuidKey``); high-volume rows a BigInteger identity
  (``IdentityKey``).
- Every table has ``created_at`` and ``updated_at`` (``Timestamps``); clinical records also
  ``deleted_at`` (``SoftDelete``): they are never hard-deleted.
- Times are timezone-aware and UTC in both directions, even on SQLite, which has no time zones.
- Python ``enum.Enum`` annotations map to native enums on PostgreSQL (stored by value).
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, whatever the database keeps."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; attach a time zone first")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def enum_type(enum_class: type[enum.Enum]) -> sa.Enum:
    """An Enum stored by the members' values (lower-case words), native on PostgreSQL."""
    return sa.Enum(
        enum_class,
        name=enum_class.__name__.lower(),
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


def sparse_index(table: str, column: str) -> sa.Index:
    """An index on a column that is NULL on nearly every row (a correction's or a copy's pointer
    to its original): only the rows where it is set are indexed, so the many rows without one
    cost no index entry. Lookups by value, foreign keys' ON DELETE included, still use it."""
    where = sa.text(f"{column} IS NOT NULL")
    return sa.Index(f"ix_{table}_{column}", column, postgresql_where=where, sqlite_where=where)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: dict[Any, Any] = {
        datetime: UTCDateTime(),
        Decimal: sa.Numeric(),
        dict[str, Any]: JSONType,
        list[Any]: JSONType,
        uuid.UUID: sa.Uuid(),
        bytes: sa.LargeBinary(),
    }


def utcnow() -> datetime:
    return datetime.now(UTC)


class Timestamps:
    """``created_at`` set by the database; ``updated_at`` refreshed on every UPDATE."""

    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), server_default=sa.func.now(), nullable=False
    )
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), server_default=sa.func.now(), onupdate=utcnow, nullable=False
    )


class SoftDelete:
    """Clinical records are marked deleted, never removed."""

    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class UuidKey:
    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid(), primary_key=True, default=uuid.uuid4)


class IdentityKey:
    id: Mapped[int] = mapped_column(BigId, sa.Identity(), primary_key=True)
