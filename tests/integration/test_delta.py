"""The delta check in the pipeline (issue 5): a result is compared with the same patient's
previous result of the test, found by patient id (matched) or PMS id (unmatched), never by name;
the outcome is on the result row and in the results API."""

from __future__ import annotations

import uuid
from decimal import Decimal

import sqlalchemy as sa

from tests.integration.test_pipeline import Harness, harness  # noqa: F401 (the fixture)
from tests.oru import vet_oru
from vetgateway.pipeline.delta import DeltaRule
from vetgateway.store.catalogue import delta_rules
from vetgateway.store.models import CatalogueTest, LabResult

EARLIER = "20261120083000"
LATER = "20261126113000"


def _creatinine(value: str) -> tuple[tuple[str, str, str, str, str, str], ...]:
    return (("CREAT", "Creatinine", value, "mg/dL", "0.5-1.8", "N"),)


def _send(h: Harness, control: str, accession: str, value: str, observed: str, **kw: str) -> None:
    h.send(
        vet_oru(control, accession=accession, results=_creatinine(value), observed=observed, **kw)
    )


def _creat(h: Harness, accession: str) -> LabResult:
    """The creatinine result of the latest version of the report with this accession number."""
    versions = [r for r in h.reports() if r.accession_number == accession]
    latest = max(versions, key=lambda r: r.version)
    return h.results(latest.id)["CREAT"]


def test_a_rise_beyond_the_threshold_is_flagged_naming_the_previous_value(
    harness: Harness,  # noqa: F811
) -> None:
    patient = uuid.uuid4()
    harness.order("D-1", patient_id=patient)
    harness.order("D-2", patient_id=patient)
    _send(harness, "D1", "D-1", "1.0", EARLIER)
    _send(harness, "D2", "D-2", "2.4", LATER)

    first, second = _creat(harness, "D-1"), _creat(harness, "D-2")
    assert first.delta_flag is None  # nothing earlier
    assert first.delta_note is None
    assert second.delta_flag is True
    assert second.value_numeric == Decimal("212.21")  # 2.4 mg/dL x 88.42, two more places
    assert second.delta_note is not None
    assert "from 88.42 umol/L on 2026-11-20" in second.delta_note
    assert "beyond 26.4" in second.delta_note

    [served] = harness.get("/api/v1/results", accession="D-2")["items"]
    assert served["delta_flag"] is True
    assert served["delta_note"] == second.delta_note


def test_a_small_change_is_checked_and_not_flagged(harness: Harness) -> None:  # noqa: F811
    patient = uuid.uuid4()
    harness.order("D-3", patient_id=patient)
    harness.order("D-4", patient_id=patient)
    _send(harness, "D3", "D-3", "1.0", EARLIER)
    _send(harness, "D4", "D-4", "1.1", LATER)
    result = _creat(harness, "D-4")
    assert result.delta_flag is False
    assert result.delta_note is not None
    assert "within 26.4" in result.delta_note


def test_another_patients_result_is_never_the_previous_one(harness: Harness) -> None:  # noqa: F811
    harness.order("D-5", patient_id=uuid.uuid4())
    harness.order("D-6", patient_id=uuid.uuid4(), patient_pms_id="PMS-9999")
    _send(harness, "D5", "D-5", "1.0", EARLIER)
    _send(harness, "D6", "D-6", "2.4", LATER, pms_id="PMS-9999")
    result = _creat(harness, "D-6")
    assert result.delta_flag is None
    assert result.delta_note is None


def test_unmatched_reports_compare_by_pms_id_never_by_name(harness: Harness) -> None:  # noqa: F811
    _send(harness, "D7", "D-7", "1.0", EARLIER)  # no orders: unmatched, PMS-4711, Rex
    _send(harness, "D8", "D-8", "2.4", LATER)
    _send(harness, "D9", "D-9", "2.4", LATER, pms_id="PMS-1234")  # also Rex, another PMS id
    assert _creat(harness, "D-8").delta_flag is True
    assert _creat(harness, "D-9").delta_flag is None


def test_a_correction_is_compared_with_the_previous_report_not_its_own_old_version(
    harness: Harness,  # noqa: F811
) -> None:
    patient = uuid.uuid4()
    harness.order("D-10", patient_id=patient)
    harness.order("D-11", patient_id=patient)
    _send(harness, "D10", "D-10", "1.0", EARLIER)
    _send(harness, "D11", "D-11", "2.4", LATER)
    _send(harness, "D12", "D-11", "1.1", LATER, report_status="C")
    corrected = _creat(harness, "D-11")
    assert corrected.value_text == "1.1"
    assert corrected.delta_flag is False
    assert corrected.delta_note is not None
    assert "from 88.42 umol/L on 2026-11-20" in corrected.delta_note


def test_the_pipeline_reads_the_thresholds_from_the_catalogue(harness: Harness) -> None:  # noqa: F811
    rules = harness.pipeline.processor.tables().deltas
    with harness.db.session(readonly=True) as session:
        crea = session.scalars(sa.select(CatalogueTest).where(CatalogueTest.code == "CREA")).one()
        assert delta_rules(session) == rules
    assert rules[crea.id] == DeltaRule(abs=Decimal("26.4"), rel=None)
