"""Interpretation: a mapped result read against our reference interval, beside the lab's own flags.

Pure, no I/O and no ORM objects: ``interpret(mapped, table, species=…, …)`` returns a ``Reading``
whose ``interpretation`` is one of the values of ``store.models.reports.Interpretation``
(``INTERPRETATIONS``). The ``IntervalTable`` is built from the database by
``store.intervals.interval_table`` and, like the mapping table, is immutable and shareable.

**Which interval** (``select_interval``). A rule applies when each of its narrowing fields is
unset ("any") or equals the patient's: device, clinic, breed (compared case-insensitively with
spaces collapsed), sex (a rule for ``male`` also covers ``male_neutered``, ``female`` covers
``female_spayed``; the exact sex is preferred) and age band (``age_min_days``..``age_max_days``,
both inclusive; a rule with a band never applies when the age is unknown). Of the rules that
apply, the most specific wins, compared field by field in this order of precedence:

    device  >  clinic  >  breed  >  sex (exact over the broader sex)  >  age band (narrower first)

so a device's own interval beats everything (it encodes that analyzer's method), a clinic's beats
the published breed ranges, and a breed range beats a sex- or age-specific one. Remaining ties
(two equally specific rules, which the loader's unique key makes rare) go to the smallest
``interval_id``, so the choice is the same on every worker.

**Limits and boundaries.** ``low`` and ``high`` are inclusive normal: ``low <= value <= high`` is
normal. Critical limits are "at or beyond": ``value <= critical_low`` is critical low and
``value >= critical_high`` critical high, as labs publish critical values; critical limits take
precedence over ``low``/``high`` (also when a critical limit equals a normal limit).
``critical_limit`` in the reading names the limit crossed.

**Comparators** (``<0.5``, ``>1000``) describe a set of values, not one. If every value in the set
reads the same, that is the reading (``>1000`` with a high of 900 is high; ``<0.5`` with a low of
1.0 is low). If the set spans normal and abnormal (``<5`` with a low of 3) it cannot be judged:
``not_interpreted`` with a note. If it spans only abnormal bands on one side (``>20`` with a high
of 7.9 and a critical high of 25) the reading is the milder, certain one (high) and the note says
it may be critical; the value is never called critical when it might not be.

**When we do not compare**, and what is used instead:

- An unmapped result (``mapped`` False, e.g. a unit no rule converts) is never compared across
  units (RELIABILITY R37). A value without a number (coded, text, titre) has nothing to compare.
  Unknown species, no interval for the test, or an interval whose unit is not the result's unit
  (``mapping.normalise_unit``): not compared either.
- In all these cases the lab's own flags (OBX-8) are used if it sent a recognised one, with a note
  saying the reading is the lab's; else ``not_interpreted`` with a note saying why.

**The lab's flags** (HL7 v2 table 0078, upper-cased): ``N`` normal; ``L``/``H`` low/high;
``LL``/``HH`` (below the lower / above the upper panic limit) critical low/high; ``<``/``>`` (below
/ above the absolute, i.e. measurable, range) low/high: off the instrument's scale says nothing
about a clinical critical limit; ``A``/``AA`` abnormal (there is no "very abnormal" reading; the
note says ``AA``). Other flags (susceptibility, change, ``POS``, …) carry no direction and are kept
in ``lab_flags`` but not read. Several flags: the most severe wins; a low and a high together read
as abnormal.

``disagrees_with_lab`` is True when we read the value against our interval and the lab sent a
recognised flag whose direction contradicts ours: the lab says normal and we say low or high (or
critical), the lab says low and we say normal or high, the lab says abnormal and we say normal. No
flag from the lab is no opinion, never a disagreement.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Final

from vetgateway.model import Sex
from vetgateway.pipeline.mapping import MappedObservation, normalise_unit

__all__ = [
    "INTERPRETATIONS",
    "IntervalRule",
    "IntervalTable",
    "Reading",
    "age_in_days",
    "interpret",
    "lab_reading",
    "select_interval",
]

NORMAL: Final = "normal"
LOW: Final = "low"
HIGH: Final = "high"
CRITICAL_LOW: Final = "critical_low"
CRITICAL_HIGH: Final = "critical_high"
ABNORMAL: Final = "abnormal"
NOT_INTERPRETED: Final = "not_interpreted"
INTERPRETATIONS: Final = frozenset(
    {NORMAL, LOW, HIGH, CRITICAL_LOW, CRITICAL_HIGH, ABNORMAL, NOT_INTERPRETED}
)
"""The values of ``store.models.reports.Interpretation``, which this pure module must not import."""

NOTE_MAX_LENGTH: Final = 255  # lab_results.interpretation_note

# HL7 v2 table 0078 (abnormal flags) → reading; see the module docstring.
_LAB_FLAGS: Final[dict[str, str]] = {
    "N": NORMAL,
    "L": LOW,
    "H": HIGH,
    "LL": CRITICAL_LOW,
    "HH": CRITICAL_HIGH,
    "<": LOW,
    ">": HIGH,
    "A": ABNORMAL,
    "AA": ABNORMAL,
}
_SEVERITY: Final[dict[str, int]] = {
    NORMAL: 0,
    ABNORMAL: 1,
    LOW: 2,
    HIGH: 2,
    CRITICAL_LOW: 3,
    CRITICAL_HIGH: 3,
}
_DIRECTION: Final[dict[str, str]] = {
    NORMAL: NORMAL,
    LOW: LOW,
    CRITICAL_LOW: LOW,
    HIGH: HIGH,
    CRITICAL_HIGH: HIGH,
    ABNORMAL: ABNORMAL,
}
# Bands on the number line, lowest first; NORMAL is in the middle.
_BANDS: Final = (CRITICAL_LOW, LOW, NORMAL, HIGH, CRITICAL_HIGH)
_NORMAL_RANK: Final = 2
_MINUS_INFINITY: Final = Decimal("-Infinity")
_PLUS_INFINITY: Final = Decimal("Infinity")
_BROADER_SEX: Final[dict[Sex, Sex]] = {Sex.MALE_NEUTERED: Sex.MALE, Sex.FEMALE_SPAYED: Sex.FEMALE}


@dataclass(frozen=True, slots=True)
class IntervalRule:
    """One reference interval: limits in ``unit`` for a test in a species, with optional
    narrowing (None = any). Limits may be partly None; at least one is set."""

    interval_id: uuid.UUID
    test_id: uuid.UUID
    species: str
    breed: str | None
    sex: Sex | None
    age_min_days: int | None
    age_max_days: int | None
    clinic_id: uuid.UUID | None
    device_id: uuid.UUID | None
    unit: str | None
    low: Decimal | None
    high: Decimal | None
    critical_low: Decimal | None
    critical_high: Decimal | None


def _breed_key(breed: str | None) -> str | None:
    if breed is None:
        return None
    text = " ".join(breed.split()).casefold()
    return text or None


def _species_key(species: str | None) -> str | None:
    if species is None:
        return None
    return species.strip().lower() or None


@dataclass(frozen=True, slots=True)
class IntervalTable:
    """Every live interval, indexed by ``(test_id, species)``. Immutable, shared by all workers and
    swapped whole when reloaded."""

    rules: tuple[IntervalRule, ...] = ()
    _index: dict[tuple[uuid.UUID, str], tuple[IntervalRule, ...]] = field(
        init=False, repr=False, compare=False
    )
    clinic_ids: frozenset[uuid.UUID] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rules = tuple(self.rules)
        index: dict[tuple[uuid.UUID, str], list[IntervalRule]] = {}
        for rule in rules:
            species = _species_key(rule.species)
            if species is not None:
                index.setdefault((rule.test_id, species), []).append(rule)
        object.__setattr__(self, "rules", rules)
        object.__setattr__(self, "_index", {k: tuple(v) for k, v in index.items()})
        # The clinics with intervals of their own: only their reports read differently.
        clinics = frozenset(r.clinic_id for r in rules if r.clinic_id is not None)
        object.__setattr__(self, "clinic_ids", clinics)

    def rules_for(self, test_id: uuid.UUID, species: str | None) -> tuple[IntervalRule, ...]:
        """The intervals of a test in a species, every narrowing included."""
        key = _species_key(species)
        return () if key is None else self._index.get((test_id, key), ())


def _specificity(
    rule: IntervalRule,
    *,
    breed: str | None,
    sex: Sex | None,
    age_days: int | None,
    clinic_id: uuid.UUID | None,
    device_id: uuid.UUID | None,
) -> tuple[int, int, int, int, int, int] | None:
    """How specifically ``rule`` fits the patient (bigger is more specific), None if it does not
    apply. The tuple's order is the precedence in the module docstring."""
    if rule.device_id is not None and rule.device_id != device_id:
        return None
    if rule.clinic_id is not None and rule.clinic_id != clinic_id:
        return None
    rule_breed = _breed_key(rule.breed)
    if rule_breed is not None and rule_breed != _breed_key(breed):
        return None
    sex_score = 0
    if rule.sex is not None:
        if sex is None:
            return None
        if rule.sex is sex:
            sex_score = 2
        elif _BROADER_SEX.get(sex) is rule.sex:
            sex_score = 1
        else:
            return None
    banded = rule.age_min_days is not None or rule.age_max_days is not None
    if banded:
        if age_days is None:
            return None
        if rule.age_min_days is not None and age_days < rule.age_min_days:
            return None
        if rule.age_max_days is not None and age_days > rule.age_max_days:
            return None
    width = (rule.age_max_days if rule.age_max_days is not None else 36500) - (
        rule.age_min_days or 0
    )
    return (
        rule.device_id is not None,
        rule.clinic_id is not None,
        rule_breed is not None,
        sex_score,
        banded,
        -width if banded else 0,
    )


