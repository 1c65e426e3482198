"""Orders in the store and over the API, on SQLite and PostgreSQL: ``upsert_order`` is idempotent
(resends, updates, cancels, the HL7 fixtures end to end, audit entries), ``candidate_orders``
finds orders by each rule and feeds ``decide_match``, and ``/api/v1/orders`` answers
401/403/201/200/404/422."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.integration.api_support import TestClient, bearer, build_app, issue
from vetgateway.model import OrderRef, PatientRef, Report, Sex
from vetgateway.pipeline.matching import decide_match
from vetgateway.pipeline.parse.orm import OrderIn, parse_order_message
from vetgateway.store.clinics import Refused, create_clinic
from vetgateway.store.db import Database
from vetgateway.store.models import (
    ApiToken,
    AuditEntry,
    DiagnosticOrder,
    OrderItemStatus,
    OrderStatus,
    Role,
)
from vetgateway.store.orders import candidate_orders, get_order, upsert_order

FIXTURES = Path(__file__).parent.parent / "fixtures" / "hl7" / "orders"
T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def new_order(**kw: Any) -> OrderIn:
    values: dict[str, Any] = {
        "source": "pms:test",
        "placer_number": "P-1",
        "ordered_at": T0 - timedelta(hours=2),
        "patient_pms_id": "PMS-1",
        "patient_name": "Bella",
        "owner_surname": "Smith",
        "species": "canine",
        "items": ("CBC",),
    }
    values.update(kw)
    return OrderIn(**values)


def upsert(db: Database, order: OrderIn, actor: str = "test") -> tuple[uuid.UUID, bool]:
    with db.session() as session:
        row, created = upsert_order(session, order, actor=actor)
        return row.id, created


def load(db: Database, order_id: uuid.UUID) -> DiagnosticOrder:
    with db.session(readonly=True) as session:
        row = get_order(session, order_id)
        assert row is not None
        return row


def items(row: DiagnosticOrder) -> dict[str, OrderItemStatus]:
    return {item.ordered_code: item.status for item in row.items}


def order_count(db: Database) -> int:
    with db.session(readonly=True) as session:
        return session.scalar(sa.select(sa.func.count()).select_from(DiagnosticOrder)) or 0


def audit_log(db: Database) -> list[AuditEntry]:
    with db.session(readonly=True) as session:
        return list(
            session.scalars(
                sa.select(AuditEntry)
                .where(AuditEntry.entity_type == "diagnostic_order")
                .order_by(AuditEntry.id)
            )
        )


def report(**kw: Any) -> Report:
    order_kw = {k: kw.pop(k) for k in ("placer", "filler", "accession") if k in kw}
    return Report(
        order=OrderRef(**order_kw),
        patient=PatientRef(**kw),
        service_code=None,
        service_text=None,
        status=None,
        status_code=None,
        observed_at=T0,
        reported_at=None,
    )


def candidates(db: Database, r: Report, species: str | None = None) -> set[uuid.UUID]:
    with db.session(readonly=True) as session:
        found = candidate_orders(session, r, species, observed_at=T0, window=timedelta(days=30))
    return {c.order_id for c in found}


# --- upsert_order ------------------------------------------------------------------------------


def test_a_resend_updates_never_duplicates(db: Database) -> None:
    order_id, created = upsert(db, new_order())
    assert created
    assert upsert(db, new_order()) == (order_id, False)
    assert order_count(db) == 1
    # Nothing changed: one audit entry, for the creation.
    [entry] = audit_log(db)
    assert (entry.action, entry.entity_id, entry.actor) == ("order.created", str(order_id), "test")
    assert entry.details == {
        "action": "new",
        "source": "pms:test",
        "placer_number": "P-1",
        "accession_number": None,
        "items": ["CBC"],
        "status": "placed",
    }
    row = load(db, order_id)
    assert (row.status, row.source, row.patient_pms_id, row.species) == (
        OrderStatus.PLACED,
        "pms:test",
        "PMS-1",
        "canine",
    )
    assert row.ordered_at == T0 - timedelta(hours=2)
    assert items(row) == {"CBC": OrderItemStatus.ORDERED}


def test_a_resend_adds_tests_fills_fields_and_keeps_what_it_does_not_carry(db: Database) -> None:
    order_id, _ = upsert(db, new_order())
    later = T0 + timedelta(hours=1)
    resend = new_order(
        items=("T4",), patient_name=None, breed="Labrador", ordered_at=later, sex=Sex.FEMALE
    )
    assert upsert(db, resend, actor="pms") == (order_id, False)
    row = load(db, order_id)
    assert items(row) == {"CBC": OrderItemStatus.ORDERED, "T4": OrderItemStatus.ORDERED}
    assert (row.patient_name, row.breed, row.sex) == ("Bella", "Labrador", Sex.FEMALE)
    assert row.ordered_at == T0 - timedelta(hours=2)  # set once
    updated = audit_log(db)[-1]
    assert (updated.action, updated.actor) == ("order.updated", "pms")
    assert updated.details == {
        "action": "new",
        "fields": ["breed", "sex"],
        "items_added": ["T4"],
    }


def test_update_replaces_the_tests_but_keeps_resulted_ones(db: Database) -> None:
    order_id, _ = upsert(db, new_order(items=("CBC", "T4", "SDMA")))
    with db.session() as session:
        row = get_order(session, order_id)
        assert row is not None
        next(i for i in row.items if i.ordered_code == "SDMA").status = OrderItemStatus.RESULTED
    upsert(db, new_order(action="update", items=("T4", "UPC")))
    assert items(load(db, order_id)) == {
        "CBC": OrderItemStatus.CANCELLED,
        "T4": OrderItemStatus.ORDERED,
        "SDMA": OrderItemStatus.RESULTED,
        "UPC": OrderItemStatus.ORDERED,
    }
    assert audit_log(db)[-1].details == {
        "action": "update",
        "fields": [],
        "items_added": ["UPC"],
        "items_cancelled": ["CBC"],
    }


def test_cancel_some_tests_then_all_and_a_cancelled_order_stays_cancelled(db: Database) -> None:
    order_id, _ = upsert(db, new_order(items=("CBC", "T4")))
    upsert(db, new_order(action="cancel", items=("T4",)))
    row = load(db, order_id)
    assert row.status is OrderStatus.PLACED
    assert items(row) == {"CBC": OrderItemStatus.ORDERED, "T4": OrderItemStatus.CANCELLED}
    upsert(db, new_order(action="cancel", items=()))
    row = load(db, order_id)
    assert row.status is OrderStatus.CANCELLED
    assert set(items(row).values()) == {OrderItemStatus.CANCELLED}
    entries = len(audit_log(db))
    # The original NW arriving late, or an update, changes nothing and writes nothing.
    assert upsert(db, new_order(items=("CBC", "T4"), breed="Poodle")) == (order_id, False)
    upsert(db, new_order(action="update", items=("UPC",)))
    row = load(db, order_id)
    assert (row.status, row.breed) == (OrderStatus.CANCELLED, None)
    assert len(audit_log(db)) == entries


def test_a_cancel_for_an_unknown_order_stores_it_cancelled(db: Database) -> None:
    order_id, created = upsert(db, new_order(action="cancel", items=("CBC",)))
    assert created
    row = load(db, order_id)
    assert row.status is OrderStatus.CANCELLED
    assert items(row) == {"CBC": OrderItemStatus.CANCELLED}
    assert upsert(db, new_order()) == (order_id, False)  # the late NW does not revive it
    assert load(db, order_id).status is OrderStatus.CANCELLED


def test_placer_numbers_are_per_source_accession_numbers_are_global(db: Database) -> None:
    first, _ = upsert(db, new_order())
    other, created = upsert(db, new_order(source="pms:other"))
    assert created
    assert other != first
    by_accession, created = upsert(
        db, new_order(placer_number=None, accession_number="ACC-1", source="a")
    )
    assert created
    again = upsert(db, new_order(placer_number=None, accession_number="ACC-1", source="b"))
    assert again == (by_accession, False)
    assert order_count(db) == 3


def test_concurrent_upserts_of_one_order_create_it_once(db: Database) -> None:
    """Four workers with the same message at once (a redelivery racing the original)."""
    start = threading.Barrier(4)

    def work(_: int) -> bool:
        start.wait(timeout=10)
        return upsert(db, new_order())[1]

    with ThreadPoolExecutor(4) as pool:
        created = list(pool.map(work, range(4)))
    assert sorted(created) == [False, False, False, True]
    assert order_count(db) == 1


def test_values_are_trimmed_and_the_microchip_normalised(db: Database) -> None:
    order_id, _ = upsert(
        db,
        new_order(
            placer_number=" P-1 ",
            patient_microchip="985 112 003 456 789",
            species=" Canine ",
            items=(" CBC ", "CBC"),
        ),
    )
    row = load(db, order_id)
    assert (row.placer_number, row.patient_microchip, row.species) == (
        "P-1",
        "985112003456789",
        "canine",
    )
    assert items(row) == {"CBC": OrderItemStatus.ORDERED}
    odd, _ = upsert(db, new_order(placer_number="P-2", patient_microchip=" not a chip "))
    assert load(db, odd).patient_microchip == "not a chip"  # kept as sent


def test_an_order_that_cannot_be_stored_is_a_value_error(db: Database) -> None:
    with db.session() as session, pytest.raises(ValueError, match="neither a placer number"):
        upsert_order(session, new_order(placer_number=None), actor="test")


def test_hl7_fixtures_end_to_end(db: Database) -> None:
    placed = parse_order_message(
        (FIXTURES / "vetclinic_orm_o01_canine_three_tests.hl7").read_bytes()
    )
    ids = [upsert(db, order, actor="hl7:message:1") for order in placed]
    assert [created for _, created in ids] == [True, True]
    # The same message delivered twice (MLLP retransmission) changes nothing.
    assert [upsert(db, order)[1] for order in placed] == [False, False]
    first = load(db, ids[0][0])
    assert (first.placer_number, first.source, first.patient_microchip) == (
        "ORD-1001",
        "hl7:VETSTAR/HAPPYPAWS",
        "985112003456789",
    )
    assert first.ordered_at == datetime(2026, 11, 26, 8, 10, tzinfo=UTC)  # +01:00 → UTC
    assert items(first) == {"CBC": OrderItemStatus.ORDERED, "CHEM10": OrderItemStatus.ORDERED}
    (cancel,) = parse_order_message(
        (FIXTURES / "vetclinic_orm_o01_cancel_one_test.hl7").read_bytes()
    )
    assert upsert(db, cancel) == (ids[0][0], False)
    first = load(db, ids[0][0])
    assert first.status is OrderStatus.PLACED
    assert items(first) == {"CBC": OrderItemStatus.ORDERED, "CHEM10": OrderItemStatus.CANCELLED}
    assert order_count(db) == 2


# --- candidate_orders --------------------------------------------------------------------------


@pytest.fixture
def orders(db: Database) -> dict[str, uuid.UUID]:
    """A small practice: each order findable by one clue."""
    seed = {
        "accession": new_order(placer_number="A-PL", accession_number="ACC-1", patient_pms_id=None),
        "placer": new_order(placer_number="PL-1", patient_pms_id=None),
        "filler": new_order(placer_number="F-PL", filler_number="FIL-1", patient_pms_id=None),
        "pms": new_order(placer_number="PMS-PL", patient_pms_id="PMS-7"),
        "pms_old": new_order(
            placer_number="PMS-OLD", patient_pms_id="PMS-7", ordered_at=T0 - timedelta(days=45)
        ),
        "chip": new_order(
            placer_number="CHIP-PL", patient_pms_id=None, patient_microchip="985112003456789"
        ),
        "names": new_order(
            placer_number="NAME-PL",
            patient_pms_id=None,
            owner_surname="Müller",
            patient_name="Mr  Whiskers",
            species="feline",
        ),
        "cancelled": new_order(placer_number="CAN-PL", patient_pms_id="PMS-7", action="cancel"),
        "deleted": new_order(placer_number="DEL-PL", patient_pms_id="PMS-7"),
    }
    ids = {name: upsert(db, order)[0] for name, order in seed.items()}
    with db.session() as session:
        session.execute(
            sa.update(DiagnosticOrder)
            .where(DiagnosticOrder.id == ids["deleted"])
            .values(deleted_at=T0)
        )
    return ids


@pytest.mark.parametrize(
    ("clues", "species", "expected"),
    [
        ({"accession": "ACC-1"}, None, ["accession"]),
        ({"placer": "PL-1"}, None, ["placer"]),
        ({"filler": "FIL-1"}, None, ["filler"]),
        ({"placer": "CAN-PL"}, None, ["cancelled"]),  # a number finds even a cancelled order
        ({"placer": "DEL-PL"}, None, []),  # never a deleted one
        ({"pms_id": "PMS-7"}, None, ["pms"]),  # not old, cancelled or deleted ones
        ({"microchip": "985 112 003 456 789"}, None, ["chip"]),
        ({"microchip": "985112003456789"}, None, ["chip"]),
        ({"owner_surname": "Müller", "name": "mr whiskers"}, "feline", ["names"]),
        ({"owner_surname": "Müller", "name": "Mr Whiskers"}, None, ["names"]),
        ({"owner_surname": "Müller", "name": "Mr Whiskers"}, "canine", []),
        ({"owner_surname": "Müller"}, None, []),  # both names are needed
        (
            {"accession": "ACC-1", "pms_id": "PMS-7", "microchip": "985112003456789"},
            None,
            ["accession", "pms", "chip"],
        ),
    ],
)
def test_candidate_orders_by_each_rule(
    db: Database,
    orders: dict[str, uuid.UUID],
    clues: dict[str, str],
    species: str | None,
    expected: list[str],
) -> None:
    assert candidates(db, report(**clues), species) == {orders[name] for name in expected}


def test_candidate_orders_names_ignore_ascii_case(
    db: Database, orders: dict[str, uuid.UUID]
) -> None:
    upsert(db, new_order(placer_number="N2", owner_surname="SMITH", patient_name="MAX"))
    found = candidates(db, report(owner_surname="smith ", name=" Max"))
    assert len(found) == 1


def test_candidate_orders_carry_the_ordered_tests_and_feed_decide_match(
    db: Database, orders: dict[str, uuid.UUID]
) -> None:
    # A second test for the same order.
    upsert(db, new_order(placer_number="PMS-PL", patient_pms_id="PMS-7", items=("T4",)))
    r = report(pms_id="PMS-7")
    with db.session(readonly=True) as session:
        found = candidate_orders(session, r, "canine", observed_at=T0)
    (candidate,) = found
    assert (candidate.order_id, candidate.ordered_codes) == (orders["pms"], ("CBC", "T4"))
    assert candidate.ordered_at == T0 - timedelta(hours=2)
    decision = decide_match(r, "canine", found, observed_at=T0)
    assert (decision.order_id, decision.rule) == (orders["pms"], "pms_id")
    names = report(owner_surname="muller", name="Mr Whiskers")  # no umlaut: nothing found
    assert candidates(db, names, "feline") == set()


# --- the API -----------------------------------------------------------------------------------


@pytest.fixture
def client(db: Database, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(build_app(db, tmp_path)) as test_client:
        yield test_client


def body(**kw: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "source": "pms:vetstar",
        "placer_number": "API-1",
        "ordered_at": "2026-11-26T09:00:00+01:00",
        "patient_id": str(uuid.UUID(int=7)),
        "patient_pms_id": "PMS-9",
        "patient_microchip": "985.112.003.456.789",
        "patient_name": "Rex",
        "owner_surname": "Jones",
        "species": "canine",
        "sex": "male_neutered",
        "birth_date": "2018-04-01",
        "items": ["CBC", "T4"],
    }
    values.update(kw)
    return values


def test_api_post_creates_then_updates_and_get_reads_back(client: TestClient, db: Database) -> None:
    device = issue(db, Role.DEVICE, "vetstar integration")
    created = client.post("/api/v1/orders", json=body(), headers=bearer(device))
    assert created.status_code == 201, created.text
    order_id = created.json()["id"]
    assert created.json() == {"id": order_id, "created": True}
    again = client.post("/api/v1/orders", json=body(items=["UPC"]), headers=bearer(device))
    assert again.status_code == 200, again.text
    assert again.json() == {"id": order_id, "created": False}

    tech = bearer(issue(db, Role.TECHNICIAN))
    detail = client.get(f"/api/v1/orders/{order_id}", headers=tech)
    assert detail.status_code == 200, detail.text
    got = detail.json()
    assert {k: got[k] for k in ("source", "status", "placer_number", "ordered_at")} == {
        "source": "pms:vetstar",
        "status": "placed",
        "placer_number": "API-1",
        "ordered_at": "2026-11-26T08:00:00Z",
    }
    assert (got["patient_id"], got["patient_microchip"], got["sex"], got["birth_date"]) == (
        str(uuid.UUID(int=7)),
        "985112003456789",
        "male_neutered",
        "2018-04-01",
    )
    assert sorted((i["ordered_code"], i["status"]) for i in got["items"]) == [
        ("CBC", "ordered"),
        ("T4", "ordered"),
        ("UPC", "ordered"),
    ]
    # Audited under the calling token.
    entries = audit_log(db)
    assert [e.action for e in entries] == ["order.created", "order.updated"]
    assert {e.actor for e in entries} == {f"api_token:{_token_id(db, 'vetstar integration')}"}


def test_api_cancel_and_naive_time_is_utc(client: TestClient, db: Database) -> None:
    vet = bearer(issue(db, Role.VETERINARIAN))
    order_id = client.post(
        "/api/v1/orders", json=body(ordered_at="2026-11-26T09:00:00"), headers=vet
    ).json()["id"]
    cancelled = client.post("/api/v1/orders", json=body(action="cancel", items=[]), headers=vet)
    assert cancelled.status_code == 200
    got = client.get(f"/api/v1/orders/{order_id}", headers=vet).json()
    assert (got["status"], got["ordered_at"]) == ("cancelled", "2026-11-26T09:00:00Z")


@pytest.mark.parametrize(
    ("role", "post", "get"),
    [
        (Role.ADMIN, 201, 200),
        (Role.VETERINARIAN, 201, 200),
        (Role.TECHNICIAN, 201, 200),
        (Role.DEVICE, 201, 403),
        (Role.QC, 403, 403),
    ],
)
def test_api_roles(client: TestClient, db: Database, role: Role, post: int, get: int) -> None:
    headers = bearer(issue(db, role))
    response = client.post("/api/v1/orders", json=body(placer_number=role.value), headers=headers)
    assert response.status_code == post, response.text
    order_id = upsert(db, new_order(placer_number="seeded"))[0]
    assert client.get(f"/api/v1/orders/{order_id}", headers=headers).status_code == get


def test_api_without_a_valid_token_is_401(client: TestClient) -> None:
    for headers in ({}, bearer("vgw_not_a_token")):
        post = client.post("/api/v1/orders", json=body(), headers=headers)
        assert post.status_code == 401
        assert post.headers["www-authenticate"].startswith("Bearer")
        assert client.get(f"/api/v1/orders/{uuid.uuid4()}", headers=headers).status_code == 401
    # Authentication comes before validation: a bad body from a stranger is still 401.
    assert client.post("/api/v1/orders", json={"nonsense": 1}).status_code == 401


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"placer_number": None}, "placer_number or accession_number is required"),
        ({"placer_number": "  "}, "placer_number or accession_number is required"),
        ({"placer_number": "P" * 65}, "at most 64 characters"),
        ({"patient_microchip": "9" * 33}, "at most 32 characters"),
        ({"items": ["CBC", ""]}, "at least 1 character"),
        ({"items": ["C" * 65]}, "at most 64 characters"),
        ({"action": "renew"}, "'new', 'update' or 'cancel'"),
        ({"sex": "neutered"}, "'male', 'female'"),
        ({"ordered_at": "yesterday"}, "datetime"),
        ({"patient_id": "not-a-uuid"}, "UUID"),
        ({"placer": "P-1"}, "Extra inputs are not permitted"),
    ],
)
def test_api_bad_bodies_are_422_with_the_reason(
    client: TestClient, db: Database, changes: dict[str, Any], words: str
) -> None:
    tech = bearer(issue(db, Role.TECHNICIAN))
    response = client.post("/api/v1/orders", json=body(**changes), headers=tech)
    assert response.status_code == 422
    assert words in response.text
    assert order_count(db) == 0


def test_api_get_unknown_or_malformed_id(client: TestClient, db: Database) -> None:
    tech = bearer(issue(db, Role.TECHNICIAN))
    missing = client.get(f"/api/v1/orders/{uuid.uuid4()}", headers=tech)
    assert (missing.status_code, missing.json()) == (404, {"detail": "no such order"})
    assert client.get("/api/v1/orders/42", headers=tech).status_code == 422


def _token_id(db: Database, name: str) -> uuid.UUID:
    with db.session(readonly=True) as session:
        return session.scalars(sa.select(ApiToken.id).where(ApiToken.name == name)).one()


def test_birth_dates_round_trip(db: Database) -> None:
    order_id, _ = upsert(db, new_order(birth_date=date(2019, 3, 14)))
    assert load(db, order_id).birth_date == date(2019, 3, 14)


def test_api_order_names_its_clinic_and_an_unknown_one_is_refused(
    client: TestClient, db: Database
) -> None:
    device = bearer(issue(db, Role.DEVICE, "vetstar integration"))
    with db.session() as s:
        north = create_clinic(s, code="north", name="North", timezone="UTC", actor="test")
        assert not isinstance(north, Refused)
    refused = client.post("/api/v1/orders", json=body(clinic="nowhere"), headers=device)
    assert refused.status_code == 422
    assert "no clinic with code 'nowhere'" in refused.text
    created = client.post("/api/v1/orders", json=body(clinic="north"), headers=device)
    assert created.status_code == 201
    with db.session(readonly=True) as s:
        row = s.get(DiagnosticOrder, uuid.UUID(created.json()["id"]))
        assert row is not None
        assert row.clinic_id == north.id
    # A resend without the clinic never blanks it.
    assert client.post("/api/v1/orders", json=body(), headers=device).status_code == 200
    with db.session(readonly=True) as s:
        row = s.get(DiagnosticOrder, uuid.UUID(created.json()["id"]))
        assert row is not None
        assert row.clinic_id == north.id
