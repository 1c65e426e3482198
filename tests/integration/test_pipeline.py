"""The pipeline in process on both back ends: inbox row → dispatcher → Dramatiq (stub broker,
real worker threads) → parse, map, match, persist → read back over the API.

Covers RELIABILITY R21 (required field missing), R23 (corrected result), R36 (unknown code),
R37 (unit mismatch), R38 (patient not found), R39 (two candidate patients), and exactly-once
processing of a message delivered twice.
"""

from __future__ import annotations

import base64
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.integration.api_support import TestClient, bearer, build_app, issue
from tests.oru import PANEL, vet_oru
from vetgateway.config import Settings
from vetgateway.model import Sex
from vetgateway.pipeline.parse.orm import OrderIn
from vetgateway.pipeline.process import Outcome
from vetgateway.pipeline.rematch import rematch_for_order
from vetgateway.pipeline.runtime import Pipeline
from vetgateway.store.catalogue import load_catalogue
from vetgateway.store.db import Database
from vetgateway.store.inbox import Inbox, MessageMeta
from vetgateway.store.models import (
    AuditEntry,
    DiagnosticOrder,
    DiagnosticReport,
    InboundMessage,
    LabResult,
    MessageStatus,
    Role,
)
from vetgateway.store.models.reports import MappingStatus, MatchStatus
from vetgateway.store.orders import upsert_order

FIXTURES = Path(__file__).parent.parent / "fixtures" / "hl7"
ORDERED_AT = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


@dataclass
class Harness:
    db: Database
    pipeline: Pipeline
    inbox: Inbox
    client: TestClient
    token: str

    def send(self, raw: bytes, message_type: str = "ORU^R01") -> int:
        meta = MessageMeta(control_id=uuid.uuid4().hex, sender="LIS|LAB", message_type=message_type)
        message_id = int(self.inbox.accept(raw, "test", "peer", meta))
        self.drain()
        return message_id

    def drain(self) -> None:
        """Dispatch what is due and wait until the worker has processed all of it."""
        assert self.pipeline.dispatcher is not None
        self.pipeline.dispatcher.dispatch_due()
        self.pipeline.broker.join(self.pipeline.settings.broker_queue)  # type: ignore[attr-defined]
        assert self.pipeline.worker is not None
        self.pipeline.worker.join()

    def message(self, message_id: int) -> InboundMessage:
        with self.db.session(readonly=True) as session:
            row = session.get(InboundMessage, message_id)
            assert row is not None
            session.expunge(row)
            return row

    def reports(self) -> list[DiagnosticReport]:
        with self.db.session(readonly=True) as session:
            rows = session.scalars(sa.select(DiagnosticReport).order_by(DiagnosticReport.version))
            found = list(rows)
            session.expunge_all()
            return found

    def results(self, report_id: uuid.UUID) -> dict[str, LabResult]:
        with self.db.session(readonly=True) as session:
            rows = session.scalars(sa.select(LabResult).where(LabResult.report_id == report_id))
            found = {r.source_code: r for r in rows}
            session.expunge_all()
            return found

    def get(self, path: str, **params: Any) -> Any:
        response = self.client.get(path, params=params, headers=bearer(self.token))
        assert response.status_code == 200, response.text
        return response.json()

    def order(self, accession: str, **fields: Any) -> uuid.UUID:
        defaults = {"placer_number": accession, "patient_pms_id": "PMS-4711"}
        order = OrderIn(
            source="PMS",
            accession_number=accession,
            ordered_at=ORDERED_AT,
            **(defaults | {"patient_name": "Rex", "species": "canine"} | fields),
        )
        with self.db.session() as session:
            row, _created = upsert_order(session, order, actor="test")
            return row.id


@pytest.fixture
def harness(db: Database, tmp_path: Path) -> Iterator[Harness]:
    with db.session() as session:
        load_catalogue(session)
    settings = Settings(data_dir=tmp_path, database_url=db.url, broker_queue="test.pipeline")
    pipeline = Pipeline(settings, db, dispatch=True, work=True)
    assert pipeline.worker is not None
    pipeline.worker.start()
    inbox = Inbox(db)
    app = build_app(db, tmp_path)
    try:
        with TestClient(app) as client:
            yield Harness(db, pipeline, inbox, client, issue(db, Role.TECHNICIAN))
    finally:
        inbox.close()
        pipeline.stop()


def test_a_report_matched_by_accession_is_mapped_and_served(harness: Harness) -> None:
    patient = uuid.uuid4()
    order_id = harness.order("A-100", patient_id=patient)
    message_id = harness.send(vet_oru("C1", accession="A-100"))

    assert harness.message(message_id).status is MessageStatus.PROCESSED
    [report] = harness.reports()
    assert report.order_id == order_id
    assert report.patient_id == patient
    assert report.match_rule == "accession"
    assert report.species == "canine"
    results = harness.results(report.id)
    assert len(results) == len(PANEL)
    glucose = results["GLUC"]
    assert glucose.mapping_status is MappingStatus.MAPPED
    assert glucose.value_text == "97"
    assert glucose.unit == "mmol/L"
    assert glucose.source_unit == "mg/dL"
    assert glucose.value_numeric == Decimal("5.384")  # 97 mg/dL x 0.0555
    assert results["CA"].lab_flags == "H"

    page = harness.get("/api/v1/results", accession="A-100")
    assert len(page["items"]) == len(PANEL)
    served = {item["source_code"]: item for item in page["items"]}
    assert served["GLUC"]["test_code"] == "GLU"
    # Numbers as the lab prints them, the same from SQLite (scale 10) and PostgreSQL.
    assert served["GLUC"]["value_numeric"] == "5.384"
    alt = served["ALT"]
    assert (alt["value_numeric"], alt["lab_low"], alt["lab_high"]) == ("45", "10", "125")
    assert served["GLUC"]["patient_id"] == str(patient)
    detail = harness.get(f"/api/v1/reports/{report.id}")
    assert detail["match_rule"] == "accession"
    assert [v["version"] for v in detail["versions"]] == [1]
    assert {r["test_code"] for r in detail["results"]} >= {"GLU", "CREA", "UREA"}


