"""ORU^R01 into the canonical model (pipeline/parse/oru.py): fixtures with asserted values, the
value, range and timestamp rules, the structural errors, and mutated messages under hypothesis."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import pickle
import typing
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.mutations import mutated
from vetgateway.errors import ParseError
from vetgateway.model import (
    Coded,
    Identifier,
    Observation,
    OrderRef,
    ParsedMessage,
    PatientRef,
    Report,
    ReportStatus,
    ResultStatus,
    Sex,
)
from vetgateway.pipeline.parse.er7 import Segment, parse_er7
from vetgateway.pipeline.parse.obx import _ANALYTE_LIMIT, _Draft
from vetgateway.pipeline.parse.oru import (
    _MessageDraft,
    _OrderDraft,
    _ReportDraft,
    parse_oru,
)
from vetgateway.pipeline.parse.pid import _PatientDraft
from vetgateway.pipeline.parse.values import (
    TimestampMemo,
    parse_compared,
    parse_datetime,
    parse_range,
    read_reference,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "hl7"

# Every fixture holding exactly one ORU^R01. The batches, the two concatenated ORUs and the ACKs
# are not ORU messages one at a time (see test_not_oru_or_not_one_message_raises).
ORU_FIXTURES = [
    "elixirhl7/elixirhl7_elr_oru_r01_sn_species_truncation.hl7",
    "nodehl7c/nodehl7c_athena_oru_lf_nte_tq1.hl7",
    "nodehl7c/nodehl7c_cerner_lead_mixed_cr_lf.hl7",
    "nodehl7c/nodehl7c_nist_elr_lead_nm_H_text_range.hl7",
    "nodehl7c/nodehl7c_nist_elr_stool_dup_obx_setid.hl7",
    "nodehl7c/nodehl7c_realm_elr_animal_rabies_dog.hl7",
    "nodehl7c/nodehl7c_realm_elr_hcv_sn_gt_multi_flag.hl7",
    "prs/prs_oru_r01_hci_multi_obr_H_nte_escapes.hl7",
    "prs/prs_oru_r01_newborn_screen_20_obr.hl7",
    "prs/prs_oru_r01_newborn_screen_cah_quirks.hl7",
    "prs/prs_oru_r01_nte_after_each_obx.hl7",
    "pythonhl7/pythonhl7_oru_r01_ghh_lab_glucose.hl7",
]

MINUS_7 = timezone(-timedelta(hours=7))
MINUS_5 = timezone(-timedelta(hours=5))


def oru(name: str) -> ParsedMessage:
    return parse_oru((FIXTURES / name).read_bytes())


def message(*segments: str, version: str = "2.5.1") -> bytes:
    """A small ORU^R01 of our own, segments joined by CR."""
    msh = f"MSH|^~\\&|ANALYZER|VETLAB|GATEWAY|CLINIC|20240105101500||ORU^R01|MSG0001|P|{version}"
    return "\r".join((msh, *segments)).encode() + b"\r"


def single_obx(obx: str, *extra: str) -> Observation:
    parsed = parse_oru(message("PID|1||P1^^^PMS^PI", "OBR|1|||CHEM^Chemistry", obx, *extra))
    (report,) = parsed.reports
    (obs,) = report.observations
    return obs


# --- fixtures ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reports", "observations"),
    [
        ("elixirhl7/elixirhl7_elr_oru_r01_sn_species_truncation.hl7", 2, 2),
        ("nodehl7c/nodehl7c_athena_oru_lf_nte_tq1.hl7", 1, 0),
        ("nodehl7c/nodehl7c_cerner_lead_mixed_cr_lf.hl7", 1, 1),
        ("nodehl7c/nodehl7c_nist_elr_lead_nm_H_text_range.hl7", 1, 1),
        ("nodehl7c/nodehl7c_nist_elr_stool_dup_obx_setid.hl7", 1, 3),
        ("nodehl7c/nodehl7c_realm_elr_animal_rabies_dog.hl7", 1, 1),
        ("nodehl7c/nodehl7c_realm_elr_hcv_sn_gt_multi_flag.hl7", 1, 3),
        ("prs/prs_oru_r01_hci_multi_obr_H_nte_escapes.hl7", 4, 4),
        ("prs/prs_oru_r01_newborn_screen_20_obr.hl7", 20, None),
        ("prs/prs_oru_r01_newborn_screen_cah_quirks.hl7", 3, 18),
        ("prs/prs_oru_r01_nte_after_each_obx.hl7", 1, 4),
        ("pythonhl7/pythonhl7_oru_r01_ghh_lab_glucose.hl7", 1, 2),
    ],
)
def test_fixture_report_and_observation_counts(
    name: str, reports: int, observations: int | None
) -> None:
    parsed = oru(name)
    assert len(parsed.reports) == reports
    total = sum(len(r.observations) for r in parsed.reports)
    if observations is not None:
        assert total == observations
    assert parsed.message_type.startswith("ORU^R01")


def test_every_single_oru_fixture_is_listed() -> None:
    assert len(ORU_FIXTURES) == 12
    for name in ORU_FIXTURES:
        assert oru(name).reports


def test_ghh_glucose_sn_caret_value_unit_range_flag() -> None:
    parsed = oru("pythonhl7/pythonhl7_oru_r01_ghh_lab_glucose.hl7")
    assert (parsed.control_id, parsed.version) == ("CNTRL-3456", "2.4")
    assert (parsed.sending_application, parsed.sending_facility) == ("GHH LAB", "ELAB-3")
    (report,) = parsed.reports
    assert report.order.placer == "845439"
    assert report.order.filler == "1045813"
    assert report.order.accession == "1045813"  # no OBR-18/20: the filler number
    assert (report.service_code, report.service_text) == ("1554-5", "GLUCOSE")
    assert report.status is None  # OBR-25 is empty in this message
    assert report.observed_at == datetime(2002, 2, 15, 7, 30, tzinfo=UTC)  # naive → UTC
    sn, fn = report.observations
    assert sn.value_type == "SN"
    assert sn.value_text == "^182"
    assert sn.value_numeric == Decimal("182")
    assert sn.comparator is None
    assert sn.unit == "mg/dl"
    assert sn.reference_range == "70_105"
    assert (sn.range_low, sn.range_high) == (Decimal("70"), Decimal("105"))
    assert sn.abnormal_flags == ("H",)
    assert (sn.status, sn.status_code) == (ResultStatus.FINAL, "F")
    # FN is not a numeric type: the text is kept, nothing is guessed.
    assert (fn.value_type, fn.value_text, fn.value_numeric) == ("FN", "^182", None)
    patient = report.patient
    assert patient.identifiers == (Identifier("555-44-4444", None, None),)
    assert patient.pms_id is None  # untyped identifier: kept, not promoted
    assert patient.sex is Sex.FEMALE
    assert patient.birth_date is None  # "196203520" is not a date
    assert (patient.name, patient.owner_surname) == ("EVE", "EVERYWOMAN")


def test_dog_rabies_patient_owner_species_and_coded_result() -> None:
    parsed = oru("nodehl7c/nodehl7c_realm_elr_animal_rabies_dog.hl7")
    (report,) = parsed.reports
    patient = report.patient
    assert patient.name == "Fluffy"  # the first repetition of PID-5 is empty
    assert patient.owner_surname == "Everyman"  # NK1 with relationship OWN
    assert patient.pms_id == "36363636"  # type MR, no PI/PT sent
    assert patient.identifiers == (Identifier("36363636", "MPI", "MR"),)
    assert patient.microchip is None
    assert patient.sex is Sex.MALE
    assert patient.birth_date == date(2007, 6, 2)
    # The IG example puts a SNOMED CT *breed* code in PID-35 (species); kept as sent, the mapper
    # resolves 44696006 (Beagle) to the species. PID-36 is empty.
    assert patient.species == Coded("44696006", "Beagle", "SCT")
    assert patient.breed is None
    assert report.order.placer == "23456"
    assert report.order.filler == "9700123"
    assert (report.service_code, report.service_text) == ("6528-4", "Rabies virus Ag")
    assert report.status is ReportStatus.FINAL
    assert report.observed_at == datetime(2008, 8, 14, 10, 30, tzinfo=MINUS_7)
    assert report.reported_at == datetime(2008, 7, 29, 15, 0, tzinfo=UTC)
    (obs,) = report.observations
    assert obs.value_type == "CWE"
    assert obs.value_coded == Coded("260373001", "Detected", "SCT")
    assert obs.value_text == "260373001^Detected^SCT^^^^20080731"
    assert obs.value_numeric is None
    assert obs.status is ResultStatus.FINAL
    assert obs.observed_at == datetime(2008, 8, 14, 10, 30, tzinfo=MINUS_7)


def test_hcv_fixture_fields_read_where_they_are() -> None:
    """The copied HCV OBX has two extra field separators after OBX-4, so ``>^11.0`` sits in OBX-7
    and ``H~POS`` in OBX-10. We read fields where they are; the SN and repeating-flag rules are
    shown on the aligned message in test_sn_greater_than_with_repeating_flags."""
    (report,) = oru("nodehl7c/nodehl7c_realm_elr_hcv_sn_gt_multi_flag.hl7").reports
    sn, age, job = report.observations
    assert (sn.code, sn.value_type, sn.value_text, sn.value_numeric) == ("5198-7", "SN", "", None)
    assert sn.reference_range == ">^11.0"
    assert sn.status_code is None
    assert (age.value_numeric, age.unit, age.status) == (Decimal("29"), "a", ResultStatus.FINAL)
    assert (job.value_type, job.value_text) == ("TX", "food handler")
    assert report.patient.identifiers[0] == Identifier("36363636", "MPI", "MR")
    assert report.reported_at == datetime(2008, 8, 15, 11, 0, tzinfo=UTC)


def test_sn_greater_than_with_repeating_flags() -> None:
    obs = single_obx(
        "OBX|1|SN|5198-7^HCV Ab^LN|1|>^11.0|1^^UCUM^^^^1.6^^s/co ratio||H~POS|||F"
        "|||200808151100|||||200808181800-0700"
    )
    assert obs.comparator == ">"
    assert obs.value_numeric == Decimal("11.0")
    assert obs.value_text == ">^11.0"
    assert obs.unit == "1"
    assert obs.abnormal_flags == ("H", "POS")
    assert obs.status is ResultStatus.FINAL
    assert obs.observed_at == datetime(2008, 8, 15, 11, 0, tzinfo=UTC)


def test_elixir_sn_equals_and_truncated_segments() -> None:
    parsed = oru("elixirhl7/elixirhl7_elr_oru_r01_sn_species_truncation.hl7")
    first, second = parsed.reports
    truncated = first.observations[0]
    assert (truncated.code, truncated.value_text, truncated.value_numeric) == ("2951-2", "", None)
    (potassium,) = second.observations
    assert potassium.comparator == "="
    assert potassium.value_numeric == Decimal("4.2")
    assert potassium.unit == "mEq/L"
    assert (potassium.range_low, potassium.range_high) == (Decimal("3.5"), Decimal("5.0"))
    assert potassium.abnormal_flags == ("N",)
    assert second.observed_at is None  # masked with '*'
    patient = second.patient
    assert patient.pms_id == "A09956149511"  # the PI repetition, not the first (MR)
    assert [i.type_code for i in patient.identifiers] == ["MR", "SS", "PI", "AN"]
    assert patient.species == Coded("337915000", "Homo sapiens (organism)", "SCT")
    assert patient.birth_date == date(1956, 9, 27)


def test_hci_multi_obr_nte_escapes_and_orc() -> None:
    parsed = oru("prs/prs_oru_r01_hci_multi_obr_H_nte_escapes.hl7")
    a1c, hbs, hcv, hiv = parsed.reports
    (obs,) = a1c.observations
    assert obs.value_numeric == Decimal("5.8")
    assert obs.unit == "mg/dL"
    assert (obs.range_low, obs.range_high) == (Decimal("0.0"), Decimal("5.6"))
    assert obs.abnormal_flags == ("H",)
    assert obs.comments == (
        "Interpretation: \r\nNormal <5.7\r\nPrediabetes: 5.7-6.4\r\nDiabetic: &#8805;6.5",
    )
    assert a1c.comments == ()
    assert hbs.observations[0].value_text == "Reactive"
    assert hbs.observations[0].abnormal_flags == ("A",)
    assert hiv.observations[0].abnormal_flags == ()
    assert [r.order.filler for r in parsed.reports] == [
        "232270000212",
        "232270000213",
        "232270000213",
        "232270000213",
    ]
    assert hcv.reported_at == datetime(2023, 8, 15, 16, 44, 46, tzinfo=MINUS_5)
    assert a1c.patient.pms_id == "0008115-23-02"


def test_newborn_screen_utf8_unit_and_less_than_ranges() -> None:
    parsed = oru("prs/prs_oru_r01_newborn_screen_20_obr.hl7")
    observations = [o for r in parsed.reports for o in r.observations]
    numeric = [o for o in observations if o.value_type == "NM"]
    assert len(numeric) == 64
    assert all(o.value_numeric is not None for o in numeric)
    assert any(o.unit == "µmol/L" for o in numeric)
    less_than = [o for o in numeric if o.reference_range and o.reference_range.startswith("<")]
    assert less_than
    assert all(o.range_low is None and o.range_high is not None for o in less_than)
    assert {f for o in observations for f in o.abnormal_flags} >= {"A", "N"}
    narrative = next(o for o in observations if o.code == "57724-7")
    assert narrative.value_text.startswith("ACTION REQUIRED\n\nNBS Testing Lab")
    assert "~M 57752YWKP" in narrative.value_text  # \R\ is the repetition character


def test_cah_quirks_leading_zeros_alternate_code_bad_timestamp() -> None:
    parsed = oru("prs/prs_oru_r01_newborn_screen_cah_quirks.hl7")
    empty, cah, cah_again = parsed.reports
    assert empty.observations == ()  # OBR followed directly by another OBR
    assert len(cah.observations) == len(cah_again.observations) == 9
    by_code = {o.code: o for o in cah.observations}
    assert by_code["38473-5"].value_numeric == Decimal("65.88")
    assert by_code["38473-5"].value_text == "0065.88"
    assert by_code["38473-5"].range_high == Decimal("85")
    alternate = by_code["99717-6"]  # the code sits in OBX-3.4
    assert (alternate.code_text, alternate.coding_system) == (
        "17-Hydroxyprogesterone (CAH II)",
        "L",
    )
    assert alternate.abnormal_flags == ("H",)
    assert by_code["53345-5"].observed_at is None  # "220241021055726" is not a timestamp
    assert by_code["53341-4"].value_numeric == Decimal("0.02")
    assert by_code["57706-4"].sub_id == "001.54"
    assert by_code["46758-9"].value_coded == Coded("LA18592-8", "In range", "LN")
    assert empty.order.placer == "123456"
    assert cah.patient.birth_date == date(2024, 10, 15)


def test_nte_after_each_obx_and_placeholder_dates() -> None:
    (report,) = oru("prs/prs_oru_r01_nte_after_each_obx.hl7").reports
    comments = [o.comments for o in report.observations]
    note = "BD Veritor At-Home COVID-19 Test_Becton, Dickinson and Company (BD)_EUA"
    assert comments == [(note,), (note,), (note,), ()]
    assert report.observed_at is None  # "DATE!"
    assert report.patient.birth_date is None  # "PIDDOB!"
    assert report.patient.pms_id == "92041f50874c4595955d47f7ae4981c5"
    assert report.observations[1].value_numeric == Decimal("44")
    assert report.observations[3].value_type == "DT"


def test_athena_nte_after_pid_and_no_obx() -> None:
    parsed = oru("nodehl7c/nodehl7c_athena_oru_lf_nte_tq1.hl7")
    (report,) = parsed.reports
    assert report.observations == ()
    assert report.patient.comments == ("testing",)
    assert report.order.accession == "00001532"  # OBR-18
    assert report.status is ReportStatus.CORRECTED
    assert report.patient.pms_id == "V001047"


def test_lead_text_range_and_dup_set_ids() -> None:
    (lead,) = oru("nodehl7c/nodehl7c_nist_elr_lead_nm_H_text_range.hl7").reports
    (obs,) = lead.observations
    assert (obs.value_numeric, obs.unit, obs.abnormal_flags) == (Decimal("50"), "ug/dL", ("H",))
    assert obs.reference_range == "<9 mcg/dL:  Acceptable background lead exposure"
    assert (obs.range_low, obs.range_high) == (None, None)  # free text: kept, not guessed
    (stool,) = oru("nodehl7c/nodehl7c_nist_elr_stool_dup_obx_setid.hl7").reports
    assert [o.set_id for o in stool.observations] == [1, 1, 1]
    assert [o.value_text for o in stool.observations] == ["Isolated", "Isolated", "Not Isolated"]
    (cerner,) = oru("nodehl7c/nodehl7c_cerner_lead_mixed_cr_lf.hl7").reports
    assert cerner.observations[0].reference_range == "^^10.000000"
    assert cerner.observations[0].range_high is None


# --- values, ranges, timestamps ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("obx5", "value_type", "comparator", "numeric", "parts"),
    [
        ("<0.5", "SN", "<", Decimal("0.5"), None),
        (">1000", "SN", ">", Decimal("1000"), None),
        ("1:256", "SN", None, None, (Decimal("1"), ":", Decimal("256"))),
        ("^1^:^256", "SN", None, None, (Decimal("1"), ":", Decimal("256"))),
        ("^2^-^5", "SN", None, None, (Decimal("2"), "-", Decimal("5"))),
        ("=^4.2", "SN", "=", Decimal("4.2"), None),
        ("<=^0.1", "SN", "<=", Decimal("0.1"), None),
        ("^182", "SN", None, Decimal("182"), None),
        ("<0.5", "NM", "<", Decimal("0.5"), None),
        ("-3.5", "NM", None, Decimal("-3.5"), None),
        ("> 1000", "ST", ">", Decimal("1000"), None),
        ("not done", "NM", None, None, None),
        ('""', "NM", None, None, None),
        ("1.2.3", "NM", None, None, None),
        ("Negative", "ST", None, None, None),
    ],
)
def test_numeric_values(
    obx5: str,
    value_type: str,
    comparator: str | None,
    numeric: Decimal | None,
    parts: tuple[Decimal, str, Decimal] | None,
) -> None:
    obs = single_obx(f"OBX|1|{value_type}|GLU^Glucose^L||{obx5}|mmol/L|||||F")
    assert obs.value_text == obx5  # never lost
    assert obs.comparator == comparator
    assert obs.value_numeric == numeric
    got = (obs.sn_first, obs.sn_separator, obs.sn_second)
    assert got == (parts if parts is not None else (None, None, None))


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("3.5-5.0", "3.5", "5.0"),
        ("0.0 - 5.6", "0.0", "5.6"),
        ("70_105", "70", "105"),
        ("-3-3", "-3", "3"),
        ("-3 - -1", "-3", "-1"),
        ("<85", None, "85"),
        ("<=5", None, "5"),
        (">60", "60", None),
        (">= 1.5", "1.5", None),
        ("negative", None, None),
        ("<9 mcg/dL: text", None, None),
        ("", None, None),
    ],
)
def test_reference_ranges(text: str, low: str | None, high: str | None) -> None:
    expected = (None if low is None else Decimal(low), None if high is None else Decimal(high))
    assert parse_range(text) == expected


def test_blood_gas_negative_range_in_a_message() -> None:
    obs = single_obx("OBX|1|NM|BE^Base excess^L||-4.2|mmol/L|-3-3|L|||F|||20240105101000+0100")
    assert obs.value_numeric == Decimal("-4.2")
    assert (obs.range_low, obs.range_high) == (Decimal("-3"), Decimal("3"))
    assert obs.abnormal_flags == ("L",)
    assert obs.observed_at == datetime(2024, 1, 5, 9, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20240105", datetime(2024, 1, 5, tzinfo=UTC)),
        ("202401051015", datetime(2024, 1, 5, 10, 15, tzinfo=UTC)),
        ("20240105101530.25-0700", datetime(2024, 1, 5, 10, 15, 30, 250000, tzinfo=MINUS_7)),
        ("2024", datetime(2024, 1, 1, tzinfo=UTC)),
        ("20241305", None),
        ("220241021055726", None),
        ("20080818162038- 0500", None),
        ("DATE!", None),
        ("", None),
    ],
)
def test_timestamps(text: str, expected: datetime | None) -> None:
    assert parse_datetime(text) == expected


def test_ed_base64_attachment() -> None:
    pdf = b"%PDF-1.4 tiny"
    encoded = base64.b64encode(pdf).decode()
    obs = single_obx(f"OBX|1|ED|PDF^Report^L||LAB^AP^PDF^Base64^{encoded}||||||F")
    assert obs.attachment is not None
    assert obs.attachment.media_type == "application/pdf"
    assert obs.attachment.encoding == "Base64"
    assert obs.attachment.data == pdf
    bad = single_obx("OBX|1|ED|PDF^Report^L||LAB^AP^PDF^Base64^@@not base64@@||||||F")
    assert bad.attachment is not None
    assert bad.attachment.data is None
    assert bad.value_text == "LAB^AP^PDF^Base64^@@not base64@@"


def test_nte_owners_patient_report_observation_and_message() -> None:
    parsed = parse_oru(
        message(
            "NTE|1||before any PID",
            "PID|1||P1^^^PMS^PI",
            "NTE|1||about the patient",
            "ORC|RE|PL1|FI1",
            "OBR|1|||CBC^Haematology",
            "NTE|1||about the report~second line",
            "OBX|1|NM|WBC^WBC^L||12.1|10*9/L|6-17|N|||F",
            "NTE|1||about WBC",
            "NTE|2||more about WBC",
            "OBX|2|NM|RBC^RBC^L||7.1|10*12/L|5.5-8.5||||F",
        )
    )
    assert parsed.comments == ("before any PID",)
    (report,) = parsed.reports
    assert report.patient.comments == ("about the patient",)
    assert report.comments == ("about the report\nsecond line",)
    wbc, rbc = report.observations
    assert wbc.comments == ("about WBC", "more about WBC")
    assert rbc.comments == ()
    assert (report.order.placer, report.order.filler, report.order.accession) == (
        "PL1",
        "FI1",
        "FI1",
    )


def test_nte_after_orc_goes_to_the_next_obr_and_text_only_code() -> None:
    parsed = parse_oru(
        message(
            "OBR|1|||A^A",
            "OBX|1|NM|A^A||1|",
            "ORC|RE|P2",
            "NTE|1||order note",
            "OBR|2|||B^B",
            "OBX|1|ST|^Free text name||x|",
        )
    )
    first, second = parsed.reports
    assert first.observations[0].comments == ()
    assert second.comments == ("order note",)
    assert second.order.placer == "P2"  # from the ORC
    assert (second.observations[0].code, second.observations[0].code_text) == (
        "Free text name",
        "Free text name",
    )


def test_two_patient_groups_and_vet_demographics() -> None:
    parsed = parse_oru(
        message(
            "PID|1||4711^^^VETPMS^PT~985112003456789^^^^||Smith^Rex||20190301|MN",
            "NK1|1|Jones^Mary|OWN^Owner^HL70063",
            "OBR|1|A1||T4^Total T4|||20240105090000" + "|" * 11 + "ACC-9",  # OBR-18
            "OBX|1|ST|SPECIES^Species^L||Canine||||||F",
            "OBX|2|CE|BREED^Breed^L||LAB^Labrador Retriever^L||||||F",
            "OBX|3|NM|T4^Total T4^L||<0.5|ug/dL|1.0-4.0|L|||P",
            "PID|2||982000000000001^^^^MC||^Tom||20200101|FS",
            "OBR|1|A2||FELV^FeLV Ag" + "|" * 21 + "X",  # OBR-25
            "OBX|1|CWE|FELV^FeLV Ag^L||NEG^Negative^L||||||C",
        )
    )
    rex, tom = parsed.reports
    assert rex.patient.pms_id == "4711"
    assert rex.patient.microchip == "985112003456789"  # 15 digits, no type code
    assert (rex.patient.name, rex.patient.owner_surname) == ("Rex", "Jones")  # NK1 OWN wins
    assert rex.patient.sex is Sex.MALE_NEUTERED
    assert rex.patient.species == Coded(None, "Canine", None)
    assert rex.patient.breed == Coded("LAB", "Labrador Retriever", "L")
    assert rex.order.accession == "ACC-9"  # OBR-18
    assert rex.observed_at == datetime(2024, 1, 5, 9, 0, tzinfo=UTC)
    assert len(rex.observations) == 3  # the demographic OBX stay as results too
    t4 = rex.observations[2]
    assert (t4.comparator, t4.value_numeric, t4.status) == (
        "<",
        Decimal("0.5"),
        ResultStatus.PRELIMINARY,
    )
    assert tom.patient.microchip == "982000000000001"
    assert tom.patient.pms_id is None
    assert (tom.patient.name, tom.patient.owner_surname) == ("Tom", None)
    assert tom.patient.sex is Sex.FEMALE_SPAYED
    assert tom.patient.species is None  # the OBX convention does not leak between patients
    assert tom.status is ReportStatus.CANCELLED
    assert tom.observations[0].status is ResultStatus.CORRECTED


@pytest.mark.parametrize(
    ("code", "sex"),
    [
        ("M", Sex.MALE),
        ("F", Sex.FEMALE),
        ("N", Sex.MALE_NEUTERED),
        ("S", Sex.FEMALE_SPAYED),
        ("MN", Sex.MALE_NEUTERED),
        ("MC", Sex.MALE_NEUTERED),
        ("FS", Sex.FEMALE_SPAYED),
        ("U", Sex.UNKNOWN),
        ("Q", Sex.UNKNOWN),
        ("", None),
    ],
)
def test_sex_codes(code: str, sex: Sex | None) -> None:
    parsed = parse_oru(message(f"PID|1||X||Dog^Rex|||{code}", "OBR|1|||T^T"))
    assert parsed.reports[0].patient.sex is sex


def test_species_and_breed_from_pid_35_36() -> None:
    parsed = parse_oru(
        message(
            "PID|1||X||Dog^Rex" + "|" * 30 + "448771007^Canis lupus familiaris^SCT|"
            "44696006^Beagle^SCT",
            "OBR|1|||T^T",
        )
    )
    patient = parsed.reports[0].patient
    assert patient.species == Coded("448771007", "Canis lupus familiaris", "SCT")
    assert patient.breed == Coded("44696006", "Beagle", "SCT")


def test_pid_read_alike_with_and_without_escapes() -> None:
    """PID-3 and PID-5 are split directly when plain and through the accessors when escaped."""
    plain = "PID|1||P1^^^PMS&Clinic^PI~985112345678901^^^ISO^MC||~Dog^Rex"
    escaped = "PID|1||P1^^^PMS&Clinic^PI~98511234567890\\X31\\^^^ISO^MC||~Dog^R\\X65\\x"
    for pid in (plain, escaped):
        patient = parse_oru(message(pid, "OBR|1|||T^T")).reports[0].patient
        assert patient.identifiers == (
            Identifier("P1", "PMS", "PI"),
            Identifier("985112345678901", "ISO", "MC"),
        )
        assert (patient.pms_id, patient.microchip) == ("P1", "985112345678901")
        assert (patient.name, patient.owner_surname) == ("Rex", "Dog")


def test_model_is_frozen() -> None:
    report = parse_oru(message("OBR|1|||T^T")).reports[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.status = None  # type: ignore[misc]
    obs = single_obx("OBX|1|NM|GLU^Glucose^L||5.5|mmol/L", "NTE|1||fasting")
    with pytest.raises(dataclasses.FrozenInstanceError):
        obs.comments = ()  # type: ignore[misc]


def test_observation_draft_declares_the_model_fields() -> None:
    """obx._Draft becomes an Observation by taking its class: same slots, same declared types."""
    assert _Draft.__slots__ == Observation.__slots__
    assert typing.get_type_hints(_Draft) == typing.get_type_hints(Observation)
    assert not hasattr(Observation, "__post_init__")  # a draft never runs one


@pytest.mark.parametrize(
    ("draft", "model"),
    [
        (_OrderDraft, OrderRef),
        (_ReportDraft, Report),
        (_MessageDraft, ParsedMessage),
        (_PatientDraft, PatientRef),
    ],
)
def test_model_drafts_declare_the_model_fields(draft: type, model: type) -> None:
    """The drafts of oru.py and pid.py take their model's class: same slots, same types."""
    assert draft.__slots__ == model.__slots__
    assert typing.get_type_hints(draft) == typing.get_type_hints(model)
    assert not hasattr(model, "__post_init__")


