"""The analyzer store on SQLite and PostgreSQL: device rows kept in step with the config
(``store/devices.py``), QC runs from analyzers (``store/qc.py``), pending orders for a host query
(``store/host_orders.py``), and the silence watch with its operational alerts
(``analyzers/silence.py``, ``store/device_alerts.py``) on an injected clock."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from vetgateway.adapters.notify import Notification
from vetgateway.analyzers.config import AnalyzerConfig, ContactConfig
from vetgateway.analyzers.drivers import DRIVERS
from vetgateway.analyzers.hours import parse_opening_hours
from vetgateway.analyzers.lines import check_analyzers
from vetgateway.analyzers.silence import SilenceWatch, is_silent
from vetgateway.errors import StorageError, StorageUnavailable
from vetgateway.model import Sex
from vetgateway.pipeline.mapping import CatalogueEntry, MappingRule, MappingTable, map_observations
from vetgateway.pipeline.pager import Pager
from vetgateway.pipeline.parse.orm import OrderIn
from vetgateway.store import models as m
from vetgateway.store.db import Database
from vetgateway.store.device_alerts import CLEARED, open_silence_alerts
from vetgateway.store.devices import DeviceView, active_devices, record_last_seen, sync_devices
from vetgateway.store.host_orders import PendingOrder, pending_for_sample
from vetgateway.store.inbox import Inbox, MessageMeta
from vetgateway.store.orders import upsert_order
from vetgateway.store.qc import QcInput, save_qc_runs

MONDAY = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
FRIDAY_LATE = datetime(2026, 3, 6, 17, 30, tzinfo=UTC)
WEEKDAYS = "mon-fri 08:00-18:00"
CONTACTS = (
    ContactConfig(kind="email", address="it@example.org"),
    ContactConfig(kind="sms", address="+15550001"),
)
CHEM = AnalyzerConfig(name="Chemistry", sender_id="CHEM1", quiet_minutes=120)
HAEM = AnalyzerConfig(
    name="Haematology", driver="horiba_yumizen_h500", connection="serial",
    serial_port="/dev/ttyUSB0", baudrate=19200, parity="E", stopbits=2, quiet_minutes=0.5,
)  # fmt: skip
LYTES = AnalyzerConfig(
    name="Lytes", driver="arkray_spotchem_el", connection="tcp_client",
    host="192.0.2.40", port=4001, clinic="main",
)  # fmt: skip


def sync(
    db: Database, analyzers: Sequence[AnalyzerConfig], clinics: dict[str, uuid.UUID] | None = None
) -> dict[str, DeviceView]:
    protocols = {name: d.protocol for name, d in check_analyzers(tuple(analyzers)).items()}
    with db.session() as s:
        return {v.name: v for v in sync_devices(s, analyzers, protocols, clinics or {})}


def rows(db: Database, model: Any, *where: Any) -> list[Any]:
    with db.session(readonly=True) as s:
        return list(s.scalars(sa.select(model).where(*where)))


def update(s: Session, model: Any, *where: Any, **values: Any) -> None:
    s.execute(sa.update(model).where(*where).values(**values))


def devices(db: Database) -> dict[str, m.Device]:
    return {d.name: d for d in rows(db, m.Device)}


def audit_actions(db: Database, entity_type: str) -> list[tuple[str, str]]:
    with db.session(readonly=True) as s:
        found = s.execute(
            sa.select(m.AuditEntry.action, m.AuditEntry.entity_id)
            .where(m.AuditEntry.entity_type == entity_type)
            .order_by(m.AuditEntry.id)
        )
        return [(action, entity_id) for action, entity_id in found]


# --- devices -----------------------------------------------------------------------------------


def test_sync_creates_one_device_per_analyzer(db: Database) -> None:
    with db.session() as s:
        clinic = m.Clinic(code="main", name="Main Street")
        s.add(clinic)
        s.flush()
        clinic_id = clinic.id
    views = sync(db, (LYTES, CHEM, HAEM), {"main": clinic_id})
    assert list(views) == ["Chemistry", "Haematology", "Lytes"]  # by name
    assert {
        n: (v.driver, v.connection, v.sender_id, v.quiet_limit_seconds, v.clinic_id)
        for n, v in views.items()
    } == {
        "Chemistry": ("generic_astm", "listener", "CHEM1", 7200, None),
        "Haematology": ("horiba_yumizen_h500", "serial", None, 30, None),
        "Lytes": ("arkray_spotchem_el", "tcp_client", None, None, clinic_id),
    }
    assert all(v.last_seen_at is None and v.created_at.tzinfo is UTC for v in views.values())
    stored = devices(db)
    assert {n: (d.kind, d.protocol, d.active) for n, d in stored.items()} == {
        "Chemistry": (m.DeviceKind.ANALYZER, m.DeviceProtocol.ASTM, True),
        "Haematology": (m.DeviceKind.ANALYZER, m.DeviceProtocol.ASTM, True),
        "Lytes": (m.DeviceKind.ANALYZER, m.DeviceProtocol.PLAIN_TEXT, True),
    }
    assert stored["Chemistry"].connection == {"kind": "listener"}
    assert stored["Lytes"].connection == {"kind": "tcp_client", "host": "192.0.2.40", "port": 4001}
    serial = dict(kind="serial", port="/dev/ttyUSB0", baudrate=19200, bytesize=8, parity="E")
    serial |= dict(stopbits=2, xonxoff=False, rtscts=False)
    assert stored["Haematology"].connection == serial
    assert audit_actions(db, "device") == [  # in config order
        ("device.configured", str(views[n].id)) for n in ("Lytes", "Chemistry", "Haematology")
    ]


def test_sync_updates_only_what_changed(db: Database) -> None:
    first = sync(db, (CHEM, HAEM, LYTES))
    assert len(audit_actions(db, "device")) == 3
    # The same config again (every start-up): nothing written.
    assert {n: v.id for n, v in sync(db, (CHEM, HAEM, LYTES)).items()} == {
        n: v.id for n, v in first.items()
    }
    assert len(audit_actions(db, "device")) == 3
    chem = CHEM.model_copy(update={"quiet_minutes": 60})
    lytes = LYTES.model_copy(update={"port": 4002, "clinic": None})
    views = sync(db, (chem, HAEM, lytes))
    assert views["Chemistry"].quiet_limit_seconds == 3600
    assert views["Chemistry"].id == first["Chemistry"].id
    assert devices(db)["Lytes"].connection["port"] == 4002
    assert audit_actions(db, "device")[3:] == [
        ("device.configured", str(first["Chemistry"].id)),
        ("device.configured", str(first["Lytes"].id)),
    ]


def test_a_removed_analyzer_is_deactivated_then_reactivated(db: Database) -> None:
    with db.session() as s:
        lab, hl7 = m.DeviceKind.REFERENCE_LAB, m.DeviceProtocol.HL7_MLLP
        s.add(m.Device(name="IDEXX", kind=lab, protocol=hl7))
    first = sync(db, (CHEM, HAEM))
    haem_id = first["Haematology"].id
    assert list(sync(db, (CHEM,))) == ["Chemistry"]
    assert devices(db)["Haematology"].active is False  # kept, with its history
    assert devices(db)["IDEXX"].active is True  # not an analyzer line: not the config's business
    assert audit_actions(db, "device")[-1] == ("device.deactivated", str(haem_id))
    with db.session(readonly=True) as s:
        assert [v.name for v in active_devices(s)] == ["Chemistry"]
    sync(db, (CHEM,))
    assert len(audit_actions(db, "device")) == 3  # deactivated once
    again = sync(db, (CHEM, HAEM))
    assert again["Haematology"].id == haem_id
    assert devices(db)["Haematology"].active is True
    assert audit_actions(db, "device")[-1] == ("device.configured", str(haem_id))
    assert len(rows(db, m.Device)) == 3


def test_gateways_syncing_one_config_at_once_create_each_device_once(db: Database) -> None:
    barrier = threading.Barrier(4)
    errors: list[Exception] = []

    def start_a_gateway() -> None:
        try:
            barrier.wait(timeout=10)
            sync(db, (CHEM, HAEM, LYTES))
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=start_a_gateway) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    live = rows(db, m.Device, m.Device.deleted_at.is_(None))
    assert sorted(d.name for d in live) == sorted(c.name for c in (CHEM, HAEM, LYTES))
    duplicate = m.Device(
        name=CHEM.name, kind=m.DeviceKind.ANALYZER, protocol=m.DeviceProtocol.ASTM, connection={}
    )

    def insert_another() -> None:
        with db.session() as s:
            s.add(duplicate)

    with pytest.raises(StorageError, match=r"(?i)unique"):
        insert_another()


def test_replaying_a_message_from_an_unknown_sender_attributes_it_to_the_analyzer_added(
    db: Database,
) -> None:
    """The intake stores an unknown sender id's message quarantined, without a device; the
    reason says "add it to [[analyzers]] and replay". The replay after that attributes it to the
    analyzer now configured, so the pipeline reads it with that analyzer's driver, code map and
    clinic, and files the report under it."""
    from vetgateway.pipeline.process import MessageProcessor
    from vetgateway.store.messages import replay_message

    raw = (
        (Path(__file__).parent.parent / "fixtures" / "astm" / "written")
        .joinpath("chemistry_qc_by_action_code_decimal_comma.astm")
        .read_bytes()
        .replace(b"CHEM-ANALYZER", b"CHEM1")
    )
    inbox = Inbox(db)
    try:
        unknown = MessageMeta(
            sender="CHEM1",
            message_type="ASTM",
            quarantine_reason="unknown analyzer: sender id 'CHEM1' (H-5) is not configured",
            extra={"sender_id": "CHEM1"},
        )
        message_id = int(inbox.accept(raw, "astm", "peer", unknown))
    finally:
        inbox.close()
    views = sync(db, (CHEM,))
    with db.session() as s:
        replayed = replay_message(s, message_id, actor="test")
        assert replayed is not None
        assert replayed.refused is None
    [row] = rows(db, m.InboundMessage)
    assert row.sender == "Chemistry"
    assert row.meta["device_id"] == str(views["Chemistry"].id)
    assert row.meta["driver"] == "generic_astm"
    with db.session(readonly=True) as s:
        entry = s.scalars(
            sa.select(m.AuditEntry).where(m.AuditEntry.action == "message.replayed")
        ).one()
    assert entry.details["attributed_to_device"] == "Chemistry"

    MessageProcessor(db).process_batch([message_id])
    reports = rows(db, m.DiagnosticReport)
    assert reports
    assert {r.device_id for r in reports} == {views["Chemistry"].id}
    assert [run.device_id for run in rows(db, m.QcRun)] == [views["Chemistry"].id]


def test_an_analyzer_in_another_zone_has_its_results_stored_at_the_right_instant(
    db: Database,
) -> None:
    """A group's gateway in Chicago takes an analyzer whose clock is on Denver time: its
    ``timezone`` reaches the pipeline through the device its stored message names, so the
    results are stored an hour later than the gateway's zone would have them."""
    from vetgateway.config import Settings
    from vetgateway.pipeline.process import MessageProcessor
    from vetgateway.store.devices import device_meta

    chicago = ZoneInfo("America/Chicago")
    raw = (
        (Path(__file__).parent.parent / "fixtures" / "astm" / "written")
        .joinpath("horiba_style_cbc_two_patients.astm")
        .read_bytes()
    )
    denver = CHEM.model_copy(update={"timezone": "America/Denver"})
    views = sync(db, (denver,))
    meta = MessageMeta(
        sender="Chemistry", message_type="ASTM", extra=device_meta(views["Chemistry"], None)
    )
    inbox = Inbox(db)
    try:
        message_id = int(inbox.accept(raw, "astm", "peer", meta))
    finally:
        inbox.close()
    profiles = Settings(analyzers=(denver,)).source_profiles
    MessageProcessor(db, zone=chicago, profiles=profiles).process_batch([message_id])
    stored = sorted(r.observed_at for r in rows(db, m.DiagnosticReport))
    expected = sorted(
        report.observed_at + timedelta(hours=1)
        for report in DRIVERS["generic_astm"].parse(raw, zone=chicago).reports
        if report.observed_at is not None
    )
    assert stored
    assert stored == expected


