"""The LIS2-A2 record lexer (pipeline/parse/astm_records.py): separators, delimiters from the
header (default, custom, the doubled-backslash quirk), escapes decoded after splitting, accessors
that return "" instead of raising, the ParseError contract, framed fixtures unframed with the link
layer's own frame parser, and arbitrary bytes under hypothesis."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vetgateway.adapters.astm.e1381_frames import STX, FrameOk, parse_frame
from vetgateway.errors import ParseError
from vetgateway.pipeline.parse.astm_records import (
    KNOWN_TYPES,
    AstmRecords,
    Delimiters,
    read_records,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "astm"


def unframe(data: bytes) -> bytes:
    """The message text of a framed transcript: every good frame's text, in order.

    Bytes outside frames (EOT, ENQ, line noise) are skipped; defective frames contribute nothing,
    as the link layer would NAK them. Only for tests: the real receiver is ``e1381.Receiver``.
    """
    text = bytearray()
    i = 0
    while i < len(data):
        if data[i] != STX:
            i += 1
            continue
        found = parse_frame(data[i:])
        if found is None:
            break
        outcome, consumed = found
        if isinstance(outcome, FrameOk):
            text += outcome.text
        i += max(consumed, 1)
    return bytes(text)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


# --- records and separators ------------------------------------------------------------------


@pytest.mark.parametrize("sep", [b"\r", b"\r\n", b"\n"])
def test_records_split_on_cr_crlf_or_lf(sep: bytes) -> None:
    raw = sep.join([b"H|\\^&|||X", b"P|1", b"O|1|S1", b"R|1|^^^GLU|5.1", b"L|1|N"]) + sep
    records = read_records(raw)
    assert [r.type for r in records.records] == ["H", "P", "O", "R", "L"]
    assert [r.number for r in records.records] == [1, 2, 3, 4, 5]
    assert records.header is records.records[0]


def test_mixed_separators_blank_lines_and_trailing_whitespace_are_tolerated() -> None:
    raw = b"\r\n\r\nH|\\^&\r\n\nP|1\r\r  \r\nR|1|^^^A|1\nL|1|N\r\n   \r\n"
    records = read_records(raw)
    assert [r.type for r in records.records] == ["H", "P", "R", "L"]
    assert records.records[2].number == 3  # blank lines are not counted


def test_utf8_bom_is_dropped() -> None:
    assert read_records(b"\xef\xbb\xbfH|\\^&\rL|1").header.type == "H"


def test_utf8_is_read_and_anything_else_as_latin1() -> None:
    utf8 = read_records("H|\\^&\rR|1|^^^X|1|\u00b5mol/L".encode())
    assert utf8.records[1].field(5) == "\u00b5mol/L"
    latin1 = read_records(b"H|\\^&\rR|1|^^^X|1|\xb5mol/L\xff")
    assert latin1.records[1].field(5) == "\u00b5mol/L\u00ff"


def test_unknown_and_manufacturer_records_are_kept_in_order() -> None:
    records = read_records(b"H|\\^&\rM|1|HIST|x\rS|1\rZ|1|custom\rr|1|lower\rL|1")
    assert [r.type for r in records.records] == ["H", "M", "S", "Z", "r", "L"]
    assert frozenset("HPORCQLMS") == KNOWN_TYPES
    assert records.records[3].field(3) == "custom"


# --- fields, repeats, components -------------------------------------------------------------


def test_fields_are_numbered_from_the_type_letter_and_missing_parts_are_empty() -> None:
    rec = read_records(b"H|\\^&\rR|7|^^^^WBC^1|8.13|10*3/uL||N\\L^X").records[1]
    assert rec.field(1) == "R"
    assert rec.field(2) == "7"
    assert rec.components(3) == ["", "", "", "", "WBC", "1"]
    assert rec.component(3, 5) == "WBC"
    assert rec.raw(4) == "8.13"
    assert rec.field(6) == ""
    assert rec.repeats(7) == ["N", "L^X"]
    assert rec.repeat_count(7) == 2
    assert rec.components(7, 2) == ["L", "X"]
    assert rec.field_count == 7
    # Nothing beyond the end raises.
    assert (rec.field(99), rec.raw(0), rec.field(-1)) == ("", "", "")
    assert (rec.component(3, 7), rec.component(3, 0)) == ("", "")
    assert (rec.components(7, 3), rec.components(3, 2), rec.components(50)) == ([], [], [])
    assert (rec.repeats(50), rec.repeat_count(50)) == ([], 0)


def test_header_fields_and_delimiter_definition() -> None:
    records = read_records(b"H|\\^&|CTRL1||H500^SN1^2.2|||||||Q|LIS2-A2|20230329110749\r")
    header = records.header
    assert records.delimiters == Delimiters("|", "\\", "^", "&")
    assert records.delimiters.definition == "|\\^&"
    assert header.field(3) == "CTRL1"
    assert header.components(5) == ["H500", "SN1", "2.2"]
    assert (header.field(12), header.field(13), header.field(14)) == (
        "Q",
        "LIS2-A2",
        "20230329110749",
    )
    assert header.location(2) == "H-2"


def test_location_names_record_type_field_and_position() -> None:
    records = read_records(b"H|\\^&\rP|1\rO|1\rC|1\rR|1|^^^X\rL|1")
    assert records.records[4].location(3) == "R-3 (record 5)"
    assert records.records[4].location() == "R (record 5)"


def test_custom_delimiters_are_honoured() -> None:
    records = read_records(b"H|@^\\|ID\rO|1|S1||^^^A@^^^B|R\rR|1|^X^^Y|a\\F\\b\\S\\c\\R\\d\\E\\e")
    assert records.delimiters == Delimiters("|", "@", "^", "\\")
    order, result = records.records[1], records.records[2]
    assert order.repeats(5) == ["^^^A", "^^^B"]
    assert order.components(5, 2) == ["", "", "", "B"]
    assert result.components(3) == ["", "X", "", "Y"]
    assert result.field(4) == "a|b^c@d\\e"


def test_other_field_delimiter() -> None:
    records = read_records(b"H!~*%!!!SENDER*V1\rR!1!**GLU!5.2")
    assert records.delimiters == Delimiters("!", "~", "*", "%")
    assert records.header.component(5, 1) == "SENDER"
    assert records.records[1].component(3, 3) == "GLU"


def test_doubled_backslash_quirk_reads_as_the_default_delimiters() -> None:
    # The H550 capture doubles every backslash: in the header and in its repeat lists alike.
    records = read_records(fixture("goastm/goastm_horiba_yumizen_h550_qc_escaped_delims.astm"))
    assert records.delimiters == Delimiters("|", "\\", "^", "&")
    assert records.header.components(5) == ["H550", "909YAXH02732", "1.2.1.4"]
    reagent = next(r for r in records.records if r.type == "M" and r.field(3) == "REAGENT")
    assert reagent.repeats(4) == ["CLEANER", "DILUENT", "LYSE"]
    assert reagent.repeat_count(5) == 3
    assert reagent.components(5, 2) == ["423H1(", "20240905000000", "20250305"]


# --- escapes ---------------------------------------------------------------------------------


def test_escapes_are_decoded_after_splitting() -> None:
    rec = read_records(b"H|\\^&\rC|1|I|a&F&b&S&c^d&R&e&E&f|G").records[1]
    # The escaped delimiters split nothing: two components, the first holding all four.
    assert rec.components(4) == ["a|b^c", "d\\e&f"]
    assert rec.repeat_count(4) == 1
    assert rec.field(4) == "a|b^c^d\\e&f"
    assert rec.field(5) == "G"


def test_sysmex_style_repeat_escapes_in_a_value() -> None:
    rec = read_records(b"H|\\^&\rR|38|^^^^SCAT_WDF|PNG&R&20240628&R&WDF.PNG").records[1]
    assert rec.field(4) == "PNG\\20240628\\WDF.PNG"
    assert rec.repeat_count(4) == 1


@pytest.mark.parametrize(
    ("text", "decoded"),
    [
        ("&H&bold&N& text", "bold text"),  # highlighting carries no text
        ("&X41&&X4243&", "ABC"),  # hexadecimal
        ("&X4&", "&X4&"),  # odd number of digits: not an escape, kept
        ("&XZZ&", "&XZZ&"),
        ("AT&T", "AT&T"),  # lone escape character kept
        ("a&Q&b", "a&Q&b"),  # unknown sequence kept
        ("&Zlocal&", "&Zlocal&"),  # local sequences are not ours: kept
        ("x&&F&y", "x&|y"),  # an escape character before a sequence
        ("&", "&"),
        ("&&", "&&"),
        ("&E&&E&", "&&"),
    ],
)
def test_escape_sequences(text: str, decoded: str) -> None:
    rec = read_records(f"H|\\^&\rC|1|I|{text}".encode()).records[1]
    assert rec.field(4) == decoded


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "location"),
    [
        (b"", "H-1"),
        (b"\r\n \r", "H-1"),
        (b"P|1\rL|1", "H-1"),
        (b"1H|\\^&\r", "H-1"),  # a frame number left in: not unframed
        (b"\x021H|\\^&|||X\r\x0312\r\n", "H-1"),
        (b"H", "H-2"),
        (b"H|", "H-2"),
        (b"H|\\^", "H-2"),
        (b"H|\\^&~|", "H-2"),
        (b"H|\\\\\\^&", "H-2"),
        (b"H||^&", "H-2"),
        (b"H|\\^^", "H-2"),
        (b"H|a^&", "H-2"),
        (b"H|\\ &", "H-2"),
        (b"H1\\^&", "H-2"),
    ],
)
def test_unusable_header_raises_parse_error(raw: bytes, location: str) -> None:
    with pytest.raises(ParseError) as caught:
        read_records(raw)
    assert caught.value.location == location
    assert caught.value.reason


# --- framed fixtures, unframed as the link layer would ---------------------------------------


def test_bayer_contour_header_frame_unframes_to_one_header_record() -> None:
    text = unframe(fixture("glucometerutils/glucometerutils_bayer_contour_header_etb_frame.astm"))
    assert text.endswith(b"\r")
    assert text.count(b"\r") == 1
    records = read_records(text)
    header = records.header
    assert len(records.records) == 1
    assert header.component(5, 1) == "Bayer7390"
    assert header.repeats(5)[1] == "01.04"  # firmware versions repeat inside the sender field
    assert header.field(4) == "7w3LBL"  # access password
    assert header.component(6, 1) == "A=1"
    assert header.field(7) == "1714"
    assert header.field(12) == ""
    assert (header.field(13), header.field(14)) == ("1", "201909221304")


def test_chunked_etb_frames_reassemble_but_foo_is_no_delimiter_definition() -> None:
    text = unframe(fixture("pythonastm/pythonastm_chunked_etb_frames.astm"))
    assert text == b"H|foo|bar\rL|bar|baz\r"
    with pytest.raises(ParseError) as caught:
        read_records(text)
    assert caught.value.location == "H-2"


def test_bad_checksum_frame_gives_no_text() -> None:
    assert unframe(fixture("pythonastm/pythonastm_bad_checksum_frame.astm")) == b""


# --- property tests --------------------------------------------------------------------------


def _exercise(records: AstmRecords) -> None:
    for rec in records.records:
        for n in range(rec.field_count + 2):
            rec.field(n)
            rec.repeats(n)
            for rep in range(rec.repeat_count(n) + 2):
                rec.components(n, rep)
                rec.component(n, 2, rep)
        rec.location(3)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_read_or_raise_parse_error(raw: bytes) -> None:
    try:
        records = read_records(raw)
    except ParseError:
        return
    _exercise(records)


_TOKENS = st.sampled_from(["|", "\\", "^", "&", "@", "&F&", "&S&", "&R&", "&E&", "&X4", "\r", "\n"])


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["H|\\^&", "H|@^\\", "H|\\\\^&", "H!~*%"]),
    st.lists(st.one_of(_TOKENS, st.text(max_size=6)), max_size=40),
)
def test_header_then_any_text_never_raises_anything_but_parse_error(
    header: str, parts: list[str]
) -> None:
    raw = (header + "".join(parts)).encode("utf-8", "surrogatepass")
    try:
        records = read_records(raw)
    except ParseError:
        return
    _exercise(records)