def _twin(value: object) -> object:
    """``value`` rebuilt by its dataclass's own ``__init__`` from every field."""
    values = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}  # type: ignore[arg-type]
    return type(value)(**values)


@pytest.mark.parametrize("name", ORU_FIXTURES)
def test_reports_patients_and_messages_equal_ones_built_by_the_dataclass(name: str) -> None:
    """Report, OrderRef, PatientRef and ParsedMessage are built from drafts: the same values."""
    parsed = oru(name)
    built = [parsed, *parsed.reports]
    built += [r.order for r in parsed.reports] + [r.patient for r in parsed.reports]
    for value in built:
        twin = _twin(value)
        assert value == twin
        assert hash(value) == hash(twin)
        assert repr(value) == repr(twin)
        assert pickle.loads(pickle.dumps(value)) == value
        assert dataclasses.asdict(value) == dataclasses.asdict(twin)  # type: ignore[call-overload]
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, dataclasses.fields(value)[0].name, None)  # type: ignore[arg-type]


def test_analyte_fields_read_alike_memoised_or_not() -> None:
    """OBX-2, -3, -6 and -7 are memoised when short and plain: long or escaped ones read alike."""
    long_text = "Glucose " + "x" * _ANALYTE_LIMIT
    plain = single_obx(f"OBX|1|NM|GLU^{long_text}^L||5.5|mmol/L^^UCUM|3.9-7.8|N|||F")
    short = single_obx("OBX|1|NM|GLU^Glucose^L||5.5|mmol/L^^UCUM|3.9-7.8|N|||F")
    escaped = single_obx("OBX|1|NM|GLU^Gluc\\T\\ose^L||5.5|mmol\\F\\L^^UCUM|3.9-7.8|N|||F")
    for obs in (plain, short, escaped, short):
        assert (obs.code, obs.coding_system, obs.value_type) == ("GLU", "L", "NM")
        assert (obs.reference_range, obs.range_low, obs.range_high) == (
            "3.9-7.8",
            Decimal("3.9"),
            Decimal("7.8"),
        )
    assert plain.code_text == long_text
    assert (short.code_text, short.unit) == ("Glucose", "mmol/L")
    assert (escaped.code_text, escaped.unit) == ("Gluc&ose", "mmol|L")