def test_last_seen_only_moves_forward(db: Database) -> None:
    views = sync(db, (CHEM, HAEM))
    chem, haem = views["Chemistry"].id, views["Haematology"].id
    with db.session() as s:
        record_last_seen(s, {chem: MONDAY})
    with db.session() as s:
        record_last_seen(s, {chem: MONDAY - timedelta(hours=1), haem: MONDAY - timedelta(hours=1)})
        record_last_seen(s, {uuid.uuid4(): MONDAY})  # a device since removed: nothing happens
    stored = devices(db)
    assert stored["Chemistry"].last_seen_at == MONDAY
    assert stored["Haematology"].last_seen_at == MONDAY - timedelta(hours=1)
    with db.session() as s:
        record_last_seen(s, {chem: MONDAY + timedelta(seconds=1)})
    assert devices(db)["Chemistry"].last_seen_at == MONDAY + timedelta(seconds=1)


# --- QC runs -----------------------------------------------------------------------------------

HORIBA_QC = Path(__file__).parent.parent / "fixtures/astm/written/horiba_style_qc_ctrl_medium.astm"
SOURCE = "HORIBA_YUMIZEN_H500"


@pytest.fixture
def qc_setup(db: Database) -> dict[str, Any]:
    """Catalogue tests WBC and HGB, control lots, one device and one stored message."""
    ids: dict[str, Any] = {}
    with db.session() as s:
        for code, unit in (("WBC", "10^9/L"), ("HGB", "g/dL")):
            haem, numeric = m.CatalogueCategory.HAEMATOLOGY, m.ValueType.NUMERIC
            test = m.CatalogueTest(
                code=code, name=code, category=haem, value_type=numeric, unit=unit
            )
            s.add(test)
            s.flush()
            ids[code] = test.id
        for name, lot_number in (
            ("CTRL MEDIUM", "QX123N"),
            ("CTRL LOW", "QX123N"),  # the same lot number for another material
            ("CTRL HIGH", "H-1"),
            ("Difftrol", "D-7"),  # one name, two manufacturers: both have lot D-7
            ("Difftrol", "D-7"),
        ):
            s.add(material := m.QcMaterial(id=uuid.uuid4(), name=name))
            s.flush()
            s.add(lot := m.QcLot(material_id=material.id, lot_number=lot_number))
            s.flush()
            ids.setdefault(f"lot:{name}", lot.id)
    ids["device"] = sync(db, (HAEM,))["Haematology"].id
    inbox = Inbox(db)
    try:
        raw = HORIBA_QC.read_bytes()
        meta = MessageMeta(sender="Haematology", message_type="ASTM")
        ids["message"] = inbox.accept(raw, "astm", "serial:/dev/ttyUSB0", meta)
        for n in (2, 3, 4):  # other messages (their bytes differ by trailing CRs)
            ids[f"message{n}"] = inbox.accept(raw + b"\r" * (n - 1), "astm", "serial:x", meta)
    finally:
        inbox.close()
    return ids


