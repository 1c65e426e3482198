"""The messages API (issue 3 §6): list with filters and keyset pages, detail with raw text and
timeline, replay into the pipeline's queue with an audit entry; on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.integration.api_support import TestClient, bearer, build_app, issue
from vetgateway.adapters.hl7.intake import Hl7Intake
from vetgateway.store.db import Database
from vetgateway.store.inbox import Inbox
from vetgateway.store.models import AuditEntry, InboundMessage, MessageStatus, Role

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def oru(control_id: str, *, message_type: str = "ORU^R01^ORU_R01", latin1: bool = False) -> bytes:
    charset = "||||||8859/1" if latin1 else ""
    text = (
        f"MSH|^~\\&|LAB|IDEXX|VETGATEWAY|CLINIC|20261126101500||{message_type}|{control_id}|P"
        f"|2.5.1{charset}\rPID|1||PMS123^^^CLINIC^PI||Rex\rOBX|1|ST|NOTE^Note||hémolysé||||||F\r"
    )
    return text.encode("iso8859-1" if latin1 else "utf-8")


class Clock:
    """The inbox's clock: each message received one minute after the previous one."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


def receive(db: Database, items: list[tuple[bytes, str]]) -> list[int]:
    """Store messages through the real HL7 intake; their ids, in order."""
    intake = Hl7Intake(Inbox(db, clock=Clock()))
    ids = []
    for raw, channel in items:
        result = intake.receive(raw, channel, f"10.0.0.9 {channel}")
        assert result.message_id is not None
        ids.append(result.message_id)
    return ids


def message(db: Database, message_id: int) -> InboundMessage:
    with db.session(readonly=True) as session:
        row = session.get(InboundMessage, message_id)
        assert row is not None
        return row


def audit_entries(db: Database) -> list[AuditEntry]:
    with db.session(readonly=True) as session:
        return list(
            session.scalars(sa.select(AuditEntry).where(AuditEntry.action != "token.created"))
        )


@pytest.fixture
def client(db: Database, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(build_app(db, tmp_path)) as test_client:
        yield test_client


@pytest.fixture
def tech(db: Database) -> dict[str, str]:
    return bearer(issue(db, Role.TECHNICIAN, "bench tech"))


@pytest.fixture
def seeded(db: Database) -> list[int]:
    """Five messages: mllp OK, http OK, mllp unsupported type, http missing MSH-10, mllp OK."""
    return receive(
        db,
        [
            (oru("A-1"), "mllp"),
            (oru("B-2"), "http"),
            (oru("C-3", message_type="ADT^A01^ADT_A01"), "mllp"),
            (oru(""), "http"),
            (oru("E-5"), "mllp"),
        ],
    )


def test_list_is_newest_first_without_raw_bytes(
    client: TestClient, tech: dict[str, str], seeded: list[int]
) -> None:
    page = client.get("/api/v1/messages", headers=tech).json()
    assert [item["id"] for item in page["items"]] == list(reversed(seeded))
    assert page["next_before_id"] is None
    first = page["items"][0]
    assert set(first) == {
        "id", "channel", "peer", "received_at", "control_id", "sender", "message_type",
        "status", "error", "attempts", "size", "sha256",
    }  # fmt: skip
    assert (first["control_id"], first["channel"], first["status"]) == ("E-5", "mllp", "received")
    assert first["sender"] == "LAB|IDEXX"
    assert first["sha256"] == hashlib.sha256(oru("E-5")).hexdigest()
    assert first["size"] == len(oru("E-5"))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=quarantined", [3, 2]),
        ("status=received", [4, 1, 0]),
        ("control_id=B-2", [1]),
        ("channel=http", [3, 1]),
        ("channel=mllp&status=quarantined", [2]),
        ("since=2026-11-26T10:03:00Z", [4, 3, 2]),
        ("since=2026-11-26T11:03:00%2B01:00", [4, 3, 2]),
        ("since=2026-11-26T10:04:00", [4, 3]),  # no zone: UTC
        ("control_id=nope", []),
    ],
)
def test_list_filters(
    client: TestClient, tech: dict[str, str], seeded: list[int], query: str, expected: list[int]
) -> None:
    page = client.get(f"/api/v1/messages?{query}", headers=tech)
    assert page.status_code == 200, page.text
    assert [item["id"] for item in page.json()["items"]] == [seeded[i] for i in expected]