def test_memoised_fields_follow_each_message_delimiters() -> None:
    """The same raw OBX-3 and OBX-5 text reads differently under other component separators."""
    obx = "OBX|1|CE|GLU^Glucose^L||POS^Positive^L|mmol/L^^UCUM|3.9-7.8"
    caret = single_obx(obx)
    hash_msh = "MSH|#~\\&|ANALYZER|VETLAB|GATEWAY|CLINIC|20240105101500||ORU#R01|MSG0002|P|2.5.1"
    raw = "\r".join((hash_msh, "PID|1||P1", "OBR|1|||CHEM", obx)).encode() + b"\r"
    (hashed,) = parse_oru(raw).reports[0].observations
    assert (caret.code, caret.code_text, caret.unit) == ("GLU", "Glucose", "mmol/L")
    assert caret.value_coded == Coded("POS", "Positive", "L")
    assert (hashed.code, hashed.code_text, hashed.unit) == ("GLU^Glucose^L", None, "mmol/L^^UCUM")
    assert hashed.value_coded == Coded("POS^Positive^L", None, None)


def test_empty_obx_3_raises_memoised_or_not() -> None:
    for _ in range(2):  # the second time from the memo
        with pytest.raises(ParseError) as info:
            single_obx("OBX|1|NM|^^L||5.5|mmol/L")
        assert info.value.location == "OBX[1]-3"