def select_interval(
    table: IntervalTable,
    test_id: uuid.UUID,
    species: str | None,
    *,
    breed: str | None = None,
    sex: Sex | None = None,
    age_days: int | None = None,
    clinic_id: uuid.UUID | None = None,
    device_id: uuid.UUID | None = None,
) -> IntervalRule | None:
    """The most specific interval that applies to this patient (precedence in the module
    docstring), or None. Deterministic: equally specific rules go to the smallest id."""
    best: tuple[tuple[int, ...], IntervalRule] | None = None
    for rule in table.rules_for(test_id, species):
        score = _specificity(
            rule,
            breed=breed,
            sex=sex,
            age_days=age_days,
            clinic_id=clinic_id,
            device_id=device_id,
        )
        if score is None:
            continue
        if (
            best is None
            or score > best[0]
            or (score == best[0] and rule.interval_id.int < best[1].interval_id.int)
        ):
            best = (score, rule)
    return None if best is None else best[1]


@dataclass(frozen=True, slots=True)
class Reading:
    """The outcome of interpretation. ``interval_id`` is ours when an interval was applied (the
    result row's ``reference_interval_id``); ``note`` says why a reading is the lab's or absent
    (at most 255 characters); ``lab_flags`` are the lab's OBX-8 flags as sent, stripped;
    ``critical_limit`` is the critical limit the value is at or beyond."""

    interpretation: str
    interval_id: uuid.UUID | None = None
    note: str | None = None
    lab_flags: tuple[str, ...] = ()
    disagrees_with_lab: bool = False
    critical_limit: Decimal | None = None