def test_a_report_matched_by_placer_number_is_served_under_the_orders_accession(
    harness: Harness,
) -> None:
    """The lab sends its own specimen number (OBR-18) beside the clinic's placer number: the
    report matches by placer number, keeps the lab's accession, and a PMS asking by the
    accession it ordered under still gets the results, as does one asking by the lab's."""
    order_id = harness.order("CLINIC-77", placer_number="PL-77")
    lab_oru = vet_oru("C1", accession="LAB-5550").replace(b"|LAB-5550|", b"|PL-77|", 2)
    harness.send(lab_oru)

    [report] = harness.reports()
    assert (report.order_id, report.match_rule) == (order_id, "placer")
    assert report.accession_number == "LAB-5550"
    by_order = harness.get("/api/v1/results", accession="CLINIC-77")["items"]
    by_lab = harness.get("/api/v1/results", accession="LAB-5550")["items"]
    assert len(by_order) == len(PANEL)
    assert [i["id"] for i in by_order] == [i["id"] for i in by_lab]
    assert {i["order_id"] for i in by_order} == {str(order_id)}
    assert harness.get("/api/v1/results", accession="PL-77")["items"] == []


def test_an_embedded_pdf_is_stored_once_as_an_attachment_and_named_in_the_results(
    harness: Harness,
) -> None:
    """OBX ED with a base64 PDF: the bytes are served from the report's attachment; the result
    names it instead of carrying the base64 text into every results poll."""
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"
    ed = f"OBX|21|ED|PDF^Report||^application^pdf^Base64^{base64.b64encode(pdf).decode()}||||||F"
    harness.order("ED-1")
    harness.send(vet_oru("ED1", accession="ED-1") + ed.encode() + b"\r")
    [report] = harness.reports()
    detail = harness.get(f"/api/v1/reports/{report.id}")
    [attachment] = detail["attachments"]
    assert (attachment["content_type"], attachment["size"]) == ("application/pdf", len(pdf))
    served = harness.client.get(attachment["url"], headers=bearer(harness.token))
    assert served.status_code == 200
    assert served.content == pdf
    assert served.headers["content-type"] == "application/pdf"
    [named] = [
        r
        for r in harness.get("/api/v1/results", accession="ED-1")["items"]
        if r["source_code"] == "PDF"
    ]
    assert named["value_type"] == "ED"
    assert named["value"].startswith(f"[application/pdf, {len(pdf):,} bytes, sha256 ")
    assert len(named["value"]) < 120
    assert harness.results(report.id)["GLUC"].value_text == "97"  # other values as sent


def test_processing_twice_writes_once(harness: Harness) -> None:
    message_id = harness.send(vet_oru("C1", accession="A-1"))
    assert harness.pipeline.processor.process(message_id) is Outcome.SKIPPED
    harness.pipeline.actors.send([message_id])  # a redelivery through the broker
    harness.drain()
    assert len(harness.reports()) == 1


def test_concurrent_deliveries_of_one_message_write_once(harness: Harness) -> None:
    inbox_id = int(harness.inbox.accept(vet_oru("C9", accession="A-9"), "test", "peer"))
    outcomes: list[Outcome] = []
    start = threading.Barrier(4)

    def deliver() -> None:
        start.wait()
        outcomes.append(harness.pipeline.processor.process(inbox_id))

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(o.value for o in outcomes).count("skipped") == 3
    [report] = harness.reports()
    assert len(harness.results(report.id)) == len(PANEL)


def test_r21_empty_obx3_is_quarantined_naming_the_field_and_kept(harness: Harness) -> None:
    raw = vet_oru("C2", accession="A-2").replace(b"OBX|2|NM|BUN^Urea nitrogen^L|", b"OBX|2|NM||")
    message_id = harness.send(raw)
    row = harness.message(message_id)
    assert row.status is MessageStatus.QUARANTINED
    assert row.error is not None
    assert "OBX-3" in row.error
    assert row.raw == raw
    assert harness.reports() == []


def test_r21_no_pid_is_allowed_and_matched_by_the_order_number(harness: Harness) -> None:
    """ORU_R01's PATIENT group is optional (v2.5.1): the order number still finds the order."""
    order_id = harness.order("A-3")
    raw = b"\r".join(
        s for s in vet_oru("C3", accession="A-3").split(b"\r") if not s.startswith(b"PID")
    )
    message_id = harness.send(raw)
    assert harness.message(message_id).status is MessageStatus.PROCESSED
    [report] = harness.reports()
    assert report.order_id == order_id


