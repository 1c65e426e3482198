"""The sans-I/O MLLP receiver: whole, byte by byte, any chunking, junk, limits, fuzz (R11-R15)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vetgateway.adapters.mllp.framer import (
    NEED_DATA,
    ConnectionClosed,
    Event,
    Frame,
    FrameTooLarge,
    JunkDiscarded,
    MllpReceiver,
    frame,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "hl7"
MSG_A = b"MSH|^~\\&|LAB|DH|VET|DH|20240101||ORU^R01|A1|P|2.5.1\rPID|1\r"
MSG_B = b"MSH|^~\\&|LAB|DH|VET|DH|20240101||ORU^R01|B2|P|2.5.1\rOBX|1|NM|x||5\r"


def drain(rx: MllpReceiver) -> list[Event]:
    events: list[Event] = []
    while (event := rx.next_event()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, ConnectionClosed):
            break
    return events


def feed(chunks: list[bytes], *, close: bool = True, max_size: int = 1 << 24) -> list[Event]:
    rx = MllpReceiver(max_size)
    events: list[Event] = []
    for chunk in chunks:
        rx.receive_data(chunk)
        events += drain(rx)
        assert rx.buffered <= max_size + 1
    if close:
        rx.receive_data(b"")
        events += drain(rx)
    return events


def frames(events: list[Event]) -> list[bytes]:
    return [e.payload for e in events if isinstance(e, Frame)]


def test_whole_frame() -> None:
    assert feed([frame(MSG_A)]) == [Frame(MSG_A), ConnectionClosed(incomplete=False)]


def test_byte_by_byte() -> None:
    data = frame(MSG_A) + frame(MSG_B)
    events = feed([data[i : i + 1] for i in range(len(data))])
    assert events == [Frame(MSG_A), Frame(MSG_B), ConnectionClosed(incomplete=False)]


def test_two_frames_in_one_chunk_keep_order() -> None:
    assert frames(feed([frame(MSG_A) + frame(MSG_B)])) == [MSG_A, MSG_B]


def test_trailing_partial_frame_waits_for_more() -> None:
    data = frame(MSG_A) + frame(MSG_B)[:10]
    rx = MllpReceiver()
    rx.receive_data(data)
    assert drain(rx) == [Frame(MSG_A)]
    assert rx.in_frame
    rx.receive_data(frame(MSG_B)[10:])
    assert drain(rx) == [Frame(MSG_B)]
    assert not rx.in_frame


def test_junk_before_and_between_frames_is_reported() -> None:
    events = feed([b"GET / HTTP/1.1\r\n" + frame(MSG_A) + b"\x00\x00\r\n" + frame(MSG_B)])
    assert events == [
        JunkDiscarded(16, b"GET / HTTP/1.1\r\n", "between_frames"),
        Frame(MSG_A),
        JunkDiscarded(4, b"\x00\x00\r\n", "between_frames"),
        Frame(MSG_B),
        ConnectionClosed(incomplete=False),
    ]


def test_junk_preview_is_short_and_buffer_not_kept() -> None:
    rx = MllpReceiver()
    rx.receive_data(b"\x16\x03\x01" + b"x" * 10_000)  # a TLS ClientHello on the plaintext port
    [event] = drain(rx)
    assert isinstance(event, JunkDiscarded)
    assert event.size == 10_003
    assert event.preview == b"\x16\x03\x01" + b"x" * 29
    assert rx.buffered == 0


def test_empty_frame_is_a_frame() -> None:
    assert frames(feed([b"\x0b\x1c\x0d"])) == [b""]


def test_truncated_frame_then_close_is_incomplete() -> None:
    events = feed([frame(MSG_A) + b"\x0b" + MSG_B[:20]])
    assert events == [Frame(MSG_A), ConnectionClosed(incomplete=True)]


def test_frame_without_end_block_then_close() -> None:
    assert feed([b"\x0b" + MSG_A]) == [ConnectionClosed(incomplete=True)]


def test_end_block_without_cr_is_kept_as_payload() -> None:
    payload = MSG_A + b"\x1cX" + MSG_B
    assert frames(feed([b"\x0b" + payload + b"\x1c\x0d"])) == [payload]


def test_end_block_split_from_its_cr() -> None:
    assert frames(feed([b"\x0b" + MSG_A + b"\x1c", b"\x0d"])) == [MSG_A]


def test_start_block_inside_frame_restarts_it() -> None:
    events = feed([b"\x0bPARTIAL" + frame(MSG_A)])
    assert events == [
        JunkDiscarded(8, b"\x0bPARTIAL", "frame_restarted"),
        Frame(MSG_A),
        ConnectionClosed(incomplete=False),
    ]


def test_oversized_frame_reported_once_then_discarded() -> None:
    rx = MllpReceiver(max_message_size=100)
    rx.receive_data(b"\x0b" + b"a" * 60)
    assert drain(rx) == []
    rx.receive_data(b"a" * 60)
    assert drain(rx) == [FrameTooLarge(100, b"a" * 120)]
    assert not rx.in_frame
    assert rx.buffered == 0
    rx.receive_data(b"a" * 1000 + b"\x1c\x0d" + frame(MSG_A))  # dropped, even a later good frame
    assert drain(rx) == []
    assert rx.buffered == 0
    rx.receive_data(b"")
    assert drain(rx) == [ConnectionClosed(incomplete=False)]


def test_frame_exactly_at_limit_is_accepted() -> None:
    assert frames(feed([frame(b"a" * 100)], max_size=100)) == [b"a" * 100]
    assert feed([frame(b"a" * 101)], max_size=100) == [
        FrameTooLarge(100, b"a" * 101),
        ConnectionClosed(incomplete=False),
    ]


def test_too_large_head_is_capped() -> None:
    rx = MllpReceiver(max_message_size=10_000)
    rx.receive_data(frame(MSG_A + b"x" * 20_000))
    [event, *_] = drain(rx)
    assert isinstance(event, FrameTooLarge)
    assert event.head == (MSG_A + b"x" * 20_000)[:4096]


def test_large_message_in_64k_chunks_stays_bounded() -> None:
    """A 10 MB ORU under a 16 MiB cap is accepted (R13); the buffer never exceeds the cap + 1."""
    payload = (MSG_A + b"OBX|1|ED|PDF||" + b"QUJD" * 2_500_000)[: 10 * 1024 * 1024]
    data = frame(payload)
    chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    rx = MllpReceiver()
    peak = 0
    got: list[Event] = []
    for chunk in chunks:
        rx.receive_data(chunk)
        got += drain(rx)
        peak = max(peak, rx.buffered)
    assert got == [Frame(payload)]
    assert peak <= len(payload)
    assert rx.buffered == 0


def test_scan_offset_advances_so_each_byte_is_scanned_once() -> None:
    rx = MllpReceiver()
    rx.receive_data(b"\x0b" + b"a" * 1000)
    drain(rx)
    assert rx._scanned == 1000  # the next chunk is scanned from here, not from 0
    rx.receive_data(b"b" * 10 + b"\x1c")
    drain(rx)
    assert rx._scanned == 1010  # a trailing EB is re-examined once its next byte arrives


def test_fixture_mllp_capture() -> None:
    data = (FIXTURES / "pythonhl7" / "pythonhl7_ack_a01_aa.mllp").read_bytes()
    [payload] = frames(feed([data]))
    assert payload.startswith(b"MSH|^~\\&|LABADT|DH|EPICADT")
    assert frame(payload) == data


def test_frame_refuses_delimiters_in_payload() -> None:
    with pytest.raises(ValueError, match="0x0B or 0x1C"):
        frame(b"a\x1cb")
    with pytest.raises(ValueError, match="0x0B or 0x1C"):
        frame(b"a\x0bb")


def test_connection_closed_repeats_and_feeding_after_close_is_a_bug() -> None:
    rx = MllpReceiver()
    rx.receive_data(b"")
    assert rx.next_event() == ConnectionClosed(incomplete=False)
    assert rx.next_event() == ConnectionClosed(incomplete=False)
    rx.receive_data(b"")
    with pytest.raises(RuntimeError):
        rx.receive_data(b"more")


def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


payloads = st.binary(max_size=300).map(lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b""))
junk = st.binary(max_size=20).map(lambda b: b.replace(b"\x0b", b""))


@given(
    messages=st.lists(st.tuples(junk, payloads), min_size=1, max_size=5),
    cuts=st.lists(st.integers(min_value=0), max_size=30),
)
def test_any_chunking_yields_the_same_frames(
    messages: list[tuple[bytes, bytes]], cuts: list[int]
) -> None:
    data = b"".join(j + frame(p) for j, p in messages)
    events = feed(_chunked(data, cuts))
    assert frames(events) == [p for _, p in messages]
    assert sum(e.size for e in events if isinstance(e, JunkDiscarded)) == sum(
        len(j) for j, _ in messages
    )
    assert events[-1] == ConnectionClosed(incomplete=False)


@settings(max_examples=300)
@given(data=st.binary(max_size=2000), cuts=st.lists(st.integers(min_value=0), max_size=20))
def test_fuzz_never_raises_and_stays_bounded(data: bytes, cuts: list[int]) -> None:
    events = feed(_chunked(data, cuts), max_size=64)  # feed() asserts the bound after each drain
    assert isinstance(events[-1], ConnectionClosed)
    assert all(len(p) <= 64 for p in frames(events))
    assert sum(isinstance(e, FrameTooLarge) for e in events) <= 1
