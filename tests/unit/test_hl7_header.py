"""Reading MSH without a full parse: fixture values, character sets, each error's code, reason."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vetgateway.adapters.hl7.header import ErrorCode, HeaderError, MshHeader, read_header
from vetgateway.adapters.hl7.policy import check_supported
from vetgateway.errors import ParseError

FIXTURES = Path(__file__).parent.parent / "fixtures" / "hl7"

# file: (control id, MSH-9, version, MSH-11.1, MSH-18, codec, encoding characters)
EXPECTED = {
    "orders/vetclinic_orm_o01_canine_three_tests.hl7": (
        "VS-000481", "ORM^O01", "2.4", "P", "", "utf-8", "^~\\&"
    ),
    "orders/vetclinic_oml_o21_feline_accession_utf8.hl7": (
        "CP-9000317", "OML^O21^OML_O21", "2.5.1", "P", "UNICODE UTF-8", "utf-8", "^~\\&"
    ),
    "orders/vetclinic_orm_o01_cancel_one_test.hl7": (
        "VS-000502", "ORM^O01", "2.3", "P", "", "utf-8", "^~\\&"
    ),
    "pythonhl7/pythonhl7_oru_r01_ghh_lab_glucose.hl7": (
        "CNTRL-3456", "ORU^R01", "2.4", "P", "", "utf-8", "^~\\&"
    ),
    "pythonhl7/pythonhl7_ack_a01_aa.mllp": (
        "HL7ACK00001", "ACK^A01^ACK", "2.3", "P", "", "utf-8", "^~\\&"
    ),
    "prs/prs_ack_v04_ae_err.hl7": ("465798", "ACK^V04^ACK", "2.5.1", "P", "", "utf-8", "^~\\&"),
    "prs/prs_oru_r01_hci_multi_obr_H_nte_escapes.hl7": (
        "20230816123358", "ORU^R01^ORU_R01", "2.5.1", "P", "", "utf-8", "^~\\&#"
    ),
    "prs/prs_oru_r01_newborn_screen_20_obr.hl7": (
        "AUTOMATEDTEST-003", "ORU^R01^ORU_R01", "2.5.1", "T", "", "utf-8", "^~\\&"
    ),
    "prs/prs_oru_r01_newborn_screen_cah_quirks.hl7": (
        "987654321", "ORU^R01^ORU_R01", "2.5.1", "T", "", "utf-8", "^~\\&"
    ),
    "prs/prs_oru_r01_nte_after_each_obx.hl7": (
        "20240412110603_ff98cc992d5146e7916a5f0b873e534f",
        "ORU^R01^ORU_R01", "2.5.1", "T", "", "utf-8", "^~\\&",
    ),
    "prs/prs_two_oru_concatenated_no_batch.hl7": (
        "20240403205305_dba7572cc6334f1ea0744c5f235c823e",
        "ORU^R01^ORU_R01", "2.5.1", "P", "", "utf-8", "^~\\&",
    ),
    "elixirhl7/elixirhl7_elr_oru_r01_sn_species_truncation.hl7": (
        "PHELR.1.45543", "ORU^R01^ORU_R01", "2.5.1", "D", "", "utf-8", "^~\\&#"
    ),
    "nodehl7c/nodehl7c_athena_oru_lf_nte_tq1.hl7": (
        "20087.3", "ORU^R01^ORU_R01", "2.5.1", "D", "", "utf-8", "^~\\&"
    ),
    "nodehl7c/nodehl7c_cerner_lead_mixed_cr_lf.hl7": (
        "201010010913000772", "ORU^R01^ORU_R01", "2.5.1", "P", "", "utf-8", "^~\\&"
    ),
    "nodehl7c/nodehl7c_nist_elr_lead_nm_H_text_range.hl7": (
        "NIST-100929110701660", "ORU^R01^ORU_R01", "2.5.1", "P", "", "utf-8", "^~\\&"
    ),
    "nodehl7c/nodehl7c_nist_elr_stool_dup_obx_setid.hl7": (
        "NIST-100929111015653", "ORU^R01^ORU_R01", "2.5.1", "P", "", "utf-8", "^~\\&"
    ),
    "nodehl7c/nodehl7c_realm_elr_animal_rabies_dog.hl7": (
        "1234567890", "ORU^R01^ORU_R01", "2.5.1", "P", "", "utf-8", "^~\\&"
    ),
    "nodehl7c/nodehl7c_realm_elr_hcv_sn_gt_multi_flag.hl7": (
        "1234567890", "ORU^R01^ORU_R01", "2.5.1", "P", "", "utf-8", "^~\\&"
    ),
}  # fmt: skip
BATCHES = [
    "prs/prs_batch_fhs_bhs_2_oru.hl7",
    "prs/prs_batch_fhs_bhs_20_oru_cr.hl7",
    "pythonhl7/pythonhl7_file_fhs_bhs_two_batches.hl7",
    "pythonhl7/pythonhl7_bad_batch_bhs_without_msh.hl7",
]
ORU = (
    b"MSH|^~\\&|GHH LAB|ELAB-3|GHH OE|BLDG4|200202150930||ORU^R01^ORU_R01|CNTRL-3456|P|2.5.1"
    b"|||AL|NE||{charset}\rPID|||555-44-4444||{name}\rOBX|1|NM|GLU||182|mg/dl\r"
)


def load(name: str) -> bytes:
    data = (FIXTURES / name).read_bytes()
    return data[1:-2] if data.startswith(b"\x0b") else data


def oru(charset: bytes = b"", name: bytes = b"Rex^Dog") -> bytes:
    return ORU.replace(b"{charset}", charset).replace(b"{name}", name)


def read_error(raw: bytes, **kwargs: str) -> HeaderError:
    with pytest.raises(HeaderError) as info:
        read_header(raw, **kwargs)
    return info.value


def test_every_copied_fixture_is_covered() -> None:
    on_disk = {
        p.relative_to(FIXTURES).as_posix()
        for p in FIXTURES.rglob("*")
        if p.is_file() and p.suffix != ".md"
    }
    assert on_disk == set(EXPECTED) | set(BATCHES)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_header(name: str) -> None:
    control_id, msh9, version, pid, charset, codec, enc = EXPECTED[name]
    header = read_header(load(name))
    assert header.control_id == control_id
    assert header.message_type == msh9
    assert header.version_id == version
    assert header.processing_id_code == pid
    assert header.character_set == charset
    assert header.encoding == codec
    assert header.encoding_characters == enc
    assert header.field_separator == "|"


def test_fixture_details() -> None:
    h = read_header(load("nodehl7c/nodehl7c_realm_elr_animal_rabies_dog.hl7"))
    assert h.sending_application == "Lab1^1234^CLIA"
    assert h.sending_facility == "^1234^CLIA"
    assert h.receiving_application == "ELR^2.16.840.1.113883.19.3.2^ISO"
    assert h.receiving_facility == "SPH^2.16.840.1.113883.19.3.2^ISO"
    assert h.timestamp == "20080818183002.1-0700"
    assert h.processing_id == "P^T"
    assert (h.accept_ack_type, h.application_ack_type) == ("NE", "NE")
    assert (h.message_code, h.trigger_event, h.message_structure) == ("ORU", "R01", "ORU_R01")
    t = read_header(load("elixirhl7/elixirhl7_elr_oru_r01_sn_species_truncation.hl7"))
    assert t.truncation_character == "#"
    assert h.truncation_character is None


@pytest.mark.parametrize("name", BATCHES)
def test_batch_file_is_not_a_message(name: str) -> None:
    err = read_error(load(name))
    assert err.code == ErrorCode.SEGMENT_SEQUENCE_ERROR
    assert err.ack_code == "AE"
    assert "batch" in err.reason
    assert err.header is None


def test_messages_inside_the_utf8_batch() -> None:
    """The 20-message batch declares UNICODE UTF-8 in each MSH-18 (HL7 table 0211)."""
    data = load("prs/prs_batch_fhs_bhs_20_oru_cr.hl7")
    messages = [b"MSH" + m for m in re.split(rb"(?:^|\r)MSH", data)[1:]]
    assert len(messages) == 20
    headers = [read_header(m) for m in messages]
    assert {h.character_set for h in headers} == {"UNICODE UTF-8"}
    assert {h.encoding for h in headers} == {"utf-8"}
    assert headers[0].control_id == "885617"


def test_latin1_under_8859_1_decodes() -> None:
    raw = oru(b"8859/1", "Müller^Rex".encode("latin-1"))
    header = read_header(raw)
    assert header.character_set == "8859/1"
    assert header.encoding == "iso8859-1"
    assert "Müller" in raw.decode(header.encoding)


def test_latin1_without_msh18_uses_the_channel_default() -> None:
    raw = oru(b"", "Müller".encode("latin-1"))
    assert read_header(raw, default_encoding="latin-1").encoding == "latin-1"
    err = read_error(raw)  # the default default is UTF-8
    assert err.code == ErrorCode.DATA_TYPE_ERROR
    assert "MSH-18 is empty" in err.reason


def test_non_utf8_bytes_under_utf8_msh18() -> None:
    raw = oru(b"UNICODE UTF-8", "Müller".encode("latin-1"))
    err = read_error(raw)
    assert err.code == ErrorCode.DATA_TYPE_ERROR
    assert err.ack_code == "AE"
    assert err.commit_code == "CE"
    assert err.detail.location == "PID^1^5"
    assert "0xFC" in err.reason
    assert "8859/1" in err.reason  # tells the analyst what to declare instead
    assert err.header is not None
    assert err.header.control_id == "CNTRL-3456"  # the NAK can still echo MSH-10


def test_unknown_charset() -> None:
    err = read_error(oru(b"KLINGON"))
    assert (err.code, err.detail.location, err.ack_code) == (103, "MSH^1^18", "AE")
    assert "'KLINGON'" in err.reason
    assert err.header is not None
    assert err.header.control_id == "CNTRL-3456"


@pytest.mark.parametrize(
    ("raw", "code", "location", "ack", "words"),
    [
        (b"", 100, "MSH^1", "AE", "empty"),
        (b"PID|1\rMSH|^~\\&|", 100, "MSH^1", "AE", "does not start with an MSH"),
        (b"MSH", 101, "MSH^1^1", "AE", "MSH-1"),
        (b"MSHA^~\\&|", 102, "MSH^1^1", "AE", "field separator"),
        (b"MSH^~\\&|LAB|FAC|||x||ORU^R01|1|P|2.5", 102, "MSH^1^2", "AE", "looks '|'-delimited"),
        (b"MSH||LAB", 101, "MSH^1^2", "AE", "is empty"),
        (b"MSH|^~\\|A", 102, "MSH^1^2", "AE", "has 3 characters"),
        (b"MSH|^^\\&|A", 102, "MSH^1^2", "AE", "distinct"),
        (b"M\x00S\x00H\x00|\x00", 100, "MSH^1", "AE", "UTF-16"),
    ],
)
def test_unreadable_delimiters(raw: bytes, code: int, location: str, ack: str, words: str) -> None:
    err = read_error(raw)
    assert (err.code, err.detail.location, err.ack_code) == (code, location, ack)
    assert words in err.reason
    assert err.header is None
    assert isinstance(err, ParseError)


@pytest.mark.parametrize(
    ("old", "new", "location", "words"),
    [
        (b"|CNTRL-3456|", b"||", "MSH^1^10", "MSH-10 (message control ID) is empty"),
        (b"|CNTRL-3456|", b"|   |", "MSH^1^10", "MSH-10"),
        (b"|ORU^R01^ORU_R01|", b"||", "MSH^1^9", "MSH-9"),
        (b"|ORU^R01^ORU_R01|", b"|^R01|", "MSH^1^9^1^1", "MSH-9"),
        (b"|P|2.5.1", b"||2.5.1", "MSH^1^11", "MSH-11"),
        (b"|P|2.5.1", b"|P|", "MSH^1^12", "MSH-12"),
    ],
)
def test_required_field_missing(old: bytes, new: bytes, location: str, words: str) -> None:
    err = read_error(oru().replace(old, new, 1))
    assert err.code == ErrorCode.REQUIRED_FIELD_MISSING
    assert (err.detail.location, err.ack_code) == (location, "AE")
    assert words in err.reason
    assert err.header is not None


def test_bad_ack_condition() -> None:
    err = read_error(oru().replace(b"|AL|NE|", b"|ALWAYS|NE|"))
    assert (err.code, err.detail.location, err.ack_code) == (103, "MSH^1^15", "AE")
    assert "table 0155" in err.reason


def test_tolerated_variants() -> None:
    lf = oru().replace(b"\r", b"\n")
    crlf = oru().replace(b"\r", b"\r\n")
    bom = b"\xef\xbb\xbf\r\n" + oru()
    for raw in (lf, crlf, bom, oru()[: oru().index(b"\r")]):
        assert read_header(raw).control_id == "CNTRL-3456"
    custom = b"MSH$%*!@$A$B$C$D$2024$$ORU%R01$ID9$P$2.3.1\rPID$1\r"
    h = read_header(custom)
    assert (h.field_separator, h.encoding_characters, h.trigger_event) == ("$", "%*!@", "R01")
    assert h.control_id == "ID9"


def test_policy_accepts_supported() -> None:
    check_supported(read_header(oru()), accepted_types={"ORU^R01"})
    check_supported(read_header(oru()), accepted_types={"oru"})


@pytest.mark.parametrize(
    ("raw", "kwargs", "code", "location", "words"),
    [
        (oru(), {"accepted_types": {"OUL^R22"}}, 200, "MSH^1^9^1^1", "'ORU'"),
        (oru(), {"accepted_types": {"ORU^R30"}}, 201, "MSH^1^9^1^2", "'R01'"),
        (oru().replace(b"|2.5.1", b"|2.2"), {"accepted_types": {"ORU"}}, 203, "MSH^1^12", "2.2"),
        (oru().replace(b"|P|", b"|T|"), {"accepted_types": {"ORU"}}, 202, "MSH^1^11", "test"),
    ],
)
def test_policy_rejects(
    raw: bytes, kwargs: dict[str, set[str]], code: int, location: str, words: str
) -> None:
    with pytest.raises(HeaderError) as info:
        check_supported(read_header(raw), **kwargs)
    err = info.value
    assert (err.code, err.detail.location, err.ack_code, err.commit_code) == (
        code,
        location,
        "AR",
        "CR",
    )
    assert words in err.reason


def test_policy_test_port_takes_t_and_d() -> None:
    header = read_header(oru().replace(b"|P|", b"|T|"))
    check_supported(header, accepted_types={"ORU"}, processing_ids=("D", "T"))
    assert header.processing_id_code == "T"


CHARSETS = [b"", b"UNICODE UTF-8", b"ASCII", b"8859/1", b"BIG-5", b"GB 18030-2000", b"X"]


def mutations() -> st.SearchStrategy[bytes]:
    def mutate(args: tuple[bytes, int, int, bytes]) -> bytes:
        charset, start, length, insert = args
        base = oru(charset, "Müller".encode("latin-1"))
        start %= len(base)
        return base[:start] + insert + base[start + length :]

    return st.tuples(
        st.sampled_from(CHARSETS), st.integers(0, 10_000), st.integers(0, 8), st.binary(max_size=8)
    ).map(mutate)


@settings(max_examples=500)
@given(raw=st.binary(max_size=300) | mutations() | st.binary().map(lambda b: b"MSH" + b))
def test_fuzz_reads_or_raises_header_error(raw: bytes) -> None:
    error: HeaderError | None = None
    try:
        header: MshHeader | None = read_header(raw)
    except HeaderError as exc:
        header, error = None, exc
    if error is not None:
        assert error.reason
        assert isinstance(error.code, ErrorCode)
        assert error.ack_code in ("AE", "AR")
    else:
        assert header is not None
        assert header.control_id.strip()
