"""ORM^O01 / OML^O21 into ``OrderIn`` (pipeline/parse/orm.py): our three fixtures with every value
asserted, the ORC-1 actions, the number, time and patient rules, each ``ParseError`` with its
location, ``OrderIn.problems``, and mutated messages under hypothesis."""

from __future__ import annotations

import contextlib
import dataclasses
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.mutations import mutated
from vetgateway.errors import ParseError
from vetgateway.model import Sex
from vetgateway.pipeline.parse.orm import OrderIn, parse_order_message

FIXTURES = Path(__file__).parent.parent / "fixtures" / "hl7" / "orders"
ORDER_FIXTURES = [
    "vetclinic_orm_o01_canine_three_tests.hl7",
    "vetclinic_oml_o21_feline_accession_utf8.hl7",
    "vetclinic_orm_o01_cancel_one_test.hl7",
]
PLUS_1 = timezone(timedelta(hours=1))


def fixture(name: str) -> tuple[OrderIn, ...]:
    return parse_order_message((FIXTURES / name).read_bytes())


def message(*segments: str, message_type: str = "ORM^O01", version: str = "2.4") -> bytes:
    msh = f"MSH|^~\\&|PMS|CLINIC|GATEWAY|LAB|20261126101500||{message_type}|M1|P|{version}"
    return ("\r".join((msh, *segments)) + "\r").encode()


def single(*segments: str, **kw: str) -> OrderIn:
    (order,) = parse_order_message(message(*segments, **kw))
    return order


def error(raw: bytes) -> ParseError:
    with pytest.raises(ParseError) as caught:
        parse_order_message(raw)
    return caught.value


# --- fixtures ----------------------------------------------------------------------------------


def test_orm_three_tests_two_orders_with_all_values() -> None:
    first, second = fixture("vetclinic_orm_o01_canine_three_tests.hl7")
    assert first == OrderIn(
        source="hl7:VETSTAR/HAPPYPAWS",
        action="new",
        accession_number=None,
        placer_number="ORD-1001",
        filler_number=None,
        ordered_at=datetime(2026, 11, 26, 9, 10, tzinfo=PLUS_1),  # ORC-9
        patient_id=None,
        patient_pms_id="PMS-20417",
        patient_microchip="985 112 003 456 789",  # as sent; the store normalises
        patient_name="Bella",
        species="canine",  # PID-35.2 "Dog"
        breed="Labrador Retriever",
        sex=Sex.FEMALE_SPAYED,
        birth_date=date(2019, 3, 14),
        owner_surname="Smith",
        items=("CBC", "CHEM10"),  # two ORC/OBR pairs with one placer number
        clinic="HAPPYPAWS",  # MSH-4: the practice that placed it
    )
    assert second == dataclasses.replace(
        first,
        placer_number="ORD-1002",
        ordered_at=datetime(2026, 11, 26, 9, 11, tzinfo=PLUS_1),
        items=("T4",),
    )


def test_oml_accession_species_code_avid_chip_and_owner_from_nk1() -> None:
    (order,) = fixture("vetclinic_oml_o21_feline_accession_utf8.hl7")
    assert order == OrderIn(
        source="hl7:CLINICPRO/VIEWVET",
        action="new",
        accession_number="ACC-26-004512",  # OBR-18
        placer_number="CP-ORD-8812",
        filler_number=None,
        ordered_at=datetime(2026, 11, 26, 14, 25, tzinfo=UTC),  # no offset: UTC
        patient_pms_id="CP-55810",
        patient_microchip="012*345*678",
        patient_name="Mieze",
        species="feline",  # SNOMED CT 448169003
        breed="Domestic shorthair",
        sex=Sex.FEMALE,
        birth_date=date(2015, 7, 2),
        owner_surname="Müller-Lüdenscheidt",  # NK1 OWN wins over PID-5's family name
        items=("SDMA",),
        clinic="VIEWVET",
    )


def test_cancel_of_one_test() -> None:
    (order,) = fixture("vetclinic_orm_o01_cancel_one_test.hl7")
    assert (order.action, order.placer_number, order.items) == ("cancel", "ORD-1001", ("CHEM10",))
    assert (order.source, order.patient_pms_id, order.species) == (
        "hl7:VETSTAR/HAPPYPAWS",
        "PMS-20417",
        None,
    )
    assert order.ordered_at == datetime(2026, 11, 26, 10, 12, tzinfo=PLUS_1)


@pytest.mark.parametrize("name", ORDER_FIXTURES)
def test_fixtures_give_storable_orders(name: str) -> None:
    orders = fixture(name)
    assert orders
    assert all(order.problems() == [] for order in orders)


# --- actions, numbers, times -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "action"),
    [
        ("NW", "new"),
        ("nw", "new"),
        ("CA", "cancel"),
        ("OC", "cancel"),
        ("CR", "cancel"),
        ("DC", "cancel"),
        ("OD", "cancel"),
        ("DR", "cancel"),
        ("XO", "update"),
        ("XX", "update"),
        ("XR", "update"),
        ("SC", "update"),
    ],
)
def test_order_control_codes(code: str, action: str) -> None:
    assert single(f"ORC|{code}|P1", "OBR|1|P1||CBC").action == action