def test_read_reference() -> None:
    assert read_reference(" 3.9-7.8 ") == ("3.9-7.8", Decimal("3.9"), Decimal("7.8"))
    assert read_reference("  ") == (None, None, None)
    assert read_reference("<5") == ("<5", None, Decimal("5"))
    prose = "adult dog: " + "3.9-7.8 " * 10
    assert read_reference(prose) == (prose.strip(), None, None)


@pytest.mark.parametrize("name", ORU_FIXTURES)
def test_observations_equal_ones_built_by_the_dataclass(name: str) -> None:
    """read_observation builds Observation slot by slot (obx.py): the same value as __init__'s."""
    for report in oru(name).reports:
        for obs in report.observations:
            values = {f.name: getattr(obs, f.name) for f in dataclasses.fields(Observation)}
            twin = Observation(**values)
            assert type(obs) is Observation
            assert obs == twin
            assert hash(obs) == hash(twin)
            assert repr(obs) == repr(twin)
            assert pickle.loads(pickle.dumps(obs)) == obs
            assert dataclasses.replace(obs, set_id=99).set_id == 99


# --- the OBX fast path reads what the accessors read --------------------------------------------


def _by_accessors(seg: Segment) -> dict[str, object]:
    """An OBX read through the ER7 accessors only, in the order parse_oru reads it."""

    def opt(text: str) -> str | None:
        return text.strip() or None

    parts = seg.components(3)
    padded = [*parts, "", "", "", "", "", ""]
    code, text, system = opt(padded[0]), opt(padded[1]), opt(padded[2])
    if code is None and text is None and any(p.strip() for p in parts) and len(parts) > 3:
        code, text, system = opt(padded[3]), opt(padded[4]), opt(padded[5])
    if (code or text) is None:
        raise ParseError("empty OBX-3", location=seg.location(3))
    value_type = seg.field(2).strip().upper()
    value_text = "\n".join(seg.repetitions(5)) if value_type in ("TX", "FT") else seg.field(5)
    reference = seg.field(7)
    flags = tuple(
        f for r in range(1, len(seg.repetitions(8)) + 1) if (f := seg.component(8, 1, r).strip())
    )
    status = opt(seg.component(11, 1))
    set_id = seg.field(1).strip()
    sub_id = opt(seg.field(4))
    unit = opt(seg.component(6, 1)) or opt(seg.component(6, 2))
    return {
        "code": code or text,
        "code_text": text,
        "coding_system": system,
        "value_type": value_type,
        "value_text": value_text,
        "reference_range": opt(reference),
        "range_low": parse_range(reference)[0],
        "abnormal_flags": flags,
        "status_code": status,
        "set_id": int(set_id) if set_id.isascii() and set_id.isdigit() else None,
        "sub_id": sub_id,
        "unit": unit,
        "observed_at": parse_datetime(seg.component(14, 1)),
    }