def table(ids: dict[str, Any]) -> MappingTable:
    return MappingTable(
        entries=(
            CatalogueEntry(ids["WBC"], "WBC", "WBC", "10^9/L", decimals=2),
            CatalogueEntry(ids["HGB"], "HGB", "HGB", "g/dL", decimals=1),
        ),
        rules=(MappingRule(SOURCE, "WBC", "10E3/uL", ids["WBC"], "10^9/L"),),
    )


def qc_input(ids: dict[str, Any], **changes: Any) -> QcInput:
    (run,) = DRIVERS["horiba_yumizen_h500"].parse(HORIBA_QC.read_bytes()).qc_runs
    run = dataclasses.replace(run, **changes)
    return QcInput(run, map_observations(run.observations, SOURCE, table(ids)))


def save(db: Database, ids: dict[str, Any], *runs: QcInput, message: str = "message") -> list[Any]:
    with db.session() as s:
        return save_qc_runs(
            s, message_id=ids[message], device_id=ids["device"], runs=runs, received_at=MONDAY
        )


def test_qc_run_is_stored_with_mapped_results_and_its_lot(
    db: Database, qc_setup: dict[str, Any]
) -> None:
    wbc, hgb, plt = qc_input(qc_setup).run.observations
    flagged = dataclasses.replace(plt, abnormal_flags=("H", "A"))  # flags are joined with ~
    item = qc_input(qc_setup, observations=(wbc, hgb, flagged))
    (run_id,) = save(db, qc_setup, item)
    (run,) = rows(db, m.QcRun)
    assert (run.id, run.device_id, run.inbound_message_id, run.status) == (
        run_id,
        qc_setup["device"],
        qc_setup["message"],
        m.QcStatus.PENDING,
    )
    assert (run.sample_id, run.control, run.lot_number) == ("QX123N", "CTRL MEDIUM", "QX123N")
    assert run.lot_id == qc_setup["lot:CTRL MEDIUM"]  # not CTRL LOW's lot of the same number
    assert run.run_at == datetime(2025, 3, 4, 8, 4, tzinfo=UTC)
    results = sorted(rows(db, m.QcResult), key=lambda r: r.id)
    assert [
        (r.source_code, r.test_id, r.value_text, r.unit, r.abnormal_flags) for r in results
    ] == [
        ("WBC", qc_setup["WBC"], "7.95", "10^9/L", "N"),  # by the sender's rule
        ("HGB", qc_setup["HGB"], "13.1", "g/dL", "N"),  # by the catalogue's own code and unit
        ("PLT", None, "305", "10E3/uL", "H~A"),  # unknown code: kept as sent, unmapped
    ]
    assert [r.value_numeric for r in results] == [Decimal("7.95"), Decimal("13.1"), Decimal(305)]
    assert {r.run_id for r in results} == {run_id}


