"""Plain-text print-outs read by a per-model template (pipeline/parse/plaintext.py): the SPOTCHEM EL
print whole and through its shipped code map, a line-per-result print with a decimal comma,
flags and ranges, the error contract, template checks, and fuzz (returns or raises ParseError)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vetgateway.adapters.plaintext.framer import (
    NEED_DATA,
    SPOTCHEM_EL_FRAMING,
    MessageReceived,
    PlainTextFramer,
)
from vetgateway.catalogue import read_catalogue
from vetgateway.errors import ConfigError, ParseError
from vetgateway.model import AnalyzerMessage, Observation, OrderRef, PatientRef, Report
from vetgateway.pipeline.mapping import CatalogueEntry, MappingRule, MappingTable, map_observations
from vetgateway.pipeline.parse.plaintext import SPOTCHEM_EL, TextTemplate, parse_text

FIXTURES = Path(__file__).parent.parent / "fixtures" / "plaintext"
SPOTCHEM = (FIXTURES / "spotchem_el_plasma.txt").read_bytes()
LINES = (FIXTURES / "example_chem_lines_decimal_comma.txt").read_bytes()

EXAMPLE_CHEM = TextTemplate(
    model="EXAMPLE_CHEM_1",
    sample_id=r"^SAMPLE\s+(\S+)",
    patient_id=r"^PATIENT\s+(\S+)",
    timestamp=r"^DATE\s+(\d{2}\.\d{2}\.\d{4}\s+\d{2}:\d{2})",
    timestamp_format="%d.%m.%Y %H:%M",
    result=(
        r"^(?P<code>[A-Z]+)\s+(?P<value>\S+)\s+(?P<unit>\S+)\s+(?P<flag>[HL]?)\s*"
        r"\(\s*(?P<low>[\d,]+)\s*-\s*(?P<high>[\d,]+)\s*\)"
    ),
    decimal_comma=True,
)


def obs(n: int, code: str, value: str, number: str | None, unit: str, **kw: object) -> Observation:
    return Observation(
        set_id=n,
        sub_id=None,
        value_type="ST" if number is None else "NM",
        code=code,
        code_text=code,
        coding_system=None,
        value_text=value,
        value_numeric=None if number is None else Decimal(number),
        unit=unit,
        **kw,  # type: ignore[arg-type]
    )


def framed(stream: bytes) -> bytes:
    framer = PlainTextFramer(SPOTCHEM_EL_FRAMING)
    framer.receive_data(stream, 0.0)
    event = framer.next_event()
    assert isinstance(event, MessageReceived)
    assert framer.next_event() is NEED_DATA
    return event.text


# --- the SPOTCHEM EL print -------------------------------------------------------------------

SPOTCHEM_EXPECTED = AnalyzerMessage(
    sender="ARKRAY_SPOTCHEM_EL",
    reports=(
        Report(
            order=OrderRef(accession="VET0815"),
            patient=PatientRef(),
            service_code=None,
            service_text=None,
            status=None,
            status_code=None,
            observed_at=datetime(2025, 3, 14, 9, 41, tzinfo=UTC),
            reported_at=None,
            observations=(
                obs(1, "Na", "148", "148", "mmol/L"),
                obs(2, "K", "4.3", "4.3", "mmol/L"),
                obs(3, "Cl", "112", "112", "mmol/L"),
            ),
            comments=("specimen: B. Plasma",),
        ),
    ),
)


def test_spotchem_print_as_framed() -> None:
    assert parse_text(framed(SPOTCHEM), SPOTCHEM_EL) == SPOTCHEM_EXPECTED


def test_spotchem_print_with_its_framing_bytes_still_reads() -> None:
    assert parse_text(SPOTCHEM, SPOTCHEM_EL) == SPOTCHEM_EXPECTED  # a raw capture, file drop


def test_spotchem_time_is_the_clinics_local_time() -> None:
    cet = timezone(timedelta(hours=1))
    message = parse_text(SPOTCHEM, SPOTCHEM_EL, clock_tz=cet)
    observed = message.reports[0].observed_at
    assert observed == datetime(2025, 3, 14, 9, 41, tzinfo=cet)
    assert observed is not None
    assert observed.astimezone(UTC) == datetime(2025, 3, 14, 8, 41, tzinfo=UTC)


def shipped_mapping_table() -> MappingTable:
    """The packaged catalogue as the pipeline sees it once loaded (``store.catalogue``)."""
    files = read_catalogue()
    tests = {t.code: t for t in files.tests}
    ids = {code: uuid.uuid4() for code in tests}
    entries = tuple(
        CatalogueEntry(ids[t.code], t.code, t.name, t.unit, t.loinc, t.decimals)
        for t in tests.values()
    )
    rules = tuple(
        MappingRule(
            source=m.source,
            source_code=m.code,
            source_unit=m.unit,
            test_id=ids[m.test] if m.test else None,
            unit=tests[m.test].unit if m.test else None,
            factor=m.factor,
            offset=m.offset,
        )
        for m in files.mappings
    )
    return MappingTable(entries, rules)


def test_spotchem_codes_map_through_the_shipped_code_map() -> None:
    message = parse_text(SPOTCHEM, SPOTCHEM_EL)
    assert message.sender is not None
    mapped = map_observations(
        message.reports[0].observations, message.sender, shipped_mapping_table()
    )
    assert [(m.mapped, m.test_code, m.value_numeric, m.unit) for m in mapped] == [
        (True, "NA", Decimal("148"), "mmol/L"),
        (True, "K", Decimal("4.3"), "mmol/L"),
        (True, "CL", Decimal("112"), "mmol/L"),
    ]


def test_spotchem_value_that_is_not_a_number_is_kept_as_text() -> None:
    raw = SPOTCHEM.replace(b"       148", b"      ----")
    na = parse_text(raw, SPOTCHEM_EL).reports[0].observations[0]
    assert (na.code, na.value_type, na.value_text, na.value_numeric) == ("Na", "ST", "----", None)


def test_spotchem_date_that_is_not_a_date_is_left_out_with_a_comment() -> None:
    raw = SPOTCHEM.replace(b"25/03/14", b"25/13/14")
    report = parse_text(raw, SPOTCHEM_EL).reports[0]
    assert report.observed_at is None
    assert report.comments == (
        "specimen: B. Plasma",
        "printed time '25/13/14 09:41' does not read as %y/%m/%d %H:%M",
    )
    assert len(report.observations) == 3


# --- a line-per-result print -----------------------------------------------------------------


def test_line_print_with_patient_decimal_comma_flags_and_ranges() -> None:
    message = parse_text(LINES, EXAMPLE_CHEM)
    assert message.sender == "EXAMPLE_CHEM_1"
    assert (message.instrument, message.sent_at, message.qc_runs, message.queries) == (
        None,
        None,
        (),
        (),
    )
    (report,) = message.reports
    assert report.order == OrderRef(accession="S-20250314-007")
    assert report.patient == PatientRef(pms_id="PMS-4711")
    assert report.observed_at == datetime(2025, 3, 14, 9, 41, tzinfo=UTC)
    assert report.comments == ()
    assert report.observations == (
        obs(
            1,
            "GLU",
            "6,2",
            "6.2",
            "mmol/L",
            abnormal_flags=("H",),
            reference_range="3,9 - 5,9",
            range_low=Decimal("3.9"),
            range_high=Decimal("5.9"),
        ),
        obs(
            2,
            "CREA",
            "88",
            "88",
            "umol/L",
            reference_range="44 - 133",
            range_low=Decimal(44),
            range_high=Decimal(133),
        ),
        obs(
            3,
            "ALT",
            "<10",
            "10",
            "U/L",
            comparator="<",
            reference_range="10 - 100",
            range_low=Decimal(10),
            range_high=Decimal(100),
        ),
        obs(
            4,
            "TBIL",
            "----",
            None,
            "umol/L",
            reference_range="0 - 15",
            range_low=Decimal(0),
            range_high=Decimal(15),
        ),
    )


def test_aliases_rename_codes_and_keep_the_printed_one() -> None:
    template = dataclasses.replace(EXAMPLE_CHEM, aliases=(("GLU", "GLUC"), ("ALT", "ALAT")))
    observations = parse_text(LINES, template).reports[0].observations
    assert [(o.code, o.code_text) for o in observations] == [
        ("GLUC", "GLU"),
        ("CREA", "CREA"),
        ("ALAT", "ALT"),
        ("TBIL", "TBIL"),
    ]


def test_without_decimal_comma_a_comma_value_is_text() -> None:
    template = dataclasses.replace(EXAMPLE_CHEM, decimal_comma=False)
    glu = parse_text(LINES, template).reports[0].observations[0]
    assert (glu.value_type, glu.value_text, glu.value_numeric) == ("ST", "6,2", None)
    assert (glu.range_low, glu.range_high) == (None, None)


def test_optional_groups_absent_leave_fields_empty() -> None:
    template = TextTemplate(
        model="BARE",
        sample_id=r"SAMPLE (\S+)",
        result=r"(?P<code>[A-Z]+)=(?P<value>\S+)",
    )
    message = parse_text(b"SAMPLE 7\r\nNA=140\r\n", template)
    assert message.reports[0].observations == (
        Observation(1, None, "NM", "NA", "NA", None, "140", Decimal(140)),
    )
    assert message.reports[0].observed_at is None
    assert message.reports[0].patient == PatientRef()


def test_other_encodings_replace_what_they_cannot_read() -> None:
    template = TextTemplate(
        model="UTF8", encoding="utf-8", sample_id=r"ID (\S+)", result=r"(?P<code>K) (?P<value>\S+)"
    )
    message = parse_text(b"ID \xff\xfe1\nK 4.1", template)
    assert message.reports[0].order.accession == "\ufffd\ufffd1"


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw", [b"", b"\x02\x03\n", b"25/03/14 09:41 ID# VET0815 [B. Plasma] printer test\n"]
)
def test_no_result_line_is_a_parse_error(raw: bytes) -> None:
    with pytest.raises(ParseError) as info:
        parse_text(raw, SPOTCHEM_EL)
    assert info.value.location == "ARKRAY_SPOTCHEM_EL"
    assert info.value.reason == (
        "no result found: the text matches no result line of the ARKRAY_SPOTCHEM_EL template"
    )


def test_missing_sample_id_is_a_parse_error() -> None:
    raw = SPOTCHEM.replace(b"ID# VET0815", b"           ")
    with pytest.raises(ParseError, match="no sample id found") as info:
        parse_text(raw, SPOTCHEM_EL)
    assert "entered on the analyzer" in info.value.reason


def test_missing_sample_id_is_allowed_when_the_template_says_so() -> None:
    template = dataclasses.replace(SPOTCHEM_EL, sample_id_optional=True)
    raw = SPOTCHEM.replace(b"ID# VET0815", b"           ")
    report = parse_text(raw, template).reports[0]
    assert report.order == OrderRef()
    assert len(report.observations) == 3


# --- template checks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": " "}, "model must name the analyzer"),
        ({"model": "X" * 65}, "model must name the analyzer in 1-64 characters"),
        ({"result": r"(?P<code>\w+) (\d+)"}, "named groups 'code' and 'value'"),
        ({"result": r"(?P<code>\w+) (?P<value>\d+) (?P<units>\S+)"}, "unknown group"),
        ({"result": r"(?P<code>\w+"}, "result is not a valid regex"),
        ({"sample_id": r"ID# \S+"}, "sample_id needs a capturing group"),
        ({"patient_id": r"("}, "patient_id is not a valid regex"),
        ({"timestamp_format": None}, "timestamp and timestamp_format go together"),
        ({"encoding": "no-such-codec"}, "unknown encoding"),
    ],
)
def test_invalid_template_is_refused_naming_the_setting(
    change: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(SPOTCHEM_EL, **change)  # type: ignore[arg-type]


def test_templates_are_values() -> None:
    assert dataclasses.replace(SPOTCHEM_EL) == SPOTCHEM_EL
    assert hash(dataclasses.replace(SPOTCHEM_EL)) == hash(SPOTCHEM_EL)
    assert SPOTCHEM_EL.regex("patient_id") is None


# --- fuzz ------------------------------------------------------------------------------------


def check(raw: bytes, template: TextTemplate) -> None:
    """The error contract: a message with results, or ``ParseError`` with a reason."""
    try:
        message = parse_text(raw, template)
    except ParseError as exc:
        reason = exc.reason
    else:
        (report,) = message.reports
        assert report.observations
        for o in report.observations:
            assert (o.value_type == "NM") == (o.value_numeric is not None)
        return
    assert reason


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=400), template=st.sampled_from([SPOTCHEM_EL, EXAMPLE_CHEM]))
def test_any_bytes_parse_or_raise_parse_error(raw: bytes, template: TextTemplate) -> None:
    check(raw, template)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), template=st.sampled_from([SPOTCHEM_EL, EXAMPLE_CHEM]))
def test_mutated_prints_parse_or_raise_parse_error(
    data: st.DataObject, template: TextTemplate
) -> None:
    raw = bytearray(SPOTCHEM if template is SPOTCHEM_EL else LINES)
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(raw)))
        junk = data.draw(st.binary(max_size=4) | st.sampled_from([b",", b"<", b"-", b" ", b"9"]))
        raw[at : at + data.draw(st.integers(0, 3))] = junk
    check(bytes(raw), template)