def age_in_days(birth_date: date | None, observed_at: datetime | date | None) -> int | None:
    """Whole days from birth to observation; None when either is unknown or the observation is
    dated before the birth (a data error, not a newborn). A datetime counts by its own calendar
    date (the date the sender wrote)."""
    if birth_date is None or observed_at is None:
        return None
    if isinstance(birth_date, datetime):
        birth_date = birth_date.date()
    on = observed_at.date() if isinstance(observed_at, datetime) else observed_at
    days = (on - birth_date).days
    return days if days >= 0 else None


def _clean_flags(flags: Iterable[str]) -> tuple[str, ...]:
    return tuple(f.strip() for f in flags if f and f.strip())


def _flag_reading(flags: tuple[str, ...]) -> tuple[str | None, str | None]:
    """The lab's reading from its flags (None when none is recognised) and the flag it came from."""
    readings = [(_LAB_FLAGS[f.upper()], f) for f in flags if f.upper() in _LAB_FLAGS]
    if not readings:
        return None, None
    top = max(_SEVERITY[r] for r, _ in readings)
    strongest = [(r, f) for r, f in readings if _SEVERITY[r] == top]
    directions = {_DIRECTION[r] for r, _ in strongest}
    if len(directions) > 1:
        return ABNORMAL, "/".join(f for _, f in strongest)
    return strongest[0]


def _note(text: str) -> str:
    return text if len(text) <= NOTE_MAX_LENGTH else text[: NOTE_MAX_LENGTH - 1] + "\u2026"


def lab_reading(flags: Iterable[str], why: str) -> Reading:
    """The reading when we do not compare: the lab's recognised flag if any (note: ``why`` and
    that the flag is the lab's), else ``not_interpreted`` with ``why`` as the note."""
    cleaned = _clean_flags(flags)
    reading, flag = _flag_reading(cleaned)
    if reading is None:
        return Reading(NOT_INTERPRETED, note=_note(why), lab_flags=cleaned)
    return Reading(
        reading, note=_note(f"lab's flag {flag}; no interval of ours: {why}"), lab_flags=cleaned
    )


class _Side(enum.Enum):
    AT = "at"  # the value itself
    BELOW = "below"  # values just below it
    ABOVE = "above"  # values just above it


