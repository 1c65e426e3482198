"""Paging survives a SIGKILL of the gateway (issue 5), with real processes and real sinks.

1. Killed between alert creation and paging (PostgreSQL): the alert is committed but the pager's
   escalation transaction cannot insert its page because the test holds ``pages`` locked. After
   the kill and a restart on the same database the primary is paged exactly once.
2. Killed between two escalation levels (SQLite and PostgreSQL): the primary's page is sent
   (and recorded ``sent``), the gateway is killed and restarted; the backup is still paged when
   the level is due — not earlier, not lost — and the primary is not paged again.

Nothing here sleeps to win a race: every wait is on a condition with a deadline, and absence of a
second page is proven from the database state, not by waiting for it not to come.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.gateway_process import GatewayProcess, gateway_environment
from tests.http_sink import HttpSink
from tests.mllp_peer import MllpPeer, msa
from tests.oncall_file import CRITICAL_K, write_oncall
from tests.oru import vet_oru
from tests.smtp_sink import SmtpSink
from tests.waiting import wait_until
from vetgateway.store.db import Database

SIGNING_KEY = "test-signing-key"
BACKUP_EMAIL = "tom@clinic.example"


@pytest.fixture
def sinks() -> Iterator[tuple[HttpSink, SmtpSink]]:
    with HttpSink() as http, SmtpSink() as smtp:
        yield http, smtp


def _send_critical(gateway: GatewayProcess, control_id: str) -> None:
    with MllpPeer(*gateway.mllp, timeout=15) as peer:
        ack = peer.exchange(
            vet_oru(
                control_id,
                accession=control_id,
                species="Feline",
                patient="Tom",
                results=CRITICAL_K,
            )
        )
    assert msa(ack)[1] == "AA"


def _rows(db: Database, sql: str, **params: object) -> list[dict[str, Any]]:
    with db.session(readonly=True) as session:
        return [dict(row) for row in session.execute(sa.text(sql), params).mappings()]


def _alerts(db: Database) -> list[dict[str, Any]]:
    return _rows(db, "SELECT id, state, level, next_action_at FROM alerts")


def _pages(db: Database) -> list[dict[str, Any]]:
    return _rows(
        db,
        "SELECT id, alert_id, level, channel, target, status, attempts, sent_at FROM pages"
        " ORDER BY id",
    )


def _utc(value: datetime | str) -> datetime:
    """Raw SQL gives SQLite timestamps back as text; compare everything as aware UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _status(value: object) -> str:
    return str(value).lower()


@pytest.mark.parametrize("fresh_database_url", ["postgresql"], indirect=True)
def test_killed_between_alert_creation_and_paging_pages_once_after_restart(
    tmp_path: Path, sinks: tuple[HttpSink, SmtpSink], fresh_database_url: str
) -> None:
    http, _smtp = sinks
    oncall = write_oncall(tmp_path / "oncall.toml", http.url("/pager"), BACKUP_EMAIL)
    env = gateway_environment(
        tmp_path,
        database_url=fresh_database_url,
        oncall_file=str(oncall),
        signing_key=SIGNING_KEY,
        # Long enough that the backup never becomes due during the test: level 1 is what counts.
        escalation_timeout_seconds="300",
        pager_poll_seconds="0.1",
        pipeline_linger_seconds="0",
    )
    db = Database(fresh_database_url)
    first = GatewayProcess(env, tmp_path / "gateway-1.log")
    second: GatewayProcess | None = None
    locker = db.engine.connect()
    try:
        first.start()  # migrates the database
        # SHARE mode blocks INSERT into pages (the escalation step) but not the delivery step's
        # SELECT ... FOR UPDATE, so the pager is stuck exactly in escalation, holding the
        # alert's row lock, rather than earlier in an idle delivery round (ACCESS EXCLUSIVE
        # would catch it there, before the alert even exists).
        locker.begin()
        locker.execute(sa.text("LOCK TABLE pages IN SHARE MODE"))
        locker_pid = locker.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()

        _send_critical(first, "CRASH-1")

        # The pipeline's transaction committed the alert...
        wait_until(lambda: len(_alerts(db)) == 1, 15, "the alert row")
        [alert] = _alerts(db)
        assert (_status(alert["state"]), alert["level"]) == ("open", 0)

        # ...and the pager's escalation transaction waits for our lock on its page INSERT.
        def blocked_escalation() -> list[dict[str, Any]]:
            return _rows(
                db,
                "SELECT pid, wait_event_type, query FROM pg_stat_activity"
                " WHERE datname = current_database() AND :locker = ANY(pg_blocking_pids(pid))",
                locker=locker_pid,
            )

        wait_until(blocked_escalation, 15, "the pager blocked on the pages lock")
        [blocked] = blocked_escalation()
        assert blocked["wait_event_type"] == "Lock"
        assert blocked["query"].lstrip().upper().startswith("INSERT INTO PAGES"), blocked

        first.kill()
        locker.rollback()  # release the lock

        # The dead client's backend now gets its INSERT through, then finds the client gone and
        # rolls back: wait for it to go, so the restart does not race its row lock.
        wait_until(
            lambda: (
                not _rows(db, "SELECT 1 FROM pg_stat_activity WHERE pid = :pid", pid=blocked["pid"])
            ),
            15,
            "the killed gateway's backend to end",
        )
        assert _pages(db) == []
        assert [(_status(a["state"]), a["level"]) for a in _alerts(db)] == [("open", 0)]
        assert http.requests == []

        second = GatewayProcess(env, tmp_path / "gateway-2.log").start()
        [page] = http.wait_for(1, timeout=15)
        assert page.path == "/pager"

        def sent_pages() -> list[dict[str, Any]]:
            return [p for p in _pages(db) if _status(p["status"]) == "sent"]

        wait_until(sent_pages, 15, "the page recorded as sent")
        # One page row, sent on its first attempt: nothing is left that could page again.
        [row] = _pages(db)
        assert row["alert_id"] == alert["id"]
        assert (row["level"], _status(row["status"]), row["attempts"]) == (1, "sent", 1)
        [after] = _alerts(db)
        assert (_status(after["state"]), after["level"]) == ("open", 1)
        assert after["next_action_at"] is not None  # the backup is still due later
        assert len(http.requests) == 1
        assert second.stop() == 0
    finally:
        locker.close()
        first.ensure_dead()
        if second is not None:
            second.ensure_dead()
        db.dispose()