@pytest.mark.parametrize("code", ["", "RP", "HD", "SN", "ZZ"])
def test_other_order_control_codes_are_refused(code: str) -> None:
    exc = error(message(f"ORC|{code}|P1", "OBR|1|P1||CBC"))
    assert exc.location == "ORC[1]-1"
    assert "HL7 table 0119" in exc.reason
    assert (f"is {code!r}" if code else "is empty") in exc.reason


def test_numbers_fall_back_from_orc_to_obr_and_accession_to_obr20_then_filler() -> None:
    order = single("ORC|NW", "OBR|1|P-OBR^PMS|F-OBR^LAB|CBC||||||||||||||||ACC-20")
    assert (order.placer_number, order.filler_number, order.accession_number) == (
        "P-OBR",
        "F-OBR",
        "ACC-20",
    )
    order = single("ORC|NW|P-ORC|F-ORC", "OBR|1|P-OBR|F-OBR|CBC")
    assert (order.placer_number, order.filler_number, order.accession_number) == (
        "P-ORC",
        "F-ORC",
        "F-ORC",  # no OBR-18/20: the filler number, as for results
    )


def test_ordered_at_falls_back_from_orc9_to_obr6_to_msh7() -> None:
    assert single("ORC|NW|P1|||||||20261120", "OBR|1|||CBC|||").ordered_at == datetime(
        2026, 11, 20, tzinfo=UTC
    )
    assert single("ORC|NW|P1", "OBR|1|||CBC||202611210830").ordered_at == datetime(
        2026, 11, 21, 8, 30, tzinfo=UTC
    )
    assert single("ORC|NW|P1|||||||not a time", "OBR|1|||CBC").ordered_at == datetime(
        2026, 11, 26, 10, 15, tzinfo=UTC
    )


def test_orders_differing_in_numbers_patient_or_action_stay_apart() -> None:
    orders = parse_order_message(
        message(
            "PID|1||A1^^^PMS^PI||Smith^Max",
            "ORC|NW|P1",
            "OBR|1|P1||CBC",
            "ORC|CA|P1",
            "OBR|2|P1||CBC",
            "PID|2||A2^^^PMS^PI||Jones^Max",
            "ORC|NW|P1",
            "OBR|3|P1||CBC",
            "ORC|NW|P1",
            "OBR|4|P1||CBC",  # the same test again: one item
        )
    )
    assert [(o.action, o.patient_pms_id, o.items) for o in orders] == [
        ("new", "A1", ("CBC",)),
        ("cancel", "A1", ("CBC",)),
        ("new", "A2", ("CBC",)),
    ]


def test_a_second_obr_under_one_orc_is_another_test_of_that_order() -> None:
    order = single("ORC|NW|P1", "OBR|1|||CBC", "OBR|2|||T4^Total T4")
    assert order.items == ("CBC", "T4")


def test_a_cancel_without_obr_has_no_items_and_oml_is_accepted() -> None:
    order = single("ORC|CA|P1", message_type="OML^O21^OML_O21", version="2.5.1")
    assert (order.action, order.items, order.placer_number) == ("cancel", (), "P1")


@pytest.mark.parametrize(
    ("obr4", "code"),
    [("CBC^Blood count^L", "CBC"), ("^Blood count", "Blood count"), ("^^^ALT1^Alt", "ALT1")],
)
def test_ordered_code_is_identifier_else_text_else_alternate(obr4: str, code: str) -> None:
    assert single("ORC|NW|P1", f"OBR|1|||{obr4}").items == (code,)


# --- patient -----------------------------------------------------------------------------------


def test_patient_identifiers_names_and_codes_follow_the_oru_conventions() -> None:
    order = single(
        "PID|1|OLD^^^PMS^MR|123456789012345~X9^^^LAB^PT||Jones^Rex~Other^Name||20200230|MN"
        + "|" * 27
        + "|Beagle^Beagle^L|BGL^Beagle",
        "ORC|NW|P1",
        "OBR|1|||CBC",
    )
    assert order.patient_pms_id == "X9"  # PT beats MR
    assert order.patient_microchip == "123456789012345"  # 15 digits, untyped
    assert (order.patient_name, order.owner_surname) == ("Rex", "Jones")
    assert order.birth_date is None  # 30 February
    assert order.sex is Sex.MALE_NEUTERED
    assert order.species is None  # a breed in PID-35 is no species
    assert order.breed == "Beagle"


def test_patient_without_given_name_and_unknown_sex() -> None:
    order = single("PID|1||A1^^^PMS^MR||Rex|||Q", "ORC|NW|P1", "OBR|1|||CBC")
    assert (order.patient_pms_id, order.patient_name, order.owner_surname) == ("A1", "Rex", None)
    assert order.sex is Sex.UNKNOWN


def test_no_pid_means_no_patient_clues() -> None:
    order = single("ORC|NW|P1", "OBR|1|||CBC")
    assert order.patient_pms_id is order.patient_name is order.species is order.sex is None