def test_r23_correction_creates_a_version_and_supersedes_the_old_results(
    harness: Harness,
) -> None:
    harness.order("A-4")
    harness.send(vet_oru("C4", accession="A-4"))
    corrected = tuple(
        ("GLUC", "Glucose", "250", "mg/dL", "70-143", "H") if r[0] == "GLUC" else r for r in PANEL
    )
    harness.send(vet_oru("C5", accession="A-4", results=corrected, report_status="C"))

    first, second = harness.reports()
    assert (first.version, second.version) == (1, 2)
    assert second.supersedes_id == first.id
    assert second.order_id == first.order_id  # the match carries over
    old = harness.results(first.id)
    new = harness.results(second.id)
    assert {r.status.value for r in old.values()} == {"superseded"}
    assert new["GLUC"].value_text == "250"
    assert new["GLUC"].supersedes_id == old["GLUC"].id
    page = harness.get("/api/v1/results", accession="A-4")
    assert len(page["items"]) == len(PANEL)
    assert {i["report_id"] for i in page["items"]} == {str(second.id)}
    detail = harness.get(f"/api/v1/reports/{second.id}")
    assert [v["version"] for v in detail["versions"]] == [1, 2]


def test_preliminary_then_final_updates_in_place_with_history(harness: Harness) -> None:
    harness.order("A-5")
    harness.send(vet_oru("C6", accession="A-5", report_status="P"))
    final = tuple(
        ("CREAT", "Creatinine", "2.4", "mg/dL", "0.5-1.8", "H") if r[0] == "CREAT" else r
        for r in PANEL
    )
    harness.send(vet_oru("C7", accession="A-5", results=final, report_status="F"))
    [report] = harness.reports()
    assert report.status.value == "final"
    results = harness.results(report.id)
    assert len(results) == len(PANEL)
    assert results["CREAT"].value_text == "2.4"
    assert {r.status.value for r in results.values()} == {"final"}
    with harness.db.session(readonly=True) as session:
        [entry] = session.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == "report.updated")
        ).all()
        changes = {c["code"]: c for c in entry.details["changed"]}
    assert changes["CREAT"]["from"]["value_text"] == "1.1"
    assert changes["CREAT"]["to"]["value_text"] == "2.4"
    assert changes["GLUC"]["from"] == {"status": "preliminary"}


def test_r36_unknown_code_is_kept_unmapped_with_the_reason(harness: Harness) -> None:
    harness.order("A-6")
    results = (*PANEL[:2], ("XYZZY", "Mystery", "12.5", "mg/dL", "1-10", "H"))
    message_id = harness.send(vet_oru("C8", accession="A-6", results=results))
    assert harness.message(message_id).status is MessageStatus.PROCESSED
    [report] = harness.reports()
    unknown = harness.results(report.id)["XYZZY"]
    assert unknown.mapping_status is MappingStatus.UNMAPPED
    assert unknown.test_id is None
    assert unknown.value_text == "12.5"
    assert unknown.value_numeric == Decimal("12.5")
    assert unknown.unit == "mg/dL"
    assert unknown.mapping_note is not None
    assert "XYZZY" in unknown.mapping_note
    served = harness.get("/api/v1/results", accession="A-6")["items"]
    assert {i["source_code"]: i["mapping_status"] for i in served}["XYZZY"] == "unmapped"
    [task] = harness.get("/api/v1/mappings/unmapped")  # the mapping work list
    assert (task["source"], task["source_code"], task["source_unit"]) == (
        "EXAMPLE_REFLAB",
        "XYZZY",
        "mg/dL",
    )
    assert task["results"] == 1
    assert "XYZZY" in task["reason"]


def test_r37_unit_mismatch_is_not_converted(harness: Harness) -> None:
    harness.order("A-7")
    results = (("GLUC", "Glucose", "0.97", "g/L", "0.7-1.4", "N"),)
    harness.send(vet_oru("C10", accession="A-7", results=results))
    [report] = harness.reports()
    glucose = harness.results(report.id)["GLUC"]
    assert glucose.mapping_status is MappingStatus.UNMAPPED
    assert glucose.value_numeric == Decimal("0.97")  # as sent, never silently converted
    assert glucose.unit == "g/L"
    assert glucose.mapping_note is not None
    assert "g/L" in glucose.mapping_note
    [task] = harness.get("/api/v1/mappings/unmapped")
    assert (task["source_code"], task["source_unit"]) == ("GLUC", "g/L")


def test_r38_patient_not_found_waits_in_the_unmatched_queue_until_attached(
    harness: Harness,
) -> None:
    message_id = harness.send(vet_oru("C11", accession="A-8", pms_id="PMS-NOBODY"))
    assert harness.message(message_id).status is MessageStatus.UNMATCHED
    [queued] = harness.get("/api/v1/unmatched")["items"]
    assert queued["accession_number"] == "A-8"
    assert queued["match_reason"]
    assert harness.get("/api/v1/results", accession="A-8")["items"][0]["order_id"] is None

    order_id = harness.order("B-1", patient_pms_id="PMS-NOBODY")
    response = harness.client.post(
        f"/api/v1/unmatched/{queued['id']}/resolve",
        json={"action": "attach", "order_id": str(order_id)},
        headers=bearer(harness.token),
    )
    assert response.status_code == 200, response.text
    assert response.json()["match_status"] == "matched"
    assert harness.get("/api/v1/unmatched")["items"] == []
    assert harness.message(message_id).status is MessageStatus.PROCESSED
    items = harness.get("/api/v1/results", accession="A-8")["items"]
    assert {i["order_id"] for i in items} == {str(order_id)}
    with harness.db.session(readonly=True) as session:
        [entry] = session.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == "report.matched_by_hand")
        ).all()
    assert entry.actor.startswith("api_token:")
    again = harness.client.post(
        f"/api/v1/unmatched/{queued['id']}/resolve",
        json={"action": "reject", "reason": "late"},
        headers=bearer(harness.token),
    )
    assert again.status_code == 409


