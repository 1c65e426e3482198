"""The sans-I/O plain-text framer: terminator, pattern, idle gap, start marker, size limit, whole,
byte by byte and any split, fuzzed; and its place as a one-way ``LineStation``."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vetgateway.adapters.analyzer.station import LineStation
from vetgateway.adapters.astm.e1381_frames import LinkUsageError
from vetgateway.adapters.plaintext.framer import (
    NEED_DATA,
    SPOTCHEM_EL_FRAMING,
    MessageDiscarded,
    MessageNotStored,
    MessageReceived,
    PlainTextEvent,
    PlainTextFramer,
    TextFraming,
)
from vetgateway.errors import ConfigError

FIXTURES = Path(__file__).parent.parent / "fixtures" / "plaintext"
SPOTCHEM = (FIXTURES / "spotchem_el_plasma.txt").read_bytes()
SPOTCHEM_TEXT = SPOTCHEM[1:-2]  # without STX and ETX LF
LINES = (FIXTURES / "example_chem_lines_decimal_comma.txt").read_bytes()
END_LINE = TextFraming(pattern=r"^END OF REPORT\r?\n")
STX, ETX = b"\x02", b"\x03"


def drain(framer: PlainTextFramer) -> list[PlainTextEvent]:
    events: list[PlainTextEvent] = []
    while (event := framer.next_event()) is not NEED_DATA:
        assert not isinstance(event, type(NEED_DATA))
        events.append(event)
    return events


def feed(framing: TextFraming, chunks: list[bytes], now: float = 0.0) -> list[PlainTextEvent]:
    framer = PlainTextFramer(framing)
    events: list[PlainTextEvent] = []
    for chunk in chunks:
        framer.receive_data(chunk, now)
        events += drain(framer)
        assert framer.buffered <= framing.max_size + len(framing.terminator or b"")
    return events


def texts(events: list[PlainTextEvent]) -> list[bytes]:
    return [e.text for e in events if isinstance(e, MessageReceived)]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "at least one end rule"),
        ({"terminator": b""}, "terminator must not be empty"),
        ({"terminator": ETX, "start": b""}, "start marker must not be empty"),
        ({"idle_gap": 0.0}, "idle_gap must be a positive"),
        ({"idle_gap": -1.0}, "idle_gap must be a positive"),
        ({"idle_gap": math.nan}, "idle_gap must be a positive"),
        ({"idle_gap": math.inf}, "idle_gap must be a positive"),
        ({"terminator": ETX, "max_size": 0}, "max_size must be at least 1"),
        ({"pattern": "(unclosed"}, "pattern is not usable"),
        ({"pattern": "END \u2713"}, "pattern is not usable"),
    ],
)
def test_invalid_framing_is_refused_naming_the_setting(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        TextFraming(**kwargs)  # type: ignore[arg-type]


def test_framing_compiles_its_pattern_over_bytes() -> None:
    assert END_LINE.regex is not None
    assert END_LINE.regex.search(b"x\r\nEND OF REPORT\r\n") is not None
    assert TextFraming(terminator=ETX).regex is None


def test_is_a_one_way_line_station() -> None:
    station: LineStation = PlainTextFramer(SPOTCHEM_EL_FRAMING)
    station.receive_data(SPOTCHEM, 0.0)
    assert station.next_event() == MessageReceived(SPOTCHEM_TEXT)
    assert station.data_to_send() == b""
    station.message_stored(0.0)
    assert station.next_event() is NEED_DATA
    station.message_refused(0.0)
    assert station.next_event() == MessageNotStored()
    with pytest.raises(LinkUsageError, match="one-way"):
        station.send_message(b"anything", 0.0)
    assert station.data_to_send() == b""


# --- terminator and start marker -------------------------------------------------------------


def test_spotchem_print_whole() -> None:
    assert feed(SPOTCHEM_EL_FRAMING, [SPOTCHEM]) == [MessageReceived(SPOTCHEM_TEXT)]


def test_spotchem_print_byte_by_byte() -> None:
    assert feed(SPOTCHEM_EL_FRAMING, bytewise(SPOTCHEM)) == [MessageReceived(SPOTCHEM_TEXT)]


def test_junk_before_start_and_between_prints_is_discarded() -> None:
    stream = b"\x00\r\nnoise" + SPOTCHEM + b"\x11\x13" + SPOTCHEM + STX + b"25/03/14 09:4"
    for chunks in ([stream], bytewise(stream)):
        framer = PlainTextFramer(SPOTCHEM_EL_FRAMING)
        events = []
        for chunk in chunks:
            framer.receive_data(chunk, 0.0)
            events += drain(framer)
        assert events == [MessageReceived(SPOTCHEM_TEXT)] * 2
        assert framer.buffered == len(b"25/03/14 09:4")  # the next print, still coming


def test_start_marker_inside_a_message_restarts_it() -> None:
    stream = STX + b"25/03/14 09:40 ID# CUT" + SPOTCHEM
    events = feed(SPOTCHEM_EL_FRAMING, [stream])
    assert events == [MessageDiscarded("restarted", 22), MessageReceived(SPOTCHEM_TEXT)]
    assert feed(SPOTCHEM_EL_FRAMING, bytewise(stream)) == events


def test_repeated_start_marker_discards_nothing() -> None:
    assert feed(SPOTCHEM_EL_FRAMING, [STX + SPOTCHEM]) == [MessageReceived(SPOTCHEM_TEXT)]


def test_multi_byte_terminator_split_across_reads_without_start_marker() -> None:
    framing = TextFraming(terminator=b"\x03\n")
    # Without a start marker the STX is text; CR LF before a print is not a message.
    assert feed(framing, [b"\r\n", SPOTCHEM[:-1], SPOTCHEM[-1:], b"\r\n"]) == [
        MessageReceived(SPOTCHEM[:-2])
    ]


def test_form_feed_terminator_ends_each_page() -> None:
    framing = TextFraming(terminator=b"\x0c")
    pages = b"PAGE 1\r\nNa 140\r\n\x0c\r\nPAGE 2\r\nK 4.1\r\n\x0c"
    expected = [MessageReceived(b"PAGE 1\r\nNa 140\r\n"), MessageReceived(b"PAGE 2\r\nK 4.1\r\n")]
    assert feed(framing, [pages]) == expected
    assert feed(framing, bytewise(pages)) == expected


def test_blank_message_is_dropped_with_its_size() -> None:
    assert feed(SPOTCHEM_EL_FRAMING, [STX + b" \r\n" + ETX]) == [MessageDiscarded("blank", 3)]
    assert feed(TextFraming(terminator=ETX), [b"\r\n" + ETX]) == [MessageDiscarded("blank", 0)]


# --- pattern ---------------------------------------------------------------------------------


def test_final_line_pattern_ends_the_message_with_that_line() -> None:
    stream = LINES + b"\r\n" + LINES + b"EXAMPLE CHEM-1"
    expected = [MessageReceived(LINES), MessageReceived(LINES)]
    assert feed(END_LINE, [stream]) == expected
    assert feed(END_LINE, bytewise(stream)) == expected


def test_pattern_is_tried_at_each_line_end_against_the_text_so_far() -> None:
    # Two lines are needed: the pattern spans them, and it is decided at the CR of the second.
    framing = TextFraming(pattern=r"^Cl .*\r\n.*TOTAL\r")
    events = feed(framing, bytewise(b"Na 1\r\nCl 2\r\nTOTAL\r\nnext"))
    assert texts(events) == [b"Na 1\r\nCl 2\r\nTOTAL\r"]


def test_pattern_does_not_fire_in_the_middle_of_a_line() -> None:
    framer = PlainTextFramer(END_LINE)
    framer.receive_data(b"x\r\nEND OF REPORT", 0.0)
    assert drain(framer) == []
    framer.receive_data(b"\r\n", 0.0)
    assert drain(framer) == [MessageReceived(b"x\r\nEND OF REPORT\r\n")]


def test_terminator_wins_over_a_line_end_inside_it() -> None:
    framing = TextFraming(terminator=b"\x03\n", pattern=r"\n")
    assert feed(framing, [b"Na 140\x03\nK 4\n"]) == [
        MessageReceived(b"Na 140"),
        MessageReceived(b"K 4\n"),
    ]


def test_the_rule_that_completes_first_wins() -> None:
    framing = TextFraming(terminator=b"\r\n", pattern=r"^END\r")
    expected = [MessageReceived(b"Na 1"), MessageReceived(b"END\r")]
    assert feed(framing, [b"Na 1\r\nEND\r\n"]) == expected
    assert feed(framing, bytewise(b"Na 1\r\nEND\r\n")) == expected


# --- idle gap --------------------------------------------------------------------------------


def test_idle_gap_ends_the_message_on_the_drivers_clock() -> None:
    framer = PlainTextFramer(TextFraming(idle_gap=2.0))
    framer.receive_data(LINES[:50], 10.0)
    framer.receive_data(LINES[50:], 11.5)
    framer.check_timeouts(13.4)
    assert drain(framer) == []
    framer.check_timeouts(13.5)
    assert drain(framer) == [MessageReceived(LINES)]
    framer.check_timeouts(100.0)
    assert drain(framer) == []


def test_idle_gap_before_new_bytes_closes_the_previous_message_first() -> None:
    framer = PlainTextFramer(TextFraming(idle_gap=2.0))
    framer.receive_data(b"first print\r\n", 0.0)
    framer.receive_data(b"second print\r\n", 5.0)  # the driver did not tick in between
    assert drain(framer) == [MessageReceived(b"first print\r\n")]
    framer.check_timeouts(7.0)
    assert drain(framer) == [MessageReceived(b"second print\r\n")]


def test_idle_gap_after_a_lone_start_marker_is_a_blank_message() -> None:
    framer = PlainTextFramer(TextFraming(start=STX, terminator=ETX, idle_gap=1.0))
    framer.receive_data(b"junk" + STX, 0.0)
    framer.check_timeouts(1.0)
    assert drain(framer) == [MessageDiscarded("blank", 0)]


def test_idle_gap_with_a_terminator_delivers_a_print_whose_end_was_lost() -> None:
    framer = PlainTextFramer(TextFraming(start=STX, terminator=ETX, idle_gap=3.0))
    framer.receive_data(SPOTCHEM[:-2], 0.0)
    framer.check_timeouts(3.0)
    framer.receive_data(SPOTCHEM, 4.0)
    assert drain(framer) == [MessageReceived(SPOTCHEM_TEXT), MessageReceived(SPOTCHEM_TEXT)]


def test_without_idle_gap_time_never_ends_a_message() -> None:
    framer = PlainTextFramer(SPOTCHEM_EL_FRAMING)
    framer.receive_data(SPOTCHEM[:-2], 0.0)
    framer.check_timeouts(1e9)
    framer.receive_data(SPOTCHEM[-2:], 2e9)
    assert drain(framer) == [MessageReceived(SPOTCHEM_TEXT)]


# --- size limit ------------------------------------------------------------------------------


def test_message_of_exactly_max_size_is_delivered() -> None:
    framing = TextFraming(start=STX, terminator=b"\x03\n", max_size=8)
    stream = STX + b"12345678\x03" + b"\n"
    assert feed(framing, bytewise(stream)) == [MessageReceived(b"12345678")]
    assert feed(framing, [stream]) == [MessageReceived(b"12345678")]


def test_oversized_message_is_discarded_and_the_next_start_resynchronises() -> None:
    framing = TextFraming(start=STX, terminator=ETX, max_size=20)
    stream = STX + b"x" * 1000 + ETX + b"\n" + SPOTCHEM[:1] + b"ok" + ETX
    expected: list[PlainTextEvent] = [MessageDiscarded("too_large", 21), MessageReceived(b"ok")]
    assert feed(framing, [stream]) == expected
    assert feed(framing, bytewise(stream)) == expected


def test_oversized_message_without_start_marker_resyncs_on_the_terminator() -> None:
    framing = TextFraming(terminator=b"\x03\n", max_size=10)
    stream = b"y" * 50 + b"\x03\n" + b"ok\x03\n"
    expected: list[PlainTextEvent] = [MessageDiscarded("too_large", 11), MessageReceived(b"ok")]
    assert feed(framing, [stream]) == expected
    assert feed(framing, bytewise(stream)) == expected


def test_oversized_message_with_idle_gap_only_is_dropped_until_the_line_is_quiet() -> None:
    framer = PlainTextFramer(TextFraming(idle_gap=1.0, max_size=10))
    framer.receive_data(b"z" * 30, 0.0)
    framer.receive_data(b"z" * 30, 0.5)
    assert drain(framer) == [MessageDiscarded("too_large", 11)]
    assert framer.buffered == 0
    framer.receive_data(b"fresh", 2.0)
    framer.check_timeouts(3.0)
    assert drain(framer) == [MessageReceived(b"fresh")]


def test_oversized_message_with_pattern_only_restarts_at_once() -> None:
    framing = TextFraming(pattern=r"END\n", max_size=10)
    events = feed(framing, [b"a" * 11 + b"END\n"])
    assert events == [MessageDiscarded("too_large", 11), MessageReceived(b"END\n")]


def test_a_flood_never_grows_the_buffer() -> None:
    for framing in (SPOTCHEM_EL_FRAMING, END_LINE, TextFraming(terminator=b"\x03\n")):
        small = TextFraming(
            start=framing.start,
            terminator=framing.terminator,
            pattern=framing.pattern,
            max_size=64,
        )
        framer = PlainTextFramer(small)
        framer.receive_data(STX, 0.0)
        for _ in range(1000):
            framer.receive_data(b"A" * 97, 0.0)
            assert framer.buffered <= 64 + len(small.terminator or b"")
        assert all(isinstance(e, MessageDiscarded) for e in drain(framer))


# --- properties ------------------------------------------------------------------------------

FRAMINGS = [
    SPOTCHEM_EL_FRAMING,
    TextFraming(start=STX, terminator=ETX, max_size=40),
    TextFraming(terminator=b"\x03\n", max_size=30),
    TextFraming(terminator=b"\r\n", pattern=r"^END\r"),
    END_LINE,
    TextFraming(pattern=r"^END OF REPORT\r?\n", max_size=50),
    TextFraming(start=b"<<", terminator=b">>\r\n", pattern=r"STOP$", max_size=25),
]
ATOMS = st.sampled_from(
    [
        *(SPOTCHEM, LINES, STX, ETX, b"\r", b"\n", b"\r\n", b"\x03\n", b"END\r\n"),
        *(b"END OF REPORT\r\n", b"<<", b">>\r\n", b"STOP\n", b" ", b"\x00", b"x" * 33),
    ]
)


@st.composite
def split_streams(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    stream = b"".join(draw(st.lists(ATOMS | st.binary(max_size=8), max_size=12)))
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    bounds = [0, *cuts, len(stream)]
    return stream, [stream[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=300, deadline=None)
@given(framing=st.sampled_from(FRAMINGS), streams=split_streams())
def test_any_split_of_a_stream_gives_the_same_events(
    framing: TextFraming, streams: tuple[bytes, list[bytes]]
) -> None:
    stream, chunks = streams
    whole = feed(framing, [stream])
    assert feed(framing, chunks) == whole
    assert feed(framing, bytewise(stream)) == whole
    for event in whole:
        if isinstance(event, MessageReceived):
            assert 0 < len(event.text) <= framing.max_size


@settings(max_examples=300, deadline=None)
@given(framing=st.sampled_from(FRAMINGS), data=st.lists(st.binary(), max_size=6))
def test_arbitrary_bytes_never_raise_and_stay_bounded(
    framing: TextFraming, data: list[bytes]
) -> None:
    idle = TextFraming(
        start=framing.start,
        terminator=framing.terminator,
        pattern=framing.pattern,
        idle_gap=0.5,
        max_size=framing.max_size,
    )
    for candidate in (framing, idle):
        framer = PlainTextFramer(candidate)
        for n, chunk in enumerate(data):
            framer.receive_data(chunk, n * 0.4)
            framer.check_timeouts(n * 0.4 + 0.1)
            drain(framer)
            assert framer.buffered <= candidate.max_size + len(candidate.terminator or b"")