# Text for one OBX field: delimiters, escapes (good and bad), numbers, spaces.
_FIELD_TEXT = st.lists(
    st.sampled_from(
        ["^", "~", "&", "\\", "\\S\\", "\\X41\\", "\\X4", "\\.br\\", " ", "a", "1", "."]
    ),
    max_size=6,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(
    fields=st.lists(_FIELD_TEXT, min_size=14, max_size=14),
    value_type=st.sampled_from(["NM", "ST", "TX", "", "N\\S\\M"]),
    stamp=st.sampled_from(["20240105101500", "20240105^x", "2024~2023", "\\X3230\\24", ""]),
)
def test_obx_fast_path_agrees_with_the_accessors(
    fields: list[str], value_type: str, stamp: str
) -> None:
    fields[1], fields[13] = value_type, stamp
    fields[2] = "GLU^Glucose^L" if fields[2] in ("", " ") else fields[2]
    raw = message("PID|1||P1^^^PMS^PI", "OBR|1|||CHEM^Chemistry", "OBX|" + "|".join(fields))
    obx = parse_er7(raw).segments_named("OBX")[0]
    expected: dict[str, object] | str | None
    try:
        expected = _by_accessors(obx)
    except ParseError as exc:
        expected = exc.location  # the same field must fail first
    try:
        (obs,) = parse_oru(raw).reports[0].observations
    except ParseError as exc:
        assert exc.location == expected  # noqa: PT017 — compared with the accessors' failure
        return
    assert isinstance(expected, dict)
    assert {name: getattr(obs, name) for name in expected} == expected


# --- values: fast paths and memos ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4.10", (None, Decimal("4.10"))),
        ("0065.88", (None, Decimal("65.88"))),
        ("12.", (None, Decimal("12"))),
        (".5", (None, Decimal("0.5"))),
        (" 7 ", (None, Decimal("7"))),
        ("<=0.1", ("<=", Decimal("0.1"))),
        (".", None),
        ("", None),
        ("1.2.3", None),
        ("1e5", None),
        ("NaN", None),
        ("\u0663", None),  # an Arabic-Indic digit: NM is ASCII digits only
        ("\uff11\uff12", None),  # fullwidth digits
    ],
)
def test_parse_compared(text: str, expected: tuple[str | None, Decimal] | None) -> None:
    assert parse_compared(text) == expected


