"""Interpretation (pipeline/interpret.py): every shipped interval's limits read just inside and
just outside, comparators, RELIABILITY R37 (no comparison across units), the lab's flags when we
have no interval, breed/sex/age/clinic/device precedence, disagreement with the lab, and
hypothesis over open-ended results and tables (interpret never raises)."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vetgateway.catalogue import IntervalDef, read_catalogue
from vetgateway.model import Coded, Comparator, Observation, Sex
from vetgateway.pipeline.interpret import (
    INTERPRETATIONS,
    NOTE_MAX_LENGTH,
    IntervalRule,
    IntervalTable,
    Reading,
    age_in_days,
    interpret,
    select_interval,
)
from vetgateway.pipeline.mapping import MappedObservation
from vetgateway.store.models.reports import Interpretation

# --- the shipped catalogue as a table -----------------------------------------------------------

FILES = read_catalogue()
TEST_IDS = {t.code: uuid.uuid5(uuid.NAMESPACE_OID, f"test:{t.code}") for t in FILES.tests}
UNITS = {t.code: t.unit for t in FILES.tests}


def interval_id(d: IntervalDef) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_OID, f"interval:{d.key}")


def from_def(d: IntervalDef) -> IntervalRule:
    return IntervalRule(
        interval_id=interval_id(d),
        test_id=TEST_IDS[d.test],
        species=d.species,
        breed=d.breed,
        sex=d.sex,
        age_min_days=d.age_min_days,
        age_max_days=d.age_max_days,
        clinic_id=None,
        device_id=None,
        unit=UNITS[d.test],  # the loader stores the test's unit
        low=d.low,
        high=d.high,
        critical_low=d.critical_low,
        critical_high=d.critical_high,
    )


SHIPPED = IntervalTable(tuple(from_def(d) for d in FILES.intervals))
EPS = Decimal("0.0001")


def result(
    code: str,
    value: str | None,
    *,
    unit: str | None = "default",
    comparator: Comparator | None = None,
    flags: tuple[str, ...] = (),
    mapped: bool = True,
    test_id: uuid.UUID | None = None,
    coded: Coded | None = None,
) -> MappedObservation:
    """A mapped result of a shipped test, in its unit unless told otherwise."""
    unit_ = UNITS.get(code) if unit == "default" else unit
    number = None if value is None else Decimal(value)
    observation = Observation(
        set_id=1,
        sub_id=None,
        value_type="NM" if value is not None else "CE",
        code=code,
        code_text=None,
        coding_system=None,
        value_text=f"{comparator or ''}{value}" if value is not None else "POS",
        value_numeric=number,
        comparator=comparator,
        value_coded=coded,
        unit=unit_,
        abnormal_flags=flags,
    )
    return MappedObservation(
        observation=observation,
        test_id=test_id if test_id is not None else TEST_IDS.get(code),
        test_code=code,
        test_name=None,
        value_numeric=number,
        unit=unit_,
        mapped=mapped,
        reason=None if mapped else f"unit {unit_!r} of {code} from LAB is not the test's unit",
    )


# --- every shipped interval, just inside and just outside each limit ---------------------------


def boundary_cases() -> list[object]:
    cases: list[object] = []
    for d in FILES.intervals:
        label = "-".join(
            str(p)
            for p in (d.species, d.test, d.breed, d.sex and d.sex.value, d.age_max_days)
            if p is not None
        )
        # A value just below a limit is the band below, so the limits must be further apart.
        present = [v for v in (d.critical_low, d.low, d.high, d.critical_high) if v is not None]
        assert all(b - a > 2 * EPS for a, b in itertools.pairwise(present)), label
        expected: list[tuple[str, Decimal, str]] = []
        if d.low is not None:
            expected += [("low", d.low, "normal"), ("low", d.low + EPS, "normal")]
            expected += [("low", d.low - EPS, "low")]
        if d.high is not None:
            expected += [("high", d.high, "normal"), ("high", d.high - EPS, "normal")]
            expected += [("high", d.high + EPS, "high")]
        if d.critical_low is not None:
            inside = "low" if d.low is not None else "normal"
            expected += [("critical_low", d.critical_low, "critical_low")]
            expected += [("critical_low", d.critical_low - EPS, "critical_low")]
            expected += [("critical_low", d.critical_low + EPS, inside)]
        if d.critical_high is not None:
            inside = "high" if d.high is not None else "normal"
            expected += [("critical_high", d.critical_high, "critical_high")]
            expected += [("critical_high", d.critical_high + EPS, "critical_high")]
            expected += [("critical_high", d.critical_high - EPS, inside)]
        for limit, value, reading in expected:
            cases.append(pytest.param(d, value, reading, id=f"{label}-{limit}-{value}"))
    return cases


def test_every_shipped_species_has_intervals() -> None:
    assert {d.species for d in FILES.intervals} == {"canine", "feline", "equine"}


@pytest.mark.parametrize(("interval", "value", "expected"), boundary_cases())
def test_shipped_interval_limits(interval: IntervalDef, value: Decimal, expected: str) -> None:
    reading = interpret(
        result(interval.test, str(value)),
        SHIPPED,
        species=interval.species,
        breed=interval.breed,
        sex=interval.sex,
        age_days=interval.age_min_days if interval.age_max_days is not None else None,
    )
    assert reading.interval_id == interval_id(interval)  # this very interval was chosen
    assert reading.interpretation == expected
    assert reading.note is None
    critical = {"critical_low": interval.critical_low, "critical_high": interval.critical_high}
    assert reading.critical_limit == critical.get(expected)


# --- the breed and age overrides shipped in intervals_overrides.toml ---------------------------


def test_greyhound_haematocrit_is_read_against_the_sighthound_range() -> None:
    hct = result("HCT", "60")
    greyhound = interpret(hct, SHIPPED, species="canine", breed="  GreyHound ")
    labrador = interpret(hct, SHIPPED, species="canine", breed="Labrador Retriever")
    assert (greyhound.interpretation, labrador.interpretation) == ("normal", "high")
    assert greyhound.interval_id != labrador.interval_id
    # An anaemic greyhound is anaemic by its own standard, though normal for another dog.
    low = result("HCT", "45")
    assert interpret(low, SHIPPED, species="canine", breed="greyhound").interpretation == "low"
    assert interpret(low, SHIPPED, species="canine").interpretation == "normal"


@pytest.mark.parametrize(
    ("age_days", "expected"),
    [
        (0, "normal"),
        (120, "normal"),
        (365, "normal"),
        (366, "high"),
        (2000, "high"),
        (None, "high"),
    ],
)
def test_puppy_alkaline_phosphatase(age_days: int | None, expected: str) -> None:
    reading = interpret(result("ALKP", "400"), SHIPPED, species="canine", age_days=age_days)
    assert reading.interpretation == expected


@pytest.mark.parametrize(("age_days", "expected"), [(90, "normal"), (365, "normal"), (800, "high")])
def test_kitten_phosphorus(age_days: int, expected: str) -> None:
    reading = interpret(result("PHOS", "2.8"), SHIPPED, species="feline", age_days=age_days)
    assert reading.interpretation == expected


def test_puppy_override_is_for_dogs_only() -> None:
    reading = interpret(result("ALKP", "400"), SHIPPED, species="equine", age_days=100)
    assert reading.interpretation == "high"  # the horse's own range, no puppy override


# --- comparators --------------------------------------------------------------------------------


def rule(
    *,
    low: str | None = None,
    high: str | None = None,
    critical_low: str | None = None,
    critical_high: str | None = None,
    unit: str | None = "mmol/L",
    test_id: uuid.UUID = TEST_IDS["GLU"],
    species: str = "canine",
    breed: str | None = None,
    sex: Sex | None = None,
    age: tuple[int | None, int | None] = (None, None),
    clinic_id: uuid.UUID | None = None,
    device_id: uuid.UUID | None = None,
    interval_id: uuid.UUID | None = None,
) -> IntervalRule:
    def dec(text: str | None) -> Decimal | None:
        return None if text is None else Decimal(text)

    return IntervalRule(
        interval_id=interval_id or uuid.uuid4(),
        test_id=test_id,
        species=species,
        breed=breed,
        sex=sex,
        age_min_days=age[0],
        age_max_days=age[1],
        clinic_id=clinic_id,
        device_id=device_id,
        unit=unit,
        low=dec(low),
        high=dec(high),
        critical_low=dec(critical_low),
        critical_high=dec(critical_high),
    )


def read(value: str, comparator: Comparator | None, r: IntervalRule) -> Reading:
    table = IntervalTable((r,))
    return interpret(result("GLU", value, comparator=comparator), table, species="canine")


@pytest.mark.parametrize(
    ("value", "comparator", "limits", "expected"),
    [
        (">1000", ">", {"low": "100", "high": "900"}, "high"),
        ("<0.5", "<", {"low": "1.0", "high": "5"}, "low"),
        ("<1.0", "<", {"low": "1.0", "high": "5"}, "low"),  # every value below 1.0 is low
        ("<=1.0", "<=", {"low": "1.0", "high": "5"}, "not_interpreted"),  # 1.0 itself is normal
        (">5", ">", {"low": "1.0", "high": "5"}, "high"),
        (">=5", ">=", {"low": "1.0", "high": "5"}, "not_interpreted"),
        ("<5", "<", {"low": "3", "high": "10"}, "not_interpreted"),
        (">2", ">", {"low": "3", "high": "10"}, "not_interpreted"),
        ("<0.2", "<", {"high": "0.5"}, "normal"),  # a high-only limit, like UPC
        ("<2", "<", {"critical_low": "2", "low": "3", "high": "10"}, "critical_low"),
        ("<=2", "<=", {"critical_low": "2", "low": "3", "high": "10"}, "critical_low"),
        (">40", ">", {"low": "3", "high": "10", "critical_high": "25"}, "critical_high"),
        ("=7", "=", {"low": "3", "high": "10"}, "normal"),
    ],
)
def test_comparator_values(
    value: str, comparator: Comparator, limits: dict[str, str], expected: str
) -> None:
    r = rule(
        low=limits.get("low"),
        high=limits.get("high"),
        critical_low=limits.get("critical_low"),
        critical_high=limits.get("critical_high"),
    )
    reading = read(value.lstrip("<>="), comparator, r)
    assert reading.interpretation == expected
    if expected == "not_interpreted":
        assert reading.note is not None
        assert "cannot be judged" in reading.note


def test_comparator_spanning_abnormal_bands_is_the_milder_reading_with_a_note() -> None:
    r = rule(low="4.1", high="7.9", critical_high="25", critical_low="3.3")
    above = read("20", ">", r)
    assert (above.interpretation, above.critical_limit) == ("high", None)
    assert above.note is not None
    assert "may be critical" in above.note
    below = read("3.5", "<", r)
    assert below.interpretation == "low"
    assert below.note is not None
    assert "may be critical" in below.note


def test_critical_limit_names_the_limit_crossed() -> None:
    r = rule(low="4.1", high="7.9", critical_high="25", critical_low="3.3")
    assert read("2.0", None, r).critical_limit == Decimal("3.3")
    assert read("30", None, r).critical_limit == Decimal("25")
    assert read("10", None, r).critical_limit is None


def test_critical_limit_equal_to_normal_limit_takes_precedence() -> None:
    r = rule(critical_low="3", low="3", high="10")
    assert read("3", None, r).interpretation == "critical_low"
    assert read("3.01", None, r).interpretation == "normal"


# --- R37 and the other cases where we do not compare ----------------------------------------------


def test_r37_unmapped_result_is_never_compared() -> None:
    # 97 mg/dL glucose would be "critical high" against 25 mmol/L if compared across units.
    unmapped = result("GLU", "97", unit="mg/dL", mapped=False)
    reading = interpret(unmapped, SHIPPED, species="canine")
    assert (reading.interpretation, reading.interval_id) == ("not_interpreted", None)
    assert reading.note is not None
    assert "not compared" in reading.note
    assert reading.critical_limit is None


def test_r37_unmapped_result_uses_the_labs_flag() -> None:
    unmapped = result("GLU", "97", unit="mg/dL", mapped=False, flags=("H",))
    reading = interpret(unmapped, SHIPPED, species="canine")
    assert (reading.interpretation, reading.interval_id) == ("high", None)
    assert reading.note is not None
    assert "lab's flag H" in reading.note
    assert "no interval of ours" in reading.note
    assert reading.lab_flags == ("H",)
    assert not reading.disagrees_with_lab


def test_unknown_code_without_test_uses_the_labs_flag() -> None:
    unknown = dataclasses.replace(
        result("GLU", "5", flags=("LL",), mapped=False), test_id=None, test_code=None
    )
    assert interpret(unknown, SHIPPED, species="canine").interpretation == "critical_low"


def test_interval_in_another_unit_is_not_compared() -> None:
    r = rule(low="74", high="143", unit="mg/dL")
    reading = read("5.0", None, r)
    assert reading.interpretation == "not_interpreted"
    assert reading.note is not None
    assert "mg/dL" in reading.note


def test_interval_unit_compares_normalised() -> None:
    r = rule(low="4.1", high="7.9", unit="MMOL / l")
    assert read("5.0", None, r).interpretation == "normal"


@pytest.mark.parametrize("species", [None, "", "dragon"])
def test_unknown_species_uses_the_labs_flags(species: str | None) -> None:
    reading = interpret(result("GLU", "30", flags=("N",)), SHIPPED, species=species)
    assert (reading.interpretation, reading.interval_id) == ("normal", None)
    assert reading.note is not None
    assert "lab's flag N" in reading.note
    no_flag = interpret(result("GLU", "30"), SHIPPED, species=species)
    assert no_flag.interpretation == "not_interpreted"
    assert no_flag.note


def test_species_without_an_interval_says_so() -> None:
    reading = interpret(result("GLU", "30", flags=("HH",)), SHIPPED, species="bovine")
    assert reading.interpretation == "critical_high"
    assert reading.note is not None
    assert "no bovine reference interval for GLU" in reading.note


def test_test_without_an_interval_uses_the_labs_flag() -> None:
    reading = interpret(result("CORT", "500", flags=("H",)), SHIPPED, species="canine")
    assert (reading.interpretation, reading.interval_id) == ("high", None)


def test_coded_value_is_abnormal_only_by_the_labs_flag() -> None:
    positive = Coded("POS", "Positive", None)
    flagged = interpret(
        result("UPRO", None, flags=("A",), coded=positive), SHIPPED, species="canine"
    )
    assert flagged.interpretation == "abnormal"
    plain = interpret(result("UPRO", None, coded=positive), SHIPPED, species="canine")
    assert plain.interpretation == "not_interpreted"
    assert plain.note == "UPRO has no number to compare"


# --- the lab's flags (HL7 table 0078) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (("N",), "normal"),
        (("L",), "low"),
        (("h",), "high"),
        (("LL",), "critical_low"),
        ((" HH ",), "critical_high"),
        (("<",), "low"),
        ((">",), "high"),
        (("A",), "abnormal"),
        (("AA",), "abnormal"),
        (("H", "HH"), "critical_high"),
        (("L", "H"), "abnormal"),
        (("A", "H"), "high"),
        (("POS",), "not_interpreted"),
        (("", "S"), "not_interpreted"),
        ((), "not_interpreted"),
    ],
)
def test_lab_flags(flags: tuple[str, ...], expected: str) -> None:
    reading = interpret(result("GLU", "5", flags=flags), IntervalTable(), species="canine")
    assert reading.interpretation == expected
    assert reading.lab_flags == tuple(f.strip() for f in flags if f.strip())


# --- disagreement with the lab ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "flags", "ours", "disagrees"),
    [
        ("9", ("N",), "high", True),
        ("9", ("H",), "high", False),
        ("9", ("L",), "high", True),
        ("30", ("H",), "critical_high", False),
        ("30", ("HH",), "critical_high", False),
        ("5", ("H",), "normal", True),
        ("5", ("A",), "normal", True),
        ("2", ("A",), "critical_low", False),
        ("5", ("N",), "normal", False),
        ("9", (), "high", False),  # no flag is no opinion
        ("9", ("POS",), "high", False),
    ],
)
def test_disagreement_with_the_lab(
    value: str, flags: tuple[str, ...], ours: str, disagrees: bool
) -> None:
    reading = interpret(result("GLU", value, flags=flags), SHIPPED, species="canine")
    assert (reading.interpretation, reading.disagrees_with_lab) == (ours, disagrees)


# --- which interval: device > clinic > breed > sex > age band -----------------------------------

CLINIC, DEVICE = uuid.uuid4(), uuid.uuid4()


def chosen(
    rules: list[IntervalRule],
    *,
    breed: str | None = None,
    sex: Sex | None = None,
    age_days: int | None = None,
    clinic_id: uuid.UUID | None = None,
    device_id: uuid.UUID | None = None,
) -> IntervalRule | None:
    return select_interval(
        IntervalTable(tuple(rules)),
        TEST_IDS["GLU"],
        "canine",
        breed=breed,
        sex=sex,
        age_days=age_days,
        clinic_id=clinic_id,
        device_id=device_id,
    )


def test_precedence_device_clinic_breed_sex_age() -> None:
    default = rule(low="1")
    age = rule(low="2", age=(0, 365))
    sex = rule(low="3", sex=Sex.FEMALE)
    breed = rule(low="4", breed="Beagle")
    clinic = rule(low="5", clinic_id=CLINIC)
    device = rule(low="6", device_id=DEVICE)
    rules = [default, age, sex, breed, clinic, device]
    beagle_bitch = functools.partial(chosen, rules, breed="beagle", sex=Sex.FEMALE, age_days=100)
    assert beagle_bitch(clinic_id=CLINIC, device_id=DEVICE) is device
    assert beagle_bitch(clinic_id=CLINIC) is clinic
    assert beagle_bitch() is breed
    assert chosen(rules, sex=Sex.FEMALE, age_days=100) is sex
    assert chosen(rules, age_days=100) is age
    assert chosen(rules) is default
    assert chosen(rules, clinic_id=uuid.uuid4(), device_id=uuid.uuid4(), age_days=400) is default


def test_narrower_age_band_wins() -> None:
    year, month = rule(low="1", age=(0, 365)), rule(low="2", age=(0, 30))
    assert chosen([year, month], age_days=10) is month
    assert chosen([year, month], age_days=31) is year
    assert chosen([year, month], age_days=None) is None


def test_sex_family_and_exact_sex() -> None:
    male, neutered = rule(low="1", sex=Sex.MALE), rule(low="2", sex=Sex.MALE_NEUTERED)
    assert chosen([male], sex=Sex.MALE_NEUTERED) is male
    assert chosen([male, neutered], sex=Sex.MALE_NEUTERED) is neutered
    assert chosen([neutered], sex=Sex.MALE) is None
    assert chosen([male], sex=Sex.FEMALE) is None
    assert chosen([male], sex=None) is None


def test_ties_go_to_the_smallest_id_in_any_order() -> None:
    a = rule(low="1", interval_id=uuid.UUID(int=1))
    b = rule(low="2", interval_id=uuid.UUID(int=2))
    assert chosen([a, b]) is a
    assert chosen([b, a]) is a


def test_table_is_keyed_by_test_and_species() -> None:
    table = IntervalTable((rule(low="1", species="Feline"),))
    assert table.rules_for(TEST_IDS["GLU"], "feline")
    assert not table.rules_for(TEST_IDS["GLU"], "canine")
    assert not table.rules_for(TEST_IDS["CREA"], "feline")
    assert not table.rules_for(TEST_IDS["GLU"], None)


# --- age, and the interpretation vocabulary -----------------------------------------------------


@pytest.mark.parametrize(
    ("birth", "observed", "expected"),
    [
        (date(2024, 1, 1), datetime(2024, 1, 1, 23, 0, tzinfo=UTC), 0),
        (date(2024, 1, 1), date(2025, 1, 1), 366),
        (date(2024, 1, 2), date(2024, 1, 1), None),
        (None, date(2024, 1, 1), None),
        (date(2024, 1, 1), None, None),
    ],
)
def test_age_in_days(birth: date | None, observed: date | datetime | None, expected: int) -> None:
    assert age_in_days(birth, observed) == expected


def test_interpretations_are_the_store_enum() -> None:
    assert {i.value for i in Interpretation} == INTERPRETATIONS


# --- property: interpret never raises ------------------------------------------------------------

limits = (
    st.none() | st.decimals(allow_nan=True, allow_infinity=True) | st.decimals(-100, 100, places=2)
)
TESTS = [TEST_IDS["GLU"], TEST_IDS["CREA"]]

interval_rules = st.builds(
    IntervalRule,
    interval_id=st.uuids(),
    test_id=st.sampled_from(TESTS),
    species=st.sampled_from(["canine", "feline", "Canine", ""]),
    breed=st.none() | st.sampled_from(["Beagle", "greyhound", ""]),
    sex=st.none() | st.sampled_from(Sex),
    age_min_days=st.none() | st.integers(-5, 400),
    age_max_days=st.none() | st.integers(-5, 400),
    clinic_id=st.none() | st.just(CLINIC),
    device_id=st.none() | st.just(DEVICE),
    unit=st.sampled_from([None, "", "mmol/L", "mmol/l", "mg/dL"]),
    low=limits,
    high=limits,
    critical_low=limits,
    critical_high=limits,
)


@st.composite
def mapped_results(draw: st.DrawFn) -> MappedObservation:
    value = draw(st.none() | st.decimals(allow_nan=True, allow_infinity=True))
    observation = dataclasses.replace(
        result("GLU", None).observation,
        value_numeric=value,
        comparator=draw(st.sampled_from([None, "<", ">", "<=", ">=", "=", "<>"])),
        abnormal_flags=tuple(
            draw(st.lists(st.sampled_from(["", "N", "H", "LL", "AA", "<", "x", " "]), max_size=3))
        ),
    )
    return MappedObservation(
        observation=observation,
        test_id=draw(st.sampled_from([*TESTS, None])),
        test_code=draw(st.none() | st.just("GLU")),
        test_name=None,
        value_numeric=value,
        unit=draw(st.sampled_from([None, "", "mmol/L", "mg/dL"])),
        mapped=draw(st.booleans()),
        reason=draw(st.none() | st.text(max_size=300)),
    )


@settings(max_examples=300, deadline=None)
@given(
    mapped=mapped_results(),
    rules=st.lists(interval_rules, max_size=5),
    species=st.none() | st.sampled_from(["canine", "feline", "CANINE ", "", "x"]),
    breed=st.none() | st.sampled_from(["beagle", "Greyhound", ""]),
    sex=st.none() | st.sampled_from(Sex),
    age_days=st.none() | st.integers(-5, 400),
    clinic_id=st.none() | st.just(CLINIC),
    device_id=st.none() | st.just(DEVICE),
)
def test_interpret_never_raises(
    mapped: MappedObservation,
    rules: list[IntervalRule],
    species: str | None,
    breed: str | None,
    sex: Sex | None,
    age_days: int | None,
    clinic_id: uuid.UUID | None,
    device_id: uuid.UUID | None,
) -> None:
    reading = interpret(
        mapped,
        IntervalTable(tuple(rules)),
        species=species,
        breed=breed,
        sex=sex,
        age_days=age_days,
        clinic_id=clinic_id,
        device_id=device_id,
    )
    assert reading.interpretation in INTERPRETATIONS
    assert reading.note is None or len(reading.note) <= NOTE_MAX_LENGTH
    if reading.interval_id is not None:
        assert mapped.mapped
    if reading.critical_limit is not None:
        assert reading.interpretation in ("critical_low", "critical_high")
