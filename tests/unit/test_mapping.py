"""Code and unit mapping (pipeline/mapping.py): the lookup order, conversion and rounding, the
reliability rules R36 (unknown code kept, never dropped) and R37 (no silent unit conversion), and
hypothesis over open-ended observations and tables."""

from __future__ import annotations

import dataclasses
import uuid
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vetgateway.model import Coded, Comparator, Observation
from vetgateway.pipeline.mapping import (
    CatalogueEntry,
    MappedObservation,
    MappingRule,
    MappingTable,
    map_observation,
    map_observations,
    normalise_unit,
    source_key,
)

GLU = CatalogueEntry(uuid.uuid4(), "GLU", "Glucose", "mmol/L", "14749-6", 1)
CREA = CatalogueEntry(uuid.uuid4(), "CREA", "Creatinine", "umol/L", "14682-9", 0)
HCT = CatalogueEntry(uuid.uuid4(), "HCT", "Haematocrit", "%", "4544-3", 1)
WBC = CatalogueEntry(uuid.uuid4(), "WBC", "White blood cells", "10^9/L", "6690-2", 2)
UPRO = CatalogueEntry(uuid.uuid4(), "UPRO", "Urine protein (dipstick)", None)
TEMP = CatalogueEntry(uuid.uuid4(), "TEMP", "Body temperature", "Cel", None, 1)
RETIRED = uuid.uuid4()  # a test id no entry has


def rule(
    code: str,
    unit: str,
    entry: CatalogueEntry | None,
    factor: str = "1",
    offset: str = "0",
    source: str = "LAB",
) -> MappingRule:
    return MappingRule(
        source=source,
        source_code=code,
        source_unit=unit,
        test_id=entry.test_id if entry else None,
        unit=entry.unit if entry else None,
        factor=Decimal(factor),
        offset=Decimal(offset),
    )


TABLE = MappingTable(
    (GLU, CREA, HCT, WBC, UPRO, TEMP),
    (
        rule("GLUC", "mg/dL", GLU, "0.0555"),
        rule("GLUC", "mmol/L", GLU),
        rule("CREAT", "mg/dL", CREA, "88.42"),
        rule("HCT", "L/L", HCT, "100"),
        rule("WBC", "K/uL", WBC),
        rule("UPRO", "", UPRO),
        rule("TEMPF", "degF", TEMP, "0.5555555556", "-17.7777777778"),
        rule("HEMOLYSIS", "", None),
        rule("OLD", "U/L", None),
        MappingRule("LAB", "GONE", "U/L", RETIRED, "U/L"),
        MappingRule("LAB", "STALE", "mg/dL", GLU.test_id, "mg/dL", Decimal(1), Decimal(0)),
        rule("TWICE", "g/L", CREA),
        rule("TWICE", "g/l", GLU),
    ),
)


def obs(
    code: str,
    text: str,
    unit: str | None = None,
    *,
    numeric: str | None = None,
    comparator: Comparator | None = None,
    system: str | None = None,
    value_type: str = "NM",
) -> Observation:
    number = numeric if numeric is not None else text.lstrip("<>=")
    try:
        value: Decimal | None = Decimal(number)
    except ArithmeticError:
        value = None
    return Observation(
        set_id=1,
        sub_id=None,
        value_type=value_type,
        code=code,
        code_text=None,
        coding_system=system,
        value_text=text,
        value_numeric=value if value_type in ("NM", "SN") else None,
        comparator=comparator,
        unit=unit,
    )


def one(observation: Observation, source: str = "LAB") -> MappedObservation:
    return map_observation(observation, source, TABLE)


# --- R36: an unknown code is kept, unmapped, with the reason; never dropped ---------------------