def test_qc_is_written_once_per_message(db: Database, qc_setup: dict[str, Any]) -> None:
    first = save(db, qc_setup, qc_input(qc_setup), qc_input(qc_setup, sample_id="QX999"))
    assert len(first) == 2
    assert save(db, qc_setup, qc_input(qc_setup)) == []  # a redelivered message
    assert len(rows(db, m.QcRun)) == 2
    assert len(rows(db, m.QcResult)) == 6
    assert save(db, qc_setup) == []  # no runs: nothing written, not even for a new message
    # The analyzer sent the same run again in a new message (its ACK was lost): counted once.
    assert save(db, qc_setup, qc_input(qc_setup), message="message2") == []
    later = qc_input(qc_setup).run.run_at + timedelta(hours=8)
    assert len(save(db, qc_setup, qc_input(qc_setup, run_at=later), message="message2")) == 1
    assert len(rows(db, m.QcRun)) == 3
    # Without the analyzer's own time a run cannot be told from a resend: both are kept.
    undated = qc_input(qc_setup, run_at=None, sample_id="QX-U")
    save(db, qc_setup, undated, message="message3")
    save(db, qc_setup, undated, message="message4")
    assert len(rows(db, m.QcRun, m.QcRun.sample_id == "QX-U")) == 2


@pytest.mark.parametrize(
    ("control", "lot", "expected"),
    [
        (" ctrl medium ", " QX123N ", "lot:CTRL MEDIUM"),  # case and spaces do not matter
        ("CTRL HIGH", "H-1", "lot:CTRL HIGH"),
        (None, "H-1", "lot:CTRL HIGH"),  # no control sent: the lot number alone, if unique
        (None, "QX123N", None),  # two materials have that lot number: a person decides
        ("Difftrol", "D-7", None),  # two lots of materials with that name
        ("CTRL HIGH", "QX123N", None),  # the number exists, not for this control
        ("CTRL MEDIUM", None, None),
        ("CTRL MEDIUM", "", None),
    ],
)
def test_qc_lot_is_linked_only_when_one_lot_matches(
    db: Database,
    qc_setup: dict[str, Any],
    control: str | None,
    lot: str | None,
    expected: str | None,
) -> None:
    save(db, qc_setup, qc_input(qc_setup, control=control, lot=lot))
    (run,) = rows(db, m.QcRun)
    assert run.lot_id == (None if expected is None else qc_setup[expected])
    # Kept as sent, without the padding some analyzers add.
    assert (run.control, run.lot_number) == (
        control.strip() if control else None,
        lot.strip() if lot else None,
    )