def test_list_pages_by_id_until_the_end(
    client: TestClient, tech: dict[str, str], seeded: list[int]
) -> None:
    seen: list[int] = []
    url = "/api/v1/messages?limit=2"
    pages = 0
    while True:
        page = client.get(url, headers=tech).json()
        pages += 1
        seen += [item["id"] for item in page["items"]]
        if page["next_before_id"] is None:
            break
        url = f"/api/v1/messages?limit=2&before_id={page['next_before_id']}"
    assert seen == list(reversed(seeded))
    assert pages == 3


@pytest.mark.parametrize("query", ["status=lost", "limit=0", "limit=501", "since=yesterday"])
def test_list_rejects_bad_parameters(client: TestClient, tech: dict[str, str], query: str) -> None:
    assert client.get(f"/api/v1/messages?{query}", headers=tech).status_code == 422


@pytest.mark.parametrize(
    ("role", "expected"), [(Role.DEVICE, 403), (Role.QC, 403), (Role.ADMIN, 200)]
)
def test_messages_need_a_technician_or_admin(
    client: TestClient, db: Database, seeded: list[int], role: Role, expected: int
) -> None:
    headers = bearer(issue(db, role))
    assert client.get("/api/v1/messages", headers=headers).status_code == expected
    assert client.get(f"/api/v1/messages/{seeded[0]}", headers=headers).status_code == expected
    replay = client.post(f"/api/v1/messages/{seeded[2]}/replay", headers=headers)
    assert replay.status_code == expected
    assert client.get("/api/v1/messages").status_code == 401


def test_detail_has_raw_text_exact_bytes_and_timeline(
    client: TestClient, db: Database, tech: dict[str, str]
) -> None:
    [latin1, utf8] = receive(db, [(oru("L-1", latin1=True), "mllp"), (oru("U-1"), "http")])
    body = client.get(f"/api/v1/messages/{latin1}", headers=tech).json()
    assert body["charset"] == "iso8859-1"
    assert "hémolysé" in body["raw_text"]
    assert body["raw_text"].startswith("MSH|^~\\&|LAB|IDEXX|")
    assert base64.b64decode(body["raw_base64"]) == oru("L-1", latin1=True)
    assert body["meta"]["version"] == "2.5.1"
    assert body["timeline"] == [
        {
            "at": body["received_at"],
            "event": "message.received",
            "actor": "10.0.0.9 mllp",
            "details": {
                "channel": "mllp",
                "size": len(oru("L-1", latin1=True)),
                "sha256": body["sha256"],
            },
        }
    ]
    plain = client.get(f"/api/v1/messages/{utf8}", headers=tech).json()
    assert (plain["charset"], "hémolysé" in plain["raw_text"]) == ("utf-8", True)


def test_detail_of_a_refused_latin1_message_is_decoded_by_its_msh18(
    client: TestClient, db: Database, tech: dict[str, str]
) -> None:
    [refused] = receive(db, [(oru("", latin1=True), "http")])  # no MSH-10: quarantined
    body = client.get(f"/api/v1/messages/{refused}", headers=tech).json()
    assert body["status"] == "quarantined"
    assert (body["charset"], "hémolysé" in body["raw_text"]) == ("iso8859-1", True)


def test_detail_of_undecodable_bytes_replaces_them(
    client: TestClient, db: Database, tech: dict[str, str]
) -> None:
    raw = oru("BAD-1").replace("hémolysé".encode(), b"h\xe9molys\xe9")  # Latin-1 under UTF-8
    [message_id] = receive(db, [(raw, "mllp")])
    body = client.get(f"/api/v1/messages/{message_id}", headers=tech).json()
    assert "h\ufffdmolys\ufffd" in body["raw_text"]
    assert base64.b64decode(body["raw_base64"]) == raw
    assert body["status"] == "quarantined"


def test_unknown_message_is_404(client: TestClient, tech: dict[str, str]) -> None:
    assert client.get("/api/v1/messages/999999", headers=tech).status_code == 404
    assert client.post("/api/v1/messages/999999/replay", headers=tech).status_code == 404