def test_r36_unknown_code_is_kept_with_its_value_unit_and_reason() -> None:
    o = obs("XYZ", "5.4", "g/L")
    m = one(o)
    assert m.observation is o
    assert (m.mapped, m.test_id, m.test_code, m.test_name) == (False, None, None, None)
    assert (m.value_numeric, m.unit) == (Decimal("5.4"), "g/L")
    assert m.reason == "unknown code XYZ from LAB"


def test_r36_unknown_codes_are_never_dropped_and_order_is_kept() -> None:
    observations = [
        obs("XYZ", "1"),
        obs("GLUC", "97", "mg/dL"),
        obs("", "2"),
        obs("ABC", "text", value_type="ST"),
    ]
    mapped = map_observations(observations, "LAB", TABLE)
    assert [m.observation for m in mapped] == observations
    assert [m.mapped for m in mapped] == [False, True, False, False]
    assert mapped[2].reason == "unknown code  from LAB"
    assert mapped[3].reason == "unknown code ABC from LAB"


def test_r36_unknown_sender_is_named_in_the_reason() -> None:
    assert one(obs("XYZ", "1"), source="").reason == "unknown code XYZ from an unnamed sender"
    assert one(obs("GLUC", "97", "mg/dL"), source="OTHER").reason == (
        "unknown code GLUC from OTHER"
    )


# --- R37: a known code in an unconfigured unit is never converted --------------------------------


def test_r37_known_code_in_an_unconfigured_unit_is_not_converted() -> None:
    o = obs("GLUC", "97", "g/L")
    m = one(o)
    assert m.mapped is False
    assert (m.test_id, m.test_code) == (GLU.test_id, "GLU")  # says which test it is
    assert (m.value_numeric, m.unit) == (Decimal("97"), "g/L")  # as sent
    assert m.reason is not None
    assert "'g/L'" in m.reason
    assert "'mmol/L'" in m.reason


def test_r37_catalogue_code_from_another_sender_in_mass_units_is_not_converted() -> None:
    m = one(obs("GLU", "97", "mg/dL"), source="ANALYZER")
    assert m.mapped is False
    assert m.test_id == GLU.test_id
    assert (m.value_numeric, m.unit) == (Decimal("97"), "mg/dL")
    assert m.reason is not None
    assert "'mg/dL'" in m.reason
    assert "'mmol/L'" in m.reason


def test_r37_loinc_code_is_accepted_in_the_catalogue_unit_only() -> None:
    m = one(obs("14749-6", "97", "mg/dL", system="LN"))
    assert m.mapped is False
    assert m.test_id == GLU.test_id
    assert m.value_numeric == Decimal("97")
    assert m.reason is not None
    assert "'mg/dL'" in m.reason


def test_r37_a_rule_converting_to_a_stale_unit_is_not_applied() -> None:
    """The test's unit changed after the rule was written: the factor is for another unit."""
    m = one(obs("STALE", "97", "mg/dL"))
    assert m.mapped is False
    assert m.test_id == GLU.test_id
    assert m.value_numeric == Decimal("97")
    assert m.reason is not None
    assert "'mg/dL'" in m.reason
    assert "'mmol/L'" in m.reason


def test_r37_missing_unit_is_a_mismatch_too() -> None:
    m = one(obs("GLUC", "97", None))
    assert m.mapped is False
    assert (m.value_numeric, m.unit) == (Decimal("97"), None)
    assert m.reason is not None
    assert "(no unit)" in m.reason


@settings(max_examples=300, deadline=None)
@given(unit=st.text(max_size=12), value=st.decimals(allow_nan=False, allow_infinity=False))
def test_r37_no_unit_outside_the_rules_is_ever_converted(unit: str, value: Decimal) -> None:
    o = Observation(1, None, "NM", "GLUC", None, None, str(value), value, unit=unit)
    m = one(o)
    if normalise_unit(unit) in {"mg/dl", "mmol/l"}:
        assert m.test_id == GLU.test_id  # configured (huge values may still fail to convert)
    else:
        assert m.mapped is False
        assert m.value_numeric is value
        assert m.unit == unit
        assert m.test_id == GLU.test_id


