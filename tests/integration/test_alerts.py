"""Alerts in the store and the API, on both back ends: merge rules (RELIABILITY R40),
acknowledgement, and the acknowledge link (a GET never acknowledges)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.integration.api_support import TestClient, bearer, build_app, issue
from vetgateway.ack_links import make_token, signing_key
from vetgateway.model import CriticalFinding, ReportStatus, ResultStatus
from vetgateway.store import alerts as alert_store
from vetgateway.store.alerts import summary_text
from vetgateway.store.db import Database
from vetgateway.store.models import (
    AcknowledgementVia,
    Alert,
    AlertAcknowledgement,
    AlertState,
    AuditEntry,
    CatalogueCategory,
    CatalogueTest,
    DiagnosticReport,
    LabResult,
    MappingStatus,
    Page,
    PageChannel,
    PageStatus,
    Role,
    ValueType,
    Veterinarian,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=60)
PATIENT = uuid.UUID(int=77)


@pytest.mark.parametrize(
    ("limit", "shown"),
    [
        (Decimal("7.5000000000"), "7.5"),
        (Decimal("100.0000000000"), "100"),
        (Decimal("0.05"), "0.05"),
    ],
)
def test_a_limit_is_shown_as_a_person_writes_it(limit: Decimal, shown: str) -> None:
    """Limits come back from a NUMERIC column with all its decimals; a page shows 7.5."""
    finding = CriticalFinding(
        report_id=uuid.uuid4(),
        result_id=1,
        test_id=None,
        test_code="K",
        test_name="Potassium",
        value_text="8.9",
        value=Decimal("8.9"),
        unit="mmol/L",
        flag="critical_high",
        limit=limit,
        patient_id=None,
        patient_label="Rex (canine), owner Green",
        matched=True,
    )
    assert summary_text(finding) == (
        f"CRITICAL K 8.9 mmol/L (critical high >= {shown}) — Rex (canine), owner Green"
    )


def seed_finding(db: Database, value: str = "7.8", *, with_test: bool = True) -> CriticalFinding:
    """A report with one potassium result in the database, and its critical finding."""
    with db.session() as s:
        test = None
        if with_test:
            test = s.scalar(sa.select(CatalogueTest).where(CatalogueTest.code == "K"))
            if test is None:
                test = CatalogueTest(
                    code="K",
                    name="Potassium",
                    category=CatalogueCategory.ELECTROLYTES,
                    value_type=ValueType.NUMERIC,
                    unit="mmol/L",
                )
                s.add(test)
                s.flush()
        result = LabResult(
            test_id=None if test is None else test.id,
            source_code="K",
            value_numeric=Decimal(value),
            value_text=value,
            unit="mmol/L",
            status=ResultStatus.FINAL,
            mapping_status=MappingStatus.MAPPED,
        )
        report = DiagnosticReport(status=ReportStatus.FINAL, patient_id=PATIENT, results=[result])
        s.add(report)
        s.flush()
        return CriticalFinding(
            report_id=report.id,
            result_id=result.id,
            test_id=None if test is None else test.id,
            test_code="K",
            test_name="Potassium",
            value_text=value,
            value=Decimal(value),
            unit="mmol/L",
            flag="critical_high",
            limit=Decimal("6.5"),
            patient_id=PATIENT,
            patient_label="Rex (canine), Smith",
            matched=True,
        )


def raise_at(db: Database, finding: CriticalFinding, now: datetime) -> tuple[uuid.UUID, bool]:
    with db.session() as s:
        return alert_store.raise_critical(s, finding, now=now, merge_window=WINDOW)


def load(db: Database, alert_id: uuid.UUID) -> Alert:
    with db.session(readonly=True) as s:
        alert = s.get(Alert, alert_id)
        assert alert is not None
        return alert


def actions(db: Database, alert_id: uuid.UUID) -> list[str]:
    with db.session(readonly=True) as s:
        return list(
            s.scalars(
                sa.select(AuditEntry.action)
                .where(AuditEntry.entity_id == str(alert_id))
                .order_by(AuditEntry.id)
            )
        )


def test_new_alert_is_due_at_once(db: Database) -> None:
    alert_id, created = raise_at(db, seed_finding(db), T0)
    assert created
    alert = load(db, alert_id)
    assert alert.state is AlertState.OPEN
    assert alert.level == 0
    assert alert.next_action_at == T0
    assert alert.summary == "CRITICAL K 7.8 mmol/L (critical high >= 6.5) — Rex (canine), Smith"
    assert actions(db, alert_id) == ["alert.created"]


def test_duplicate_merges_without_repage(db: Database) -> None:
    finding = seed_finding(db)
    alert_id, _ = raise_at(db, finding, T0)
    with db.session() as s:  # paged once: level 1, next look in 5 minutes
        s.execute(
            sa.update(Alert)
            .where(Alert.id == alert_id)
            .values(level=1, next_action_at=T0 + timedelta(minutes=5))
        )
    again, created = raise_at(db, seed_finding(db), T0 + timedelta(minutes=1))
    assert (again, created) == (alert_id, False)
    alert = load(db, alert_id)
    assert (alert.level, alert.next_action_at) == (1, T0 + timedelta(minutes=5))
    assert actions(db, alert_id) == ["alert.created", "alert.updated"]


def test_corrected_value_repages_current_level(db: Database) -> None:
    alert_id, _ = raise_at(db, seed_finding(db), T0)
    with db.session() as s:
        s.execute(
            sa.update(Alert)
            .where(Alert.id == alert_id)
            .values(level=2, next_action_at=T0 + timedelta(minutes=5))
        )
    corrected = seed_finding(db, "8.4")
    now = T0 + timedelta(minutes=2)
    again, created = raise_at(db, corrected, now)
    assert (again, created) == (alert_id, False)
    alert = load(db, alert_id)
    assert alert.next_action_at == now
    assert alert.level == 1  # stepped back: the pager pages level 2 again
    assert alert.result_id == corrected.result_id
    assert "8.4 mmol/L" in alert.summary


def test_outside_window_or_other_test_opens_new_alert(db: Database) -> None:
    first, _ = raise_at(db, seed_finding(db), T0)
    later, created = raise_at(db, seed_finding(db), T0 + WINDOW + timedelta(seconds=1))
    assert created
    assert later != first
    other_patient = replace(seed_finding(db), patient_id=uuid.UUID(int=78))
    _, created = raise_at(db, other_patient, T0 + timedelta(minutes=1))
    assert created


def test_merge_without_test_id_uses_result_code(db: Database) -> None:
    first, _ = raise_at(db, seed_finding(db, with_test=False), T0)
    again, created = raise_at(db, seed_finding(db, with_test=False), T0 + timedelta(minutes=1))
    assert (again, created) == (first, False)


def test_unmatched_patient_merges_on_label(db: Database) -> None:
    def unmatched() -> CriticalFinding:
        return replace(
            seed_finding(db),
            patient_id=None,
            matched=False,
            patient_label="unmatched patient: PMS 4411, Rex",
        )

    first, _ = raise_at(db, unmatched(), T0)
    again, created = raise_at(db, unmatched(), T0 + timedelta(minutes=1))
    assert (again, created) == (first, False)
    assert load(db, first).summary.endswith("unmatched patient: PMS 4411, Rex")


def test_no_longer_critical_annotates_but_keeps_open(db: Database) -> None:
    finding = seed_finding(db)
    alert_id, _ = raise_at(db, finding, T0)
    with db.session() as s:
        noted = alert_store.note_no_longer_critical(
            s,
            patient_id=PATIENT,
            patient_label=None,
            test_id=finding.test_id,
            value_text="4.1",
            now=T0 + timedelta(minutes=3),
        )
    assert noted == alert_id
    alert = load(db, alert_id)
    assert alert.state is AlertState.OPEN
    assert alert.summary.endswith("corrected to 4.1: no longer critical")
    assert actions(db, alert_id)[-1] == "alert.annotated"


def test_acknowledge_stops_escalation_and_cancels_pending_pages(db: Database) -> None:
    alert_id, _ = raise_at(db, seed_finding(db), T0)
    with db.session() as s:
        s.add(Page(alert_id=alert_id, channel=PageChannel.SMS, target="+1", level=1))
    with db.session() as s:
        outcome = alert_store.acknowledge(
            s,
            alert_id,
            veterinarian_id=None,
            actor="test",
            via=AcknowledgementVia.API,
            note="seen",
            now=T0 + timedelta(minutes=1),
        )
    assert outcome == alert_store.AckOutcome(True, False, AlertState.ACKNOWLEDGED)
    alert = load(db, alert_id)
    assert alert.state is AlertState.ACKNOWLEDGED
    assert alert.next_action_at is None
    with db.session(readonly=True) as s:
        page = s.scalars(sa.select(Page)).one()
        assert page.status is PageStatus.FAILED
        assert page.last_error == alert_store.CANCELLED
    with db.session() as s:
        again = alert_store.acknowledge(
            s,
            alert_id,
            veterinarian_id=None,
            actor="test",
            via=AcknowledgementVia.API,
            note=None,
            now=T0 + timedelta(minutes=2),
        )
    assert again.already
    # an acknowledged alert with the same value only takes the update: no new page
    same, created = raise_at(db, seed_finding(db), T0 + timedelta(minutes=3))
    assert (same, created) == (alert_id, False)
    assert load(db, alert_id).state is AlertState.ACKNOWLEDGED
    # a different value nobody acknowledged opens a new alert
    _, created = raise_at(db, seed_finding(db, "9.0"), T0 + timedelta(minutes=4))
    assert created


# -- the API -------------------------------------------------------------------------------------


def _recent(db: Database) -> uuid.UUID:
    alert_id, _ = raise_at(db, seed_finding(db), datetime.now(UTC))
    return alert_id


def test_an_expired_link_says_whether_its_alert_still_needs_somebody(
    db: Database, tmp_path: Path
) -> None:
    """A vet opening yesterday's page learns whether the alert is still open (and how to
    acknowledge it now) or who acknowledged it, instead of a bare "expired"."""
    alert_id = _recent(db)
    with db.session() as s:
        vet = Veterinarian(name="Dr Okafor")
        s.add(vet)
        s.flush()
        page = Page(
            alert_id=alert_id, channel=PageChannel.SMS, target="+1", level=1, veterinarian_id=vet.id
        )
        s.add(page)
        s.flush()
        page_id = page.id
    app = build_app(db, tmp_path)
    key = signing_key(app.state.settings)
    expired = make_token(key, alert_id, page_id, datetime.now(UTC) - timedelta(seconds=1))
    url = f"/api/v1/alerts/ack/{expired}"
    with TestClient(app) as client:
        for shown in (client.get(url), client.post(url)):
            assert shown.status_code == 410
            assert "still open" in shown.text
            assert f"/api/v1/alerts/{alert_id}/acknowledge" in shown.text
            assert "Rex (canine), Smith" in shown.text
        assert load(db, alert_id).state is AlertState.OPEN  # expired: changed nothing

        fresh = make_token(key, alert_id, page_id, datetime.now(UTC) + timedelta(hours=1))
        assert client.post(f"/api/v1/alerts/ack/{fresh}").status_code == 200
        acknowledged_at = load(db, alert_id).acknowledged_at
        assert acknowledged_at is not None

        after = client.get(url)
        assert after.status_code == 410
        assert "still open" not in after.text
        assert f"acknowledged by Dr Okafor at {acknowledged_at:%Y-%m-%d %H:%M} UTC" in after.text


def test_api_list_get_acknowledge(db: Database, tmp_path: Path) -> None:
    alert_id = _recent(db)
    tech = bearer(issue(db, Role.TECHNICIAN))
    vet = bearer(issue(db, Role.VETERINARIAN, "Dr Jones"))
    with TestClient(build_app(db, tmp_path)) as client:
        assert client.get("/api/v1/alerts").status_code == 401
        listed = client.get("/api/v1/alerts?state=open", headers=tech)
        assert listed.status_code == 200
        [item] = listed.json()
        assert item["id"] == str(alert_id)
        assert item["level"] == 0
        assert item["age_seconds"] >= 0
        assert item["summary"].startswith("CRITICAL K 7.8")

        detail = client.get(f"/api/v1/alerts/{alert_id}", headers=tech).json()
        assert [e["action"] for e in detail["timeline"]] == ["alert.created"]
        assert detail["pages"] == []
        assert client.get(f"/api/v1/alerts/{uuid.uuid4()}", headers=tech).status_code == 404

        url = f"/api/v1/alerts/{alert_id}/acknowledge"
        assert client.post(url, json={}, headers=tech).status_code == 403
        acked = client.post(url, json={"note": "on it"}, headers=vet)
        assert acked.status_code == 200
        assert acked.json() == {
            "id": str(alert_id),
            "state": "acknowledged",
            "already_acknowledged": False,
        }
        assert client.post(url, json={}, headers=vet).json()["already_acknowledged"] is True
        assert client.get("/api/v1/alerts", headers=tech).json() == []
        assert len(client.get("/api/v1/alerts?state=all", headers=tech).json()) == 1
        detail = client.get(f"/api/v1/alerts/{alert_id}", headers=tech).json()
        ack = detail["timeline"][-1]
        assert ack["action"] == "alert.acknowledged"
        assert ack["actor"].startswith("api_token:")
        assert ack["details"]["note"] == "on it"


def test_ack_link_get_does_not_acknowledge_post_does(db: Database, tmp_path: Path) -> None:
    alert_id = _recent(db)
    with db.session() as s:
        page = Page(alert_id=alert_id, channel=PageChannel.SMS, target="+1", level=1)
        s.add(page)
        s.flush()
        page_id = page.id
    app = build_app(db, tmp_path)
    key = signing_key(app.state.settings)
    token = make_token(key, alert_id, page_id, datetime.now(UTC) + timedelta(hours=1))
    url = f"/api/v1/alerts/ack/{token}"
    with TestClient(app) as client:
        for _ in range(2):  # a link preview fetching twice changes nothing
            shown = client.get(url)
            assert shown.status_code == 200
            assert 'method="post"' in shown.text
            assert "Rex (canine), Smith" in shown.text
        assert load(db, alert_id).state is AlertState.OPEN

        done = client.post(url)
        assert done.status_code == 200
        assert "Acknowledged" in done.text
        alert = load(db, alert_id)
        assert alert.state is AlertState.ACKNOWLEDGED
        with db.session(readonly=True) as s:
            ack = s.scalars(sa.select(AlertAcknowledgement)).one()
            assert ack.via is AcknowledgementVia.LINK

        again = client.post(url)
        assert again.status_code == 200
        assert "Already acknowledged" in again.text
        assert "Already acknowledged" in client.get(url).text

        tampered = token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB")
        assert client.post(f"/api/v1/alerts/ack/{tampered}").status_code == 400
        expired = make_token(key, alert_id, page_id, datetime.now(UTC) - timedelta(seconds=1))
        assert client.post(f"/api/v1/alerts/ack/{expired}").status_code == 410