def test_free_text_is_clipped_identifiers_are_refused() -> None:
    order = single(f"PID|1||A1^^^PMS^PI||Smith^{'x' * 250}", "ORC|NW|P1", "OBR|1|||CBC")
    assert order.patient_name == "x" * 200
    exc = error(message(f"PID|1||{'9' * 70}^^^PMS^PI", "ORC|NW|P1", "OBR|1|||CBC"))
    assert exc.location == "PID[1]-3"
    assert "identifier cannot be shortened" in exc.reason


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "location", "words"),
    [
        (message("ORC|NW|P1", message_type="ORU^R01"), "MSH[1]-9", "not ORM^O01 or OML^O21"),
        (message("ORC|NW|P1", message_type="ORM^O02"), "MSH[1]-9", "not ORM^O01"),
        (message("PID|1||A1"), "ORC", "no ORC segment"),
        (message("OBR|1|P1||CBC", "ORC|NW|P1"), "OBR[1]-2", "OBR before any ORC"),
        (message("ORC|NW|P1", "OBR|1|P1||"), "OBR[1]-4", "names no test"),
        (message("ORC|NW", "OBR|1|||CBC"), "ORC[1]-2", "no placer order number"),
        (message(f"ORC|NW|{'P' * 65}", "OBR|1|||CBC"), "ORC[1]-2", "65 characters long"),
        (message("ORC|NW|P1", f"OBR|1|||{'C' * 65}"), "OBR[1]-4", "65 characters long"),
        (message("ORC|NW|P1\\X4\\"), "ORC[1]-2", "even number of hex digits"),
    ],
)
def test_unusable_messages_raise_parse_error_naming_segment_and_field(
    raw: bytes, location: str, words: str
) -> None:
    exc = error(raw)
    assert exc.location == location
    assert words in exc.reason


def test_a_long_source_is_refused_at_msh3() -> None:
    raw = message("ORC|NW|P1", "OBR|1|||CBC").replace(b"|PMS|", b"|" + b"S" * 70 + b"|", 1)
    assert error(raw).location == "MSH[1]-3"


# --- OrderIn.problems --------------------------------------------------------------------------


def test_problems_of_an_order() -> None:
    ok = OrderIn(source="pms", placer_number="P1", ordered_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert ok.problems() == []
    assert OrderIn(source="pms", accession_number="A1").problems() == []
    bad = OrderIn(
        source=" ",
        placer_number=" ",
        patient_microchip="9" * 33,
        items=("CBC", " ", "C" * 65),
        ordered_at=datetime(2026, 1, 1),
        action="renew",  # type: ignore[arg-type]
    )
    assert bad.problems() == [
        "source is empty; name the system that placed the order",
        "action 'renew' is not one of new, update, cancel",
        "the order has neither a placer number nor an accession number; one is needed so that "
        "a resend or a cancel finds the same order",
        "patient_microchip is 33 characters long; at most 32 are kept",
        "an ordered test code is empty",
        "ordered test code 'CCCCCCCCCCCCCCCCCCCC'… is 65 characters long; at most 64 are kept",
        "ordered_at has no time zone",
    ]


# --- property: mutated messages ----------------------------------------------------------------


def _mutations() -> st.SearchStrategy[bytes]:
    seeds = [(FIXTURES / n).read_bytes() for n in ORDER_FIXTURES]
    tokens = [
        b"|",
        b"^",
        b"~",
        b"&",
        b"\\",
        b"\r",
        b"ORC|",
        b"OBR|",
        b"PID|",
        b"NK1|",
        b"CA",
        b"NW",
    ]
    return mutated(seeds, tokens)


@settings(max_examples=300, deadline=None)
@given(raw=_mutations())
def test_mutated_messages_parse_to_storable_orders_or_raise_parse_error(raw: bytes) -> None:
    with contextlib.suppress(ParseError):
        orders = parse_order_message(raw)
        assert orders
        for order in orders:
            assert order.problems() == []
            assert order.ordered_at is None or order.ordered_at.tzinfo is not None


def _orm_with_orc21(orc21: str) -> bytes:
    orc = ["ORC", "NW", "ORD-1", *[""] * 6, "20261126091000", *[""] * 11, orc21]
    return "\r".join(
        (
            "MSH|^~\\&|VETSTAR|HAPPYPAWS|LAB|LAB|20261126091000||ORM^O01|C1|P|2.5.1",
            "PID|1||PMS-1^^^^PI||Smith^Bella",
            "|".join(orc),
            "OBR|1|ORD-1||CBC",
        )
    ).encode()


@pytest.mark.parametrize(
    ("orc21", "clinic"),
    [
        ("North Clinic^^^^^^^^^NORTH", "NORTH"),  # XON-10, the organization identifier
        ("NORTH", "NORTH"),  # only the name
        ("", "HAPPYPAWS"),  # no ordering facility: the sending facility (MSH-4)
    ],
)
def test_the_placing_clinic_is_orc21_else_msh4(orc21: str, clinic: str) -> None:
    (order,) = parse_order_message(_orm_with_orc21(orc21))
    assert order.clinic == clinic