def test_r39_two_candidate_patients_are_never_auto_picked(harness: Harness) -> None:
    for pms in ("PMS-1", "PMS-2"):  # two dogs called Rex, both of a Smith
        harness.order(f"O-{pms}", patient_pms_id=pms, owner_surname="Smith")
    # The lab sent no PMS id, only what the owner told it: owner, animal name, species.
    message_id = harness.send(vet_oru("C12", accession="A-9", pms_id=""))
    assert harness.message(message_id).status is MessageStatus.UNMATCHED
    [report] = harness.reports()
    assert report.match_status is MatchStatus.UNMATCHED, report.match_reason
    assert report.order_id is None
    assert report.match_candidates is not None, report.match_reason
    assert len(report.match_candidates) == 2

    response = harness.client.post(
        f"/api/v1/unmatched/{report.id}/resolve",
        json={"action": "reject", "reason": "neither Rex; lab to re-send with the chip"},
        headers=bearer(harness.token),
    )
    assert response.status_code == 200
    assert response.json()["match_status"] == "rejected"
    with harness.db.session(readonly=True) as session:
        [entry] = session.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == "report.rejected")
        ).all()
    assert entry.details["reason"].startswith("neither Rex")
    assert len(entry.details["before"]["candidates"]) == 2


def test_an_hl7_order_then_its_results(harness: Harness) -> None:
    raw = (FIXTURES / "orders" / "vetclinic_orm_o01_canine_three_tests.hl7").read_bytes()
    order_message = harness.send(raw, message_type="ORM^O01")
    assert harness.message(order_message).status is MessageStatus.PROCESSED
    with harness.db.session(readonly=True) as session:
        placers = (
            session.execute(
                sa.text("SELECT placer_number FROM diagnostic_orders ORDER BY placer_number")
            )
            .scalars()
            .all()
        )
    assert placers == ["ORD-1001", "ORD-1002"]
    harness.send(
        vet_oru("C13", accession="ORD-1002", pms_id="PMS-20417", patient="Bella", owner="Smith")
    )
    [report] = harness.reports()
    assert report.match_status is MatchStatus.MATCHED


def test_an_oru_without_any_report_is_quarantined(harness: Harness) -> None:
    raw = b"\r".join(
        s
        for s in vet_oru("C14", accession="A-10").split(b"\r")
        if not s.startswith((b"OBR", b"OBX", b"ORC"))
    )
    message_id = harness.send(raw)
    row = harness.message(message_id)
    assert row.status is MessageStatus.QUARANTINED
    assert row.error is not None
    assert "OBR" in row.error


def test_a_batch_holding_a_preliminary_and_its_final_applies_them_in_order(
    harness: Harness,
) -> None:
    harness.order("A-11")
    final = tuple(
        ("CREAT", "Creatinine", "2.4", "mg/dL", "0.5-1.8", "H") if r[0] == "CREAT" else r
        for r in PANEL
    )
    first = int(harness.inbox.accept(vet_oru("B1", accession="A-11", report_status="P"), "t", "p"))
    second = int(
        harness.inbox.accept(
            vet_oru("B2", accession="A-11", results=final, report_status="F"), "t", "p"
        )
    )
    harness.drain()  # both ids travel in one batch
    assert [harness.message(i).error for i in (first, second)] == [None, None]
    assert {harness.message(i).status for i in (first, second)} == {MessageStatus.PROCESSED}
    [report] = harness.reports()
    assert report.status.value == "final"
    assert harness.results(report.id)["CREAT"].value_text == "2.4"