def test_qc_run_without_a_time_is_dated_by_its_arrival(
    db: Database, qc_setup: dict[str, Any]
) -> None:
    save(db, qc_setup, qc_input(qc_setup, run_at=None, sample_id="S" * 80))
    (run,) = rows(db, m.QcRun)
    assert (run.run_at, run.sample_id) == (MONDAY, "S" * 64)


# --- pending orders for a host query -----------------------------------------------------------


def order(placer: str | None, accession: str | None, *items: str, **kw: Any) -> OrderIn:
    fields: dict[str, Any] = {"source": "pms:test", "ordered_at": MONDAY, **kw}
    return OrderIn(placer_number=placer, accession_number=accession, items=items, **fields)


def place(db: Database, *orders: OrderIn) -> uuid.UUID:
    with db.session() as s:
        for o in orders:
            row, _ = upsert_order(s, o, actor="test")
        return row.id


BELLA: dict[str, Any] = dict(patient_pms_id="PMS-1", patient_name="Bella", owner_surname="Smith")
BELLA |= dict(species="canine", sex=Sex.FEMALE, birth_date=date(2019, 3, 14))


@pytest.fixture
def host_orders(db: Database) -> None:
    place(db, order("P-1", "ACC-1", "CBC", "T4", **BELLA))
    place(db, order("P-2", None, "SDMA"))
    place(db, order("P-3", "ACC-3", "CBC", action="cancel"))
    place(db, order("P-4", "ACC-4", "CBC", "T4"), order("P-4", None, "T4", action="cancel"))
    place(db, order("P-1", None, "UPC", source="pms:other"))  # placer numbers are per source
    resulted = place(db, order("P-5", "ACC-5", "CBC", "T4"))
    all_resulted = place(db, order("P-6", "ACC-6", "CBC"))
    completed = place(db, order("P-7", "ACC-7", "CBC"))
    deleted = place(db, order("P-8", "ACC-8", "CBC"))
    item_deleted = place(db, order("P-9", "ACC-9", "CBC", "T4"))
    # Nothing in src marks a test resulted or an order completed yet: done here by hand.
    item, row, done = m.OrderItem, m.DiagnosticOrder, m.OrderItemStatus.RESULTED
    with db.session() as s:
        update(s, item, item.order_id == resulted, item.ordered_code == "CBC", status=done)
        update(s, item, item.order_id == all_resulted, status=done)
        update(s, item, item.order_id == item_deleted, item.ordered_code == "T4", deleted_at=MONDAY)
        update(s, row, row.id == completed, status=m.OrderStatus.COMPLETED)
        update(s, row, row.id == deleted, deleted_at=MONDAY)


def pending(db: Database, sample_id: str) -> list[PendingOrder]:
    with db.session(readonly=True) as s:
        return pending_for_sample(s, sample_id)


def summary(found: list[PendingOrder]) -> set[tuple[str | None, tuple[str, ...]]]:
    return {(p.placer_number, tuple(sorted(code for _, code in p.tests))) for p in found}