# --- conversion ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("observation", "value", "unit"),
    [
        # 97 * 0.0555 = 5.3835 → decimals 1 + 2 guard digits, half up
        (obs("GLUC", "97", "mg/dL"), Decimal("5.384"), "mmol/L"),
        (obs("CREAT", "1.2", "mg/dL"), Decimal("106.10"), "umol/L"),
        (obs("HCT", "0.452", "L/L"), Decimal("45.200"), "%"),
        (obs("TEMPF", "101.5", "degF"), Decimal("38.611"), "Cel"),
        # no conversion needed: passed on untouched, not rounded
        (obs("GLUC", "5.43219", "mmol/L"), Decimal("5.43219"), "mmol/L"),
        (obs("WBC", "12.3", "K/uL"), Decimal("12.3"), "10^9/L"),
    ],
)
def test_conversion_into_the_canonical_unit(
    observation: Observation, value: Decimal, unit: str
) -> None:
    m = one(observation)
    assert (m.mapped, m.reason) == (True, None)
    assert m.value_numeric == value
    assert str(m.value_numeric) == str(value)
    assert m.unit == unit


def test_comparator_is_kept_through_conversion() -> None:
    m = one(obs("GLUC", "<20", "mg/dL", comparator="<"))
    assert (m.comparator, m.value_numeric, m.unit) == ("<", Decimal("1.110"), "mmol/L")


def test_source_and_unit_compare_case_insensitively_and_code_exactly() -> None:
    assert one(obs("GLUC", "97", "MG/DL"), source=" lab ").value_numeric == Decimal("5.384")
    assert one(obs("gluc", "97", "mg/dL")).reason == "unknown code gluc from LAB"


def test_catalogue_code_and_loinc_map_in_the_catalogue_unit() -> None:
    by_code = one(obs("GLU", "5.4", "mmol/l"), source="ANALYZER")
    by_loinc = one(obs("14749-6", "5.4", "mmol/L", system="LN"), source="ANALYZER")
    for m in (by_code, by_loinc):
        assert (m.mapped, m.test_id, m.value_numeric, m.unit) == (
            True,
            GLU.test_id,
            Decimal("5.4"),
            "mmol/L",
        )


def test_known_code_in_the_catalogue_unit_needs_no_rule() -> None:
    """CREAT has a rule for mg/dL only; a value already in umol/L is the canonical value."""
    m = one(obs("CREAT", "106", "µmol/L"))
    assert (m.mapped, m.value_numeric, m.unit) == (True, Decimal("106"), "umol/L")


def test_a_rule_without_a_test_is_deliberately_not_mapped() -> None:
    m = one(obs("HEMOLYSIS", "2+", value_type="ST"))
    assert (m.mapped, m.test_id) == (False, None)
    assert m.reason == "HEMOLYSIS in (no unit) from LAB is deliberately not mapped"
    assert one(obs("OLD", "3", "IU/L")).reason == "OLD from LAB is deliberately not mapped"


def test_a_rule_for_a_test_no_longer_in_the_catalogue_is_not_mapped() -> None:
    m = one(obs("GONE", "3", "U/L"))
    assert (m.mapped, m.test_id, m.value_numeric) == (False, None, Decimal("3"))
    assert m.reason is not None
    assert "not in the catalogue" in m.reason


def test_conflicting_rules_are_not_chosen_between() -> None:
    m = one(obs("TWICE", "3", "G/L"))
    assert (m.mapped, m.test_id) == (False, None)
    assert m.reason == "conflicting rules for TWICE in 'G/L' from LAB"


def test_agreeing_duplicate_rules_are_one_rule() -> None:
    table = MappingTable(
        (GLU,), (rule("G", "mg/dL", GLU, "0.0555"), rule("G", "mg/dl", GLU, "0.0555"))
    )
    assert len(table.lookup("lab", "G", "MG/DL")) == 1
    assert map_observation(obs("G", "97", "mg/dL"), "LAB", table).mapped


