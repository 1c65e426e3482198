"""Multi-row INSERTs at the driver level, inside a session's transaction: the pipeline's writes.

A batch of 20-result reports is a few hundred rows. Through ``session.execute(sa.insert(t), rows)``
SQLAlchemy builds a parameter dict per row and psycopg then sends one statement per row
(pipelined): together the largest share of a pipeline worker's CPU (py-spy, ``bench/pipeline.py``).
Here the rows go out as they are, through SQLAlchemy's own per-column bind processing (enums,
JSON, times), so they are stored exactly as the ORM reads them:

- PostgreSQL: one ``INSERT ... VALUES (...), (...)`` per chunk of rows (at most ``MAX_ROWS`` rows
  and the protocol's 65,535 parameters), with numbered ``$n`` parameters on a ``RawCursor``:
  psycopg caches its ``%s`` conversion only for statements of up to 50 parameters, and parsing
  a longer one again on every call took more CPU than the SQLAlchemy path it replaced.
- SQLite: the driver's ``executemany``, which loops in C.

Only rows that name every column with a Python-side default (or whose table has none missing)
take this path; anything else goes through SQLAlchemy unchanged, so a default is never skipped.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.orm import Session

from vetgateway.store.models.base import UTCDateTime

__all__ = ["MAX_ROWS", "bind_processor", "insert_rows", "numbered_rows"]

MAX_ROWS = 1000
_PG_MAX_PARAMETERS = 65_535


@dataclass(frozen=True, slots=True)
class _Statement:
    """How one table's rows with one set of columns are written on one dialect."""

    head: str  # INSERT INTO t (a, b) VALUES
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]
    columns: tuple[str, ...]

    def values(self, row: dict[str, Any]) -> list[Any]:
        values = [row[name] for name in self.columns]
        for index, process in self.processors:
            values[index] = process(values[index])
        return values


@functools.lru_cache(maxsize=128)  # a few tables and column sets per engine, few engines
def _statement(table: sa.Table, columns: tuple[str, ...], dialect: sa.Dialect) -> _Statement | None:
    """The statement for these columns, or None when SQLAlchemy must fill in a default."""
    statement = None
    named = [table.c[name] for name in columns]  # KeyError for a name the table lacks
    missing_defaults = [c for c in table.c if c.name not in columns and c.default is not None]
    if not missing_defaults:
        quote = dialect.identifier_preparer.quote
        statement = _Statement(
            # Names are the table's own columns, quoted by the dialect; values are parameters.
            head=f"INSERT INTO {dialect.identifier_preparer.format_table(table)}"  # noqa: S608
            f" ({', '.join(quote(c.name) for c in named)}) VALUES ",
            processors=tuple(
                (index, process)
                for index, column in enumerate(named)
                if (process := bind_processor(column, dialect)) is not None
            ),
            columns=columns,
        )
    return statement


def insert_rows(session: Session, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts keyed by column name) in the session's transaction."""
    if not rows:
        return
    columns = tuple(rows[0])
    connection = session.connection()
    statement = _statement(table, columns, connection.dialect)
    first = rows[0].keys()
    if statement is None or any(row.keys() != first for row in rows):
        session.execute(sa.insert(table), list(rows))
        return
    driver = connection.connection.driver_connection
    assert driver is not None
    if connection.dialect.name != "postgresql":
        marks = ", ".join("?" for _ in columns)
        cursor = driver.cursor()
        try:
            cursor.executemany(f"{statement.head}({marks})", [statement.values(r) for r in rows])
        finally:
            cursor.close()
        return
    chunk = max(1, min(MAX_ROWS, _PG_MAX_PARAMETERS // len(columns)))
    with psycopg.RawCursor(driver) as cursor:
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            # Only full chunks may be prepared (psycopg does so from their fifth use): the sizes
            # of last chunks vary with the batch, and a server-side plan of thousands of
            # parameters kept for each size, on each connection, would cost memory for nothing.
            cursor.execute(
                statement.head + numbered_rows(len(columns), len(part)),
                [value for row in part for value in statement.values(row)],
                prepare=None if len(part) == chunk else False,
            )


def bind_processor(
    column: sa.ColumnElement[Any], dialect: sa.Dialect
) -> Callable[[Any], Any] | None:
    """The column type's bind processing on ``dialect``, as SQLAlchemy does it, or ``None``
    when values pass as they are; with one faster equivalent: UTC timestamps on SQLite.

    SQLAlchemy's SQLite ``DATETIME`` formats through a ``%``-template over a dict of seven fields,
    3 µs a value, paid for every stored message and result. ``isoformat`` writes the same text
    (``YYYY-MM-DD HH:MM:SS.ffffff``) in a tenth of that; ``tests/unit/test_bulk_binds.py`` holds
    the two equal.
    """
    if dialect.name == "sqlite" and isinstance(column.type, UTCDateTime):
        return _sqlite_utc_text
    return column.type._cached_bind_processor(dialect)


def _sqlite_utc_text(value: datetime | None) -> str | None:
    """``UTCDateTime`` then SQLite ``DATETIME`` bind processing, in one step."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column; attach a time zone first")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


@functools.lru_cache(maxsize=64)  # a 1,000-row text is some 100 kB: keep few
def numbered_rows(width: int, count: int, casts: tuple[str, ...] = ()) -> str:
    """``($1, $2), ($3, $4)`` for ``count`` rows of ``width`` parameters, each cast to its type
    in ``casts`` when given (``$1::text``): PostgreSQL's own placeholders, for a ``RawCursor``."""
    suffixes = [f"::{cast}" for cast in casts] if casts else [""] * width
    return ", ".join(
        "(" + ", ".join(f"${row * width + i + 1}{suffixes[i]}" for i in range(width)) + ")"
        for row in range(count)
    )