@pytest.mark.parametrize(
    ("sample_id", "expected"),
    [
        ("ACC-1", {("P-1", ("CBC", "T4"))}),
        ("  ACC-1 ", {("P-1", ("CBC", "T4"))}),  # padded as some analyzers send it
        ("P-2", {("P-2", ("SDMA",))}),  # no accession: the placer number is on the tube
        ("P-1", {("P-1", ("CBC", "T4")), ("P-1", ("UPC",))}),  # both sources' orders
        ("ACC-3", set()),  # cancelled order
        ("ACC-4", {("P-4", ("CBC",))}),  # cancelled test left out
        ("ACC-5", {("P-5", ("T4",))}),  # resulted test left out
        ("ACC-6", set()),  # every test resulted
        ("ACC-7", set()),  # completed order
        ("ACC-8", set()),  # deleted order
        ("ACC-9", {("P-9", ("CBC",))}),  # deleted test left out
        ("acc-1", set()),  # specimen ids are exact
        ("NOPE", set()),
        ("", set()),
        ("   ", set()),
    ],
)
def test_pending_for_sample(
    db: Database,
    host_orders: None,
    sample_id: str,
    expected: set[tuple[str | None, tuple[str, ...]]],
) -> None:
    found = pending(db, sample_id)
    assert summary(found) == expected
    assert len(found) == len(expected)
    assert all(p.sample_id == sample_id.strip() for p in found)


def test_pending_order_carries_the_patient_for_the_answer(db: Database, host_orders: None) -> None:
    (found,) = pending(db, "ACC-1")
    assert {key: getattr(found, key) for key in BELLA} == BELLA
    assert sorted(found.tests, key=lambda t: t[1]) == [(None, "CBC"), (None, "T4")]  # unmapped


# --- the silence watch -------------------------------------------------------------------------


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Arrivals:
    """Stands in for ``AnalyzerIntake.take_seen``: arrivals noted since the last round."""

    def __init__(self) -> None:
        self.noted: dict[uuid.UUID, datetime] = {}

    def take(self) -> dict[uuid.UUID, datetime]:
        taken, self.noted = self.noted, {}
        return taken


def make_watch(
    db: Database, clock: Clock, arrivals: Arrivals, hours: str = "", alerts: list[int] | None = None
) -> SilenceWatch:
    on_alert = None if alerts is None else (lambda: alerts.append(1))
    return SilenceWatch(
        db, arrivals.take, parse_opening_hours(hours), CONTACTS, clock=clock, on_alert=on_alert
    )


HOURLY = AnalyzerConfig(name="Chemistry", sender_id="CHEM1", quiet_minutes=60)


def heard_at(
    db: Database, start: datetime, hours: str = ""
) -> tuple[SilenceWatch, Clock, Arrivals, uuid.UUID]:
    """``HOURLY`` configured and heard from at ``start``, the watch's first round run."""
    chem = sync(db, (HOURLY,))["Chemistry"].id
    clock, arrivals = Clock(start), Arrivals()
    arrivals.noted = {chem: start}
    watch = make_watch(db, clock, arrivals, hours)
    assert watch.run_once() == (0, 0)
    return watch, clock, arrivals, chem


def silence_alerts(db: Database) -> list[m.Alert]:
    return rows(db, m.Alert, m.Alert.kind == m.AlertKind.OPERATIONAL)


def pages_of(db: Database, alert_id: uuid.UUID) -> list[m.Page]:
    return sorted(rows(db, m.Page, m.Page.alert_id == alert_id), key=lambda p: p.id)


def test_a_silent_analyzer_raises_one_alert_paging_each_it_contact(db: Database) -> None:
    views = sync(db, (HOURLY, HOURLY.model_copy(update={"name": "Other", "sender_id": "O"})))
    chem, other = views["Chemistry"].id, views["Other"].id
    clock, arrivals = Clock(MONDAY), Arrivals()
    raised: list[int] = []
    watch = make_watch(db, clock, arrivals, alerts=raised)
    arrivals.noted = {chem: MONDAY, other: MONDAY + timedelta(minutes=30)}
    assert watch.run_once() == (0, 0)
    assert devices(db)["Chemistry"].last_seen_at == MONDAY
    clock.now = MONDAY + timedelta(minutes=59, seconds=59)
    assert watch.run_once() == (0, 0)
    clock.now = MONDAY + timedelta(minutes=60)
    assert watch.run_once() == (1, 0)
    assert raised == [1]
    (alert,) = silence_alerts(db)
    assert (alert.device_id, alert.state, alert.level) == (chem, m.AlertState.OPEN, 1)
    assert alert.next_action_at is None  # the rota pager's escalation never picks it up
    assert alert.summary.startswith("Analyzer 'Chemistry' has sent nothing for 60 min")
    assert "(last message: 2026-03-02T09:00+00:00)" in alert.summary
    pages = pages_of(db, alert.id)
    assert [(p.channel, p.target, p.status, p.level, p.attempts) for p in pages] == [
        (m.PageChannel.EMAIL, "it@example.org", m.PageStatus.PENDING, 1, 0),
        (m.PageChannel.SMS, "+15550001", m.PageStatus.PENDING, 1, 0),
    ]
    assert {(p.veterinarian_id, p.next_attempt_at) for p in pages} == {(None, clock.now)}
    assert audit_actions(db, "alert") == [("alert.device_silent", str(alert.id))]
    with db.session(readonly=True) as s:
        assert open_silence_alerts(s) == {chem: alert.id}
    clock.now = MONDAY + timedelta(hours=5)  # still quiet: only "Other" (quiet since 09:30) is new
    assert watch.run_once() == (1, 0)
    assert watch.run_once() == (0, 0)
    assert {a.device_id for a in silence_alerts(db)} == {chem, other}
    assert (len(pages_of(db, alert.id)), raised) == (2, [1, 1])