def test_a_batch_written_a_few_messages_per_transaction_keeps_order_and_atomicity(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite a batch is written a few messages per transaction (``SQLITE_WRITE_CHUNK``):
    a final two transactions after its preliminary still finds and supersedes it."""
    processor = harness.pipeline.processor
    monkeypatch.setattr(processor, "_write_chunk", 2)
    transactions: list[list[int]] = []
    real_write = processor._write

    def counted(prepared: Any, plan: Any) -> Any:
        transactions.append([p.message_id for p in prepared])
        return real_write(prepared, plan)

    monkeypatch.setattr(processor, "_write", counted)
    harness.order("A-21")
    final = tuple(
        ("CREAT", "Creatinine", "2.6", "mg/dL", "0.5-1.8", "H") if r[0] == "CREAT" else r
        for r in PANEL
    )
    sent = [vet_oru("K1", accession="A-21", report_status="P")]
    sent += [vet_oru(f"K{n}", accession=f"OTHER-{n}") for n in (2, 3, 4)]
    sent += [vet_oru("K5", accession="A-21", results=final, report_status="F")]
    ids = [int(harness.inbox.accept(raw, "t", "p")) for raw in sent]
    harness.drain()  # all five ids travel in one batch
    assert transactions == [ids[0:2], ids[2:4], ids[4:5]]
    assert [harness.message(i).error for i in ids] == [None] * 5
    assert harness.message(ids[0]).status == MessageStatus.PROCESSED
    assert harness.message(ids[4]).status == MessageStatus.PROCESSED
    [report] = [r for r in harness.reports() if r.accession_number == "A-21"]
    assert report.status.value == "final"
    assert harness.results(report.id)["CREAT"].value_text == "2.6"


def test_the_write_chunk_defaults_to_a_few_messages_on_sqlite_only(harness: Harness) -> None:
    from vetgateway.pipeline.process import SQLITE_WRITE_CHUNK

    chunk = harness.pipeline.processor._write_chunk
    if harness.db.dialect == "sqlite":
        assert chunk == SQLITE_WRITE_CHUNK
    else:
        assert chunk > 10_000  # the whole batch: PostgreSQL's writers share no lock


def test_a_failing_message_does_not_hold_back_the_rest_of_its_batch(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vetgateway.pipeline import process

    real = process.insert_new_reports

    def refuse_poison(session: Any, items: Any, *, now: datetime) -> Any:
        if any(item.report.order.accession == "POISON" for item, _decision in items):
            raise RuntimeError("a bug that only this message triggers")
        return real(session, items, now=now)

    monkeypatch.setattr(process, "insert_new_reports", refuse_poison)
    ids = [
        int(harness.inbox.accept(vet_oru(f"P{n}", accession=acc), "t", "p"))
        for n, acc in enumerate(["OK-1", "POISON", "OK-2"])
    ]
    harness.drain()
    statuses = [harness.message(i).status for i in ids]
    assert statuses == [MessageStatus.UNMATCHED, MessageStatus.RECEIVED, MessageStatus.UNMATCHED]
    poisoned = harness.message(ids[1])
    assert poisoned.error is not None
    assert "only this message" in poisoned.error
    assert poisoned.next_attempt_at is not None  # backed off, to be retried
    assert {r.accession_number for r in harness.reports()} == {"OK-1", "OK-2"}


def test_results_that_came_before_their_order_are_matched_when_it_arrives(
    harness: Harness,
) -> None:
    message_id = harness.send(vet_oru("C20", accession="LATE-1"))
    assert harness.message(message_id).status is MessageStatus.UNMATCHED

    response = harness.client.post(
        "/api/v1/orders",
        json={
            "source": "PMS",
            "accession_number": "LATE-1",
            "placer_number": "LATE-1",
            "patient_pms_id": "PMS-4711",
            "patient_name": "Rex",
            "species": "canine",
        },
        headers=bearer(harness.token),
    )
    assert response.status_code == 201, response.text
    order_id = response.json()["id"]
    [report] = harness.reports()
    assert report.match_status is MatchStatus.MATCHED
    assert str(report.order_id) == order_id
    assert harness.message(message_id).status is MessageStatus.PROCESSED
    assert harness.get("/api/v1/unmatched")["items"] == []
    with harness.db.session(readonly=True) as session:
        [entry] = session.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == "report.matched_on_order")
        ).all()
    assert entry.details["rule"] == "accession"


def test_an_hl7_order_after_its_results_matches_them(harness: Harness) -> None:
    raw = (FIXTURES / "orders" / "vetclinic_orm_o01_canine_three_tests.hl7").read_bytes()
    result_message = harness.send(
        vet_oru("C21", accession="ORD-1002", pms_id="PMS-20417", patient="Bella", owner="Smith")
    )
    assert harness.message(result_message).status is MessageStatus.UNMATCHED
    harness.send(raw, message_type="ORM^O01")  # ORD-1001 and ORD-1002, both for Bella
    [report] = harness.reports()
    assert report.match_status is MatchStatus.MATCHED
    # By its number, not by Bella's PMS id to whichever of her orders was written first.
    assert report.match_rule == "placer"
    assert _placer_number(harness, report.order_id) == "ORD-1002"
    assert harness.message(result_message).status is MessageStatus.PROCESSED


def _placer_number(harness: Harness, order_id: uuid.UUID | None) -> str:
    assert order_id is not None
    with harness.db.session(readonly=True) as session:
        order = session.get(DiagnosticOrder, order_id)
        assert order is not None
        assert order.placer_number is not None
        return order.placer_number


@pytest.mark.parametrize("order_first", [True, False], ids=["order_first", "results_first"])
@pytest.mark.parametrize("write_chunk", [None, 1], ids=["one_transaction", "one_per_message"])
def test_an_order_and_its_results_in_one_batch_are_matched(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, order_first: bool, write_chunk: int | None
) -> None:
    """After a backlog (a restart, a broker outage) an order and its results often travel in
    one batch. Matching is planned before the batch is written, so the plan cannot know the
    order; the batch's orders are matched again once its reports are written."""
    if write_chunk is not None:
        monkeypatch.setattr(harness.pipeline.processor, "_write_chunk", write_chunk)
    order = (FIXTURES / "orders" / "vetclinic_orm_o01_canine_three_tests.hl7").read_bytes()
    results = vet_oru("C22", accession="ORD-1002", pms_id="PMS-20417", patient="Bella")
    sent = [(order, "ORM^O01"), (results, "ORU^R01")]
    if not order_first:
        sent.reverse()
    ids = [
        int(harness.inbox.accept(raw, "t", "p", MessageMeta(message_type=kind)))
        for raw, kind in sent
    ]
    outcomes = harness.pipeline.processor.process_batch(ids)

    assert set(outcomes.values()) == {Outcome.PROCESSED}
    assert {harness.message(i).status for i in ids} == {MessageStatus.PROCESSED}
    [report] = harness.reports()
    assert report.match_status is MatchStatus.MATCHED
    assert _placer_number(harness, report.order_id) == "ORD-1002"
    assert harness.get("/api/v1/unmatched")["items"] == []


def test_result_times_without_an_offset_are_stored_as_the_clinics_local_time(
    harness: Harness, tmp_path: Path
) -> None:
    """``VETGATEWAY_TIMEZONE`` reaches the parser: the lab's 11:30 (no offset) in a Chicago
    clinic is stored as 17:30 UTC, and served so."""
    settings = Settings(
        data_dir=tmp_path,
        database_url=harness.db.url,
        broker_queue="test.zone",
        timezone="America/Chicago",
    )
    pipeline = Pipeline(settings, harness.db, dispatch=False, work=False)
    try:
        message_id = int(
            harness.inbox.accept(
                vet_oru("TZ1", accession="Z-1", observed="20261126113000"), "t", "p"
            )
        )
        assert pipeline.processor.process_batch([message_id]) == {message_id: Outcome.UNMATCHED}
    finally:
        pipeline.stop()
    [report] = harness.reports()
    assert report.observed_at == datetime(2026, 11, 26, 17, 30, tzinfo=UTC)
    [first, *_] = harness.get("/api/v1/results", accession="Z-1")["items"]
    assert first["observed_at"] == "2026-11-26T17:30:00Z"


def test_a_lab_configured_to_send_our_pms_id_untyped_is_matched_by_it_in_its_zone(
    harness: Harness, tmp_path: Path
) -> None:
    """``VETGATEWAY_HL7_SOURCES`` reaches the parser: a lab that puts its own patient number in
    PID-3 typed PI and echoes the clinic's bare is matched by the clinic's number once it is
    configured so, and its times are read in its own zone; the same message from a lab not
    configured is left to the unmatched queue rather than filed under the lab's number."""
    order_id = harness.order("O-77", patient_pms_id="PMS-4711")
    settings = Settings(
        data_dir=tmp_path,
        database_url=harness.db.url,
        broker_queue="test.sources",
        timezone="America/Chicago",
        hl7_sources=[
            {"source": "EXAMPLE_REFLAB", "timezone": "America/New_York", "pms_id": "untyped"}
        ],
    )
    pipeline = Pipeline(settings, harness.db, dispatch=False, work=False)
    ours_bare = b"L-77^^^EXAMPLE_REFLAB^PI~PMS-4711"
    try:
        ids = [
            int(
                harness.inbox.accept(
                    vet_oru(f"S{n}", accession=f"LAB-{n}", facility=facility).replace(
                        b"PMS-4711^^^CLINIC^PI", ours_bare
                    ),
                    "t",
                    "p",
                )
            )
            for n, facility in enumerate(("EXAMPLE_REFLAB", "OTHERLAB"))
        ]
        outcomes = pipeline.processor.process_batch(ids)
    finally:
        pipeline.stop()
    assert outcomes == {ids[0]: Outcome.PROCESSED, ids[1]: Outcome.UNMATCHED}
    configured, other = sorted(harness.reports(), key=lambda r: r.accession_number or "")
    assert configured.order_id == order_id
    assert configured.match_rule == "pms_id"
    assert configured.patient_pms_id == "PMS-4711"
    assert configured.observed_at == datetime(2026, 11, 26, 16, 30, tzinfo=UTC)  # 11:30 EST
    assert other.order_id is None
    assert other.patient_pms_id == "L-77"
    assert other.observed_at == datetime(2026, 11, 26, 17, 30, tzinfo=UTC)  # the gateway's CST


def test_reports_left_unmatched_before_the_lab_was_configured_match_once_replayed(
    harness: Harness, tmp_path: Path
) -> None:
    """The operator's fix for a lab found sending our PMS id untyped: add its
    ``[[hl7_sources]]`` entry, then replay what waits in the unmatched queue; the replayed
    report is read by the new rule and matched, as one report, not two."""
    from vetgateway.store.messages import replay_message

    order_id = harness.order("O-78", patient_pms_id="PMS-4711")
    raw = vet_oru("U1", accession="LAB-U1").replace(
        b"PMS-4711^^^CLINIC^PI", b"L-77^^^EXAMPLE_REFLAB^PI~PMS-4711"
    )
    message_id = harness.send(raw)
    assert harness.message(message_id).status is MessageStatus.UNMATCHED

    settings = Settings(
        data_dir=tmp_path,
        database_url=harness.db.url,
        broker_queue="test.sources.replay",
        hl7_sources=[{"source": "EXAMPLE_REFLAB", "pms_id": "untyped"}],
    )
    pipeline = Pipeline(settings, harness.db, dispatch=False, work=False)
    try:
        with harness.db.session() as session:
            replayed = replay_message(session, message_id, actor="test")
            assert replayed is not None
            assert replayed.refused is None
        assert pipeline.processor.process_batch([message_id]) == {message_id: Outcome.PROCESSED}
    finally:
        pipeline.stop()
    [report] = harness.reports()
    assert report.order_id == order_id
    assert report.patient_pms_id == "PMS-4711"  # as the new rule reads it, not the lab's L-77
    assert harness.get("/api/v1/unmatched")["items"] == []
    with harness.db.session(readonly=True) as session:
        [entry] = session.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == "report.updated")
        ).all()
    assert entry.details["report_changed"] == {"patient_pms_id": {"from": "L-77", "to": "PMS-4711"}}
    assert entry.details["changed"] == []  # the results themselves are as they were