def test_a_loinc_code_shared_by_two_tests_is_not_used() -> None:
    twin = dataclasses.replace(CREA, test_id=uuid.uuid4(), code="CREA2", loinc=GLU.loinc)
    table = MappingTable((GLU, twin), ())
    assert table.by_loinc("14749-6") is None
    assert map_observation(obs("14749-6", "5", "mmol/L"), "X", table).mapped is False


@pytest.mark.parametrize("text", ["1e+100", "-1E+999999"])
def test_values_the_arithmetic_cannot_handle_stay_unmapped(text: str) -> None:
    m = one(obs("GLUC", text, "mg/dL"))
    assert m.mapped is False
    assert m.value_numeric == Decimal(text)
    assert m.reason is not None
    assert "could not be converted" in m.reason


def test_non_finite_values_stay_unmapped() -> None:
    o = dataclasses.replace(obs("GLUC", "x", "mg/dL"), value_numeric=Decimal("Infinity"))
    assert one(o).mapped is False


# --- values without a number ---------------------------------------------------------------------


def test_text_values_map_by_code_and_keep_the_unit_they_were_sent_in() -> None:
    converted = one(obs("GLUC", "see comment", "mg/dL", value_type="ST"))
    same = one(obs("GLUC", "see comment", "mmol/L", value_type="ST"))
    assert (converted.mapped, converted.value_numeric, converted.unit) == (True, None, "mg/dL")
    assert (same.mapped, same.value_numeric, same.unit) == (True, None, "mmol/L")


def test_coded_value_maps_by_code() -> None:
    o = dataclasses.replace(obs("UPRO", "2+", value_type="CE"), value_coded=Coded("2+", "2+", None))
    m = one(o)
    assert (m.mapped, m.test_code, m.value_numeric, m.unit) == (True, "UPRO", None, None)


def test_a_range_in_an_unconfigured_unit_maps_by_code_but_keeps_its_unit() -> None:
    o = dataclasses.replace(
        obs("GLUC", "2-5", "g/L", value_type="SN"),
        sn_first=Decimal(2),
        sn_separator="-",
        sn_second=Decimal(5),
    )
    m = one(o)
    assert (m.mapped, m.test_id, m.value_numeric, m.unit) == (True, GLU.test_id, None, "g/L")


# --- units and senders ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("µmol/L", "umol/l"),
        ("\u03bcmol/L", "umol/L"),
        ("mcmol/L", "umol/L"),
        (" umol / L ", "umol/L"),
        ("mcg/dL", "ug/dL"),
        ("x10^9/L", "10^9/L"),
        ("\u00d710^9/L", "10^9/L"),
        ("10*9/L", "10^9/L"),
        (None, ""),
    ],
)
def test_unit_spellings_that_normalise_alike(a: str | None, b: str) -> None:
    assert normalise_unit(a) == normalise_unit(b)


@pytest.mark.parametrize(
    ("a", "b"), [("mg/dL", "mmol/L"), ("K/uL", "10^9/L"), ("mEq/L", "mmol/L"), ("U/L", "IU/L")]
)
def test_units_that_differ_in_substance_stay_different(a: str, b: str) -> None:
    assert normalise_unit(a) != normalise_unit(b)


@pytest.mark.parametrize(
    ("facility", "application", "key"),
    [
        ("IDEXX^2.16.840.1.113883.3.1^ISO", "VetConnect", "IDEXX"),
        (" idexx ", "LIS", "IDEXX"),
        ("", "vetscan", "VETSCAN"),
        ("^2.16.840.1^ISO", "Analyzer^1.2^ISO", "ANALYZER"),
        ("", "", ""),
        ("x" * 80, "", "X" * 64),
    ],
)
def test_source_key(facility: str, application: str, key: str) -> None:
    assert source_key(facility, application) == key


