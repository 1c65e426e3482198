"""``vetgateway replay`` as an operator runs it: the real executable on the test database (SQLite
and PostgreSQL), listing with ``--dry-run`` and replaying for real through the store function the
API uses, audited as "cli"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.integration.test_cli import environment, vetgateway
from vetgateway.adapters.hl7.intake import Hl7Intake
from vetgateway.store.db import Database
from vetgateway.store.inbox import Inbox
from vetgateway.store.models import AuditEntry, InboundMessage, MessageStatus

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def oru(control_id: str, message_type: str = "ORU^R01^ORU_R01") -> bytes:
    return (
        f"MSH|^~\\&|LAB|IDEXX|VETGATEWAY|CLINIC|20261126101500||{message_type}|{control_id}|P"
        "|2.5.1\rPID|1||PMS123^^^CLINIC^PI||Rex\rOBX|1|NM|GLU^Glucose||5.4|mmol/L||N|||F\r"
    ).encode()


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(hours=1)
        return self.now


@pytest.fixture
def seeded(db: Database) -> dict[str, int]:
    """Received 11:00 … 15:00: OK (mllp), ADT (mllp, quarantined), no MSH-10 (http,
    quarantined), ADT (http, quarantined), OK (http)."""
    inbox = Inbox(db, clock=Clock())
    intake = Hl7Intake(inbox)
    ids: dict[str, int] = {}
    try:
        for name, raw, channel in [
            ("ok-mllp", oru("A-1"), "mllp"),
            ("adt-mllp", oru("B-2", "ADT^A01^ADT_A01"), "mllp"),
            ("no-id-http", oru(""), "http"),
            ("adt-http", oru("D-4", "ADT^A04^ADT_A01"), "http"),
            ("ok-http", oru("E-5"), "http"),
        ]:
            message_id = intake.receive(raw, channel, "10.0.0.9").message_id
            assert message_id is not None
            ids[name] = message_id
    finally:
        inbox.close()  # gives its kept connection back: none is left to the garbage collector
    return ids


def statuses(db: Database) -> dict[int, MessageStatus]:
    with db.session(readonly=True) as session:
        return dict(session.execute(sa.select(InboundMessage.id, InboundMessage.status)).all())


def replay_audit(db: Database) -> list[tuple[str, str, dict[str, object]]]:
    with db.session(readonly=True) as session:
        entries = session.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == "message.replayed")
        ).all()
        return [(e.actor, e.entity_id, e.details) for e in entries]


def raws(db: Database) -> dict[int, bytes]:
    with db.session(readonly=True) as session:
        return dict(session.execute(sa.select(InboundMessage.id, InboundMessage.raw)).all())


def run(db: Database, tmp_path: Path, *args: str) -> tuple[int, list[str], str]:
    result = vetgateway("replay", *args, env=environment(tmp_path, database_url=db.url))
    return result.returncode, result.stdout.splitlines(), result.stderr


def listed(lines: list[str], verb: str) -> list[int]:
    return [int(line.split("\t")[1]) for line in lines if line.startswith(verb + "\t")]


def test_dry_run_lists_and_changes_nothing(
    db: Database, tmp_path: Path, seeded: dict[str, int]
) -> None:
    before = statuses(db)
    code, lines, stderr = run(db, tmp_path, "--status", "quarantined", "--dry-run")
    assert code == 0, stderr
    quarantined = [seeded["adt-mllp"], seeded["no-id-http"], seeded["adt-http"]]
    assert listed(lines, "would replay") == quarantined
    assert lines[-1] == "would replay 3 message(s); skipped 0"
    assert statuses(db) == before
    assert replay_audit(db) == []


def test_replay_with_filters_requeues_audits_as_cli_and_keeps_bytes(
    db: Database, tmp_path: Path, seeded: dict[str, int]
) -> None:
    before = raws(db)
    since = (T0 + timedelta(hours=3)).isoformat()  # 13:00, so "adt-mllp" (12:00) is not included
    code, lines, stderr = run(
        db, tmp_path, "--status", "QUARANTINED", "--channel", "http", "--since", since
    )
    assert code == 0, stderr
    assert listed(lines, "replayed") == [seeded["no-id-http"], seeded["adt-http"]]
    assert lines[-1] == "replayed 2 message(s); skipped 0"
    after = statuses(db)
    assert after[seeded["no-id-http"]] is MessageStatus.RECEIVED
    assert after[seeded["adt-http"]] is MessageStatus.RECEIVED
    assert after[seeded["adt-mllp"]] is MessageStatus.QUARANTINED
    audit = replay_audit(db)
    assert [(actor, entity) for actor, entity, _ in audit] == [
        ("cli", str(seeded["no-id-http"])),
        ("cli", str(seeded["adt-http"])),
    ]
    assert all(details["previous_status"] == "quarantined" for _, _, details in audit)
    assert raws(db) == before

    # Run again: nothing is quarantined on http any more, so nothing is replayed twice.
    code, lines, _ = run(db, tmp_path, "--status", "quarantined", "--channel", "http")
    assert (code, lines) == (0, ["replayed 0 message(s); skipped 0"])


def test_replay_by_id_skips_what_is_already_queued(
    db: Database, tmp_path: Path, seeded: dict[str, int]
) -> None:
    code, lines, stderr = run(
        db, tmp_path, "--id", str(seeded["ok-mllp"]), "--id", str(seeded["adt-mllp"])
    )
    assert code == 0, stderr
    assert listed(lines, "replayed") == [seeded["adt-mllp"]]
    assert listed(lines, "skip") == [seeded["ok-mllp"]]
    assert "already waiting" in lines[0]
    assert lines[-1] == "replayed 1 message(s); skipped 1"
    assert [entity for _, entity, _ in replay_audit(db)] == [str(seeded["adt-mllp"])]


@pytest.mark.parametrize(
    ("args", "message"),
    [((), "--status"), (("--status", "quarantined", "--since", "last tuesday"), "--since")],
)
def test_replay_refuses_unclear_requests(
    db: Database, tmp_path: Path, seeded: dict[str, int], args: tuple[str, ...], message: str
) -> None:
    before = statuses(db)
    code, _lines, stderr = run(db, tmp_path, *args)
    assert code == 2
    assert message in stderr
    assert statuses(db) == before
