"""The queue of record (store/work_queue.py) on both back ends: claims, leases, backoff,
exhaustion, release, and exactly-once finishing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from vetgateway.store import work_queue
from vetgateway.store.db import Database
from vetgateway.store.inbox import Inbox, MessageMeta
from vetgateway.store.models import InboundMessage, MessageStatus

RETRY = work_queue.Retry(
    lease=timedelta(seconds=60),
    max_attempts=3,
    backoff=timedelta(seconds=5),
    backoff_max=timedelta(seconds=12),
)
T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _store(db: Database, n: int) -> list[int]:
    inbox = Inbox(db)
    try:
        return [
            int(inbox.accept(f"MSG {i}".encode(), "test", "peer", MessageMeta(control_id=str(i))))
            for i in range(n)
        ]
    finally:
        inbox.close()


def _row(db: Database, message_id: int) -> InboundMessage:
    with db.session(readonly=True) as session:
        row = session.get(InboundMessage, message_id)
        assert row is not None
        session.expunge(row)
        return row


def _claim(db: Database, now: datetime, limit: int = 100) -> work_queue.Claim:
    with db.session() as session:
        return work_queue.claim_due(session, now=now, limit=limit, retry=RETRY)


def test_new_messages_are_due_and_claimed_oldest_first_once(db: Database) -> None:
    ids = _store(db, 5)
    first = _claim(db, T0, limit=3)
    assert first.dispatch == tuple(ids[:3])
    second = _claim(db, T0)
    assert second.dispatch == tuple(ids[3:])  # the leased ones are not handed out again
    assert _claim(db, T0).dispatch == ()
    row = _row(db, ids[0])
    assert row.attempts == 1
    assert row.next_attempt_at == T0 + RETRY.lease


def test_a_lost_lease_makes_the_message_due_again(db: Database) -> None:
    [message_id] = _store(db, 1)
    _claim(db, T0)
    assert _claim(db, T0 + RETRY.lease - timedelta(seconds=1)).dispatch == ()
    assert _claim(db, T0 + RETRY.lease).dispatch == (message_id,)
    assert _row(db, message_id).attempts == 2


def test_failures_back_off_exponentially_up_to_the_cap(db: Database) -> None:
    [message_id] = _store(db, 1)
    delays = []
    now = T0
    for _ in range(3):
        assert _claim(db, now).dispatch == (message_id,)
        with db.session() as session:
            due = work_queue.record_failure(session, message_id, error="boom", now=now, retry=RETRY)
        assert due is not None
        delays.append(due - now)
        assert _claim(db, due - timedelta(microseconds=1)).dispatch == ()
        now = due
    assert delays == [timedelta(seconds=5), timedelta(seconds=10), timedelta(seconds=12)]
    assert _row(db, message_id).error == "boom"


def test_exhausted_messages_are_quarantined_with_the_last_error_never_dropped(
    db: Database,
) -> None:
    [message_id] = _store(db, 1)
    now = T0
    for _ in range(RETRY.max_attempts):
        assert _claim(db, now).dispatch == (message_id,)
        with db.session() as session:
            due = work_queue.record_failure(
                session, message_id, error="database said no", now=now, retry=RETRY
            )
        assert due is not None
        now = due
    claim = _claim(db, now)
    assert claim.dispatch == ()
    assert claim.exhausted == (message_id,)
    row = _row(db, message_id)
    assert row.status is MessageStatus.QUARANTINED
    assert row.error is not None
    assert "gave up after 3 attempts" in row.error
    assert "database said no" in row.error
    assert row.raw == b"MSG 0"


def test_release_undoes_a_claim_that_never_reached_the_broker(db: Database) -> None:
    ids = _store(db, 2)
    claim = _claim(db, T0)
    with db.session() as session:
        work_queue.release(session, claim.dispatch)
    assert _claim(db, T0).dispatch == tuple(ids)
    assert _row(db, ids[0]).attempts == 1


def test_finish_and_quarantine_happen_once(db: Database) -> None:
    ids = _store(db, 2)
    with db.session() as session:
        assert work_queue.lock_received(session, ids[0])
        assert work_queue.finish(session, ids[0], MessageStatus.PROCESSED, now=T0)
    with db.session() as session:
        assert not work_queue.lock_received(session, ids[0])
        assert not work_queue.finish(session, ids[0], MessageStatus.UNMATCHED, now=T0)
        assert not work_queue.quarantine(session, ids[0], reason="late", now=T0)
        assert work_queue.quarantine(session, ids[1], reason="bad bytes", now=T0)
    assert _row(db, ids[0]).status is MessageStatus.PROCESSED
    assert _row(db, ids[1]).status is MessageStatus.QUARANTINED
    assert _claim(db, T0 + timedelta(days=1)).dispatch == ()


def test_release_leases_after_a_restart_keeps_backoffs(db: Database) -> None:
    leased, failed = _store(db, 2)
    _claim(db, T0)
    with db.session() as session:
        work_queue.record_failure(session, failed, error="x", now=T0, retry=RETRY)
        assert work_queue.release_leases(session, now=T0) == 1
    assert _claim(db, T0).dispatch == (leased,)


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_concurrent_claims_on_postgresql_never_share_a_message(db: Database) -> None:
    ids = _store(db, 40)
    engine = db.engine
    with engine.connect() as first:
        locked = (
            first.execute(
                sa.select(InboundMessage.id).order_by(InboundMessage.id).limit(10).with_for_update()
            )
            .scalars()
            .all()
        )
        # Another dispatcher skips the rows the first one holds instead of waiting for them.
        claim = _claim(db, T0)
        assert set(claim.dispatch).isdisjoint(locked)
        assert set(claim.dispatch) == set(ids) - set(locked)
        first.rollback()
