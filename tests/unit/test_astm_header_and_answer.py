"""What the intake reads before storing (H-5 sender, Q records), and the host-query answer."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from hypothesis import given
from hypothesis import strategies as st

from vetgateway.adapters.astm.header import has_query, read_sender
from vetgateway.adapters.astm.order_records import SpecimenOrders, build_order_answer
from vetgateway.analyzers.host_query import AnalyzerCodes, specimen_orders
from vetgateway.model import Sex
from vetgateway.pipeline.mapping import CatalogueEntry, MappingRule, MappingTable
from vetgateway.store.host_orders import PendingOrder


def test_sender_is_h5_first_component() -> None:
    assert read_sender(b"H|\\^&|||CHEM1^Catalyst^1.0|||||||P|1\rL|1\r") == "CHEM1"


def test_sender_with_custom_delimiters_and_lf_records() -> None:
    assert read_sender(b"H|@^\\|||GX@1^GeneXpert\nP|1\n") == "GX@1"
    assert read_sender(b"H!\\^&!!!  XN-550^00-17 !\rL!1\r") == "XN-550"


def test_no_sender_or_no_header_is_none() -> None:
    assert read_sender(b"H|\\^&||||||||||P\r") is None
    assert read_sender(b"P|1||123\r") is None
    assert read_sender(b"") is None
    assert read_sender(b"H|") is None


def test_query_detected_in_any_record_with_the_declared_field_delimiter() -> None:
    assert has_query(b"H|\\^&|||A\rQ|1|^S1||^^^ALL\rL|1\r")
    assert has_query(b"H!\\^&!!!A\nQ!1!^S1\nL!1\n")
    assert not has_query(b"H|\\^&|||A\rR|1|^^^Q|1\rL|1\r")
    assert not has_query(b"H|\\^&|||A\rQuery text\rL|1\r")


@given(st.binary(max_size=300))
def test_header_readers_never_raise(data: bytes) -> None:
    sender = read_sender(data)
    assert sender is None or isinstance(sender, str)
    assert has_query(data) in (True, False)


def _records(answer: bytes) -> list[list[str]]:
    assert answer.endswith(b"\r")
    return [r.split("|") for r in answer.decode("latin-1").rstrip("\r").split("\r")]


def test_answer_lists_pending_tests_as_a_repeat_list_with_new_order_action() -> None:
    answer = build_order_answer(
        [SpecimenOrders("S-1", ("NA", "K"), "PMS7", "Rex", "Smith", "M", date(2020, 5, 1))],
        sender="VETGATEWAY",
        now=datetime(2026, 11, 26, 9, 30),
    )
    h, p, o, last = _records(answer)
    assert h[:2] == ["H", "\\^&"]
    assert h[4] == "VETGATEWAY"
    assert h[13] == "20261126093000"
    assert p[2] == "PMS7"
    assert p[5] == "Smith^Rex"
    assert p[7] == "20200501"
    assert p[8] == "M"
    assert o[2] == "S-1"
    assert o[4] == "^^^NA\\^^^K"
    assert o[11] == "N"
    assert o[25] == "O"
    assert last == ["L", "1", "N"]


def test_specimen_without_pending_tests_is_answered_no_order() -> None:
    _h, _p, o, _l = _records(
        build_order_answer([SpecimenOrders("S-9")], sender="X", now=datetime(2026, 1, 1))
    )
    assert o[2] == "S-9"
    assert o[4] == ""
    assert o[25] == "Y"


def test_answer_escapes_delimiters_and_drops_control_characters() -> None:
    answer = build_order_answer(
        [SpecimenOrders("A|B", ("C^D",), patient_name="Mr\\Fluffy&Co\r\n")],
        sender="X",
        now=datetime(2026, 1, 1),
    )
    _h, p, o, _l = _records(answer)
    assert o[2] == "A&F&B"
    assert o[4] == "^^^C&S&D"
    assert p[5] == "^Mr&R&Fluffy&E&Co"  # no owner: the animal is still component 2


def _order(tests: tuple[tuple[uuid.UUID | None, str], ...]) -> PendingOrder:
    return PendingOrder(
        "S-1", "PL1", "PMS7", "Rex", "Smith", "canine", Sex.MALE_NEUTERED, None, tests
    )


NA, K, ALT = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
TABLE = MappingTable(
    entries=(
        CatalogueEntry(NA, "NA", "Sodium", "mmol/L"),
        CatalogueEntry(K, "K", "Potassium", "mmol/L"),
        CatalogueEntry(ALT, "ALT", "Alanine aminotransferase", "U/L"),
    ),
    rules=(
        MappingRule("LYTES", "Na+", "mmol/L", NA, "mmol/L"),
        MappingRule("LYTES", "K+", "mmol/L", K, "mmol/L"),
        MappingRule("LYTES", "Cl-", "mmol/L", None, None),
        MappingRule("OTHER", "ALTX", "U/L", ALT, "U/L"),
    ),
)


def test_pending_tests_go_in_the_analyzers_codes_and_unmapped_ones_are_left_out() -> None:
    codes = AnalyzerCodes.from_table(TABLE, "LYTES")
    item = specimen_orders("S-1", [_order(((NA, "NA"), (None, "k"), (ALT, "ALT")))], codes)
    assert item.codes == ("Na+", "K+")  # by test id, then by catalogue code; ALT: not on it
    assert item.patient_id == "PMS7"
    assert item.sex == "M"


def test_an_order_in_the_analyzers_own_code_goes_as_ordered() -> None:
    codes = AnalyzerCodes.from_table(TABLE, "LYTES")
    assert codes.code_for(None, "Cl-") == "Cl-"
    assert codes.code_for(None, "GLU") is None


def test_without_a_code_map_tests_go_as_ordered_once_each() -> None:
    codes = AnalyzerCodes.from_table(TABLE, "NOMAP")
    item = specimen_orders("S-1", [_order(((NA, "NA"),)), _order(((NA, "NA"), (None, "X")))], codes)
    assert item.codes == ("NA", "X")


def test_no_orders_gives_an_empty_answer_for_the_specimen() -> None:
    item = specimen_orders("S-2", [], AnalyzerCodes.from_table(TABLE, "LYTES"))
    assert item == SpecimenOrders("S-2")
