"""``Database.write``: the driver-level write path the inbox commits through."""

from __future__ import annotations

import pytest

from vetgateway.errors import StorageError
from vetgateway.store.db import Database, PinnedConnection


def test_a_pin_keeps_the_connection_that_committed(db: Database) -> None:
    pin = PinnedConnection()
    first = db.write(lambda connection: connection, pin=pin)
    second = db.write(lambda connection: connection, pin=pin)
    assert second is first  # no pool checkout between the two commits
    pin.release()
    assert pin.take() is None


def test_a_pin_is_emptied_by_a_failed_write(db: Database) -> None:
    pin = PinnedConnection()
    kept = db.write(lambda connection: connection, pin=pin)

    def bad_statement(connection: object) -> None:
        connection.cursor().execute("INSERT INTO no_such_table VALUES (1)")  # type: ignore[attr-defined]

    with pytest.raises(StorageError):
        db.write(bad_statement, pin=pin)
    assert pin.take() is None  # the failed connection went back to the pool, rolled back
    again = db.write(lambda connection: connection.cursor().execute("SELECT 1").fetchone())
    assert tuple(again) == (1,)
    assert kept is not None


def test_work_runs_in_one_transaction_that_is_rolled_back_on_failure(db: Database) -> None:
    def insert_then_fail(connection: object) -> None:
        cursor = connection.cursor()  # type: ignore[attr-defined]
        cursor.execute(
            "INSERT INTO audit_log (occurred_at, actor, action, entity_type, entity_id, details)"
            " VALUES (CURRENT_TIMESTAMP, 'test', 'x', 'y', '1', '{}')"
        )
        cursor.execute("INSERT INTO no_such_table VALUES (1)")

    with pytest.raises(StorageError):
        db.write(insert_then_fail, pin=PinnedConnection())
    count = db.write(
        lambda connection: connection.cursor().execute("SELECT count(*) FROM audit_log").fetchone()
    )
    assert tuple(count) == (0,)
