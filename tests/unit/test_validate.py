"""Structure validation (pipeline/parse/validate.py): clean messages, each kind of problem at its
location in the standard's terms, versions, and any bytes without an exception."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.mutations import mutated
from vetgateway.pipeline.parse.validate import Problem, format_problems, validate_message

FIXTURES = Path(__file__).parent.parent / "fixtures" / "hl7"

PID = "PID|1||4711^^^VETPMS^PT||Smith^Rex||20190301|MN"
OBR = "OBR|1|A1||T4^Total T4^L|||20240105090000"
OBX = "OBX|1|NM|T4^Total T4^L|1|2.1|ug/dL|1.0-4.0|N|||F|||20240105093000"


def message(*segments: str, version: str = "2.5.1", encoding: str = "^~\\&") -> bytes:
    """A small ORU^R01 of our own, segments joined by CR."""
    msh = (
        f"MSH|{encoding}|ANALYZER|VETLAB|GATEWAY|CLINIC|20240105101500||ORU^R01^ORU_R01|MSG0001"
        f"|P|{version}"
    )
    return "\r".join((msh, *segments)).encode() + b"\r"


def at(problems: list[Problem], location: str) -> list[str]:
    return [p.message for p in problems if p.location == location]


@pytest.mark.parametrize("version", ["2.3.1", "2.4", "2.5", "2.5.1", "2.6"])
def test_a_complete_result_has_no_problems(version: str) -> None:
    assert validate_message(message(PID, OBR, OBX, "NTE|1||checked twice", version=version)) == []


@pytest.mark.parametrize(
    "name",
    [
        "nodehl7c/nodehl7c_nist_elr_lead_nm_H_text_range.hl7",
        "nodehl7c/nodehl7c_nist_elr_stool_dup_obx_setid.hl7",
        "prs/prs_oru_r01_newborn_screen_cah_quirks.hl7",
    ],
)
def test_conformant_fixtures_have_no_problems(name: str) -> None:
    assert validate_message((FIXTURES / name).read_bytes()) == []


def test_fixture_problems_are_the_senders_deviations() -> None:
    """The GHH sample sends four SPS components in OBR-15 and a name in OBR-30 (an ID in v2.4)."""
    raw = (FIXTURES / "pythonhl7/pythonhl7_oru_r01_ghh_lab_glucose.hl7").read_bytes()
    problems = validate_message(raw)
    assert [p.location for p in problems] == ["OBR[1]-15", "OBR[1]-30"]
    assert "OBR-15 (specimen source, SPS) has more components than SPS" in problems[0].message
    assert "HL7 v2.4" in problems[0].message


def test_missing_pid_is_named_with_its_place_in_the_structure() -> None:
    problems = validate_message(message(OBR, OBX))
    (text,) = at(problems, "ORU_R01.PATIENT_RESULT.PATIENT.PID")
    assert "no PID segment" in text
    assert "cannot match" in text


def test_missing_obr_is_named_with_its_place_in_the_structure() -> None:
    problems = validate_message(message(PID, OBX))
    assert at(problems, "ORU_R01.PATIENT_RESULT.ORDER_OBSERVATION.OBR") == [
        "required segment OBR is missing (ORU_R01, HL7 v2.5.1)"
    ]
    # Our own parser refuses the message too, and says so at the orphaned OBX.
    assert any("before any OBR" in text for text in at(problems, "OBX[1]-3"))


def test_empty_obx_3_is_reported_by_the_standard_and_by_our_parser() -> None:
    second = "OBX|2|NM|||5.5|mmol/L|3.9-7.8|N|||F"
    problems = validate_message(message(PID, OBR, OBX, second))
    texts = at(problems, "OBX[2]-3")
    assert "OBX-3 (observation identifier) is empty; a result without a code cannot be used" in (
        texts
    )
    assert "OBX-3 (observation identifier, CE) is required in HL7 v2.5.1 but empty" in texts
    assert at(problems, "OBX[1]-3") == []


def test_components_and_repetitions_beyond_the_data_type() -> None:
    problems = validate_message(
        message(PID, OBR, "OBX|1|NM|T4^Total T4^L^^^^^extra||2.1|ug/dL|1.0-4.0|H^^HL70078|||F")
    )
    assert at(problems, "OBX[1]-3") == [
        "OBX-3 (observation identifier, CE) has more components than CE has in HL7 v2.5.1"
    ]
    assert at(problems, "OBX[1]-8") == [
        "OBX-8 (abnormal flags, IS) holds separators, but is a single value in HL7 v2.5.1"
    ]


def test_segments_out_of_place_unknown_and_local() -> None:
    problems = validate_message(
        message(PID, "ZVT|1|vet-specific", OBR, "EVN|R01|20240105", OBX, "XYZ|1")
    )
    assert at(problems, "EVN[1]") == [
        "segment EVN has no place here in ORU_R01 (HL7 v2.5.1); it follows OBR[1]"
    ]
    assert at(problems, "XYZ[1]") == ["segment 'XYZ' is not defined in HL7 v2.5.1"]
    assert at(problems, "ZVT[1]") == []  # Z segments are local extensions, allowed anywhere
    # Dropping EVN does not break the groups around it: no cascade of structure problems.
    assert [p.location for p in problems] == ["XYZ[1]", "EVN[1]"]


def test_unsupported_version_is_one_clear_problem() -> None:
    problems = validate_message(message(PID, OBR, OBX, version="2.9"))
    assert len(problems) == 1
    assert problems[0].location == "MSH[1]-12"
    assert "'2.9' cannot be checked" in problems[0].message
    assert "2.5.1" in problems[0].message  # what can be checked


def test_version_2_7_reads_the_truncation_character_and_older_ones_ignore_it() -> None:
    assert validate_message(message(PID, OBR, OBX, encoding="^~\\&#")) == []
    v27 = validate_message(message(PID, OBR, OBX, version="2.7", encoding="^~\\&#"))
    assert all(p.location.startswith("OBX[1]") for p in v27), v27  # the header is fine


def test_unknown_message_structure() -> None:
    raw = message(PID).replace(b"ORU^R01^ORU_R01", b"ZZZ^Z01^ZZZ_Z01")
    problems = validate_message(raw)
    assert "not ORU^R01" in at(problems, "MSH[1]-9")[0]
    assert "defines no message structure 'ZZZ_Z01'" in at(problems, "MSH[1]-9")[1]


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"", "the message is empty"),
        (b"hello world", "does not start with an MSH segment"),
        (bytes(range(256)), "does not start with an MSH segment"),
        (b"MSH|^~\\&|", "MSH-9"),
        (b"FHS|^~\\&|\rBHS|^~\\&|\r", "a batch"),
    ],
)
def test_garbage_is_our_parse_error_as_one_problem(raw: bytes, words: str) -> None:
    (problem,) = validate_message(raw)
    assert words in problem.message
    assert problem.location


def test_format_problems_one_line_each() -> None:
    problems = [Problem("PID[1]-3", "is required"), Problem("MSH[1]-12", "is unknown")]
    assert format_problems(problems) == "PID[1]-3: is required\nMSH[1]-12: is unknown"
    assert format_problems([]) == ""


# --- the contract: a list of problems, whatever the bytes ----------------------------------------


def _mutations() -> st.SearchStrategy[bytes]:
    seeds = [
        message(PID, OBR, OBX, "NTE|1||a\\.br\\b"),
        (FIXTURES / "pythonhl7/pythonhl7_oru_r01_ghh_lab_glucose.hl7").read_bytes(),
        (FIXTURES / "nodehl7c/nodehl7c_realm_elr_animal_rabies_dog.hl7").read_bytes(),
    ]
    tokens = [b"|", b"^", b"~", b"&", b"\\", b"\r", b"\n", b"OBX|", b"OBR|", b"PID|", b"ZZZ|"]
    return mutated(seeds, tokens, max_edits=5)


@settings(max_examples=60, deadline=None)
@given(raw=st.binary(max_size=300) | st.binary(max_size=200).map(lambda b: b"MSH|^~\\&|" + b))
def test_any_bytes_give_a_list_of_problems(raw: bytes) -> None:
    problems = validate_message(raw)
    assert all(isinstance(p, Problem) and p.location and p.message for p in problems)


@settings(max_examples=60, deadline=None)
@given(raw=_mutations())
def test_mutated_messages_give_a_list_of_problems(raw: bytes) -> None:
    problems = validate_message(raw)
    assert all(isinstance(p, Problem) and p.location and p.message for p in problems)
    assert format_problems(problems).count("\n") == max(len(problems) - 1, 0)