@pytest.mark.parametrize("fresh_database_url", ["sqlite", "postgresql"], indirect=True)
def test_killed_between_two_levels_pages_the_next_level_on_time_after_restart(
    tmp_path: Path, sinks: tuple[HttpSink, SmtpSink], fresh_database_url: str
) -> None:
    http, smtp = sinks
    timeout = timedelta(seconds=4)
    oncall = write_oncall(tmp_path / "oncall.toml", http.url("/pager"), BACKUP_EMAIL)
    env = gateway_environment(
        tmp_path,
        database_url=fresh_database_url,
        oncall_file=str(oncall),
        signing_key=SIGNING_KEY,
        smtp_host=smtp.host,
        smtp_port=str(smtp.port),
        escalation_timeout_seconds=str(int(timeout.total_seconds())),
        pager_poll_seconds="0.1",
        pipeline_linger_seconds="0",
    )
    first = GatewayProcess(env, tmp_path / "gateway-1.log")
    second: GatewayProcess | None = None
    db = Database(fresh_database_url)
    try:
        first.start()  # migrates the database
        _send_critical(first, "CRASH-2")
        http.wait_for(1, timeout=15)

        # Kill only once the page is recorded as sent: the crash falls between the two levels,
        # not inside a delivery (that case is at-least-once by design, see pipeline/pager.py).
        def primary_sent() -> list[dict[str, Any]]:
            return [p for p in _pages(db) if _status(p["status"]) == "sent"]

        wait_until(primary_sent, 15, "the primary's page recorded as sent")
        first.kill()

        [primary] = _pages(db)
        [alert] = _alerts(db)
        assert (_status(alert["state"]), alert["level"]) == ("open", 1)
        assert (primary["level"], _status(primary["channel"])) == (1, "webhook")
        due = _utc(alert["next_action_at"])
        primary_sent_at = _utc(primary["sent_at"])
        # Level 2 is due one timeout after level 1 was escalated, i.e. just before it was sent.
        assert timedelta(0) <= due - primary_sent_at <= timeout
        assert smtp.messages == []

        second = GatewayProcess(env, tmp_path / "gateway-2.log").start()
        restarted = datetime.now(UTC)
        # Otherwise the restarted gateway would find level 2 overdue and the lower bound below
        # would prove nothing about it keeping the schedule.
        assert restarted < due, f"restart took too long to test the schedule ({restarted})"

        [mail] = smtp.wait_for(1, timeout=timeout.total_seconds() + 15)
        assert mail.rcpt_tos == [BACKUP_EMAIL]

        def backup_sent() -> list[dict[str, Any]]:
            return [p for p in primary_sent() if p["level"] == 2]

        wait_until(backup_sent, 15, "the backup's page recorded as sent")
        [first_page, backup] = _pages(db)
        assert first_page == primary  # untouched by the restart: not re-sent
        assert (backup["level"], _status(backup["channel"]), backup["target"]) == (
            2,
            "email",
            BACKUP_EMAIL,
        )
        assert (_status(backup["status"]), backup["attempts"]) == ("sent", 1)
        # Not earlier than the schedule made before the crash.
        assert _utc(backup["sent_at"]) >= due
        [after] = _alerts(db)
        assert (_status(after["state"]), after["level"]) == ("open", 2)
        assert len(http.requests) == 1  # the primary was paged exactly once
        assert len(smtp.messages) == 1
        assert second.stop() == 0
    finally:
        first.ensure_dead()
        if second is not None:
            second.ensure_dead()
        db.dispose()
