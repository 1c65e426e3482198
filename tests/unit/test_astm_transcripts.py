"""The analyzer simulator's pure parts: transcripts read into message texts, fault plans, and the
fault tap that tampers with what the Sender writes and reads."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vetgateway.adapters.astm.e1381_frames import FrameBad, parse_frame, split_message
from vetgateway.adapters.astm.simulator_faults import (
    FaultKind,
    FaultSpec,
    FaultSpecError,
    FaultTap,
    MessageFaults,
    plan_faults,
)
from vetgateway.adapters.astm.transcripts import (
    group_messages,
    has_query,
    is_framed,
    read_framed,
    read_plain,
    read_transcript,
    split_records,
)
from vetgateway.errors import ParseError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "astm"
OURS = FIXTURES / "simulator"

ENQ, ACK, NAK, EOT = b"\x05", b"\x06", b"\x15", b"\x04"
H = b"H|\\^&|||SIMVET^1|||||||P|LIS2-A2"
P = b"P|1||PMS-9"
R = b"R|1|^^^GLU|5.4|mmol/L||N||F"
L = b"L|1|N"
MESSAGE = b"\r".join([H, P, R, L]) + b"\r"


def ref_frame(number: int, text: bytes, *, final: bool, trailer: bytes = b"\r\n") -> bytes:
    """A frame built independently of the code under test (LIS1-A §6.3 checksum)."""
    body = bytes([0x30 + number % 8]) + text + (b"\x03" if final else b"\x17")
    return b"\x02" + body + f"{sum(body) % 256:02X}".encode() + trailer


# --- plain record files --------------------------------------------------------------------


@pytest.mark.parametrize("separator", [b"\r", b"\r\n", b"\n"])
def test_plain_records_split_on_cr_crlf_or_lf(separator: bytes) -> None:
    data = separator.join([H, P, R, L]) + separator
    assert read_plain(data).messages == (MESSAGE,)
    assert read_plain(data.rstrip(separator)).messages == (MESSAGE,)  # no final separator


def test_mixed_separators_and_blank_lines() -> None:
    assert split_records(H + b"\r\n\r\n" + P + b"\n" + R + b"\r" + L + b"\n\n") == [H, P, R, L]


def test_several_messages_in_one_file_each_start_with_h() -> None:
    second = b"H|\\^&|||OTHER\rR|1|^^^ALT|88\rL|1|N\r"
    transcript = read_plain(MESSAGE + second)
    assert transcript.messages == (MESSAGE, second)
    assert transcript.notes == ()


def test_our_crlf_file_holds_two_messages_one_with_a_long_record() -> None:
    transcript = read_transcript((OURS / "two_messages_crlf.txt").read_bytes())
    assert len(transcript.messages) == 2
    first, second = transcript.messages
    assert first.startswith(b"H|")
    assert first.endswith(b"L|1|N\r")
    assert b"\n" not in first + second
    assert [final for _, final in split_message(first)].count(False) == 1  # one ETB frame


def test_records_before_any_header_and_a_missing_terminator_are_noted() -> None:
    messages, notes = group_messages([P, R, H, R])
    assert messages == [P + b"\r" + R + b"\r", H + b"\r" + R + b"\r"]
    assert notes == [
        "message 1: 2 record(s) before any header record H",
        "message 1: no terminator record L at its end",
        "message 2: no terminator record L at its end",
    ]


def test_a_record_type_is_a_letter_then_the_field_delimiter() -> None:
    # "Hx|…" is not a header and "L" alone is a terminator (LIS2-A record type id).
    messages, notes = group_messages([H, b"Hx|1", b"L"])
    assert messages == [H + b"\rHx|1\rL\r"]
    assert notes == []


@pytest.mark.parametrize("data", [b"", b"\r\n\n", b"  \r\n"])
def test_a_file_without_records_is_refused(data: bytes) -> None:
    with pytest.raises(ParseError, match="no records"):
        read_transcript(data)


def test_a_control_character_in_a_plain_record_is_refused_with_its_place() -> None:
    with pytest.raises(ParseError) as caught:
        read_plain(H + b"\r" + P + b"\x06\r" + L)
    assert caught.value.location == "record 2"
    assert "0x06" in caught.value.reason


# --- framed transcripts --------------------------------------------------------------------


def test_framed_is_told_by_stx() -> None:
    assert is_framed(b"\x05\x021H|\x0300\r\n")
    assert not is_framed(MESSAGE)


def test_framed_capture_with_link_bytes_is_unframed() -> None:
    frames = [ref_frame(n, t + b"\r", final=True) for n, t in enumerate([H, P, R, L], start=1)]
    capture = ENQ + ACK + ACK.join(frames) + ACK + EOT
    transcript = read_framed(capture)
    assert transcript.messages == (MESSAGE,)
    assert transcript.notes == ()


@pytest.mark.parametrize("trailer", [b"\r\n", b"\n", b"\r", b"", b"\r\r\n"])
def test_frames_may_end_in_bare_lf_bare_cr_or_nothing(trailer: bytes) -> None:
    frames = [
        ref_frame(1, H + b"\r" + P[:4], final=False, trailer=trailer),
        ref_frame(2, P[4:] + b"\r" + R + b"\r" + L + b"\r", final=True, trailer=trailer),
    ]
    assert read_framed(b"".join(frames)).messages == (MESSAGE,)


def test_our_capture_keeps_retransmitted_frames_once_and_skips_the_nakked_one() -> None:
    transcript = read_transcript((OURS / "framed_capture_retransmits.astm").read_bytes())
    assert len(transcript.messages) == 1
    assert split_records(transcript.messages[0])[1:] == [
        b"P|1||PMS-3003",
        b"R|1|^^^WBC|11.2|10*3/uL|6.0-17.0|N||F",
        b"L|1|N",
    ]
    assert transcript.notes == (
        "frame 2: bad checksum; skipped",
        "frame 7: a retransmission of frame number 5; kept once",
    )


def test_a_repeated_number_with_different_text_is_kept() -> None:
    # Two transfers whose ENQ/EOT were lost in the capture: both start at frame 1.
    first = ref_frame(1, H + b"\r" + L + b"\r", final=True)
    second = ref_frame(1, b"H|\\^&|||B\rL|1|N\r", final=True)
    assert read_framed(first + second).messages == (H + b"\r" + L + b"\r", b"H|\\^&|||B\rL|1|N\r")


def test_transfers_never_merge_records() -> None:
    # A transfer that ends mid-record (no CR before EOT) is closed with one.
    capture = ref_frame(1, H + b"\r" + P, final=True) + EOT + ENQ + ref_frame(1, L, final=True)
    assert read_framed(capture).messages == (H + b"\r" + P + b"\r" + L + b"\r",)


def test_a_frame_over_247_characters_is_kept_when_its_checksum_is_right() -> None:
    long_record = b"C|1|I|" + b"z" * 400
    big = ref_frame(1, H + b"\r" + long_record + b"\r" + L + b"\r", final=True)
    transcript = read_framed(big)
    assert transcript.messages == (H + b"\r" + long_record + b"\r" + L + b"\r",)
    assert transcript.notes[0].startswith("frame 1: 446 characters, over 247")
    bad = big[:-4] + b"00\r\n"
    with pytest.raises(ParseError, match="no readable frame"):
        read_framed(bad)


def test_a_frame_cut_short_is_skipped_with_a_note() -> None:
    capture = b"\x021H|\\^&" + EOT + ENQ + ref_frame(1, MESSAGE, final=True)
    transcript = read_framed(capture)
    assert transcript.messages == (MESSAGE,)
    assert transcript.notes == ("frame 1: cut short before its ETX/ETB; skipped",)


def test_a_missing_checksum_does_not_swallow_the_next_frame() -> None:
    capture = b"\x021" + H + b"\r\x03" + ref_frame(2, L + b"\r", final=True)
    transcript = read_framed(capture)
    assert transcript.messages == (L + b"\r",)
    assert "bad trailer" in transcript.notes[0]


def test_pythonastm_chunked_etb_frames() -> None:
    # BSD-3 (kxepal/python-astm): two ETB/ETX pairs, CR LF trailers.
    data = (FIXTURES / "pythonastm" / "pythonastm_chunked_etb_frames.astm").read_bytes()
    transcript = read_transcript(data)
    assert transcript.messages == (b"H|foo|bar\rL|bar|baz\r",)
    assert transcript.notes == ()


def test_pythonastm_bad_checksum_frame_yields_nothing_unless_checksums_are_ignored() -> None:
    data = (FIXTURES / "pythonastm" / "pythonastm_bad_checksum_frame.astm").read_bytes()
    with pytest.raises(ParseError, match="no readable frame among 1 frame"):
        read_transcript(data)
    assert read_transcript(data, ignore_checksums=True).messages == (b"A|B|C|D\r",)


def test_glucometerutils_lone_etb_header_frame_between_eot_and_enq() -> None:
    # MIT (glucometerutils): EOT, one intermediate frame with the H record, ENQ.
    path = FIXTURES / "glucometerutils" / "glucometerutils_bayer_contour_header_etb_frame.astm"
    transcript = read_transcript(path.read_bytes())
    (message,) = transcript.messages
    assert message.startswith(b"H|\\^&||7w3LBL|Bayer7390^01.24")
    assert message.endswith(b"|1|201909221304\r")
    assert transcript.notes == ("message 1: no terminator record L at its end",)


@pytest.mark.parametrize(
    ("name", "records"),
    [
        ("goastm_immucor_galileo_result.astm", 19),
        ("goastm_biorad_ihcom_bloodtype_comments.astm", 12),
        ("goastm_euroimmun_decimal_comma_multi_patient.astm", 62),
        ("goastm_horiba_yumizen_h550_qc_escaped_delims.astm", 27),
    ],
)
def test_goastm_plain_lf_files_are_one_message_each(name: str, records: int) -> None:
    # Apache-2.0 (blutspende/go-astm): plain records separated by LF, no final newline.
    transcript = read_transcript((FIXTURES / "goastm" / name).read_bytes())
    (message,) = transcript.messages
    assert len(split_records(message)) == records
    assert message.startswith(b"H|")
    assert message.endswith(b"L|1|N\r")
    split_message(message)  # every record can be framed


def test_has_query() -> None:
    assert has_query((OURS / "host_query.txt").read_bytes())
    assert not has_query(MESSAGE)
    assert not has_query(b"H|\\^&\rQuality|1\rL|1\r")


# --- round trip and fuzz -------------------------------------------------------------------

_FIELD_TEXT = st.binary(min_size=0, max_size=300).map(
    lambda b: bytes(c for c in b if 0x20 <= c < 0x7F and c != 0x7C)
)


@settings(max_examples=150, deadline=None)
@given(body=st.lists(_FIELD_TEXT, min_size=0, max_size=5), split_at=st.integers(1, 300))
def test_framing_then_reading_gives_the_message_back(body: list[bytes], split_at: int) -> None:
    message = b"\r".join([H, *(b"R|" + f for f in body), L]) + b"\r"
    # Frames cut anywhere (not only at records): the reader must join texts, then split records.
    cut = min(split_at, len(message) - 1)
    pieces = [message[i : i + cut] for i in range(0, len(message), cut)]
    pieces = [p for chunk in pieces for p in (chunk[:247], chunk[247:]) if p]
    frames = [ref_frame(n, p, final=n == len(pieces)) for n, p in enumerate(pieces, start=1)]
    assert read_framed(ENQ + b"".join(frames) + EOT).messages == (message,)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_read_or_raise_parse_error(data: bytes) -> None:
    try:
        transcript = read_transcript(data)
    except ParseError:
        return
    for message in transcript.messages:
        split_message(message)  # whatever is returned can be sent


# --- fault plans ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("garbage", FaultSpec(FaultKind.GARBAGE)),
        ("bad-checksum@3", FaultSpec(FaultKind.BAD_CHECKSUM, messages=frozenset({3}))),
        ("lost-ack@2,5", FaultSpec(FaultKind.LOST_ACK, messages=frozenset({2, 5}))),
        ("drop-mid-message~0.25", FaultSpec(FaultKind.DROP_MID_MESSAGE, probability=0.25)),
        ("always-bad-checksum~1", FaultSpec(FaultKind.ALWAYS_BAD_CHECKSUM, probability=1.0)),
    ],
)
def test_fault_specs_parse(text: str, spec: FaultSpec) -> None:
    assert FaultSpec.parse(text) == spec


@pytest.mark.parametrize(
    "text", ["noise", "garbage@", "garbage@0", "garbage@x", "garbage~0", "garbage~1.5", "x~y"]
)
def test_bad_fault_specs_say_what_is_accepted(text: str) -> None:
    with pytest.raises(FaultSpecError):
        FaultSpec.parse(text)


def test_plans_hit_the_numbered_messages_and_pick_the_documented_frames() -> None:
    specs = [
        FaultSpec.parse("bad-checksum@2"),
        FaultSpec.parse("always-bad-checksum@3"),
        FaultSpec.parse("drop-mid-message@1"),
    ]
    plan = plan_faults(specs, [5, 4, 3], seed=1)
    assert plan[0].kinds == {FaultKind.DROP_MID_MESSAGE}
    assert plan[0].drop_after == 2  # half of five frames acknowledged, then the cut
    assert plan[1].kinds == {FaultKind.BAD_CHECKSUM}
    assert 0 <= (plan[1].corrupt_frame or 0) < 4
    assert plan[2].always_corrupt_frame == 2  # the last frame
    assert plan[2].failure_expected
    assert not plan[0].failure_expected


def test_random_plans_are_replayed_by_their_seed() -> None:
    specs = [FaultSpec.parse("garbage~0.5"), FaultSpec.parse("lost-ack~0.3")]
    counts = [3] * 40
    assert plan_faults(specs, counts, seed=7) == plan_faults(specs, counts, seed=7)
    hit = [bool(p.kinds) for p in plan_faults(specs, counts, seed=7)]
    assert 0 < sum(hit) < 40
    assert plan_faults(specs, counts, seed=7) != plan_faults(specs, counts, seed=8)


def test_noise_never_holds_a_link_control_character() -> None:
    (faults,) = plan_faults([FaultSpec.parse("garbage")], [40], seed=3)
    noise = b"".join(faults.noise)
    assert len(faults.noise) == 40
    assert not set(noise) & {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0A, 0x10, 0x15, 0x16, 0x17}


# --- the fault tap ------------------------------------------------------------------------


def frames_of(message: bytes) -> list[bytes]:
    return [
        ref_frame(n, text, final=final)
        for n, (text, final) in enumerate(split_message(message), start=1)
    ]


def test_bad_checksum_corrupts_one_transmission_only() -> None:
    frame = frames_of(MESSAGE)[1]
    tap = FaultTap(MessageFaults(corrupt_frame=1))
    assert tap.outgoing(ENQ) == ENQ
    assert tap.outgoing(frames_of(MESSAGE)[0]) == frames_of(MESSAGE)[0]
    corrupted = tap.outgoing(frame)
    assert corrupted is not None
    assert parse_frame(corrupted) == (FrameBad("bad_checksum"), len(frame))
    assert tap.outgoing(frame) == frame  # the retransmission is intact
    assert tap.corrupted == 1


def test_always_bad_checksum_corrupts_every_attempt() -> None:
    frame = frames_of(MESSAGE)[0]
    tap = FaultTap(MessageFaults(always_corrupt_frame=0))
    for _ in range(6):
        out = tap.outgoing(frame)
        assert out is not None
        assert parse_frame(out) == (FrameBad("bad_checksum"), len(frame))
    assert tap.corrupted == 6


def test_lost_ack_turns_one_ack_of_that_frame_into_nak() -> None:
    first, second = frames_of(MESSAGE)[:2]
    tap = FaultTap(MessageFaults(garble_ack_frame=1))
    tap.outgoing(ENQ)
    assert tap.incoming(ACK[0]) == ACK[0]  # the ACK to ENQ is untouched
    tap.outgoing(first)
    assert tap.incoming(ACK[0]) == ACK[0]
    tap.outgoing(second)
    assert tap.incoming(ACK[0]) == NAK[0]
    tap.outgoing(second)  # the Sender's retransmission, same number
    assert tap.incoming(ACK[0]) == ACK[0]
    assert tap.garbled == 1


def test_drop_asks_once_for_the_cut_after_half_the_frames() -> None:
    frames = frames_of(MESSAGE)
    tap = FaultTap(MessageFaults(drop_after=2))
    tap.outgoing(ENQ)
    assert tap.outgoing(frames[0]) == frames[0]
    assert tap.outgoing(frames[1]) == frames[1]
    assert tap.outgoing(frames[2]) is None
    assert tap.dropped
    tap.outgoing(ENQ)  # the whole message again, on a new connection
    assert [tap.outgoing(f) for f in frames] == frames


def test_noise_goes_before_first_transmissions_only() -> None:
    frames = frames_of(MESSAGE)
    noise = tuple(bytes([0x41 + i]) * 3 for i in range(len(frames)))
    tap = FaultTap(MessageFaults(noise=noise))
    tap.outgoing(ENQ)
    assert tap.outgoing(frames[0]) == b"AAA" + frames[0]
    assert tap.outgoing(frames[0]) == frames[0]  # a retransmission goes clean
    assert tap.outgoing(frames[1]) == b"BBB" + frames[1]
    assert tap.noise_bytes == 6