def test_a_report_replayed_after_its_labs_zone_was_configured_moves_to_the_right_time(
    harness: Harness, tmp_path: Path
) -> None:
    """Times first read in the gateway's zone are read again in the lab's once it is
    configured: the report and every result move, and the audit says from what to what."""
    from vetgateway.store.messages import replay_message

    eastern = datetime(2026, 11, 26, 16, 30, tzinfo=UTC)
    message_id = harness.send(vet_oru("Z2", accession="LAB-Z2", observed="20261126113000"))
    [before] = harness.reports()
    # The harness reads in this host's zone, which the tests pin to UTC (tests/conftest.py).
    assert before.observed_at == datetime(2026, 11, 26, 11, 30, tzinfo=UTC)

    settings = Settings(
        data_dir=tmp_path,
        database_url=harness.db.url,
        broker_queue="test.sources.zone",
        timezone="UTC",
        hl7_sources=[{"source": "EXAMPLE_REFLAB", "timezone": "America/New_York"}],
    )
    pipeline = Pipeline(settings, harness.db, dispatch=False, work=False)
    try:
        with harness.db.session() as session:
            assert replay_message(session, message_id, actor="test") is not None
        pipeline.processor.process_batch([message_id])
    finally:
        pipeline.stop()
    [after] = harness.reports()
    assert after.id == before.id
    assert after.observed_at == eastern
    results = harness.results(after.id)
    assert results
    assert {r.observed_at for r in results.values()} == {eastern}
    with harness.db.session(readonly=True) as session:
        [entry] = session.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == "report.updated")
        ).all()
    assert set(entry.details["report_changed"]) == {"observed_at"}
    assert len(entry.details["changed"]) == len(results)
    assert all(set(c["to"]) == {"observed_at"} for c in entry.details["changed"])