# --- hypothesis: any observation, any table ------------------------------------------------------

codes = st.sampled_from(
    ["GLUC", "GLU", "CREAT", "HCT", "HEMOLYSIS", "GONE", "STALE", "TWICE", "14749-6", "UPRO", "X"]
) | st.text(max_size=8)
units = st.sampled_from([None, "", "mg/dL", "mmol/L", "g/L", "L/L", "%", "µmol/L", "degF"]) | (
    st.text(max_size=8)
)
numbers = (
    st.none()
    | st.decimals(allow_nan=True, allow_infinity=True)
    | st.decimals(min_value=-(10**6), max_value=10**6, places=4)
)
observations = st.builds(
    Observation,
    set_id=st.none() | st.integers(0, 100),
    sub_id=st.none() | st.text(max_size=3),
    value_type=st.sampled_from(["NM", "SN", "ST", "CE", "TX", "ED"]),
    code=codes,
    code_text=st.none() | st.text(max_size=10),
    coding_system=st.sampled_from([None, "LN", "L", "99LAB"]),
    value_text=st.text(max_size=30),
    value_numeric=numbers,
    comparator=st.sampled_from([None, "<", ">", "<=", ">=", "="]),
    unit=units,
)


@st.composite
def tables(draw: st.DrawFn) -> MappingTable:
    entries = draw(
        st.lists(
            st.builds(
                CatalogueEntry,
                test_id=st.uuids(),
                code=codes,
                name=st.text(max_size=5),
                unit=units,
                loinc=st.none() | codes,
                decimals=st.none() | st.integers(0, 6),
            ),
            max_size=6,
        )
    )
    ids = [e.test_id for e in entries] + [None, uuid.uuid4()]
    rules = draw(
        st.lists(
            st.builds(
                MappingRule,
                source=st.sampled_from(["LAB", "lab", "OTHER"]),
                source_code=codes,
                source_unit=units.map(lambda u: u or ""),
                test_id=st.sampled_from(ids),
                unit=units,
                factor=st.decimals(allow_nan=False, allow_infinity=False),
                offset=st.decimals(allow_nan=False, allow_infinity=False),
            ),
            max_size=10,
        )
    )
    return MappingTable(tuple(entries), tuple(rules))


def check(
    observations: list[Observation],
    mapped: tuple[MappedObservation, ...],
    table: MappingTable,
    source: str,
) -> None:
    """What holds for any input: nothing lost or reordered, a reason for every unmapped result
    with its value and unit as sent, and (R37) a number that changed unit did so by a rule."""
    assert len(mapped) == len(observations)
    for o, m in zip(observations, mapped, strict=True):
        assert m.observation is o
        assert m.observation.value_text == o.value_text
        if m.mapped:
            assert m.reason is None
            assert m.test_id is not None
            entry = table.entry(m.test_id)
            assert entry is not None
            if m.value_numeric is not None:
                assert normalise_unit(m.unit) == normalise_unit(entry.unit)
                if normalise_unit(o.unit) != normalise_unit(entry.unit):
                    rules = table.lookup(source, o.code, o.unit)
                    assert [r.test_id for r in rules] == [m.test_id]
        else:
            assert m.reason
            assert m.value_numeric is o.value_numeric
            assert m.unit == o.unit


@settings(max_examples=400, deadline=None)
@given(
    observations=st.lists(observations, max_size=8), source=st.sampled_from(["LAB", "lab", "", "X"])
)
def test_any_observation_maps_without_losing_anything(
    observations: list[Observation], source: str
) -> None:
    check(observations, map_observations(observations, source, TABLE), TABLE, source)


@settings(max_examples=300, deadline=None)
@given(observations=st.lists(observations, max_size=6), table=tables())
def test_any_table_maps_without_exceptions(
    observations: list[Observation], table: MappingTable
) -> None:
    check(observations, map_observations(observations, "LAB", table), table, "LAB")
