"""Whose intervals and whose rota, through the pipeline (issue 5 §1 "clinics override per clinic
and per analyzer", §4 "per clinic, an on-call schedule"): an analyzer's results are read against
that analyzer's own intervals, and a clinic's against its clinic's; a reference lab's report
takes the clinic of the order it matched (its intervals, and its rota for a critical value);
a report that names no clinic uses the default clinic's. On SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from pathlib import Path

import sqlalchemy as sa

from tests.integration.test_pipeline import Harness, harness  # noqa: F401 (the fixture)
from tests.oru import PANEL, vet_oru
from vetgateway.analyzers.config import AnalyzerConfig
from vetgateway.store.catalogue import load_catalogue
from vetgateway.store.clinics import Refused, create_clinic
from vetgateway.store.devices import DeviceView, sync_devices
from vetgateway.store.inbox import MessageMeta
from vetgateway.store.models import (
    Alert,
    DeviceProtocol,
    DiagnosticReport,
    LabResult,
    ReferenceInterval,
)

HORIBA_CBC = (
    Path(__file__).parent.parent / "fixtures/astm/written/horiba_style_cbc_two_patients.astm"
)


def _analyzer(h: Harness, clinic: str | None = None) -> DeviceView:
    with h.db.session() as s:
        clinics = {}
        if clinic is not None:
            made = create_clinic(s, code=clinic, name=clinic, timezone="UTC", actor="test")
            assert not isinstance(made, Refused)
            clinics[clinic] = made.id
        config = AnalyzerConfig(
            name="Haematology", driver="horiba_yumizen_h500", sender_id="ABX", clinic=clinic
        )
        (device,) = sync_devices(s, [config], {"Haematology": DeviceProtocol.ASTM}, clinics)
        return device


def _overrides(h: Harness, tmp_path: Path, scope: str, test: str, species: str) -> uuid.UUID:
    path = tmp_path / "overrides.toml"
    path.write_text(
        f'species = "{species}"\n[[interval]]\ntest = "{test}"\n{scope}\nlow = 10\nhigh = 20\n'
    )
    with h.db.session() as s:
        load_catalogue(s, [path])
        found = s.scalar(
            sa.select(ReferenceInterval.id).where(
                sa.or_(
                    ReferenceInterval.clinic_id.is_not(None),
                    ReferenceInterval.device_id.is_not(None),
                )
            )
        )
        assert found is not None
        return found


def _send_astm(h: Harness, device: DeviceView | None) -> int:
    extra = {"driver": "horiba_yumizen_h500", "sender_id": "ABX"}
    if device is not None:
        extra |= {"device_id": str(device.id)}
        if device.clinic_id is not None:
            extra |= {"clinic_id": str(device.clinic_id)}
    meta = MessageMeta(sender="Haematology", message_type="ASTM", extra=extra)
    message_id = int(h.inbox.accept(HORIBA_CBC.read_bytes(), "astm", "peer", meta))
    h.drain()
    return message_id


def _feline_wbc(h: Harness, message_id: int) -> LabResult:
    """Patient 2 of the fixture is a cat (a SPECIES result) with WBC 9.8 x 10^9/L: normal for
    the shipped feline interval (5.5 to 19.5)."""
    with h.db.session(readonly=True) as s:
        row = s.scalars(
            sa.select(LabResult)
            .join(DiagnosticReport, DiagnosticReport.id == LabResult.report_id)
            .where(
                DiagnosticReport.inbound_message_id == message_id,
                DiagnosticReport.accession_number == "ACC-5003",
                LabResult.source_code == "WBC",
            )
        ).one()
        s.expunge(row)
        return row


def test_an_analyzers_own_interval_applies_to_its_results_only(
    harness: Harness,  # noqa: F811
    tmp_path: Path,
) -> None:
    device = _analyzer(harness)
    override = _overrides(harness, tmp_path, 'device = "Haematology"', "WBC", "feline")
    own = _feline_wbc(harness, _send_astm(harness, device))
    assert (own.interpretation.value, own.reference_interval_id) == ("low", override)
    other = _feline_wbc(harness, _send_astm(harness, None))  # not from that analyzer
    assert other.interpretation.value == "normal"
    assert other.reference_interval_id != override


def test_a_clinics_override_applies_to_its_analyzers(
    harness: Harness,  # noqa: F811
    tmp_path: Path,
) -> None:
    device = _analyzer(harness, clinic="north")
    override = _overrides(harness, tmp_path, 'clinic = "north"', "WBC", "feline")
    result = _feline_wbc(harness, _send_astm(harness, device))
    assert (result.interpretation.value, result.reference_interval_id) == ("low", override)


def test_the_default_clinics_override_applies_to_reports_naming_no_clinic(
    harness: Harness,  # noqa: F811
    tmp_path: Path,
) -> None:
    with harness.db.session() as s:  # "main" is the default clinic (VETGATEWAY_DEFAULT_CLINIC)
        assert not isinstance(
            create_clinic(s, code="main", name="Main", timezone="UTC", actor="test"), Refused
        )
    path = tmp_path / "main.toml"
    path.write_text(
        'species = "canine"\nclinic = "main"\n[[interval]]\ntest = "GLU"\nlow = 6.0\nhigh = 9.0\n'
    )
    with harness.db.session() as s:
        load_catalogue(s, [path])
    message_id = harness.send(vet_oru("OVR-1", accession="OVR-1"))  # glucose 97 mg/dL, canine
    [report] = harness.reports()
    glucose = harness.results(report.id)["GLUC"]
    assert report.inbound_message_id == message_id
    assert glucose.interpretation.value == "low"  # 5.38 mmol/L: under main's 6.0


def test_a_reference_lab_report_takes_the_clinic_of_its_order(
    harness: Harness,  # noqa: F811
    tmp_path: Path,
) -> None:
    with harness.db.session() as s:
        north = create_clinic(s, code="north", name="North", timezone="UTC", actor="test")
        assert not isinstance(north, Refused)
    path = tmp_path / "north.toml"
    path.write_text(
        'species = "canine"\nclinic = "north"\n[[interval]]\ntest = "GLU"\nlow = 6\nhigh = 9\n'
    )
    with harness.db.session() as s:
        load_catalogue(s, [path])
    harness.order("N-1", clinic="north")
    critical = (("K", "Potassium", "8.1", "mEq/L", "3.5-5.8", "HH"), PANEL[0])
    harness.send(vet_oru("N-1", accession="N-1", results=critical))
    [report] = harness.reports()
    assert report.clinic_id == north.id
    results = harness.results(report.id)
    assert results["GLUC"].interpretation.value == "low"  # north's own glucose interval
    with harness.db.session(readonly=True) as s:
        alert = s.scalars(sa.select(Alert).where(Alert.report_id == report.id)).one()
    assert alert.clinic_id == north.id  # north's rota is paged, not the default clinic's
