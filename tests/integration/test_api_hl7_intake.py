"""HL7 v2 over HTTP (``POST /api/v1/hl7``) into a real inbox, on SQLite and PostgreSQL.

RELIABILITY cases: R17 (HTTP intake: no token → 401 and nothing stored; a resend gets the same
answer), R19 (bytes stored verbatim, MSH-18 decides), R20 (unsupported type → AR), R21 (required
field missing → AE, stored quarantined), R22 (enhanced mode). Storage failure → 503, never AA.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from tests.integration.api_support import TestClient, bearer, build_app, issue
from tests.mllp_peer import msa, segment
from vetgateway.adapters.hl7.intake import Hl7Intake, Hl7Policy
from vetgateway.api import create_app
from vetgateway.config import Settings
from vetgateway.store.db import Database
from vetgateway.store.inbox import Inbox
from vetgateway.store.models import InboundMessage, MessageStatus, Role

FIXTURES = Path(__file__).parent.parent / "fixtures" / "hl7"
HL7 = {"Content-Type": "application/hl7-v2"}
UNREACHABLE_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:1/vetgateway"


def oru(
    control_id: str = "CTRL-1",
    *,
    message_type: str = "ORU^R01^ORU_R01",
    accept_ack: str = "",
    application_ack: str = "",
    charset: str = "",
    value: str = "5.4",
) -> bytes:
    """An ORU^R01 (v2.5.1) whose MSH-10, MSH-9, MSH-15/16/18 and OBX-5 are given."""
    msh = [
        "MSH", "^~\\&", "LAB", "IDEXX", "VETGATEWAY", "CLINIC", "20261126101500", "",
        message_type, control_id, "P", "2.5.1", "", "", accept_ack, application_ack, "", charset,
    ]  # fmt: skip
    while not msh[-1]:
        msh.pop()
    text = (
        "|".join(msh) + "\r"
        "PID|1||PMS123^^^CLINIC^PI||Rex^^^^^^N\r"
        "OBR|1|ACC1||CHEM^Chemistry\r"
        f"OBX|1|NM|GLU^Glucose||{value}|mmol/L|3.9-7.8|N|||F\r"
    )
    return text.encode("iso8859-1" if charset == "8859/1" else "utf-8")


def rows(db: Database) -> list[InboundMessage]:
    with db.session(readonly=True) as session:
        return list(session.scalars(sa.select(InboundMessage).order_by(InboundMessage.id)))


def count(db: Database) -> int:
    with db.session(readonly=True) as session:
        return session.scalar(sa.select(sa.func.count()).select_from(InboundMessage)) or 0


@pytest.fixture
def client(db: Database, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(build_app(db, tmp_path)) as test_client:
        yield test_client


@pytest.fixture
def device(db: Database) -> dict[str, str]:
    return bearer(issue(db, Role.DEVICE, "IDEXX"))


def post(client: TestClient, body: bytes, auth: dict[str, str], **headers: str) -> Any:
    return client.post("/api/v1/hl7", content=body, headers={**HL7, **auth, **headers})


@pytest.mark.parametrize(
    "content_type",
    [
        "application/hl7-v2",
        "x-application/hl7-v2+er7",
        "text/plain",
        "text/plain; charset=utf-16",  # ignored: the bytes are stored as sent, MSH-18 governs
        "Application/HL7-V2; charset=UTF-8",
    ],
)
def test_accepted_content_types_store_the_body_and_answer_aa(
    client: TestClient, db: Database, device: dict[str, str], content_type: str
) -> None:
    body = oru("CT-1")
    response = post(client, body, device, **{"Content-Type": content_type})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/hl7-v2; charset=UTF-8"
    assert msa(response.content)[1:3] == ["AA", "CT-1"]
    [row] = rows(db)
    assert row.raw == body
    assert (row.channel, row.control_id, row.status) == ("http", "CT-1", MessageStatus.RECEIVED)
    assert row.peer == "testclient token:IDEXX"
    assert response.headers["x-vetgateway-message-id"] == str(row.id)


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/octet-stream", "text/html", None]
)
def test_other_content_types_are_415_and_nothing_is_stored(
    client: TestClient, db: Database, device: dict[str, str], content_type: str | None
) -> None:
    headers = dict(device)
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = client.post("/api/v1/hl7", content=oru(), headers=headers)
    assert response.status_code == 415
    assert "application/hl7-v2" in response.json()["detail"]
    assert "application/hl7-v2" in response.headers["x-vetgateway-reason"]
    assert count(db) == 0


def test_r17_missing_or_bad_token_is_401_and_nothing_is_stored(
    client: TestClient, db: Database
) -> None:
    issue(db, Role.DEVICE, "IDEXX")
    missing = client.post("/api/v1/hl7", content=oru(), headers=HL7)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    forged = post(client, oru(), bearer("vgw_" + "A" * 43))
    assert forged.status_code == 401
    assert count(db) == 0


def test_a_token_without_the_device_role_is_403_and_nothing_is_stored(
    client: TestClient, db: Database
) -> None:
    response = post(client, oru(), bearer(issue(db, Role.QC, "qc bench")))
    assert response.status_code == 403
    assert count(db) == 0
    admin = post(client, oru(), bearer(issue(db, Role.ADMIN, "admin")))
    assert admin.status_code == 200
    assert count(db) == 1


def test_r17_identical_resend_gets_identical_bytes_and_one_row(
    client: TestClient, db: Database, device: dict[str, str]
) -> None:
    body = oru("DUP-1")
    first = post(client, body, device)
    second = post(client, body, device)
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    assert msa(first.content)[1:3] == ["AA", "DUP-1"]
    assert count(db) == 1


def test_idempotency_key_is_not_honoured_so_another_body_gets_its_own_answer(
    client: TestClient, db: Database, device: dict[str, str]
) -> None:
    """Documented: the key is ignored; a reused key never returns the first message's ACK."""
    first = post(client, oru("KEY-1"), device, **{"Idempotency-Key": "k1"})
    second = post(client, oru("KEY-2"), device, **{"Idempotency-Key": "k1"})
    assert msa(first.content)[2] == "KEY-1"
    assert msa(second.content)[2] == "KEY-2"
    assert [row.control_id for row in rows(db)] == ["KEY-1", "KEY-2"]


