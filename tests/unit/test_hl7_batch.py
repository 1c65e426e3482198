"""Splitting HL7 batch files: every fixture, the envelope checks (R24), separators, and fuzzing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vetgateway.adapters.hl7.batch import BatchFile, ProblemKind, split_batch

FIXTURES = Path(__file__).parent.parent / "fixtures" / "hl7"
CONTROL_ID = re.compile(rb"^MSH\|[^|]*(?:\|[^|\r\n]*){7}\|([^|\r\n]*)")
_ENDS = re.compile(rb"\r\n|\r|\n")


def control_ids(result: BatchFile) -> list[str]:
    ids = []
    for message in result.messages:
        match = CONTROL_ID.match(message.data)
        assert match is not None, message.data[:80]
        ids.append(match.group(1).decode())
    return ids


def kinds(result: BatchFile) -> list[ProblemKind]:
    return [p.kind for p in result.problems]


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


SINGLE = {
    "orders/vetclinic_orm_o01_canine_three_tests.hl7": "VS-000481",
    "orders/vetclinic_oml_o21_feline_accession_utf8.hl7": "CP-9000317",
    "orders/vetclinic_orm_o01_cancel_one_test.hl7": "VS-000502",
    "pythonhl7/pythonhl7_oru_r01_ghh_lab_glucose.hl7": "CNTRL-3456",
    "prs/prs_ack_v04_ae_err.hl7": "465798",
    "prs/prs_oru_r01_hci_multi_obr_H_nte_escapes.hl7": "20230816123358",
    "prs/prs_oru_r01_newborn_screen_20_obr.hl7": "AUTOMATEDTEST-003",
    "prs/prs_oru_r01_newborn_screen_cah_quirks.hl7": "987654321",
    "prs/prs_oru_r01_nte_after_each_obx.hl7": "20240412110603_ff98cc992d5146e7916a5f0b873e534f",
    "elixirhl7/elixirhl7_elr_oru_r01_sn_species_truncation.hl7": "PHELR.1.45543",
    "nodehl7c/nodehl7c_athena_oru_lf_nte_tq1.hl7": "20087.3",
    "nodehl7c/nodehl7c_cerner_lead_mixed_cr_lf.hl7": "201010010913000772",
    "nodehl7c/nodehl7c_nist_elr_lead_nm_H_text_range.hl7": "NIST-100929110701660",
    "nodehl7c/nodehl7c_nist_elr_stool_dup_obx_setid.hl7": "NIST-100929111015653",
    "nodehl7c/nodehl7c_realm_elr_animal_rabies_dog.hl7": "1234567890",
    "nodehl7c/nodehl7c_realm_elr_hcv_sn_gt_multi_flag.hl7": "1234567890",
}


@pytest.mark.parametrize(("name", "control_id"), SINGLE.items(), ids=list(SINGLE))
def test_a_single_message_file_is_one_message_equal_to_the_whole_file(
    name: str, control_id: str
) -> None:
    data = fixture(name)
    result = split_batch(data)
    assert control_ids(result) == [control_id]
    assert result.messages[0].data == data
    assert result.problems == []
    assert result.unusable == []


def test_every_fixture_is_covered_by_the_tests() -> None:
    covered = {
        *SINGLE,
        "prs/prs_batch_fhs_bhs_2_oru.hl7",
        "prs/prs_batch_fhs_bhs_20_oru_cr.hl7",
        "prs/prs_two_oru_concatenated_no_batch.hl7",
        "pythonhl7/pythonhl7_file_fhs_bhs_two_batches.hl7",
        "pythonhl7/pythonhl7_bad_batch_bhs_without_msh.hl7",
        "pythonhl7/pythonhl7_ack_a01_aa.mllp",
    }
    present = {
        p.relative_to(FIXTURES).as_posix() for p in FIXTURES.glob("*/*") if p.suffix != ".md"
    }
    assert present == covered


def test_fhs_bhs_batch_of_two_lf_separated() -> None:
    data = fixture("prs/prs_batch_fhs_bhs_2_oru.hl7")
    result = split_batch(data)
    assert control_ids(result) == ["371784", "612092"]
    assert result.problems == []
    [batch] = result.batches
    assert (batch.explicit, batch.declared, batch.messages, batch.line) == (True, 2, 2, 2)
    assert [m.batch for m in result.messages] == [1, 1]
    assert [m.position for m in result.messages] == [1, 2]
    assert [m.line for m in result.messages] == [3, 14]


def test_fhs_bhs_batch_of_twenty_cr_separated_slices_the_file_verbatim() -> None:
    data = fixture("prs/prs_batch_fhs_bhs_20_oru_cr.hl7")
    result = split_batch(data)
    assert len(result.messages) == 20
    assert len(set(control_ids(result))) == 20
    assert result.problems == []
    assert result.batches[0].declared == 20
    for message in result.messages:
        assert data[message.offset : message.offset + len(message.data)] == message.data
        assert message.data.startswith(b"MSH|")
        assert message.data.endswith(b"\r")
        assert b"BTS" not in message.data
        assert b"BHS" not in message.data
    # Everything between the first MSH and the BTS is in some message, nothing twice.
    first, last = result.messages[0], result.messages[-1]
    assert (
        b"".join(m.data for m in result.messages)
        == data[first.offset : last.offset + len(last.data)]
    )


def test_one_file_with_two_batches_and_their_counts() -> None:
    result = split_batch(fixture("pythonhl7/pythonhl7_file_fhs_bhs_two_batches.hl7"))
    assert control_ids(result) == ["12334456778890", "12334456778891", "12334456778890"]
    assert [m.batch for m in result.messages] == [1, 1, 2]
    assert [(b.control_id, b.declared, b.messages) for b in result.batches] == [
        ("abchs20070101123401-1", 2, 2),
        ("abchs20070101123401-2", 1, 1),
    ]
    assert result.problems == []


def test_two_messages_without_envelope() -> None:
    data = fixture("prs/prs_two_oru_concatenated_no_batch.hl7")
    result = split_batch(data)
    assert len(result.messages) == 2
    assert b"".join(m.data for m in result.messages) == data
    assert result.problems == []
    assert [b.explicit for b in result.batches] == [False]


def test_bad_batch_stray_segments_do_not_vanish() -> None:
    data = fixture("pythonhl7/pythonhl7_bad_batch_bhs_without_msh.hl7")
    result = split_batch(data)
    assert result.messages == []
    [part] = result.unusable
    assert part.data.startswith(b"EVN|")
    assert part.data.endswith(b"PV1|1|O||||^^^^^1\r")
    assert part.data == data[part.offset : part.offset + len(part.data)]
    assert part.line == 2
    assert part.reason is not None
    assert "5 lines from line 2" in part.reason
    assert "abchs20070101123401-1" in part.reason
    assert kinds(result) == [
        ProblemKind.UNUSABLE_PART,
        ProblemKind.COUNT_MISMATCH,
        ProblemKind.NO_MESSAGES,
    ]
    mismatch = result.problems[1]
    assert mismatch.batch == 1
    assert "BTS-1 says 1 message, the batch holds 0 messages and 1 unusable part" in (
        mismatch.message
    )


def test_an_mllp_capture_is_not_a_batch_file() -> None:
    data = fixture("pythonhl7/pythonhl7_ack_a01_aa.mllp")
    result = split_batch(data)
    assert result.messages == []
    assert [p.data for p in result.unusable] == [data]
    assert ProblemKind.NO_MESSAGES in kinds(result)


MSG_A = b"MSH|^~\\&|LAB|F|VG|C|20260101||ORU^R01|A1|P|2.5.1\rPID|1\rOBX|1|NM|GLU||5.5\r"
MSG_B = b"MSH|^~\\&|LAB|F|VG|C|20260101||ORU^R01|B2|P|2.5.1\rPID|1\r"
MSG_C = b"MSH|^~\\&|LAB|F|VG|C|20260101||ORU^R01|C3|P|2.5.1\rPID|1\r"


def batch(*messages: bytes, count: str, bhs: bytes = b"BHS|^~\\&|LAB||||||||B-7\r") -> bytes:
    return bhs + b"".join(messages) + b"BTS|" + count.encode() + b"\r"


def test_bts_count_higher_than_the_batch_holds_flags_the_batch_and_keeps_messages() -> None:
    result = split_batch(batch(MSG_A, MSG_B, count="3"))
    assert control_ids(result) == ["A1", "B2"]
    [problem] = result.problems
    assert problem.kind is ProblemKind.COUNT_MISMATCH
    assert problem.batch == 1
    assert problem.line == 7
    assert problem.message == (
        "batch 1 'B-7' (BHS at line 1): BTS-1 says 3 messages, the batch holds 2 messages;"
        " the messages found are processed"
    )


def test_bts_count_lower_than_the_batch_holds() -> None:
    result = split_batch(batch(MSG_A, MSG_B, MSG_C, count="1"))
    assert control_ids(result) == ["A1", "B2", "C3"]
    assert kinds(result) == [ProblemKind.COUNT_MISMATCH]
    assert "says 1 message, the batch holds 3 messages" in result.problems[0].message


def test_fts_count_is_checked_against_the_batches() -> None:
    data = b"FHS|^~\\&\r" + batch(MSG_A, count="1") + batch(MSG_B, count="1") + b"FTS|3\r"
    result = split_batch(data)
    assert control_ids(result) == ["A1", "B2"]
    [problem] = result.problems
    assert problem.kind is ProblemKind.COUNT_MISMATCH
    assert "FTS-1 at line 11 says 3 batches, the file holds 2 batches" in problem.message


def test_a_count_that_is_not_a_number_is_reported() -> None:
    result = split_batch(batch(MSG_A, count="two"))
    assert control_ids(result) == ["A1"]
    assert kinds(result) == [ProblemKind.BAD_COUNT]
    assert "'two'" in result.problems[0].message


def test_empty_bts_count_is_not_checked() -> None:
    result = split_batch(batch(MSG_A, MSG_B, count=""))
    assert result.problems == []


def test_missing_trailers_suggest_a_truncated_file() -> None:
    data = b"FHS|^~\\&\rBHS|^~\\&\r" + MSG_A + MSG_B
    result = split_batch(data)
    assert control_ids(result) == ["A1", "B2"]
    assert kinds(result) == [ProblemKind.MISSING_TRAILER, ProblemKind.MISSING_TRAILER]
    assert "batch 1 (BHS at line 2) has no BTS trailer" in result.problems[0].message
    assert "2 messages found" in result.problems[0].message
    assert "FHS at line 1 has no FTS trailer" in result.problems[1].message


def test_junk_before_the_first_message_is_an_unusable_part() -> None:
    junk = b"garbage line one\r\ngarbage line two\r\n"
    data = junk + MSG_A
    result = split_batch(data)
    assert control_ids(result) == ["A1"]
    [part] = result.unusable
    assert part.data == junk
    assert (part.offset, part.line, part.position, part.batch) == (0, 1, 1, None)
    assert result.messages[0].position == 2
    assert kinds(result) == [ProblemKind.UNUSABLE_PART]
    assert "before the first message" in result.problems[0].message


def test_lines_after_a_batch_trailer_are_an_unusable_part() -> None:
    data = batch(MSG_A, count="1") + b"ZZZ|left over\r" + MSG_B
    result = split_batch(data)
    assert control_ids(result) == ["A1", "B2"]
    assert [p.data for p in result.unusable] == [b"ZZZ|left over\r"]
    assert "after the BTS at line 5" in (result.unusable[0].reason or "")


def test_mixed_separators_keep_each_message_verbatim() -> None:
    a = b"MSH|^~\\&|L|F|V|C|1||ORU^R01|A1|P|2.5.1\r\nPID|1\rOBX|1\n"
    b = b"MSH|^~\\&|L|F|V|C|1||ORU^R01|B2|P|2.5.1\nPID|1\r\nNTE|1||text\n"
    data = b"BHS|^~\\&\n" + a + b + b"BTS|2\r\n"
    result = split_batch(data)
    assert [m.data for m in result.messages] == [a, b]
    assert result.problems == []
    assert [m.line for m in result.messages] == [2, 5]


def test_a_line_feed_inside_a_cr_separated_message_stays_in_it() -> None:
    data = fixture("nodehl7c/nodehl7c_cerner_lead_mixed_cr_lf.hl7")
    assert data.count(b"\n") == 1
    assert [m.data for m in split_batch(data).messages] == [data]


def test_blank_lines_between_messages_belong_to_none_and_a_bom_is_skipped() -> None:
    data = b"\xef\xbb\xbf" + MSG_A + b"\r\n\r\n  \n" + MSG_B + b"\r\n"
    result = split_batch(data)
    assert [m.data for m in result.messages] == [MSG_A, MSG_B]
    assert result.messages[0].offset == 3
    assert result.problems == []


def test_the_last_message_without_a_final_terminator() -> None:
    data = MSG_A + MSG_B.rstrip(b"\r")
    assert [m.data for m in split_batch(data).messages] == [MSG_A, MSG_B.rstrip(b"\r")]


def test_an_empty_file_has_no_messages() -> None:
    result = split_batch(b"")
    assert result.parts == []
    assert kinds(result) == [ProblemKind.NO_MESSAGES]


# -- properties -------------------------------------------------------------------------------


def _fixture_messages() -> list[bytes]:
    """Every fixture message, each ending in its own segment terminator."""
    messages: list[bytes] = []
    for path in sorted(FIXTURES.glob("*/*.hl7")):
        for message in split_batch(path.read_bytes()).messages:
            data = message.data
            if not data.endswith((b"\r", b"\n")):
                data += b"\n" if b"\n" in data else b"\r"
            messages.append(data)
    return messages


FIXTURE_MESSAGES = _fixture_messages()


def resegment(message: bytes, terminators: list[bytes]) -> bytes:
    """The message with each segment terminator replaced by one from ``terminators`` in turn."""
    lines = _ENDS.split(message)[:-1]
    return b"".join(line + terminators[i % len(terminators)] for i, line in enumerate(lines))


terminator = st.sampled_from([b"\r", b"\n", b"\r\n"])
# Not starting with LF: after a message ending in CR, that would make a CR LF (one terminator).
blank = st.sampled_from([b"", b"\r", b"\r\n", b"\r\n\n", b"  \r\n", b"\r\t\n"])


@settings(max_examples=200, deadline=None)
@given(
    picks=st.lists(st.sampled_from(FIXTURE_MESSAGES), min_size=1, max_size=8),
    separators=st.lists(st.lists(terminator, min_size=1, max_size=4), min_size=8, max_size=8),
    gaps=st.lists(blank, min_size=8, max_size=8),
    envelope=st.sampled_from(["none", "batch", "file"]),
)
def test_concatenated_fixture_messages_come_back_exactly(
    picks: list[bytes],
    separators: list[list[bytes]],
    gaps: list[bytes],
    envelope: str,
) -> None:
    messages = [resegment(m, separators[i]) for i, m in enumerate(picks)]
    body = b"".join(m + gaps[i] for i, m in enumerate(messages))
    if envelope != "none":
        body = b"BHS|^~\\&\n" + body + f"BTS|{len(messages)}\r\n".encode()
    if envelope == "file":
        body = b"FHS|^~\\&\r" + body + b"FTS|1\r"
    result = split_batch(body)
    assert [m.data for m in result.messages] == messages
    assert result.problems == []
    for message in result.messages:
        assert body[message.offset : message.offset + len(message.data)] == message.data


def _covered(data: bytes, result: BatchFile) -> None:
    """Messages, unusable parts and envelope segments tile the file, apart from blank lines."""
    pieces = sorted(
        [(p.offset, p.data) for p in result.parts] + list(result.envelope), key=lambda x: x[0]
    )
    position = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    for offset, piece in pieces:
        assert offset >= position
        assert data[position:offset].strip(b" \t\r\n") == b""
        assert data[offset : offset + len(piece)] == piece
        position = offset + len(piece)
    assert data[position:].strip(b" \t\r\n") == b""


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_split_without_error_and_nothing_vanishes(data: bytes) -> None:
    result = split_batch(data)
    _covered(data, result)
    for part in result.parts:
        assert part.data.strip(b" \t\r\n")
        assert (part.kind == "message") == part.data.startswith(b"MSH")


structural = st.sampled_from(
    [b"MSH|^~\\&|A|B|C|D|1||ORU^R01|X|P|2.5.1", b"BHS|^~\\&", b"BTS|1", b"BTS|x", b"FHS|^~\\&",
     b"FTS|2", b"FTS", b"PID|1", b"OBX|1|NM", b"", b"  ", b"\xff\xfe", b"MSH", b"BTSX"]
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(structural, terminator), max_size=30))
def test_any_sequence_of_segments_splits_and_nothing_vanishes(
    lines: list[tuple[bytes, bytes]],
) -> None:
    data = b"".join(content + end for content, end in lines)
    result = split_batch(data)
    _covered(data, result)
    assert len(result.messages) == sum(1 for content, _ in lines if content.startswith(b"MSH"))
    for problem in result.problems:
        assert problem.message