class Recording:
    def __init__(self, kind: m.PageChannel) -> None:
        self.kind = kind
        self.sent: list[Notification] = []

    def deliver(self, notification: Notification) -> None:
        self.sent.append(notification)


def test_the_pager_delivers_silence_pages_but_never_escalates(db: Database) -> None:
    watch, clock, _, _ = heard_at(db, MONDAY)
    clock.now = MONDAY + timedelta(hours=1)
    assert watch.run_once() == (1, 0)
    email, sms = Recording(m.PageChannel.EMAIL), Recording(m.PageChannel.SMS)
    channels = {m.PageChannel.EMAIL: email, m.PageChannel.SMS: sms}
    later = MONDAY + timedelta(days=2)
    pager = Pager(
        db, channels, timeout=timedelta(minutes=5), poll=0.01, default_clinic="main",
        link_maker=lambda alert_id, page_id: None, clock=lambda: later,
    )  # fmt: skip
    assert pager.escalate_due() == 0
    assert pager.deliver_due() == 2
    assert [(n.target, n.level) for n in email.sent + sms.sent] == [
        ("it@example.org", 1),
        ("+15550001", 1),
    ]
    assert email.sent[0].subject.startswith("Analyzer 'Chemistry' has sent nothing")
    (alert,) = silence_alerts(db)
    assert (alert.level, alert.next_action_at) == (1, None)
    assert {p.status for p in pages_of(db, alert.id)} == {m.PageStatus.SENT}


def test_heard_again_resolves_the_alert_and_cancels_unsent_pages(db: Database) -> None:
    watch, clock, arrivals, chem = heard_at(db, MONDAY)
    clock.now = MONDAY + timedelta(hours=1)
    assert watch.run_once() == (1, 0)
    (alert,) = silence_alerts(db)
    email, sms = pages_of(db, alert.id)
    with db.session() as s:  # the e-mail went out already, the SMS not yet
        update(s, m.Page, m.Page.id == email.id, status=m.PageStatus.SENT)
        update(s, m.Alert, state=m.AlertState.ACKNOWLEDGED)  # acknowledged still clears
    heard = MONDAY + timedelta(minutes=61)
    arrivals.noted = {chem: heard}
    clock.now = MONDAY + timedelta(minutes=62)
    assert watch.run_once() == (0, 1)
    assert devices(db)["Chemistry"].last_seen_at == heard
    (alert,) = silence_alerts(db)
    assert alert.state is m.AlertState.RESOLVED
    email, sms = pages_of(db, alert.id)
    assert (email.status, email.last_error) == (m.PageStatus.SENT, None)
    assert (sms.status, sms.last_error, sms.next_attempt_at) == (m.PageStatus.FAILED, CLEARED, None)
    silent_heard = [("alert.device_silent", str(alert.id)), ("alert.device_heard", str(alert.id))]
    assert audit_actions(db, "alert") == silent_heard
    assert watch.run_once() == (0, 0)
    # Quiet again for its limit: a new alert, the old one stays resolved.
    clock.now = heard + timedelta(hours=1)
    assert watch.run_once() == (1, 0)
    assert sorted(a.state.value for a in silence_alerts(db)) == ["open", "resolved"]


def test_closed_hours_do_not_count(db: Database) -> None:
    watch, clock, _, _ = heard_at(db, FRIDAY_LATE, WEEKDAYS)  # half an hour before closing
    for now in (
        datetime(2026, 3, 6, 23, 0, tzinfo=UTC),  # Friday night
        datetime(2026, 3, 8, 12, 0, tzinfo=UTC),  # Sunday: 42 hours of wall time
        datetime(2026, 3, 9, 8, 29, tzinfo=UTC),  # Monday: 30 + 29 minutes open
    ):
        clock.now = now
        assert watch.run_once() == (0, 0), now
    clock.now = datetime(2026, 3, 9, 8, 30, tzinfo=UTC)
    assert watch.run_once() == (1, 0)