def test_r21_missing_msh10_is_400_ae_with_err_and_a_quarantined_row(
    client: TestClient, db: Database, device: dict[str, str]
) -> None:
    body = oru("")
    response = post(client, body, device)
    assert response.status_code == 400
    fields = msa(response.content)
    assert fields[1] == "AE"
    err = segment(response.content, "ERR")
    assert err is not None
    assert err[2] == "MSH^1^10"
    assert err[3].startswith("101^")
    assert "MSH-10" in response.headers["x-vetgateway-reason"]
    [row] = rows(db)
    assert row.raw == body
    assert row.status is MessageStatus.QUARANTINED
    assert row.error is not None
    assert "MSH-10" in row.error


def test_r20_unsupported_message_type_is_400_ar_and_quarantined(
    client: TestClient, db: Database, device: dict[str, str]
) -> None:
    response = post(client, oru("ADT-1", message_type="ADT^A01^ADT_A01"), device)
    assert response.status_code == 400
    assert msa(response.content)[1:3] == ["AR", "ADT-1"]
    err = segment(response.content, "ERR")
    assert err is not None
    assert err[3].split("^")[0] in {"200", "201"}
    [row] = rows(db)
    assert row.status is MessageStatus.QUARANTINED
    assert row.error == response.headers["x-vetgateway-reason"]


def test_r22_enhanced_mode_accept_ack_al_is_200_ca(
    client: TestClient, db: Database, device: dict[str, str]
) -> None:
    response = post(client, oru("ENH-1", accept_ack="AL", application_ack="NE"), device)
    assert response.status_code == 200
    assert msa(response.content)[1:3] == ["CA", "ENH-1"]
    assert count(db) == 1


def test_r22_enhanced_mode_ne_ne_is_204_and_still_stored(
    client: TestClient, db: Database, device: dict[str, str]
) -> None:
    body = oru("ENH-2", accept_ack="NE", application_ack="NE")
    response = post(client, body, device)
    assert response.status_code == 204
    assert response.content == b""
    [row] = rows(db)
    assert (row.raw, row.status) == (body, MessageStatus.RECEIVED)
    assert response.headers["x-vetgateway-message-id"] == str(row.id)


def test_refused_message_that_asked_for_no_ack_is_still_400_with_the_reason(
    client: TestClient, db: Database, device: dict[str, str]
) -> None:
    """HTTP always answers; a refusal must not look like success even when MSH-15/16 say NE."""
    response = post(client, oru("", accept_ack="NE", application_ack="NE"), device)
    assert response.status_code == 400
    assert response.content == b""
    assert "MSH-10" in response.headers["x-vetgateway-reason"]
    assert rows(db)[0].status is MessageStatus.QUARANTINED


