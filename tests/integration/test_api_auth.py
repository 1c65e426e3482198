"""Bearer tokens end to end: 401/403 rules, issuing and revoking, hashes at rest, audit entries."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import pytest
import sqlalchemy as sa
from fastapi import Depends

from tests.integration.api_support import TestClient, bearer, build_app, issue
from vetgateway.api.auth import Principal, require_role
from vetgateway.store.db import Database
from vetgateway.store.models import ApiToken, AuditEntry, Role
from vetgateway.store.tokens import create_token, find_active_token, revoke_token, touch_token


@pytest.fixture
def client(db: Database, tmp_path: Path) -> Iterator[TestClient]:
    """The app plus one extra route that only QC staff (and admins) may call."""
    app = build_app(db, tmp_path)

    @app.get("/test/qc-only")
    def qc_only(principal: Annotated[Principal, Depends(require_role(Role.QC))]) -> dict[str, str]:
        return {"name": principal.name}

    with TestClient(app) as test_client:
        yield test_client


def token_row(db: Database, name: str) -> ApiToken:
    with db.session(readonly=True) as s:
        return s.scalars(sa.select(ApiToken).where(ApiToken.name == name)).one()


def audit_entries(db: Database) -> list[AuditEntry]:
    with db.session(readonly=True) as s:
        return list(s.scalars(sa.select(AuditEntry).order_by(AuditEntry.id)))


def assert_401(response_status: int, headers: dict[str, str]) -> None:
    assert response_status == 401
    assert headers["www-authenticate"].startswith("Bearer")


def test_missing_header_is_401_with_challenge(client: TestClient) -> None:
    response = client.get("/api/v1/whoami")
    assert_401(response.status_code, dict(response.headers))
    assert "Bearer" in response.json()["detail"]


@pytest.mark.parametrize(
    "header",
    [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer ",
        "Token vgw_abcdefghijklmnopqrstuvwxyz",
        "Bearer not-a-vgw-token",
        "Bearer vgw_short",
        "Bearer vgw_abcdefghijklmnopqrstuvwxyz0123 trailing",
    ],
)
def test_malformed_header_is_401(client: TestClient, header: str) -> None:
    response = client.get("/api/v1/whoami", headers={"Authorization": header})
    assert_401(response.status_code, dict(response.headers))


def test_unknown_token_is_401(client: TestClient, db: Database) -> None:
    issue(db, Role.ADMIN)
    unknown = "vgw_" + secrets.token_urlsafe(32)
    response = client.get("/api/v1/whoami", headers=bearer(unknown))
    assert_401(response.status_code, dict(response.headers))
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_revoked_token_is_401(client: TestClient, db: Database) -> None:
    admin = issue(db, Role.ADMIN, "admin")
    victim = issue(db, Role.TECHNICIAN, "bench 2")
    assert client.get("/api/v1/whoami", headers=bearer(victim)).status_code == 200
    victim_id = token_row(db, "bench 2").id
    response = client.delete(f"/api/v1/tokens/{victim_id}", headers=bearer(admin))
    assert response.status_code == 204
    assert response.content == b""
    response = client.get("/api/v1/whoami", headers=bearer(victim))
    assert_401(response.status_code, dict(response.headers))
    # Revoking again is harmless; an unknown id is 404.
    again = client.delete(f"/api/v1/tokens/{victim_id}", headers=bearer(admin))
    assert again.status_code == 204
    missing = client.delete(f"/api/v1/tokens/{uuid.uuid4()}", headers=bearer(admin))
    assert missing.status_code == 404


def test_wrong_role_is_403_right_role_and_admin_are_200(client: TestClient, db: Database) -> None:
    technician = issue(db, Role.TECHNICIAN, "tech")
    qc = issue(db, Role.QC, "qc lead")
    admin = issue(db, Role.ADMIN, "admin")

    refused = client.get("/test/qc-only", headers=bearer(technician))
    assert refused.status_code == 403
    assert "technician" in refused.json()["detail"]
    assert client.get("/api/v1/tokens", headers=bearer(technician)).status_code == 403
    assert client.get("/api/v1/tokens", headers=bearer(qc)).status_code == 403

    assert client.get("/test/qc-only", headers=bearer(qc)).json() == {"name": "qc lead"}
    assert client.get("/test/qc-only", headers=bearer(admin)).json() == {"name": "admin"}
    assert client.get("/api/v1/tokens", headers=bearer(admin)).status_code == 200


@pytest.mark.parametrize("role", list(Role))
def test_whoami_answers_every_role(client: TestClient, db: Database, role: Role) -> None:
    plaintext = issue(db, role, f"the {role.value}")
    response = client.get("/api/v1/whoami", headers=bearer(plaintext))
    assert response.status_code == 200
    assert response.json() == {"name": f"the {role.value}", "role": role.value}


def test_issued_token_works_and_only_its_hash_is_stored(client: TestClient, db: Database) -> None:
    admin = issue(db, Role.ADMIN, "admin")
    response = client.post(
        "/api/v1/tokens", json={"name": "IDEXX VetLab", "role": "device"}, headers=bearer(admin)
    )
    assert response.status_code == 201
    body = response.json()
    secret = body["token"]
    assert secret.startswith("vgw_")
    assert (body["name"], body["role"], body["revoked_at"]) == ("IDEXX VetLab", "device", None)

    who = client.get("/api/v1/whoami", headers=bearer(secret))
    assert who.json() == {"name": "IDEXX VetLab", "role": "device"}

    row = token_row(db, "IDEXX VetLab")
    assert str(row.id) == body["id"]
    assert row.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in row.token_hash

    listed = client.get("/api/v1/tokens", headers=bearer(admin)).json()
    assert {t["name"] for t in listed} == {"admin", "IDEXX VetLab"}
    for item in listed:
        assert "token" not in item
        assert "token_hash" not in item
    assert secret not in str(listed)


@pytest.mark.parametrize(
    "body",
    [{"name": "", "role": "admin"}, {"name": "x", "role": "superuser"}, {"name": "x"}],
)
def test_invalid_token_request_is_422(client: TestClient, db: Database, body: object) -> None:
    admin = issue(db, Role.ADMIN)
    response = client.post("/api/v1/tokens", json=body, headers=bearer(admin))
    assert response.status_code == 422


def test_creating_and_revoking_write_audit_entries(client: TestClient, db: Database) -> None:
    with db.session() as s:
        admin_row, admin = create_token(s, "admin", Role.ADMIN, actor="cli")
    admin_id = admin_row.id
    created = client.post(
        "/api/v1/tokens", json={"name": "qc bench", "role": "qc"}, headers=bearer(admin)
    ).json()
    client.delete(f"/api/v1/tokens/{created['id']}", headers=bearer(admin))

    entries = audit_entries(db)
    assert [(e.action, e.entity_type, e.entity_id, e.actor) for e in entries] == [
        ("token.created", "api_token", str(admin_id), "cli"),
        ("token.created", "api_token", created["id"], f"api_token:{admin_id}"),
        ("token.revoked", "api_token", created["id"], f"api_token:{admin_id}"),
    ]
    assert entries[1].details == {"name": "qc bench", "role": "qc"}
    assert all(entry.occurred_at.tzinfo is not None for entry in entries)
    assert all(created["token"] not in str(entry.details) for entry in entries)


def test_last_used_is_written_at_most_once_a_minute(client: TestClient, db: Database) -> None:
    plaintext = issue(db, Role.VETERINARIAN, "dr")
    assert token_row(db, "dr").last_used_at is None
    client.get("/api/v1/whoami", headers=bearer(plaintext))
    first = token_row(db, "dr")
    assert first.last_used_at is not None
    for _ in range(3):
        client.get("/api/v1/whoami", headers=bearer(plaintext))
    again = token_row(db, "dr")
    assert again.last_used_at == first.last_used_at
    assert again.updated_at == first.updated_at

    # A minute later the next use is recorded again.
    assert first.last_used_at is not None
    later = first.last_used_at + timedelta(seconds=61)
    with db.session() as s:
        assert touch_token(s, first.id, now=later) is True
    with db.session() as s:
        assert touch_token(s, first.id, now=later + timedelta(seconds=30)) is False
    assert token_row(db, "dr").last_used_at == later


class RolledBackError(Exception):
    pass


def create_then_fail(db: Database) -> str:
    with db.session() as s:
        token, plaintext = create_token(s, "ephemeral", Role.QC)
        assert find_active_token(s, plaintext) is token
        raise RolledBackError(plaintext)


def test_store_functions_do_not_commit(db: Database) -> None:
    """The caller's unit of work decides: roll it back and neither token nor audit entry stays."""
    with pytest.raises(RolledBackError) as failure:
        create_then_fail(db)
    plaintext = str(failure.value)
    with db.session(readonly=True) as s:
        assert find_active_token(s, plaintext) is None
        assert s.scalar(sa.select(sa.func.count()).select_from(AuditEntry)) == 0


def test_revoked_tokens_are_not_found(db: Database) -> None:
    with db.session() as s:
        token, plaintext = create_token(s, "bench", Role.TECHNICIAN)
    with db.session() as s:
        assert revoke_token(s, token.id) is not None
        assert revoke_token(s, uuid.uuid4()) is None
    with db.session(readonly=True) as s:
        assert find_active_token(s, plaintext) is None
        assert find_active_token(s, "vgw_" + secrets.token_urlsafe(32)) is None
        assert find_active_token(s, "") is None
