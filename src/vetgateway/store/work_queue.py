"""The pipeline's queue of record: ``inbound_messages`` rows in status ``received``.

CONVENTIONS.md §1: the broker only delivers ids; whether a message still needs work is decided
here, in the database, so a lost broker message, a killed worker or an in-memory broker that died
with the process loses nothing. The life of a row:

- The inbox inserts it ``received`` with ``next_attempt_at`` NULL: due now.
- ``claim_due`` (the dispatcher) takes due rows, counts the attempt and leases them: the row is
  not due again until ``now + lease``. The ids then go to the broker.
- A worker finishes it with ``finish`` (status ``processed`` / ``unmatched``) or ``quarantine``,
  both conditional on the row still being ``received``: a second delivery of the same id finds
  nothing to do. That condition, not the broker, is what makes processing exactly-once.
- A failed attempt (``record_failure``) keeps the row ``received`` with its error and pushes
  ``next_attempt_at`` out by exponential backoff; when the lease of a killed worker runs out the
  row is simply due again.
- ``claim_due`` quarantines a due row that has used all its attempts, naming the last error.

On PostgreSQL due rows are claimed ``FOR UPDATE SKIP LOCKED`` so any number of dispatchers can
run; SQLite write transactions are exclusive (``BEGIN IMMEDIATE``) so there it is one at a time.
Like every store function these take a session and never commit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from vetgateway.store.models import InboundMessage, MessageStatus

__all__ = [
    "Claim",
    "Retry",
    "backoff_delay",
    "claim_due",
    "finish",
    "finish_many",
    "lock_received",
    "lock_received_many",
    "quarantine",
    "record_failure",
    "release",
    "release_leases",
]

_T = cast(sa.Table, InboundMessage.__table__)
_RECEIVED = MessageStatus.RECEIVED


@dataclass(frozen=True, slots=True)
class Retry:
    """How often and how patiently a message is retried (from the ``pipeline_*`` settings)."""

    lease: timedelta
    max_attempts: int
    backoff: timedelta
    backoff_max: timedelta


@dataclass(frozen=True, slots=True)
class Claim:
    """What one ``claim_due`` did: ids to hand to the broker, and ids it gave up on."""

    dispatch: tuple[int, ...]
    exhausted: tuple[int, ...]


def backoff_delay(attempts: int, retry: Retry) -> timedelta:
    """``backoff * 2**(attempts-1)``, at most ``backoff_max``: 5 s, 10 s, 20 s … by default."""
    exponent = max(0, min(attempts - 1, 30))
    delay: timedelta = retry.backoff * (1 << exponent)
    return min(delay, retry.backoff_max)


def claim_due(session: Session, *, now: datetime, limit: int, retry: Retry) -> Claim:
    """Lease up to ``limit`` due messages, oldest first, and quarantine the exhausted ones."""
    due = (
        sa.select(_T.c.id, _T.c.attempts, _T.c.error)
        .where(
            _T.c.status == _RECEIVED,
            sa.or_(_T.c.next_attempt_at.is_(None), _T.c.next_attempt_at <= now),
        )
        .order_by(_T.c.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    rows = session.execute(due).all()
    dispatch = [r.id for r in rows if r.attempts < retry.max_attempts]
    exhausted = [r for r in rows if r.attempts >= retry.max_attempts]
    if dispatch:
        session.execute(
            sa.update(_T)
            .where(_T.c.id.in_(dispatch))
            .values(attempts=_T.c.attempts + 1, next_attempt_at=now + retry.lease)
        )
    for row in exhausted:
        last = row.error or "no error was recorded: the worker was lost or the broker dropped it"
        quarantine(
            session,
            row.id,
            reason=f"gave up after {row.attempts} attempts; last error: {last}",
            now=now,
        )
    return Claim(tuple(dispatch), tuple(r.id for r in exhausted))


def release(session: Session, ids: Sequence[int]) -> None:
    """Undo a claim whose ids never reached the broker: due again now, attempt not counted."""
    if ids:
        session.execute(
            sa.update(_T)
            .where(_T.c.id.in_(list(ids)), _T.c.status == _RECEIVED, _T.c.attempts > 0)
            .values(attempts=_T.c.attempts - 1, next_attempt_at=None)
        )


def release_leases(session: Session, *, now: datetime) -> int:
    """Make every leased, not-failed message due now; returns how many.

    Only for a process whose broker is in memory, at start: whatever its previous run had leased
    died with that run's queue, so waiting out the leases would only delay those results.
    Messages backing off after a failure (``error`` set) keep their schedule.
    """
    result = session.execute(
        sa.update(_T)
        .where(_T.c.status == _RECEIVED, _T.c.error.is_(None), _T.c.next_attempt_at > now)
        .values(next_attempt_at=None)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def lock_received(session: Session, message_id: int) -> bool:
    """Lock the row for this transaction if it still needs work; False if someone finished it.

    On PostgreSQL a second worker holding the same id waits here until the first commits, then
    sees the new status. SQLite's write transaction is already exclusive.
    """
    statement = sa.select(_T.c.status).where(_T.c.id == message_id)
    if session.get_bind().dialect.name == "postgresql":
        statement = statement.with_for_update()
    status = session.execute(statement).scalar_one_or_none()
    return status is _RECEIVED


def lock_received_many(session: Session, ids: Sequence[int]) -> set[int]:
    """``lock_received`` for a batch, in one statement: the ids that still need work."""
    if not ids:
        return set()
    statement = sa.select(_T.c.id).where(_T.c.id.in_(list(ids)), _T.c.status == _RECEIVED)
    if session.get_bind().dialect.name == "postgresql":
        statement = statement.order_by(_T.c.id).with_for_update()  # one lock order: no deadlock
    return set(session.execute(statement).scalars())


def finish_many(session: Session, outcomes: Mapping[int, MessageStatus], *, now: datetime) -> None:
    """``finish`` for a batch whose rows the caller has locked (``lock_received_many``)."""
    if outcomes:
        session.execute(
            sa.update(_T)
            .where(_T.c.id == sa.bindparam("message_id"), _T.c.status == _RECEIVED)
            .values(
                status=sa.bindparam("outcome"), processed_at=now, error=None, next_attempt_at=None
            ),
            [{"message_id": i, "outcome": s} for i, s in outcomes.items()],
        )


def finish(session: Session, message_id: int, status: MessageStatus, *, now: datetime) -> bool:
    """Mark the work done (``processed`` or ``unmatched``); False if it was not ``received``."""
    result = session.execute(
        sa.update(_T)
        .where(_T.c.id == message_id, _T.c.status == _RECEIVED)
        .values(status=status, processed_at=now, error=None, next_attempt_at=None)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def quarantine(session: Session, message_id: int, *, reason: str, now: datetime) -> bool:
    """Set a message aside with the reason, for a human and for replay; never deleted."""
    result = session.execute(
        sa.update(_T)
        .where(_T.c.id == message_id, _T.c.status == _RECEIVED)
        .values(
            status=MessageStatus.QUARANTINED,
            error=reason,
            processed_at=now,
            next_attempt_at=None,
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def record_failure(
    session: Session, message_id: int, *, error: str, now: datetime, retry: Retry
) -> datetime | None:
    """Keep the error and schedule the next attempt; returns when, or None if not ``received``."""
    attempts = session.execute(
        sa.select(_T.c.attempts).where(_T.c.id == message_id, _T.c.status == _RECEIVED)
    ).scalar_one_or_none()
    if attempts is None:
        return None
    due = now + backoff_delay(attempts, retry)
    session.execute(
        sa.update(_T)
        .where(_T.c.id == message_id, _T.c.status == _RECEIVED)
        .values(error=error[:4000], next_attempt_at=due)
    )
    return due