def test_r19_latin1_message_is_stored_verbatim_and_answered_in_latin1(
    client: TestClient, db: Database, device: dict[str, str]
) -> None:
    body = oru("LAT-1", charset="8859/1", value="négatif")
    assert b"n\xe9gatif" in body
    response = post(client, body, device, **{"Content-Type": "text/plain; charset=utf-8"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/hl7-v2; charset=ISO-8859-1"
    assert msa(response.content)[1:3] == ["AA", "LAT-1"]
    assert rows(db)[0].raw == body


FIXTURE_FILES = sorted(FIXTURES.rglob("*.hl7"))


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=[p.name for p in FIXTURE_FILES])
def test_fixture_is_stored_verbatim_and_the_status_matches_the_ack(
    client: TestClient, db: Database, device: dict[str, str], path: Path
) -> None:
    body = path.read_bytes()
    response = post(client, body, device)
    [row] = rows(db)
    assert row.raw == body
    if not response.content:
        assert response.status_code == (204 if row.status is MessageStatus.RECEIVED else 400)
        return
    fields = msa(response.content)
    assert response.status_code == (200 if fields[1] in {"AA", "CA"} else 400)
    assert fields[2] == (row.control_id or "")
    assert (row.status is MessageStatus.QUARANTINED) == (response.status_code == 400)


def test_body_over_the_limit_is_413_with_ar_and_its_start_kept(
    db: Database, tmp_path: Path, device: dict[str, str]
) -> None:
    settings = Settings(data_dir=tmp_path, database_url=db.url, mllp_max_message_size=1024)
    body = oru("BIG-1", value="9" * 2000)
    with TestClient(create_app(settings, db)) as client:
        response = post(client, body, device)
    assert response.status_code == 413
    assert msa(response.content)[1:3] == ["AR", "BIG-1"]
    assert "larger than 1024 bytes" in response.headers["x-vetgateway-reason"]
    [row] = rows(db)
    assert row.status is MessageStatus.QUARANTINED
    assert body.startswith(row.raw)
    assert len(row.raw) == 1024  # evidence, never more than the limit


async def _asgi_post(
    app: FastAPI, headers: list[tuple[bytes, bytes]], chunks: list[bytes]
) -> tuple[int, int]:
    """Drive the app as a server would, one body chunk per ``receive``; (status, chunks read)."""
    read = 0
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal read
        if read == len(chunks):
            return {"type": "http.disconnect"}
        read += 1
        return {"type": "http.request", "body": chunks[read - 1], "more_body": read < len(chunks)}

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/hl7",
        "raw_path": b"/api/v1/hl7",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("10.0.0.5", 40000),
        "server": ("127.0.0.1", 8080),
    }
    await app(scope, receive, send)
    return status, read


def test_body_is_streamed_and_not_read_past_the_limit_whatever_content_length_says(
    db: Database, tmp_path: Path, device: dict[str, str]
) -> None:
    settings = Settings(data_dir=tmp_path, database_url=db.url, mllp_max_message_size=1024)
    # Driven without the app's lifespan, so the test owns the inbox and closes it itself.
    inbox = Inbox(db)
    app = create_app(settings, db, hl7_intake=Hl7Intake(inbox, Hl7Policy.from_settings(settings)))
    body = oru("STREAM-1", value="7" * 100_000)
    chunks = [body[i : i + 256] for i in range(0, len(body), 256)]
    headers = [
        (b"content-type", b"application/hl7-v2"),
        (b"content-length", b"300"),  # a lie: the body is far longer
        (b"authorization", device["Authorization"].encode()),
    ]
    try:
        status, read = asyncio.run(_asgi_post(app, headers, chunks))
    finally:
        app.state.intake_pool.shutdown()
        inbox.close()
    assert status == 413
    assert read == 5  # 5 x 256 bytes is the first read past 1024; nothing after it
    assert len(chunks) > 300
    [row] = rows(db)
    assert row.peer == "10.0.0.5 token:IDEXX"
    assert row.status is MessageStatus.QUARANTINED


def test_storage_down_is_503_with_ar_and_retry_after(
    db: Database, tmp_path: Path, device: dict[str, str]
) -> None:
    """Tokens are checked on the real database; the inbox writes to a PostgreSQL that is not
    there (port 1), so the store genuinely fails and the answer must not be AA."""
    down = Database(UNREACHABLE_POSTGRES)
    try:
        app = build_app(db, tmp_path, hl7_intake=Hl7Intake(Inbox(down)))
        with TestClient(app) as client:
            response = post(client, oru("DOWN-1"), device)
    finally:
        down.dispose()
    assert response.status_code == 503
    assert response.headers["retry-after"].isdigit()
    assert msa(response.content)[1:3] == ["AR", "DOWN-1"]
    assert "retry" in response.headers["x-vetgateway-reason"]
    assert "x-vetgateway-message-id" not in response.headers
    assert count(db) == 0


def test_database_down_for_everything_is_503_not_a_success(tmp_path: Path) -> None:
    down = Database(UNREACHABLE_POSTGRES)
    try:
        settings = Settings(data_dir=tmp_path, database_url=UNREACHABLE_POSTGRES)
        with TestClient(create_app(settings, down)) as client:
            response = post(client, oru("DOWN-2"), bearer("vgw_" + "B" * 43))
    finally:
        down.dispose()
    assert response.status_code == 503
    assert response.headers["retry-after"].isdigit()