CRITICAL_K = (("K", "Potassium", "8.1", "mEq/L", "3.5-5.8", "H"),)


def _alerts(harness: Harness) -> list[Any]:
    from vetgateway.store.models import Alert

    with harness.db.session(readonly=True) as session:
        found = list(session.scalars(sa.select(Alert).order_by(Alert.created_at)))
        session.expunge_all()
        return found


def test_results_are_interpreted_against_the_species_interval(harness: Harness) -> None:
    harness.order("I-1", species="feline", patient_name="Tom")
    results = (*CRITICAL_K, ("NA", "Sodium", "150", "mEq/L", "144-160", "N"))
    harness.send(vet_oru("K1", accession="I-1", species="Feline", patient="Tom", results=results))
    [report] = harness.reports()
    stored = harness.results(report.id)
    assert stored["K"].interpretation.value == "critical_high"
    assert stored["K"].reference_interval_id is not None
    assert stored["NA"].interpretation.value == "normal"
    served = {i["source_code"]: i for i in harness.get("/api/v1/results", accession="I-1")["items"]}
    assert served["K"]["interpretation"] == "critical_high"
    assert served["K"]["lab_flags"] == "H"


def test_a_report_without_species_is_read_with_its_orders_animal(harness: Harness) -> None:
    """Many labs send no species; the order from the PMS always has one. Without it no result
    can be read against an interval, so a critical potassium with no lab flag paged nobody."""
    harness.order("S-1", species="feline", patient_name="Tom", sex=Sex.MALE_NEUTERED)
    unflagged = (
        ("K", "Potassium", "8.1", "mEq/L", "", ""),
        ("NA", "Sodium", "150", "mEq/L", "", ""),
    )
    harness.send(vet_oru("S1", accession="S-1", species="", patient="Tom", results=unflagged))
    [report] = harness.reports()
    assert report.match_status is MatchStatus.MATCHED
    assert report.species == "feline"  # the order's word for the animal
    stored = harness.results(report.id)
    assert stored["K"].interpretation.value == "critical_high"
    assert stored["K"].reference_interval_id is not None
    assert stored["NA"].interpretation.value == "normal"
    [alert] = _alerts(harness)
    assert alert.patient_label == "Tom (feline), owner Smith"
    assert alert.result_id == stored["K"].id

    # The final, again without species, goes through the resend path: the order still counts.
    final = (("K", "Potassium", "8.3", "mEq/L", "", ""), ("NA", "Sodium", "151", "mEq/L", "", ""))
    harness.send(vet_oru("S2", accession="S-1", species="", patient="Tom", results=final))
    [report] = harness.reports()
    stored = harness.results(report.id)
    assert stored["K"].value_text == "8.3"
    assert stored["K"].interpretation.value == "critical_high"
    [alert] = _alerts(harness)  # the same alert, updated with the new value
    assert "8.3" in alert.summary


UNFLAGGED_K = (("K", "Potassium", "8.1", "mEq/L", "", ""), ("NA", "Sodium", "150", "mEq/L", "", ""))


def test_an_order_arriving_after_its_results_has_them_read_again_and_paged(
    harness: Harness,
) -> None:
    """The results came first, without species or lab flag: nothing could be read, nothing
    paged. When their order arrives (POST /api/v1/orders) and matches them, they are read with
    its animal, and the critical potassium opens its alert for Tom."""
    message_id = harness.send(
        vet_oru("L1", accession="LATE-K", species="", patient="Tom", results=UNFLAGGED_K)
    )
    assert harness.message(message_id).status is MessageStatus.UNMATCHED
    [waiting] = harness.reports()
    assert harness.results(waiting.id)["K"].interpretation.value == "not_interpreted"
    assert _alerts(harness) == []

    patient = uuid.uuid4()
    response = harness.client.post(
        "/api/v1/orders",
        json={
            "source": "PMS",
            "accession_number": "LATE-K",
            "placer_number": "LATE-K",
            "patient_id": str(patient),
            "patient_pms_id": "PMS-4711",
            "patient_name": "Tom",
            "species": "feline",
        },
        headers=bearer(harness.token),
    )
    assert response.status_code == 201, response.text
    [report] = harness.reports()
    assert report.match_status is MatchStatus.MATCHED
    assert report.species == "feline"
    stored = harness.results(report.id)
    assert stored["K"].interpretation.value == "critical_high"
    assert stored["K"].reference_interval_id is not None
    assert stored["NA"].interpretation.value == "normal"
    [alert] = _alerts(harness)
    assert (alert.result_id, alert.patient_id) == (stored["K"].id, patient)
    assert alert.patient_label == "Tom (feline), owner Smith"
    assert alert.state.value == "open"
    assert harness.message(message_id).status is MessageStatus.PROCESSED
    with harness.db.session(readonly=True) as session:
        [entry] = session.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == "report.read_again_on_match")
        ).all()
    assert entry.details["critical"] == 1