def test_replay_requeues_audits_and_keeps_the_bytes(
    client: TestClient, db: Database, tech: dict[str, str], seeded: list[int]
) -> None:
    target = seeded[2]  # the unsupported type, quarantined at intake
    before = message(db, target)
    assert before.status is MessageStatus.QUARANTINED
    assert before.error is not None
    with db.session() as session:
        session.execute(
            sa.update(InboundMessage).where(InboundMessage.id == target).values(attempts=3)
        )

    response = client.post(f"/api/v1/messages/{target}/replay", headers=tech)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "id": target,
        "status": "received",
        "previous_status": "quarantined",
        "previous_error": before.error,
    }
    after = message(db, target)
    assert (after.status, after.attempts, after.error) == (MessageStatus.RECEIVED, 0, None)
    assert after.next_attempt_at is not None
    assert after.next_attempt_at > before.received_at
    assert (after.raw, after.sha256, after.size) == (before.raw, before.sha256, before.size)

    [entry] = audit_entries(db)
    assert (entry.action, entry.entity_type, entry.entity_id) == (
        "message.replayed",
        "inbound_message",
        str(target),
    )
    assert entry.actor.startswith("api_token:")
    assert entry.details == {"previous_status": "quarantined", "previous_error": before.error}

    timeline = client.get(f"/api/v1/messages/{target}", headers=tech).json()["timeline"]
    assert [event["event"] for event in timeline] == ["message.received", "message.replayed"]
    assert timeline[1]["actor"] == entry.actor
    assert timeline[1]["details"]["previous_error"] == before.error


def test_replaying_a_queued_message_is_409_and_changes_nothing(
    client: TestClient, db: Database, tech: dict[str, str], seeded: list[int]
) -> None:
    target = seeded[3]
    assert client.post(f"/api/v1/messages/{target}/replay", headers=tech).status_code == 200
    again = client.post(f"/api/v1/messages/{target}/replay", headers=tech)
    assert again.status_code == 409
    assert "already waiting" in again.json()["detail"]
    fresh = client.post(f"/api/v1/messages/{seeded[0]}/replay", headers=tech)
    assert fresh.status_code == 409
    assert len(audit_entries(db)) == 1


def test_processed_and_unmatched_messages_can_be_replayed(
    client: TestClient, db: Database, tech: dict[str, str], seeded: list[int]
) -> None:
    done_at = T0 + timedelta(hours=1)
    with db.session() as session:
        session.execute(
            sa.update(InboundMessage)
            .where(InboundMessage.id == seeded[0])
            .values(status=MessageStatus.PROCESSED, processed_at=done_at)
        )
        session.execute(
            sa.update(InboundMessage)
            .where(InboundMessage.id == seeded[1])
            .values(status=MessageStatus.UNMATCHED, error="no order for accession ACC1")
        )
    for target in seeded[:2]:
        assert client.post(f"/api/v1/messages/{target}/replay", headers=tech).status_code == 200
    processed, unmatched = message(db, seeded[0]), message(db, seeded[1])
    assert (processed.status, processed.processed_at) == (MessageStatus.RECEIVED, None)
    assert (unmatched.status, unmatched.error) == (MessageStatus.RECEIVED, None)
    details = [entry.details for entry in audit_entries(db)]
    assert details == [
        {"previous_status": "processed", "previous_error": None},
        {"previous_status": "unmatched", "previous_error": "no order for accession ACC1"},
    ]


def test_a_duplicate_row_is_409_naming_the_original(
    client: TestClient, db: Database, tech: dict[str, str], seeded: list[int]
) -> None:
    original = message(db, seeded[0])
    with db.session() as session:
        copy = InboundMessage(
            channel="mllp",
            peer="10.0.0.9",
            received_at=T0 + timedelta(hours=2),
            raw=original.raw,
            size=original.size,
            sha256=original.sha256,
            control_id=original.control_id,
            sender=None,  # outside the resend key, as a row kept for the record would be
            message_type=original.message_type,
            meta={},
            status=MessageStatus.DUPLICATE,
            attempts=0,
            duplicate_of_id=original.id,
        )
        session.add(copy)
        session.flush()
        copy_id = copy.id
    response = client.post(f"/api/v1/messages/{copy_id}/replay", headers=tech)
    assert response.status_code == 409
    assert f"replay message {original.id} instead" in response.json()["detail"]
    assert message(db, copy_id).status is MessageStatus.DUPLICATE
    assert audit_entries(db) == []