def test_an_analyzer_without_quiet_limit_never_alerts(db: Database) -> None:
    (view,) = sync(db, (CHEM.model_copy(update={"quiet_minutes": None}),)).values()
    clock = Clock(view.created_at + timedelta(days=365))
    assert make_watch(db, clock, Arrivals()).run_once() == (0, 0)
    assert silence_alerts(db) == []
    assert not is_silent(view, parse_opening_hours(""), clock.now)


def test_a_device_never_seen_counts_from_its_creation(db: Database) -> None:
    (view,) = sync(db, (HOURLY,)).values()
    assert view.last_seen_at is None
    clock = Clock(view.created_at + timedelta(minutes=59))
    watch = make_watch(db, clock, Arrivals())
    assert watch.run_once() == (0, 0)
    clock.now = view.created_at + timedelta(minutes=60)
    assert watch.run_once() == (1, 0)
    (alert,) = silence_alerts(db)
    assert "(last message: never)" in alert.summary


def test_is_silent_measures_from_last_seen_else_created() -> None:
    always = parse_opening_hours("")
    view = DeviceView(
        uuid.uuid4(), "Chemistry", "generic_astm", "CHEM1", "listener", None, 3600, None, MONDAY
    )
    assert is_silent(view, always, MONDAY + timedelta(hours=1))
    assert not is_silent(view, always, MONDAY + timedelta(minutes=59))
    seen = dataclasses.replace(view, last_seen_at=MONDAY + timedelta(minutes=30))
    assert not is_silent(seen, always, MONDAY + timedelta(hours=1))
    assert is_silent(seen, always, MONDAY + timedelta(minutes=90))
    assert not is_silent(seen, always, MONDAY)  # seen "after" now: clocks differ, not silent


def test_a_deactivated_analyzer_is_not_watched(db: Database) -> None:
    (view,) = sync(db, (HOURLY,)).values()
    sync(db, ())
    clock = Clock(view.created_at + timedelta(days=2))
    assert make_watch(db, clock, Arrivals()).run_once() == (0, 0)
    assert silence_alerts(db) == []


def test_an_analyzer_removed_while_silent_has_its_alert_resolved(db: Database) -> None:
    watch, clock, _arrivals, chem = heard_at(db, MONDAY)
    clock.now = MONDAY + timedelta(hours=1)
    assert watch.run_once() == (1, 0)
    sync(db, ())  # taken out of the config: it will never be heard from again
    assert watch.run_once() == (0, 1)
    (alert,) = silence_alerts(db)
    assert (alert.device_id, alert.state) == (chem, m.AlertState.RESOLVED)
    assert {p.status for p in pages_of(db, alert.id)} == {m.PageStatus.FAILED}


class FailingOnce:
    """A database whose next session fails as if the server were down, then works again."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.fail = True

    def session(self, *, readonly: bool = False) -> AbstractContextManager[Session]:
        if self.fail:
            self.fail = False
            raise StorageUnavailable("database unavailable: test")
        return self.db.session(readonly=readonly)


def test_arrivals_taken_in_a_failed_round_are_written_in_the_next(db: Database) -> None:
    chem = sync(db, (HOURLY,))["Chemistry"].id
    clock, arrivals = Clock(MONDAY), Arrivals()
    flaky = cast(Database, FailingOnce(db))
    watch = SilenceWatch(flaky, arrivals.take, parse_opening_hours(""), CONTACTS, clock=clock)
    arrivals.noted = {chem: MONDAY}
    with pytest.raises(StorageUnavailable):
        watch.run_once()
    assert arrivals.noted == {}  # taken from the intake, so only the watch still has them
    arrivals.noted = {chem: MONDAY - timedelta(minutes=5)}  # an older arrival noted meanwhile
    clock.now = MONDAY + timedelta(minutes=59)
    assert watch.run_once() == (0, 0)
    assert devices(db)["Chemistry"].last_seen_at == MONDAY


def test_stop_writes_the_newest_arrival_after_a_failed_round(db: Database) -> None:
    chem = sync(db, (HOURLY,))["Chemistry"].id
    clock, arrivals = Clock(MONDAY), Arrivals()
    flaky = cast(Database, FailingOnce(db))
    watch = SilenceWatch(flaky, arrivals.take, parse_opening_hours(""), CONTACTS, clock=clock)
    arrivals.noted = {chem: MONDAY}
    with pytest.raises(StorageUnavailable):
        watch.run_once()
    arrivals.noted = {chem: MONDAY + timedelta(minutes=5)}  # heard again, then shut down
    watch.stop()
    assert devices(db)["Chemistry"].last_seen_at == MONDAY + timedelta(minutes=5)