def test_timestamp_memo_parses_each_text_once() -> None:
    memo = TimestampMemo()
    first = memo["20240105101530+0100"]
    assert first == datetime(2024, 1, 5, 10, 15, 30, tzinfo=timezone(timedelta(hours=1)))
    assert memo["20240105101530+0100"] is first
    assert memo["not a time"] is None
    assert len(memo) == 2


# --- structural errors -------------------------------------------------------------------------


def test_obx_before_any_obr_raises_naming_the_segment() -> None:
    with pytest.raises(ParseError) as info:
        parse_oru(message("PID|1||X", "OBX|1|NM|GLU^Glucose||5.5|mmol/L"))
    assert info.value.location == "OBX[1]-3"
    assert "before any OBR" in info.value.reason


def test_empty_obx3_raises_naming_the_field() -> None:
    with pytest.raises(ParseError) as info:
        parse_oru(message("OBR|1|||T^T", "OBX|1|NM|GLU^G||5|", "OBX|2|NM|||5.5|mmol/L"))
    assert info.value.location == "OBX[2]-3"


@pytest.mark.parametrize(
    "name",
    [
        "prs/prs_ack_v04_ae_err.hl7",
        "prs/prs_two_oru_concatenated_no_batch.hl7",
        "prs/prs_batch_fhs_bhs_2_oru.hl7",
        "pythonhl7/pythonhl7_bad_batch_bhs_without_msh.hl7",
    ],
)
def test_not_oru_or_not_one_message_raises(name: str) -> None:
    with pytest.raises(ParseError) as info:
        oru(name)
    assert info.value.location