def _band(rule: IntervalRule, x: Decimal, side: _Side = _Side.AT) -> int:
    """The rank in ``_BANDS`` of ``x`` (or of the values just beside it)."""

    def le(limit: Decimal) -> bool:  # x <= limit
        return x < limit if side is _Side.ABOVE else x <= limit

    def ge(limit: Decimal) -> bool:  # x >= limit
        return x > limit if side is _Side.BELOW else x >= limit

    if rule.critical_low is not None and le(rule.critical_low):
        return 0
    if rule.critical_high is not None and ge(rule.critical_high):
        return 4
    if rule.low is not None and not ge(rule.low):
        return 1
    if rule.high is not None and not le(rule.high):
        return 3
    return _NORMAL_RANK


def _bands(rule: IntervalRule, value: Decimal, comparator: str | None) -> tuple[int, int]:
    """The lowest and highest band the true value may be in."""
    if comparator == "<":
        return _band(rule, _MINUS_INFINITY), _band(rule, value, _Side.BELOW)
    if comparator == "<=":
        return _band(rule, _MINUS_INFINITY), _band(rule, value)
    if comparator == ">":
        return _band(rule, value, _Side.ABOVE), _band(rule, _PLUS_INFINITY)
    if comparator == ">=":
        return _band(rule, value), _band(rule, _PLUS_INFINITY)
    rank = _band(rule, value)
    return rank, rank


def _disagrees(ours: str, lab: str | None) -> bool:
    if lab is None or ours not in _DIRECTION:
        return False
    ours_dir, lab_dir = _DIRECTION[ours], _DIRECTION[lab]
    if lab_dir == ABNORMAL:
        return ours_dir == NORMAL
    return ours_dir != lab_dir


def _compare(
    rule: IntervalRule, value: Decimal, comparator: str | None, flags: tuple[str, ...]
) -> Reading:
    lowest, highest = _bands(rule, value, comparator)
    shown = f"{comparator or ''}{value}"
    note: str | None = None
    if lowest == highest:
        rank = lowest
    elif highest < _NORMAL_RANK or lowest > _NORMAL_RANK:
        rank = highest if highest < _NORMAL_RANK else lowest
        note = f"value {shown} is {_BANDS[rank]} at least and may be critical"
    else:
        return Reading(
            NOT_INTERPRETED,
            interval_id=rule.interval_id,
            note=_note(
                f"value {shown} cannot be judged: it may be {_BANDS[lowest]} or {_BANDS[highest]}"
            ),
            lab_flags=flags,
        )
    ours = _BANDS[rank]
    limit = {CRITICAL_LOW: rule.critical_low, CRITICAL_HIGH: rule.critical_high}.get(ours)
    lab, _ = _flag_reading(flags)
    return Reading(
        ours,
        interval_id=rule.interval_id,
        note=None if note is None else _note(note),
        lab_flags=flags,
        disagrees_with_lab=_disagrees(ours, lab),
        critical_limit=limit,
    )


def interpret(
    mapped: MappedObservation,
    table: IntervalTable,
    *,
    species: str | None,
    breed: str | None = None,
    sex: Sex | None = None,
    age_days: int | None = None,
    clinic_id: uuid.UUID | None = None,
    device_id: uuid.UUID | None = None,
) -> Reading:
    """Read one mapped result (rules in the module docstring). Never raises for any input."""
    flags = mapped.observation.abnormal_flags
    code = mapped.test_code or mapped.observation.code
    if not mapped.mapped or mapped.test_id is None:
        return lab_reading(flags, f"not compared: {mapped.reason or 'result not mapped'}")
    value = mapped.value_numeric
    if value is None or not value.is_finite():
        return lab_reading(flags, f"{code} has no number to compare")
    if _species_key(species) is None:
        return lab_reading(flags, "species unknown")
    rule = select_interval(
        table,
        mapped.test_id,
        species,
        breed=breed,
        sex=sex,
        age_days=age_days,
        clinic_id=clinic_id,
        device_id=device_id,
    )
    if rule is None:
        return lab_reading(flags, f"no {_species_key(species)} reference interval for {code}")
    if normalise_unit(rule.unit) != normalise_unit(mapped.unit):
        return lab_reading(
            flags,
            f"interval unit {rule.unit or '(none)'} is not the result's unit"
            f" {mapped.unit or '(none)'}",
        )
    limits = (rule.low, rule.high, rule.critical_low, rule.critical_high)
    if any(limit is not None and limit.is_nan() for limit in limits):
        return lab_reading(flags, f"the interval for {code} has a limit that is not a number")
    comparator = mapped.comparator
    if comparator not in (None, "=", "<", "<=", ">", ">="):
        return lab_reading(flags, f"comparator {comparator!r} not understood")
    return _compare(rule, value, comparator, _clean_flags(flags))