def test_an_order_for_the_same_names_is_offered_to_the_person_working_the_queue(
    harness: Harness,
) -> None:
    """No number or identifier in common: the names only propose. But once such an order
    exists, the waiting report lists it as a candidate instead of "no candidates"."""
    harness.send(vet_oru("N1", accession="LAB-5", pms_id="", patient="Tigger"))  # no PMS id
    [waiting] = harness.get("/api/v1/unmatched")["items"]
    assert waiting["match_candidates"] is None

    order_id = harness.order(
        "CLINIC-5", patient_pms_id="PMS-99", patient_name=" tigger ", owner_surname="SMITH"
    )
    with harness.db.session() as session:
        order = session.get(DiagnosticOrder, order_id)
        assert order is not None
        assert rematch_for_order(session, order, window=timedelta(days=30), now=ORDERED_AT) == []
    [still] = harness.get("/api/v1/unmatched")["items"]
    assert [c["order_id"] for c in still["match_candidates"]] == [str(order_id)]
    [report] = harness.reports()
    assert report.match_status is MatchStatus.UNMATCHED  # proposed, never attached


def test_an_hl7_order_after_unreadable_results_has_them_read_again(harness: Harness) -> None:
    """The same through the pipeline: the ORM (Bella, canine) matches the results waiting
    without species, in the order's own write transaction."""
    waiting = vet_oru(
        "L3",
        accession="ORD-1002",
        pms_id="PMS-20417",
        species="",
        patient="Bella",
        results=UNFLAGGED_K,
    )
    harness.send(waiting)
    assert _alerts(harness) == []
    raw = (FIXTURES / "orders" / "vetclinic_orm_o01_canine_three_tests.hl7").read_bytes()
    harness.send(raw, message_type="ORM^O01")
    [report] = harness.reports()
    assert report.match_status is MatchStatus.MATCHED
    assert report.species == "canine"
    assert harness.results(report.id)["K"].interpretation.value == "critical_high"
    [alert] = _alerts(harness)
    assert alert.patient_label == "Bella (canine), owner Smith"


def test_attaching_an_unmatched_report_relabels_its_alert_for_the_animal(
    harness: Harness,
) -> None:
    """R38 paged at once for "unmatched patient: Tom"; once a technician attaches the report,
    that same alert (no second page) names the animal, and keeps its state."""
    lab_critical = (("K", "Potassium", "8.1", "mEq/L", "3.5-5.8", "HH"),)  # the lab's flag
    harness.send(
        vet_oru("L2", accession="NOBODY-2", species="", patient="Tom", results=lab_critical)
    )
    [alert] = _alerts(harness)
    assert alert.patient_label is not None
    assert alert.patient_label.startswith("unmatched patient: Tom")
    vet = bearer(issue(harness.db, Role.VETERINARIAN, "Dr Okafor"))
    acked = harness.client.post(f"/api/v1/alerts/{alert.id}/acknowledge", json={}, headers=vet)
    assert acked.status_code == 200

    patient = uuid.uuid4()
    order_id = harness.order("CLINIC-2", patient_id=patient, species="feline", patient_name="Tom")
    [report] = harness.reports()
    response = harness.client.post(
        f"/api/v1/unmatched/{report.id}/resolve",
        json={"action": "attach", "order_id": str(order_id)},
        headers=bearer(harness.token),
    )
    assert response.status_code == 200, response.text
    [after] = _alerts(harness)
    assert after.id == alert.id
    assert after.state.value == "acknowledged"
    assert after.patient_id == patient
    assert after.patient_label == "Tom (feline), owner Smith"
    assert "unmatched" not in after.summary
    assert after.summary.endswith("Tom (feline), owner Smith")
    [report] = harness.reports()
    assert report.species == "feline"
    assert harness.results(report.id)["K"].reference_interval_id is not None


def test_r38_a_critical_value_on_an_unmatched_report_alerts_labelled_unmatched(
    harness: Harness,
) -> None:
    message_id = harness.send(
        vet_oru("K2", accession="NOBODY-1", species="Feline", patient="Tom", results=CRITICAL_K)
    )
    assert harness.message(message_id).status is MessageStatus.UNMATCHED
    [alert] = _alerts(harness)
    assert alert.kind.value == "critical_value"
    assert alert.state.value == "open"
    assert alert.patient_label is not None
    assert alert.patient_label.startswith("unmatched patient: Tom (feline)")
    assert "accession NOBODY-1" in alert.patient_label
    assert alert.next_action_at is not None  # due at once: the pager pages the on-call vet


def test_r23_a_correction_no_longer_critical_annotates_the_alert_and_keeps_it(
    harness: Harness,
) -> None:
    harness.order("I-3", species="feline", patient_name="Tom")
    harness.send(
        vet_oru("K3", accession="I-3", species="Feline", patient="Tom", results=CRITICAL_K)
    )
    [alert] = _alerts(harness)
    corrected = (("K", "Potassium", "4.9", "mEq/L", "3.5-5.8", "N"),)
    harness.send(
        vet_oru(
            "K4",
            accession="I-3",
            species="Feline",
            patient="Tom",
            results=corrected,
            report_status="C",
        )
    )
    [still] = _alerts(harness)
    assert still.id == alert.id
    assert still.state.value == "open"  # a person must still see and acknowledge it
    with harness.db.session(readonly=True) as session:
        actions = session.scalars(
            sa.select(AuditEntry.action)
            .where(AuditEntry.entity_id == str(alert.id))
            .order_by(AuditEntry.id)
        ).all()
    assert list(actions) == ["alert.created", "alert.annotated"]