def test_not_oru_names_msh_9() -> None:
    raw = message().replace(b"ORU^R01", b"ADT^A01")
    with pytest.raises(ParseError) as info:
        parse_oru(raw)
    assert info.value.location == "MSH[1]-9"


def test_no_msh_raises() -> None:
    with pytest.raises(ParseError):
        parse_oru(b"PID|1||X\rOBR|1|||T^T\r")


@pytest.mark.parametrize("version", ["2.3", "2.3.1", "2.4", "2.5", "2.5.1"])
def test_versions(version: str) -> None:
    parsed = parse_oru(message("OBR|1|||T^T", "OBX|1|NM|T^T||1|", version=version))
    assert parsed.version == version
    assert parsed.reports[0].observations[0].value_numeric == Decimal("1")


# --- property: mutated messages ----------------------------------------------------------------


def _mutations() -> st.SearchStrategy[bytes]:
    seeds = [(FIXTURES / n).read_bytes() for n in ORU_FIXTURES]
    seeds.append(
        message(
            "PID|1||4711^^^VETPMS^PT||Smith^Rex||20190301|MN",
            "OBR|1|A1||T4^Total T4|||20240105090000",
            "OBX|1|SN|T4^Total T4^L||<^0.5|ug/dL|-3-3|L~H|||P|||20240105",
            "NTE|1||note\\.br\\two",
            "OBX|2|ED|PDF^R^L||LAB^AP^PDF^Base64^JVBERi0=||||||F",
        )
    )
    tokens = [b"|", b"^", b"~", b"&", b"\\", b"\r", b"\n", b"OBX|", b"OBR|", b"PID|", b"NTE|", b"-"]
    return mutated(seeds, tokens)


@settings(max_examples=300, deadline=None)
@given(raw=_mutations())
def test_mutated_messages_parse_or_raise_parse_error(raw: bytes) -> None:
    with contextlib.suppress(ParseError):
        parsed = parse_oru(raw)
        assert isinstance(parsed, ParsedMessage)
        for report in parsed.reports:
            for obs in report.observations:
                assert isinstance(obs.value_text, str)
                assert obs.observed_at is None or obs.observed_at.tzinfo is not None
