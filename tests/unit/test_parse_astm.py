"""LIS2-A2 messages into the canonical model (pipeline/parse/astm.py): every fixture parses to
asserted values; the hierarchy (patients, orders, results, comments), control runs by each
convention, dialects (test code component, decimal comma), host queries, the structural errors,
and arbitrary or mutated bytes under hypothesis (an AnalyzerMessage or ParseError, nothing else)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.mutations import mutated
from tests.unit.test_astm_records import unframe
from vetgateway.errors import ConfigError, ParseError
from vetgateway.model import (
    AnalyzerMessage,
    Coded,
    HostQuery,
    Identifier,
    ReportStatus,
    ResultStatus,
    Sex,
)
from vetgateway.pipeline.parse.astm import DEFAULT_DIALECT, AstmDialect, parse_astm
from vetgateway.pipeline.parse.astm_readers import read_test_code
from vetgateway.pipeline.parse.astm_records import read_records

FIXTURES = Path(__file__).parent.parent / "fixtures" / "astm"
DECIMAL_COMMA = AstmDialect(decimal_comma=True)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def msg(*records: str, sep: str = "\r") -> bytes:
    return (sep.join(records) + sep).encode()


# --- copied fixtures -------------------------------------------------------------------------


def test_euroimmun_twenty_patients_with_decimal_comma() -> None:
    message = parse_astm(
        fixture("goastm/goastm_euroimmun_decimal_comma_multi_patient.astm"), DECIMAL_COMMA
    )
    assert (message.sender, message.instrument, message.sent_at) == (None, None, None)
    assert (len(message.reports), message.qc_runs, message.queries) == (20, (), ())
    first, second = message.reports[0], message.reports[1]
    assert first.patient.pms_id == "TEST-27-079-5-1"
    assert first.patient.identifiers == (Identifier("TEST-27-079-5-1", None, None),)
    assert first.service_code == "SARSCOV2IGA"
    assert first.observed_at == at(2022, 2, 18, 8, 7, 37)
    assert first.order.accession is None
    (above,) = first.observations
    assert (above.code, above.value_text, above.comparator, above.value_numeric) == (
        "SARSCOV2IGA",
        ">8",
        ">",
        Decimal(8),
    )
    assert (above.value_type, above.unit, above.status) == ("NM", "Ratio", None)
    (comma,) = second.observations
    assert (comma.value_text, comma.value_numeric, comma.comparator) == (
        "7,41",
        Decimal("7.41"),
        None,
    )
    # Trailing spaces of a patient id are stripped; inner ones are kept as sent.
    assert message.reports[14].patient.pms_id == "TEST-27-026-5-1  57"
    numbers = [r.observations[0].value_numeric for r in message.reports]
    assert numbers.count(Decimal(8)) == 9
    assert Decimal("2.02") in numbers


def test_decimal_comma_is_only_read_when_the_dialect_says_so() -> None:
    message = parse_astm(fixture("goastm/goastm_euroimmun_decimal_comma_multi_patient.astm"))
    comma = message.reports[1].observations[0]
    assert (comma.value_text, comma.value_numeric, comma.value_type) == ("7,41", None, "ST")


def test_biorad_bloodtype_composite_values_and_comments() -> None:
    message = parse_astm(fixture("goastm/goastm_biorad_ihcom_bloodtype_comments.astm"))
    assert (message.sender, message.sent_at) == ("Bio-Rad", at(2022, 3, 15, 19, 42, 27))
    assert message.instrument is None  # H-5 has one component; "IH v5.2" is H-6
    (report,) = message.reports
    patient = report.patient
    assert (patient.pms_id, patient.name, patient.owner_surname) == ("1010868845", "Test", "Testus")
    assert (patient.sex, patient.birth_date) == (Sex.MALE, date(1940, 6, 7))
    assert report.order.accession == report.order.placer == report.order.filler == "1122206642"
    assert (report.service_code, report.status_code, report.status) == (
        "MO10",
        "P",
        ReportStatus.PRELIMINARY,
    )
    assert report.reported_at == at(2022, 3, 11, 11, 41, 3)
    assert [o.code for o in report.observations] == ["AntiA", "AntiB", "AntiD", "Result"]
    anti_a = report.observations[0]
    assert (anti_a.value_text, anti_a.value_numeric, anti_a.value_type) == ("40", Decimal(40), "NM")
    assert anti_a.unit == "C"  # sent in R-5 as is
    assert (anti_a.status_code, anti_a.status) == ("R", ResultStatus.FINAL)
    assert anti_a.comments == ("CAS 5005352062212117030 50053.52.06 20221231 4",)
    result = report.observations[3]
    assert (result.value_text, result.value_numeric, result.value_type) == (
        "A^NEG^NEG^ccee^K-^NEG^^^",
        None,
        "ST",
    )
    assert result.comments == ()  # C|1|^^^|| has no text
    assert result.observed_at == at(2022, 3, 11, 11, 41, 3)


def test_galileo_two_orders_under_one_patient() -> None:
    message = parse_astm(fixture("goastm/goastm_immucor_galileo_result.astm"))
    assert (message.sender, message.version) == ("Echo", "LIS2-A2")
    assert [r.service_code for r in message.reports] == ["ABOD Full", "Screen"]
    first, second = message.reports
    assert first.patient is second.patient
    assert first.patient.pms_id == "1171984"
    assert first.patient.identifiers == (Identifier("1171984", None, "PI"),)
    assert (first.patient.name, first.patient.owner_surname) == ("Test", "Patient")
    assert [len(r.observations) for r in message.reports] == [9, 5]
    assert first.order.accession == "0651439A"
    grade = first.observations[2]
    assert (grade.code, grade.value_text, grade.value_type) == ("Anti-B", "3+^3+^45", "ST")
    interp = first.observations[8]
    assert (interp.code, interp.value_text, interp.status) == (
        "ABOD Full Interp",
        "B Pos",
        ResultStatus.FINAL,
    )
    assert interp.observed_at == at(2006, 3, 6, 16, 44, 29)


def test_yumizen_h550_qc_run_with_doubled_backslash() -> None:
    message = parse_astm(fixture("goastm/goastm_horiba_yumizen_h550_qc_escaped_delims.astm"))
    assert (message.sender, message.instrument) == ("H550", "909YAXH02732^1.2.1.4")
    assert (message.processing_id, message.version) == ("Q", "LIS2-A2")
    assert message.sent_at == at(2024, 9, 12, 7, 5, 4)
    assert message.reports == ()
    (run,) = message.qc_runs
    assert (run.sample_id, run.control, run.lot) == ("PX449L", "CTRLLOW", None)
    assert run.run_at == at(2024, 9, 12, 7, 3, 43)
    assert len(run.observations) == 20
    mcv = run.observations[0]
    assert (mcv.code, mcv.value_numeric, mcv.unit) == ("MCV", Decimal("78.4"), "um3")
    assert (mcv.reference_range, mcv.range_low, mcv.range_high) == (
        "73.5-83.5",
        Decimal("73.5"),
        Decimal("83.5"),
    )
    assert (mcv.abnormal_flags, mcv.status) == (("N",), ResultStatus.FINAL)
    wbc = next(o for o in run.observations if o.code == "WBC")
    assert (wbc.value_numeric, wbc.unit) == (Decimal("3.22"), "10E3/uL")


def test_yumizen_lot_from_sample_id_dialect() -> None:
    dialect = AstmDialect(qc_lot_from_sample_id=True)
    message = parse_astm(
        fixture("goastm/goastm_horiba_yumizen_h550_qc_escaped_delims.astm"), dialect
    )
    assert message.qc_runs[0].lot == "PX449L"


def test_bayer_header_frame_parses_to_a_message_without_results() -> None:
    text = unframe(fixture("glucometerutils/glucometerutils_bayer_contour_header_etb_frame.astm"))
    message = parse_astm(text)
    assert message.sender == "Bayer7390"
    assert message.instrument == "01.24\\01.04\\09.02.20^7390-2336773^7403-"
    assert (message.version, message.sent_at) == ("1", at(2019, 9, 22, 13, 4))
    assert (message.reports, message.qc_runs, message.queries) == ((), (), ())


def test_chunked_library_vector_is_refused_at_the_header() -> None:
    with pytest.raises(ParseError) as caught:
        parse_astm(unframe(fixture("pythonastm/pythonastm_chunked_etb_frames.astm")))
    assert caught.value.location == "H-2"


# --- written fixtures ------------------------------------------------------------------------


def test_sysmex_style_cbc() -> None:
    message = parse_astm(fixture("written/sysmex_style_cbc_canine.astm"))
    assert (message.sender, message.instrument) == ("XN-V", "00-26^31337^^^^ZZ000001")
    assert (message.version, message.processing_id, message.sent_at) == ("E1394-97", None, None)
    (report,) = message.reports
    patient = report.patient
    assert (patient.pms_id, patient.microchip) == ("PMS-20417", "999000000000123")
    assert patient.identifiers == (
        Identifier("PMS-20417", None, "PI"),
        Identifier("999000000000123", None, "MC"),
    )
    assert (patient.name, patient.owner_surname) == ("Bella", "Musterfrau")
    assert (patient.sex, patient.birth_date) == (Sex.FEMALE_SPAYED, date(2019, 3, 14))
    assert patient.comments == ("Fasted 12 h",)
    assert report.order.placer is None
    assert report.order.filler == report.order.accession == "42"
    assert (report.service_code, report.status) == ("WBC", ReportStatus.FINAL)
    codes = [o.code for o in report.observations]
    assert codes[:8] == ["WBC", "RBC", "HGB", "HCT", "MCV", "MCH", "MCHC", "PLT"]
    assert len(codes) == 15
    wbc = report.observations[0]
    assert (wbc.set_id, wbc.value_numeric, wbc.unit, wbc.abnormal_flags) == (
        1,
        Decimal("12.40"),
        "10*3/uL",
        ("N",),
    )
    assert wbc.observed_at == at(2025, 3, 1, 9, 15, 2)
    plt = report.observations[7]
    assert (plt.value_numeric, plt.abnormal_flags, plt.comments) == (
        Decimal(142),
        ("L",),
        ("PLT_Clumps?",),
    )
    assert report.observations[8].abnormal_flags == ("H",)
    scatter = report.observations[14]
    assert (scatter.code, scatter.value_text, scatter.value_type) == (
        "SCAT_WDF",
        "PNG\\20250301\\WDF_0042.PNG",
        "ST",
    )


def test_sysmex_style_padded_values_with_crlf() -> None:
    message = parse_astm(fixture("written/sysmex_style_padded_values_crlf.astm"))
    (report,) = message.reports
    assert report.patient.identifiers == ()
    assert report.order.accession == "118"
    values = [(o.code, o.value_text, o.value_numeric) for o in report.observations]
    assert values == [
        ("WBC", "5.5", Decimal("5.5")),
        ("RBC", "7.12", Decimal("7.12")),
        ("HGB", "16.3", Decimal("16.3")),
        ("PLT", "312", Decimal(312)),
    ]
    assert all(o.status is None and o.status_code is None for o in report.observations)


def test_horiba_style_two_patients_three_orders() -> None:
    message = parse_astm(fixture("written/horiba_style_cbc_two_patients.astm"))
    assert (message.sender, message.processing_id) == ("ABX", "P")
    assert [r.order.accession for r in message.reports] == ["ACC-5001", "ACC-5002", "ACC-5003"]
    first, second, third = message.reports
    assert first.patient is second.patient
    assert (first.patient.pms_id, first.patient.name, first.patient.owner_surname) == (
        "PMS-30001",
        "Milo",
        "Beispiel",
    )
    assert first.patient.sex is Sex.MALE_NEUTERED
    assert [r.status for r in message.reports] == [
        ReportStatus.FINAL,
        ReportStatus.PRELIMINARY,
        ReportStatus.CORRECTED,
    ]
    assert first.observed_at == at(2025, 3, 3, 14, 15)  # O-8 (collection), not O-9
    assert first.service_code == "DIF"
    wbc, _rbc, _hgb, baso, plt = first.observations
    assert (wbc.code, wbc.value_numeric, wbc.unit) == ("WBC", Decimal("5.2"), "10E3/uL")
    assert (wbc.reference_range, wbc.range_low, wbc.range_high) == (
        "6.0 - 17.0",
        Decimal("6.0"),
        Decimal("17.0"),
    )
    assert wbc.abnormal_flags == ("L",)
    assert wbc.comments == ("Alarm_WBC LMNE- LL",)
    assert (baso.value_text, baso.value_numeric, baso.value_type) == ("-----", None, "ST")
    assert (baso.abnormal_flags, baso.status) == (("HH",), ResultStatus.CANCELLED)
    assert (plt.status_code, plt.status) == ("W", ResultStatus.PRELIMINARY)
    assert second.observations[0].status is ResultStatus.PRELIMINARY
    # Second patient: its comment, and a species result filling the patient's species.
    assert third.patient.pms_id == "PMS-30002"
    assert third.patient.comments == ("Second patient of the run",)
    assert third.patient.species == Coded(None, "Feline", None)
    assert [o.code for o in third.observations] == ["WBC", "SPECIES"]
    assert third.observations[0].status is ResultStatus.CORRECTED
    assert first.patient.species is None


def test_horiba_style_qc_run() -> None:
    message = parse_astm(fixture("written/horiba_style_qc_ctrl_medium.astm"))
    assert message.reports == ()
    (run,) = message.qc_runs
    assert (run.sample_id, run.control, run.lot) == ("QX123N", "CTRL MEDIUM", None)
    assert run.run_at == at(2025, 3, 4, 8, 4)
    assert run.comments == ("CONTROL_FAILED PLT_ABOVE_TOLERANCE", "Difftrol-style control N")
    assert [(o.code, o.value_numeric) for o in run.observations] == [
        ("WBC", Decimal("7.95")),
        ("HGB", Decimal("13.1")),
        ("PLT", Decimal(305)),
    ]
    assert run.observations[2].abnormal_flags == ("H",)


def test_r33_non_default_delimiters_and_escapes() -> None:
    # H|@^\ : '@' repeats, '^' separates components, '\' escapes.
    raw = fixture("written/genexpert_style_custom_delimiters.astm")
    assert read_records(raw).delimiters.definition == "|@^\\"
    message = parse_astm(raw)
    assert (message.sender, message.instrument) == ("GeneXpert-style", "GX^6.4")
    (report,) = message.reports
    assert (report.service_code, report.order.accession) == ("PARVO", "GX-77")
    auto = [o.code for o in report.observations]
    assert auto == ["Xpert"] * 5  # the fourth component, the auto rule
    first = report.observations[0]
    assert (first.code_text, first.value_text, first.value_type) == ("PARVO", "NOT DETECTED", "ST")
    assert first.comments == ("Notes Sample lightly haemolysed| rerun advised",)  # \F\
    assert report.observations[3].value_text == "LOW^POSITIVE"  # \S\ splits nothing
    assert report.observations[4].comments == ("Lot A@B; see \\ in manual; &R& is text here",)
    ct = report.observations[2]
    assert (ct.value_text, ct.value_numeric, ct.value_type) == ("27.3", Decimal("27.3"), "NM")

    by_analyte = parse_astm(
        raw, AstmDialect(test_code_component=7, test_code_suffix_components=(8,))
    )
    codes = [o.code for o in by_analyte.reports[0].observations]
    assert codes == ["CPV", "CPV^Ct", "SPC^Ct", "GIA", "GIA^Ct"]

    # The default delimiters with &R& and &F& escapes.
    default = parse_astm(
        msg(
            "H|\\^&|||SENDER&F&1^V&S&2",
            "O|1|S&R&1",
            "R|1|^^^FILE|PNG&R&20250101&R&a.png|||||F",
            "C|1|I|pipe &F& caret &S& amp &E&|G",
            "L|1|N",
        )
    )
    assert (default.sender, default.instrument) == ("SENDER|1", "V^2")
    (result,) = default.reports[0].observations
    assert result.value_text == "PNG\\20250101\\a.png"
    assert result.comments == ("pipe | caret ^ amp &",)
    assert default.reports[0].order.accession == "S\\1"


def test_host_queries() -> None:
    message = parse_astm(fixture("written/host_query_two_specimens.astm"))
    assert (message.reports, message.qc_runs) == ((), ())
    assert message.queries == (
        HostQuery(sequence=1, sample_ids=("SMP-1001",), tests=(), request_info="O"),
        HostQuery(sequence=2, sample_ids=("SMP-1002",), tests=("WBC", "RBC"), request_info="O"),
    )


def test_host_query_sample_component_dialect_and_defaults() -> None:
    raw = msg("H|\\^&", "Q|x|PAT^SPEC^RACK\\^^ONLY3||^^^GLU\\^^^ALL", "Q||^^^", "L|1|I")
    auto = parse_astm(raw).queries
    assert auto == (
        HostQuery(sequence=1, sample_ids=("SPEC", "ONLY3"), tests=("GLU",)),
        HostQuery(sequence=2, sample_ids=()),
    )
    third = parse_astm(raw, AstmDialect(query_sample_component=3)).queries[0]
    assert third.sample_ids == ("RACK", "ONLY3")


def test_chemistry_censored_values_decimal_comma_and_qc_by_action_code() -> None:
    message = parse_astm(
        fixture("written/chemistry_qc_by_action_code_decimal_comma.astm"), DECIMAL_COMMA
    )
    (report,) = message.reports
    glu, crea = report.observations
    assert (glu.value_text, glu.value_numeric) == ("5,4", Decimal("5.4"))
    assert (glu.reference_range, glu.range_low, glu.range_high) == (
        "3,9 - 7,9",
        Decimal("3.9"),
        Decimal("7.9"),
    )
    assert (crea.value_text, crea.comparator, crea.value_numeric, crea.value_type) == (
        "< 20",
        "<",
        Decimal(20),
        "NM",
    )
    assert (crea.range_low, crea.range_high) == (Decimal(44), Decimal(159))
    assert crea.abnormal_flags == ("L", "<")
    assert crea.comments == ("Below the measuring range",)
    assert report.patient.sex is Sex.FEMALE
    (run,) = message.qc_runs
    assert (run.sample_id, run.control) == ("QC-LOT123", "Serum")
    assert run.observations[0].value_numeric == Decimal("6.1")


# --- hierarchy, comments and edge cases ------------------------------------------------------


def test_architect_style_censored_value_with_to_range_and_flags() -> None:
    message = parse_astm(
        msg(
            "H|\\^&|||ANALYZER^1.00^123|||||||P|1|20250101120000",
            "P|1",
            "O|1|S1||^^^123^Assay1^UNDILUTED^P|R||20250101110000||||||||||||||||||F",
            "R|1|^^^0021^B-hCG^UNDILUTED^P^^^^F|< 1.20|mIU/mL|0.35 TO 4.94|EXP^<||F"
            "||||20250101113000",
            "C|1|I|Example comment|G",
            "R|2|^^^0021^B-hCG^UNDILUTED^P^^^^I|NEGATIVE|||||F||||20250101113000",
            "L|1|N",
        )
    )
    (report,) = message.reports
    assert report.observed_at == at(2025, 1, 1, 11)  # O-7 when O-8 is empty
    low, text = report.observations
    assert (low.value_text, low.comparator, low.value_numeric) == ("< 1.20", "<", Decimal("1.20"))
    assert (low.unit, low.reference_range, low.range_low, low.range_high) == (
        "mIU/mL",
        "0.35 TO 4.94",
        Decimal("0.35"),
        Decimal("4.94"),
    )
    assert low.abnormal_flags == ("EXP", "<")
    assert low.comments == ("Example comment",)
    assert (text.value_text, text.value_type) == ("NEGATIVE", "ST")
    suffixed = parse_astm(
        msg("H|\\^&", "O|1", "R|1|^^^0021^B-hCG^^^^^^F|1"),
        AstmDialect(test_code_suffix_components=(11,)),
    )
    assert suffixed.reports[0].observations[0].code == "0021^F"


def test_comments_attach_to_the_latest_header_patient_order_or_result() -> None:
    message = parse_astm(
        msg(
            "H|\\^&",
            "C|1|I|about the message|G",
            "P|1|P1",
            "C|1|I|about the patient|G",
            "O|1|S1",
            "C|1|I|about the order^second part|G",
            "M|1|anything",
            "C|2|I|still the order|G",
            "R|1|^^^A|1",
            "C|1|I|first line\\second line|G",
            "S|1|science",
            "C|2|I||G",
            "Z|1|unknown type",
            "C|3|I|after an unknown record|G",
            "Q|1|^S9",
            "C|1|I|after a query|G",
            "L|1|N",
            "C|1|I|after the terminator|G",
        )
    )
    assert message.comments == ("about the message", "after a query")
    (report,) = message.reports
    assert report.patient.comments == ("about the patient",)
    assert report.comments == ("about the order second part", "still the order")
    assert report.observations[0].comments == ("first line\nsecond line", "after an unknown record")
    assert message.queries[0].sample_ids == ("S9",)


def test_orders_before_any_patient_have_an_empty_patient() -> None:
    message = parse_astm(msg("H|\\^&", "O|1|S1", "R|1|^^^A|1", "O|2|S2", "L"))
    assert [r.order.accession for r in message.reports] == ["S1", "S2"]
    assert all(r.patient.pms_id is None and r.patient.identifiers == () for r in message.reports)
    assert message.reports[1].observations == ()


def test_missing_terminator_is_accepted_and_records_after_it_are_ignored() -> None:
    without = parse_astm(msg("H|\\^&", "P|1|A", "O|1|S1", "R|1|^^^X|2"))
    assert without.reports[0].observations[0].value_numeric == Decimal(2)
    after = parse_astm(msg("H|\\^&", "O|1|S1", "R|1|^^^X|2", "L|1|N", "R|2|^^^Y|3", "P|2"))
    assert [o.code for o in after.reports[0].observations] == ["X"]


def test_patient_fields() -> None:
    message = parse_astm(
        msg(
            "H|\\^&",
            "P|1|PMS-1\\PMS-ALT|LAB-7|999000000000042|Smith^Rex^J||20200230|CM|||||||Canine|Beagle",
            "O|1",
            "P|2||||Solo||20181225|X",
            "O|1",
            "P|3|||999000000000001^chip",
            "O|1",
        ),
        AstmDialect(species_field=16, breed_field=17),
    )
    rex, solo, chip = (r.patient for r in message.reports)
    assert rex.identifiers == (
        Identifier("PMS-1", None, "PI"),
        Identifier("PMS-ALT", None, "PI"),
        Identifier("LAB-7", None, None),
        Identifier("999000000000042", None, "MC"),
    )
    assert (rex.pms_id, rex.microchip) == ("PMS-1", "999000000000042")
    assert (rex.name, rex.owner_surname, rex.sex) == ("Rex", "Smith", Sex.MALE_NEUTERED)
    assert rex.birth_date is None  # 30 February
    assert (rex.species, rex.breed) == (Coded(None, "Canine", None), Coded(None, "Beagle", None))
    assert (solo.name, solo.owner_surname, solo.sex) == ("Solo", None, Sex.UNKNOWN)
    assert solo.birth_date == date(2018, 12, 25)
    assert (chip.pms_id, chip.microchip) == (None, "999000000000001")
    assert chip.sex is None


def test_patient_id_fields_dialect_orders_the_pms_id_choice() -> None:
    raw = msg("H|\\^&", "P|1|PRACTICE|LAB|THIRD", "O|1")
    assert parse_astm(raw).reports[0].patient.pms_id == "PRACTICE"
    sysmex_like = AstmDialect(patient_id_fields=(5,))
    assert parse_astm(raw, sysmex_like).reports[0].patient.pms_id == "THIRD"
    elsewhere = parse_astm(
        msg("H|\\^&", "P|1|A" + "|" * 13 + "SPECIAL-1", "O|1"),
        AstmDialect(patient_id_fields=(16, 3)),
    )
    patient = elsewhere.reports[0].patient
    assert patient.pms_id == "SPECIAL-1"
    assert patient.identifiers == (Identifier("A", None, "PI"), Identifier("SPECIAL-1", None, None))


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("F", ReportStatus.FINAL),
        ("c", ReportStatus.CORRECTED),
        ("X", ReportStatus.CANCELLED),
        ("P", ReportStatus.PRELIMINARY),
        ("I", ReportStatus.PRELIMINARY),
        ("Q", ReportStatus.PRELIMINARY),
        ("K", None),
        ("", None),
    ],
)
def test_report_status_from_o26(code: str, status: ReportStatus | None) -> None:
    o26 = "|" * 25 + code
    report = parse_astm(msg("H|\\^&", f"O{o26}")).reports[0]
    assert report.status is status
    assert report.status_code == (code or None)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("F", ResultStatus.FINAL),
        ("V", ResultStatus.FINAL),
        ("R", ResultStatus.FINAL),
        ("C", ResultStatus.CORRECTED),
        ("X", ResultStatus.CANCELLED),
        ("P", ResultStatus.PRELIMINARY),
        ("S", ResultStatus.PRELIMINARY),
        ("W", ResultStatus.PRELIMINARY),
        ("M", None),
    ],
)
def test_result_status_from_r9(code: str, status: ResultStatus | None) -> None:
    obs = parse_astm(msg("H|\\^&", "O|1", f"R|1|^^^A|1|||||{code}")).reports[0].observations[0]
    assert (obs.status, obs.status_code) == (status, code)


def test_value_rules() -> None:
    records = [
        "R|1|^^^A|  -2.5 ",
        "R|2|^^^B|>= 10",
        "R|3|^^^C|^^",
        "R|4|^^^D|",
        "R|5|^^^E|1.2.3",
        "R|6|^^^F|1^2",
        "R|7|^^^G|NaN",
        "R|8|^^^H|\u0663",  # an Arabic-Indic digit is not a number here
        "R|9|^^^I|5|mg/dL^UCUM|<0.5",
        "R|99999999999|^^^J|1||>3",
    ]
    observations = parse_astm(msg("H|\\^&", "O|1", *records)).reports[0].observations
    summary = [(o.value_text, o.comparator, o.value_numeric, o.value_type) for o in observations]
    assert summary == [
        ("-2.5", None, Decimal("-2.5"), "NM"),
        (">= 10", ">=", Decimal(10), "NM"),
        ("", None, None, "ST"),
        ("", None, None, "ST"),
        ("1.2.3", None, None, "ST"),
        ("1^2", None, None, "ST"),
        ("NaN", None, None, "ST"),
        ("\u0663", None, None, "ST"),
        ("5", None, Decimal(5), "NM"),
        ("1", None, Decimal(1), "NM"),
    ]
    assert (observations[8].unit, observations[8].range_low, observations[8].range_high) == (
        "mg/dL",
        None,
        Decimal("0.5"),
    )
    assert observations[9].set_id is None  # not a plausible sequence number
    assert (observations[9].range_low, observations[9].range_high) == (Decimal(3), None)


def test_observed_at_falls_back_to_the_start_time() -> None:
    obs = parse_astm(msg("H|\\^&", "O|1", "R|1|^^^A|1||||||||20250102030405|")).reports[0]
    assert obs.observations[0].observed_at == at(2025, 1, 2, 3, 4, 5)
    header = "H|\\^&" + "|" * 10 + "P|LIS2-A2|"
    good = parse_astm(msg(header + "20250102")).sent_at
    assert good == at(2025, 1, 2)
    assert parse_astm(msg(header + "20251399")).sent_at is None


# --- test codes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parts", "dialect", "expected"),
    [
        (["", "", "", "GLU"], DEFAULT_DIALECT, ("GLU", None)),
        (["", "", "", "", "WBC", "1"], DEFAULT_DIALECT, ("WBC", None)),  # Sysmex
        (["", "", "", "WBC", "804-5", "1"], DEFAULT_DIALECT, ("WBC", None)),  # Horiba
        (["ALB", "Albumin"], DEFAULT_DIALECT, ("ALB", "Albumin")),
        (["  ", " "], DEFAULT_DIALECT, (None, None)),
        ([], DEFAULT_DIALECT, (None, None)),
        (["", "", "", "", "WBC", "1"], AstmDialect(test_code_component=5), ("WBC", None)),
        (["X", "", "", "Y"], AstmDialect(test_code_component=1), ("X", None)),
        # The named component is empty: the auto rule stands in.
        (["", "", "", "Y"], AstmDialect(test_code_component=9), ("Y", None)),
        (["", "MTB", "", "Xpert", "", "", "rpoB1", ""], AstmDialect(7, (8, 12)), ("rpoB1", "MTB")),
    ],
)
def test_universal_test_id_code(
    parts: list[str], dialect: AstmDialect, expected: tuple[str | None, str | None]
) -> None:
    assert read_test_code(parts, dialect) == expected


# --- control runs ----------------------------------------------------------------------------


def test_qc_by_specimen_descriptor_marker_in_a_production_message() -> None:
    raw = msg(
        "H|\\^&|||ANALYZER|||||||P",
        "P|1||||Control^Level 2",
        "O|1|L123||^^^GLU|R|20250101080000|||||||||control-2",
        "R|1|^^^GLU|5.0",
        "P|2|PMS-9",
        "O|1|S9||^^^GLU|R|20250101081000|||||||||Serum",
        "R|1|^^^GLU|6.0",
    )
    message = parse_astm(raw)
    (run,) = message.qc_runs
    assert (run.sample_id, run.control, run.run_at) == ("L123", "control-2", at(2025, 1, 1, 8))
    (report,) = message.reports
    assert (report.patient.pms_id, report.order.accession) == ("PMS-9", "S9")
    # Without the marker the same order is a patient's.
    plain = parse_astm(raw, AstmDialect(qc_specimen_markers=frozenset({"QCONLY"})))
    assert (len(plain.reports), plain.qc_runs) == (2, ())


def test_qc_by_sample_prefix_and_control_from_the_patient_name() -> None:
    raw = msg(
        "H|\\^&",
        "P|1||||Control^Normal",
        "O|1|qc-0042",
        "R|1|^^^GLU|5.0" + "|" * 9 + "20250101090000",
        "O|2|S-0043",
    )
    assert parse_astm(raw).qc_runs == ()
    message = parse_astm(raw, AstmDialect(qc_sample_prefixes=("QC-",)))
    (run,) = message.qc_runs
    assert (run.sample_id, run.control, run.lot) == ("qc-0042", "Control Normal", None)
    assert run.run_at == at(2025, 1, 1, 9)  # no order time: the first result's
    (report,) = message.reports
    assert report.order.accession == "S-0043"
    assert report.patient.name == "Normal"


def test_qc_by_processing_id_and_action_code_are_configurable() -> None:
    raw = msg("H|\\^&|||A|||||||QC", "O|1|S1|||||||||K", "R|1|^^^A|1")
    assert parse_astm(raw).qc_runs == ()
    assert len(parse_astm(raw, AstmDialect(qc_processing_ids=frozenset({"qc"}))).qc_runs) == 1
    assert len(parse_astm(raw, AstmDialect(qc_action_codes=frozenset({"k"}))).qc_runs) == 1


def test_sample_id_fields_dialect() -> None:
    raw = msg("H|\\^&", "O|1|HOST-1|^^ 77^M")
    assert parse_astm(raw).reports[0].order.accession == "HOST-1"
    report = parse_astm(raw, AstmDialect(sample_id_fields=(4, 3))).reports[0]
    assert (report.order.accession, report.order.placer, report.order.filler) == (
        "77",
        "HOST-1",
        "77",
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"test_code_component": 0},
        {"test_code_suffix_components": (2, -1)},
        {"sample_id_fields": (0,)},
        {"patient_id_fields": (True,)},
        {"query_sample_component": 0},
        {"species_field": -3},
        {"qc_processing_ids": frozenset({" "})},
        {"qc_specimen_markers": frozenset({""})},
        {"qc_sample_prefixes": ("",)},
    ],
)
def test_invalid_dialects_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="ASTM dialect"):
        AstmDialect(**kwargs)  # type: ignore[arg-type]


def test_dialect_normalises_its_words_and_is_hashable() -> None:
    dialect = AstmDialect(qc_specimen_markers=frozenset({" ctrl "}), qc_sample_prefixes=("qc",))
    assert dialect.qc_specimen_markers == frozenset({"CTRL"})
    assert dialect.qc_sample_prefixes == ("QC",)
    assert hash(dialect) == hash(
        AstmDialect(qc_specimen_markers=frozenset({"CTRL"}), qc_sample_prefixes=("QC",))
    )


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "location"),
    [
        (msg("P|1", "L|1"), "H-1"),
        (msg("H|\\^&", "P|1", "R|1|^^^A|1"), "R-3 (record 3)"),
        (msg("H|\\^&", "O|1", "R|1|^^^A|1", "R|2||5"), "R-3 (record 4)"),
        (msg("H|\\^&", "O|1", "R|1|  ^ ^|5"), "R-3 (record 3)"),
        (msg("H|\\^&", "O|1", "H|\\^&"), "H-1 (record 3)"),
        (msg("H|\\^&", "O|1", "L|1|N", "H|\\^&", "L|1|N"), "H-1 (record 4)"),
        (b"H|^^^^", "H-2"),
    ],
)
def test_structural_errors(raw: bytes, location: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_astm(raw)
    assert caught.value.location == location


def test_non_astm_vendor_print_is_refused_at_the_header() -> None:
    raw = b"\x0224/10/29 13:08 ID# 1\r Na  131 mmol/L\r\x03\n"
    with pytest.raises(ParseError) as caught:
        parse_astm(raw)
    assert caught.value.location == "H-1"


# --- size and property tests -----------------------------------------------------------------


def test_hundreds_of_results() -> None:
    results = [f"R|{i}|^^^^T{i}^1|{i}.5|fL|1.0 - 9.0|N||F||||20250101120000" for i in range(1, 501)]
    message = parse_astm(msg("H|\\^&|||XN-V", "P|1|PMS-1", "O|1||^^1^M", *results, "L|1|N"))
    observations = message.reports[0].observations
    assert len(observations) == 500
    assert observations[-1].code == "T500"
    assert observations[-1].value_numeric == Decimal("500.5")


SEEDS = [
    fixture(f"{folder}/{name}")
    for folder in ("goastm", "written")
    for name in sorted(p.name for p in (FIXTURES / folder).glob("*.astm"))
]
TOKENS = [
    b"|",
    b"\\",
    b"^",
    b"&",
    b"@",
    b"\r",
    b"\n",
    b"&R&",
    b"H|\\^&",
    b"R|1|",
    b"O|1|",
    b"P|1|",
    b"L|1",
]


def _check(raw: bytes) -> None:
    try:
        message = parse_astm(raw)
    except ParseError:
        return
    assert isinstance(message, AnalyzerMessage)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=500))
def test_any_bytes_parse_or_raise_parse_error(raw: bytes) -> None:
    _check(raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_a_header_then_any_bytes_parse_or_raise_parse_error(tail: bytes) -> None:
    _check(b"H|\\^&|||X\r" + tail)


@settings(max_examples=300, deadline=None)
@given(mutated(SEEDS, TOKENS))
def test_mutated_fixtures_parse_or_raise_parse_error(raw: bytes) -> None:
    _check(raw)
