"""The on-call API on both back ends: clinics, veterinarians and contacts, rota entries with
time zones, who sees contact addresses, auth, audit rows, and that the pager's ``rota_at`` sees
what the API wrote."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.integration.api_support import TestClient, bearer, build_app, issue
from vetgateway.store.db import Database
from vetgateway.store.models import AuditEntry, ContactKind, OnCallLevel, Role
from vetgateway.store.oncall import default_clinic_id, rota_at

API = "/api/v1"


class Staff:
    def __init__(self, db: Database) -> None:
        self.admin = bearer(issue(db, Role.ADMIN))
        self.vet = bearer(issue(db, Role.VETERINARIAN))
        self.tech = bearer(issue(db, Role.TECHNICIAN))
        self.qc = bearer(issue(db, Role.QC))


@pytest.fixture
def client(db: Database, tmp_path: Path) -> Any:
    with TestClient(build_app(db, tmp_path)) as c:
        yield c


def audit_actions(db: Database) -> list[tuple[str, str, str]]:
    with db.session(readonly=True) as s:
        rows = s.execute(
            sa.select(AuditEntry.action, AuditEntry.entity_type, AuditEntry.actor).order_by(
                AuditEntry.id
            )
        ).all()
    return [(r.action, r.entity_type, r.actor) for r in rows if r.entity_type != "api_token"]


def setup_clinic_and_vet(client: TestClient, admin: dict[str, str]) -> str:
    made = client.post(
        f"{API}/clinics",
        json={"code": "main", "name": "Main Street", "timezone": "America/New_York"},
        headers=admin,
    )
    assert made.status_code == 201, made.text
    vet = client.post(
        f"{API}/veterinarians",
        json={
            "name": "Dr Jones",
            "licence_state": "NY",
            "licence_number": "1",
            "contacts": [
                {"kind": "sms", "address": "+15550001"},
                {"kind": "email", "address": "jones@example.org"},
            ],
        },
        headers=admin,
    )
    assert vet.status_code == 201, vet.text
    body = vet.json()
    assert [(c["kind"], c["priority"]) for c in body["contacts"]] == [("sms", 0), ("email", 1)]
    vet_id: str = body["id"]
    return vet_id


def test_auth_reads_and_writes(db: Database, client: TestClient) -> None:
    staff = Staff(db)
    assert client.get(f"{API}/clinics").status_code == 401
    assert client.get(f"{API}/oncall?clinic=main").status_code == 401
    assert client.post(f"{API}/clinics", json={"code": "x", "name": "X"}).status_code == 401
    assert client.get(f"{API}/clinics", headers=staff.qc).status_code == 403
    for reader in (staff.vet, staff.tech):
        assert client.get(f"{API}/clinics", headers=reader).status_code == 200
        assert client.get(f"{API}/veterinarians", headers=reader).status_code == 200
        denied = [
            client.post(f"{API}/clinics", json={"code": "x", "name": "X"}, headers=reader),
            client.post(f"{API}/veterinarians", json={"name": "Dr X"}, headers=reader),
            client.put(f"{API}/veterinarians/{uuid.uuid4()}/contacts", json=[], headers=reader),
            client.post(f"{API}/oncall", json={}, headers=reader),
            client.delete(f"{API}/oncall/{uuid.uuid4()}", headers=reader),
        ]
        assert [r.status_code for r in denied] == [403] * 5
    assert audit_actions(db) == []


def test_rota_written_by_api_is_what_the_pager_sees(db: Database, client: TestClient) -> None:
    staff = Staff(db)
    vet_id = setup_clinic_and_vet(client, staff.admin)
    # local times (no offset) are read in New York: 06:00 EDT is 10:00 UTC
    entry = client.post(
        f"{API}/oncall",
        json={
            "clinic": "main",
            "veterinarian_id": vet_id,
            "level": "primary",
            "starts": "2024-05-01T06:00:00",
            "ends": "2024-05-01T18:00:00",
        },
        headers=staff.admin,
    )
    assert entry.status_code == 201, entry.text
    created = entry.json()
    assert created["starts_at"].startswith("2024-05-01T10:00:00")
    assert created["ends_at"].startswith("2024-05-01T22:00:00")
    # an explicit offset is honoured as given
    backup = client.post(
        f"{API}/oncall",
        json={
            "clinic": "main",
            "veterinarian_id": vet_id,
            "level": "backup",
            "starts": "2024-05-01T12:00:00+02:00",
            "ends": "2024-05-01T12:00:00Z",
        },
        headers=staff.admin,
    )
    assert backup.status_code == 201, backup.text
    assert backup.json()["starts_at"].startswith("2024-05-01T10:00:00")

    with db.session(readonly=True) as s:
        clinic_id = default_clinic_id(s, "main")
        assert clinic_id is not None
        rota = rota_at(s, clinic_id, datetime(2024, 5, 1, 11, tzinfo=UTC))
        [primary] = rota[OnCallLevel.PRIMARY]
        assert str(primary.veterinarian_id) == vet_id
        assert [(c.kind, c.address) for c in primary.contacts] == [
            (ContactKind.SMS, "+15550001"),
            (ContactKind.EMAIL, "jones@example.org"),
        ]
        assert len(rota[OnCallLevel.BACKUP]) == 1
        assert rota_at(s, clinic_id, datetime(2024, 5, 1, 9, 59, tzinfo=UTC)) == {
            level: [] for level in OnCallLevel
        }

    # GET /oncall: clinic-local `at`; addresses for admins only
    at = "2024-05-01T07:30:00"  # 11:30 UTC
    for_vet = client.get(f"{API}/oncall", params={"clinic": "main", "at": at}, headers=staff.vet)
    assert for_vet.status_code == 200, for_vet.text
    shown = for_vet.json()
    assert shown["at"].startswith("2024-05-01T11:30:00")
    assert shown["timezone"] == "America/New_York"
    [member] = shown["levels"]["primary"]
    assert member["name"] == "Dr Jones"
    assert [(c["kind"], c["address"]) for c in member["contacts"]] == [
        ("sms", None),
        ("email", None),
    ]
    assert shown["levels"]["lead"] == []
    assert {e["id"] for e in shown["entries"]} == {created["id"], backup.json()["id"]}
    for_admin = client.get(
        f"{API}/oncall",
        params={"clinic": "main", "at": "2024-05-01T11:30:00Z"},
        headers=staff.admin,
    ).json()
    assert [c["address"] for c in for_admin["levels"]["primary"][0]["contacts"]] == [
        "+15550001",
        "jones@example.org",
    ]
    listed = client.get(f"{API}/veterinarians", headers=staff.tech).json()
    assert [c["address"] for c in listed[0]["contacts"]] == [None, None]
    assert client.get(f"{API}/oncall?clinic=nowhere", headers=staff.vet).status_code == 404

    # contacts replaced: the pager's next look uses them
    replaced = client.put(
        f"{API}/veterinarians/{vet_id}/contacts",
        json=[{"kind": "webhook", "address": "https://pager.example.org/hook", "priority": 5}],
        headers=staff.admin,
    )
    assert replaced.status_code == 200, replaced.text
    with db.session(readonly=True) as s:
        assert clinic_id is not None
        [primary] = rota_at(s, clinic_id, datetime(2024, 5, 1, 11, tzinfo=UTC))[OnCallLevel.PRIMARY]
        assert [(c.kind, c.priority) for c in primary.contacts] == [(ContactKind.WEBHOOK, 5)]

    # removing the entry takes the vet off the rota
    gone = client.delete(f"{API}/oncall/{created['id']}", headers=staff.admin)
    assert gone.status_code == 204
    assert client.delete(f"{API}/oncall/{created['id']}", headers=staff.admin).status_code == 404
    with db.session(readonly=True) as s:
        assert clinic_id is not None
        assert (
            rota_at(s, clinic_id, datetime(2024, 5, 1, 11, tzinfo=UTC))[OnCallLevel.PRIMARY] == []
        )

    actions = audit_actions(db)
    assert [a for a, _, _ in actions] == [
        "clinic.created",
        "veterinarian.created",
        "oncall.entry_added",
        "oncall.entry_added",
        "veterinarian.contacts_replaced",
        "oncall.entry_removed",
    ]
    assert all(actor.startswith("api_token:") for _, _, actor in actions)
    with db.session(readonly=True) as s:
        details = s.scalars(sa.select(AuditEntry.details)).all()
    assert not any("jones@example.org" in str(d) for d in details)


def test_dst_gap_and_validation(db: Database, client: TestClient) -> None:
    staff = Staff(db)
    vet_id = setup_clinic_and_vet(client, staff.admin)

    def post(**changes: Any) -> Any:
        body = {
            "clinic": "main",
            "veterinarian_id": vet_id,
            "level": "primary",
            "starts": "2024-03-09T20:00:00",
            "ends": "2024-03-10T08:00:00",
        }
        body.update(changes)
        return client.post(f"{API}/oncall", json=body, headers=staff.admin)

    # across the spring-forward night in New York: 20:00 EST = 01:00Z, 08:00 EDT = 12:00Z
    across = post()
    assert across.status_code == 201
    assert across.json()["starts_at"].startswith("2024-03-10T01:00:00")
    assert across.json()["ends_at"].startswith("2024-03-10T12:00:00")

    refused = {
        "ends before starts": post(ends="2024-03-09T19:00:00"),
        "ends equal starts": post(ends="2024-03-09T20:00:00"),
        # 20:00 local is 01:00Z: an end at 00:30Z is before it even though it reads later
        "ends before once zoned": post(ends="2024-03-10T00:30:00+00:00"),
        "unknown clinic": post(clinic="nowhere"),
        "unknown vet": post(veterinarian_id=str(uuid.uuid4())),
        "bad level": post(level="intern"),
        "bad time": post(starts="tomorrow"),
    }
    assert {k: r.status_code for k, r in refused.items()} == {k: 422 for k in refused}
    assert "after starts" in refused["ends before starts"].json()["detail"]
    assert "nowhere" in refused["unknown clinic"].json()["detail"]

    bad_zone = client.post(
        f"{API}/clinics",
        json={"code": "b", "name": "B", "timezone": "Mars/Olympus"},
        headers=staff.admin,
    )
    assert bad_zone.status_code == 422
    assert "Mars/Olympus" in bad_zone.json()["detail"]
    again = client.post(f"{API}/clinics", json={"code": "main", "name": "M"}, headers=staff.admin)
    assert again.status_code == 409
    same_licence = client.post(
        f"{API}/veterinarians",
        json={"name": "Dr Other", "licence_state": "NY", "licence_number": "1"},
        headers=staff.admin,
    )
    assert same_licence.status_code == 409
    bad_contact = client.put(
        f"{API}/veterinarians/{vet_id}/contacts",
        json=[{"kind": "webhook", "address": "not-a-url"}],
        headers=staff.admin,
    )
    assert bad_contact.status_code == 422
    assert "http" in bad_contact.json()["detail"]
    unknown = client.put(
        f"{API}/veterinarians/{uuid.uuid4()}/contacts", json=[], headers=staff.admin
    )
    assert unknown.status_code == 404

    clinics = client.get(f"{API}/clinics", headers=staff.vet).json()
    assert [(c["code"], c["timezone"]) for c in clinics] == [("main", "America/New_York")]
    # refusals changed nothing and wrote no audit rows
    assert [a for a, _, _ in audit_actions(db)] == [
        "clinic.created",
        "veterinarian.created",
        "oncall.entry_added",
    ]
