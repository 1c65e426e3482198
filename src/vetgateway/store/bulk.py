"""Multi-row INSERTs at the driver level, inside a session's transaction: the pipeline's writes.

A batch of 20-result reports is a few hundred rows. Through ``session.execute(sa.insert(t), rows)``
SQLAlchemy builds a parameter dict per row and psycopg then sends one statement per row
(pipelined): together the largest share of a pipeline worker's CPU (py-spy, ``bench/pipeline.py``).
Here the rows go out as they are, through SQLAlchemy's own per-column bind processing (enums,
JSON, times), so they are stored exactly as the ORM reads them:

- PostgreSQL: ``COPY ... FROM STDIN``, rows formatted by psycopg's C code. A multi-row
  ``INSERT ... VALUES`` of 400 results (11,200 parameters) cost the server 38 ms to parse, bind
  and run; COPY has no statement to parse and no parameters to bind (a quarter of the server's
  CPU per message in a ``process_batch`` run). It fires the same triggers and constraints, and
  rows get their identity ids in the order given.
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

import sqlalchemy as sa
from sqlalchemy.orm import Session

from vetgateway.store.models.base import UTCDateTime

__all__ = ["bind_processor", "insert_rows", "numbered_rows"]

# Types whose bind processing maps equal values to equal results: hashable values, no state.
# (An aware time and the same instant in another zone are equal and both become the same UTC.)
_REPEATABLE = (sa.Uuid, sa.Enum, sa.Numeric, sa.Boolean, UTCDateTime)


@dataclass(frozen=True, slots=True)
class _Statement:
    """How one table's rows with one set of columns are written on one dialect."""

    head: str  # INSERT INTO t (a, b) VALUES (SQLite)
    copy: str  # COPY t (a, b) FROM STDIN (PostgreSQL)
    # (column index, bind processor, whether equal values always give equal results)
    processors: tuple[tuple[int, Callable[[Any], Any], bool], ...]
    columns: tuple[str, ...]

    def rows(self, rows: Sequence[dict[str, Any]]) -> list[list[Any]]:
        """Each row's values in column order, bind-processed.

        A batch repeats most of the processed values (its reports' ids, one clock time for
        every created and updated stamp, a few statuses), and on SQLite processing a row took
        20 us, half of it formatting its three times. So a column whose type maps equal values
        to equal results (ids, enums, UTC times, numbers, flags) processes each distinct value
        once per call; any other column (JSON) every time.
        """
        seen: list[dict[Any, Any]] = [{} for _ in self.processors]
        out = []
        for row in rows:
            values = [row[name] for name in self.columns]
            for (index, process, repeatable), memo in zip(self.processors, seen, strict=True):
                value = values[index]
                if not repeatable:
                    values[index] = process(value)
                elif value in memo:
                    values[index] = memo[value]
                else:
                    values[index] = memo[value] = process(value)
            out.append(values)
        return out


@functools.lru_cache(maxsize=128)  # a few tables and column sets per engine, few engines
def _statement(table: sa.Table, columns: tuple[str, ...], dialect: sa.Dialect) -> _Statement | None:
    """The statement for these columns, or None when SQLAlchemy must fill in a default."""
    statement = None
    named = [table.c[name] for name in columns]  # KeyError for a name the table lacks
    missing_defaults = [c for c in table.c if c.name not in columns and c.default is not None]
    if not missing_defaults:
        quote = dialect.identifier_preparer.quote
        target = dialect.identifier_preparer.format_table(table)
        names = ", ".join(quote(c.name) for c in named)
        statement = _Statement(
            # Names are the table's own columns, quoted by the dialect; values are parameters.
            head=f"INSERT INTO {target} ({names}) VALUES ",  # noqa: S608
            copy=f"COPY {target} ({names}) FROM STDIN",
            processors=tuple(
                (index, process, isinstance(column.type, _REPEATABLE))
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
            cursor.executemany(f"{statement.head}({marks})", statement.rows(rows))
        finally:
            cursor.close()
        return
    with driver.cursor() as cursor, cursor.copy(statement.copy) as copy:
        for values in statement.rows(rows):
            copy.write_row(values)


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


@functools.lru_cache(maxsize=64)  # one per batch size the inbox has met: a few kB each
def numbered_rows(width: int, count: int, casts: tuple[str, ...] = ()) -> str:
    """``($1, $2), ($3, $4)`` for ``count`` rows of ``width`` parameters, each cast to its type
    in ``casts`` when given (``$1::text``): PostgreSQL's own placeholders, for a ``RawCursor``."""
    suffixes = [f"::{cast}" for cast in casts] if casts else [""] * width
    return ", ".join(
        "(" + ", ".join(f"${row * width + i + 1}{suffixes[i]}" for i in range(width)) + ")"
        for row in range(count)
    )
