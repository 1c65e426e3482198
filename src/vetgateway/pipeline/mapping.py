"""Mapping: what a sender calls a result (code, unit) → a catalogue test, value in the test's unit.

Pure: ``map_observations(observations, source, table)`` reads a ``MappingTable`` (built from the
database by ``store.catalogue.mapping_table`` and cached by the pipeline) and returns one
``MappedObservation`` per observation, in order. Nothing is dropped and nothing a lab sent is
changed: the observation itself rides along, ``value_text`` included.

Lookup, first hit wins:

1. **The sender's rule** for exactly ``(source, code, unit)``. Source and unit compare
   case-insensitively with the unit lightly normalised (``normalise_unit``); the code exactly.
2. **The sender's rules for the code in other units**: the code is known and names one test. A
   value already in that test's unit needs no rule; any other unit is a unit mismatch (below).
3. **LOINC**: the code is a catalogue test's LOINC (whatever OBX-3's coding system says, ``LN`` or
   none), accepted only in the test's own unit, since a LOINC code fixes the property (mass or
   molar) but not the unit.
4. **The catalogue's own code** (e.g. an in-house analyzer already sending ``GLU``), in the test's
   own unit only.

Reliability rules, each with a test named after it:

- **R36, unknown code**: the result is kept with its code, value and unit as sent,
  ``mapped=False``, ``reason`` "unknown code <code> from <source>". It is never dropped.
- **R37, unit mismatch**: a known code in a unit no rule converts (GLU sent in mg/dL where only
  mmol/L is known) is *not* converted by guessing: ``mapped=False``, ``test_id`` says which test
  it is, ``value_numeric`` and ``unit`` stay as sent, and ``reason`` names both units.
  Interpretation must never compare such a value with the test's ranges.

A rule whose ``test_id`` is None marks a code the sender uses that we deliberately do not map
(sample-quality indices, comments): ``mapped=False`` with a reason saying so. A rule pointing at a
test that is not in the table (retired, or device-specific; see ``store.catalogue``), a rule whose
target unit is no longer the test's unit, and conflicting duplicate rules all leave the value
unmapped with a reason, rather than converting on stale or ambiguous information.

**Conversion** is linear: ``canonical = value * factor + offset``, with the comparator of the
observation kept (``<20`` mg/dL glucose is ``<1.1100`` mmol/L). A converted value is rounded half
up to the test's ``decimals + 2`` places: two guard digits, so rounding for display later is not
a second rounding of an already rounded number, while the spurious precision of a factor product
is dropped. A test without ``decimals`` is not rounded. A value needing no conversion (factor 1,
offset 0) is passed on untouched, and a value the arithmetic cannot handle (not finite, too large)
stays unmapped with a reason.

**Values without a number** (text, coded, titres and ranges) are mapped by code alone: the unit
check only protects numbers. Their ``unit`` is the canonical unit only where no conversion would
be involved; otherwise the unit as sent, so the two numbers of an ``SN`` range are never labelled
with a unit they are not in.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import (
    ROUND_HALF_UP,
    Context,
    Decimal,
    DecimalException,
    DivisionByZero,
    InvalidOperation,
    Overflow,
    localcontext,
)
from typing import Final

from vetgateway.model import Comparator, Observation

__all__ = [
    "CatalogueEntry",
    "MappedObservation",
    "MappingRule",
    "MappingTable",
    "map_observation",
    "map_observations",
    "normalise_unit",
    "source_key",
]

SOURCE_MAX_LENGTH: Final = 64  # code_mappings.source and diagnostic_reports.source

_ONE: Final = Decimal(1)
_ZERO: Final = Decimal(0)
_ARITHMETIC: Final = Context(
    prec=28, rounding=ROUND_HALF_UP, traps=[InvalidOperation, DivisionByZero, Overflow]
)
_MICRO: Final = str.maketrans({"\u00b5": "u", "\u03bc": "u"})
_MC_PREFIX: Final = re.compile(r"mc(?=mol|g|l)")
_TIMES_TEN: Final = re.compile(r"^(?:x|\u00d7)(?=10\^)")


def source_key(sending_facility: str, sending_application: str) -> str:
    """The sender as code maps know it: MSH-4's namespace id, else MSH-3's, stripped and upper
    case, at most 64 characters.

    The facility comes first because a reference lab names itself there while MSH-3 is often its
    software product (the same LIS brand serves many labs); an in-house analyzer usually fills
    only MSH-3. Only the first HD component counts (``IDEXX^2.16.840…^ISO`` → ``IDEXX``). Empty
    when both are empty.
    """
    for text in (sending_facility, sending_application):
        namespace = text.split("^", 1)[0].strip()
        if namespace:
            return namespace.upper()[:SOURCE_MAX_LENGTH]
    return ""


def normalise_unit(unit: str | None) -> str:
    """A unit's spelling reduced for comparison, never for display; None and blank are ``""``.

    Only spelling is folded, never meaning: whitespace removed; case folded; micro sign ``µ`` and
    Greek ``μ`` → ``u``; the ``mc`` prefix before ``mol``, ``g`` and ``l`` → ``u`` (``mcg/dL``);
    UCUM's ``10*9`` → ``10^9``; a leading ``x`` or multiplication sign before ``10^`` dropped
    (``x10^9/L``). Units that are equal but spelled differently in substance (``K/uL`` and
    ``10^9/L``, ``mEq/L`` and ``mmol/L``) need a mapping row each, so someone decided they are the
    same.
    """
    if not unit:
        return ""
    text = "".join(unit.split()).translate(_MICRO).casefold()
    text = _MC_PREFIX.sub("u", text).replace("10*", "10^")
    return _TIMES_TEN.sub("", text)


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    """One catalogue test as mapping sees it. ``unit`` is the canonical unit (None: unitless)."""

    test_id: uuid.UUID
    code: str
    name: str
    unit: str | None
    loinc: str | None = None
    decimals: int | None = None


@dataclass(frozen=True, slots=True)
class MappingRule:
    """A sender's ``(source, source_code, source_unit)`` → a test, converting into ``unit`` (the
    test's unit). ``test_id`` None: a code deliberately not mapped. ``source_unit`` is ``""`` for
    results sent without a unit."""

    source: str
    source_code: str
    source_unit: str
    test_id: uuid.UUID | None
    unit: str | None
    factor: Decimal = _ONE
    offset: Decimal = _ZERO

    @property
    def is_identity(self) -> bool:
        return self.factor == _ONE and self.offset == _ZERO

    def _target(self) -> tuple[uuid.UUID | None, str, Decimal, Decimal]:
        return (self.test_id, normalise_unit(self.unit), self.factor, self.offset)


def _rule_key(source: str, code: str) -> tuple[str, str]:
    return (source.strip().upper(), code.strip())


@dataclass(frozen=True, slots=True)
class MappingTable:
    """The catalogue and every sender's rules, indexed for ``map_observations``. Immutable, so one
    table can be shared by all worker threads and swapped whole when reloaded.

    Rules whose keys are equal after normalisation (``mg/dL`` and ``mg/dl``) and that agree are
    kept once; if they disagree, ``lookup`` returns all of them and the mapper refuses to choose.
    A LOINC code carried by two tests is ambiguous and is not used for lookup.
    """

    entries: tuple[CatalogueEntry, ...] = ()
    rules: tuple[MappingRule, ...] = ()
    _by_id: dict[uuid.UUID, CatalogueEntry] = field(init=False, repr=False, compare=False)
    _by_code: dict[str, CatalogueEntry] = field(init=False, repr=False, compare=False)
    _by_loinc: dict[str, CatalogueEntry | None] = field(init=False, repr=False, compare=False)
    _exact: dict[tuple[str, str, str], tuple[MappingRule, ...]] = field(
        init=False, repr=False, compare=False
    )
    _per_code: dict[tuple[str, str], tuple[MappingRule, ...]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        entries, rules = tuple(self.entries), tuple(self.rules)
        by_loinc: dict[str, CatalogueEntry | None] = {}
        for entry in entries:
            if entry.loinc:
                by_loinc[entry.loinc] = None if entry.loinc in by_loinc else entry
        exact: dict[tuple[str, str, str], dict[object, MappingRule]] = {}
        per_code: dict[tuple[str, str], dict[object, MappingRule]] = {}
        for rule in rules:
            source, code = _rule_key(rule.source, rule.source_code)
            unit = normalise_unit(rule.source_unit)
            exact.setdefault((source, code, unit), {}).setdefault(rule._target(), rule)
            per_code.setdefault((source, code), {}).setdefault((unit, rule._target()), rule)
        set_ = object.__setattr__
        set_(self, "entries", entries)
        set_(self, "rules", rules)
        set_(self, "_by_id", {e.test_id: e for e in entries})
        set_(self, "_by_code", {e.code: e for e in entries})
        set_(self, "_by_loinc", by_loinc)
        set_(self, "_exact", {k: tuple(v.values()) for k, v in exact.items()})
        set_(self, "_per_code", {k: tuple(v.values()) for k, v in per_code.items()})

    def entry(self, test_id: uuid.UUID) -> CatalogueEntry | None:
        return self._by_id.get(test_id)

    def by_code(self, code: str) -> CatalogueEntry | None:
        """The test whose catalogue code is exactly ``code``."""
        return self._by_code.get(code.strip())

    def by_loinc(self, loinc: str) -> CatalogueEntry | None:
        """The one test with this LOINC code; None when none or several have it."""
        return self._by_loinc.get(loinc.strip())

    def lookup(self, source: str, code: str, unit: str | None) -> tuple[MappingRule, ...]:
        """The sender's rules for exactly this code and unit: none, one, or (conflicting
        duplicates only) several."""
        source_, code_ = _rule_key(source, code)
        return self._exact.get((source_, code_, normalise_unit(unit)), ())

    def rules_for_code(self, source: str, code: str) -> tuple[MappingRule, ...]:
        """The sender's rules for this code in any unit."""
        return self._per_code.get(_rule_key(source, code), ())


@dataclass(frozen=True, slots=True)
class MappedObservation:
    """An observation with the outcome of mapping.

    ``value_numeric`` and ``unit`` belong together: the canonical unit and converted value when
    ``mapped``, else the value and unit as sent. ``test_id``/``test_code``/``test_name`` may be set
    on an unmapped result to say which test it is (a unit mismatch); ``reason`` says why a result
    is unmapped, for the reviewer, and is None when mapped.
    """

    observation: Observation
    test_id: uuid.UUID | None
    test_code: str | None
    test_name: str | None
    value_numeric: Decimal | None
    unit: str | None
    mapped: bool
    reason: str | None = None

    @property
    def comparator(self) -> Comparator | None:
        """The observation's comparator, which holds for the converted value too."""
        return self.observation.comparator


def _unit_label(unit: str | None) -> str:
    return repr(unit) if unit else "(no unit)"


def _unmapped(obs: Observation, entry: CatalogueEntry | None, reason: str) -> MappedObservation:
    return MappedObservation(
        observation=obs,
        test_id=entry.test_id if entry else None,
        test_code=entry.code if entry else None,
        test_name=entry.name if entry else None,
        value_numeric=obs.value_numeric,
        unit=obs.unit,
        mapped=False,
        reason=reason,
    )


def _mapped(
    obs: Observation, entry: CatalogueEntry, value: Decimal | None, unit: str | None
) -> MappedObservation:
    return MappedObservation(obs, entry.test_id, entry.code, entry.name, value, unit, True)


def _linear(value: Decimal, factor: Decimal, offset: Decimal, decimals: int | None) -> Decimal:
    with localcontext(_ARITHMETIC):
        result = value * factor + offset
        if decimals is not None:
            result = result.quantize(_ONE.scaleb(-(decimals + 2)))
    return result


def _convert(
    obs: Observation, entry: CatalogueEntry, rule: MappingRule, source: str
) -> MappedObservation:
    value = obs.value_numeric
    if value is None:
        return _mapped(obs, entry, None, entry.unit if rule.is_identity else obs.unit)
    if rule.is_identity:
        return _mapped(obs, entry, value, entry.unit)
    try:
        if not value.is_finite():
            raise InvalidOperation
        converted = _linear(value, rule.factor, rule.offset, entry.decimals)
    except DecimalException:
        return _unmapped(
            obs,
            entry,
            f"value {obs.value_text!r} of {obs.code} from {source} could not be converted"
            f" from {_unit_label(obs.unit)} to {_unit_label(entry.unit)}",
        )
    return _mapped(obs, entry, converted, entry.unit)


def _in_own_unit(
    obs: Observation,
    entry: CatalogueEntry,
    source: str,
    configured: Sequence[str] = (),
) -> MappedObservation:
    """Steps 2 to 4: the test is known; accept the value only in the test's own unit."""
    same_unit = normalise_unit(obs.unit) == normalise_unit(entry.unit)
    if obs.value_numeric is None:
        return _mapped(obs, entry, None, entry.unit if same_unit else obs.unit)
    if same_unit:
        return _mapped(obs, entry, obs.value_numeric, entry.unit)
    known = f" (rules exist for {', '.join(configured)})" if configured else ""
    return _unmapped(
        obs,
        entry,
        f"unit {_unit_label(obs.unit)} of {obs.code} from {source} is not"
        f" {entry.code}'s unit {_unit_label(entry.unit)} and no conversion is configured"
        f"{known}; value kept as sent",
    )


def _by_rule(
    obs: Observation, rule: MappingRule, table: MappingTable, source: str
) -> MappedObservation:
    if rule.test_id is None:
        return _unmapped(
            obs,
            None,
            f"{obs.code} in {_unit_label(obs.unit)} from {source} is deliberately not mapped",
        )
    entry = table.entry(rule.test_id)
    if entry is None:
        return _unmapped(
            obs, None, f"{obs.code} from {source} maps to a test that is not in the catalogue"
        )
    if normalise_unit(rule.unit) != normalise_unit(entry.unit):
        return _unmapped(
            obs,
            entry,
            f"the rule for {obs.code} in {_unit_label(obs.unit)} from {source} converts to"
            f" {_unit_label(rule.unit)} but {entry.code} is in {_unit_label(entry.unit)};"
            " value kept as sent",
        )
    return _convert(obs, entry, rule, source)


def _by_known_code(
    obs: Observation, rules: tuple[MappingRule, ...], table: MappingTable, source: str
) -> MappedObservation:
    tests = {r.test_id for r in rules if r.test_id is not None}
    if not tests:
        return _unmapped(obs, None, f"{obs.code} from {source} is deliberately not mapped")
    if len(tests) > 1:
        return _unmapped(
            obs,
            None,
            f"{obs.code} from {source} maps to different tests depending on the unit, and"
            f" {_unit_label(obs.unit)} is not one of them",
        )
    entry = table.entry(tests.pop())
    if entry is None:
        return _unmapped(
            obs, None, f"{obs.code} from {source} maps to a test that is not in the catalogue"
        )
    configured = sorted({_unit_label(r.source_unit) for r in rules if r.test_id == entry.test_id})
    return _in_own_unit(obs, entry, source, configured)


def map_observation(obs: Observation, source: str, table: MappingTable) -> MappedObservation:
    """One observation through the lookup order in the module docstring. Never raises for any
    observation or table."""
    name = source.strip() or "an unnamed sender"
    exact = table.lookup(source, obs.code, obs.unit)
    if len(exact) > 1:
        return _unmapped(
            obs,
            None,
            f"conflicting rules for {obs.code} in {_unit_label(obs.unit)} from {name}",
        )
    if exact:
        return _by_rule(obs, exact[0], table, name)
    known = table.rules_for_code(source, obs.code)
    if known:
        return _by_known_code(obs, known, table, name)
    entry = table.by_loinc(obs.code) or table.by_code(obs.code)
    if entry is not None:
        return _in_own_unit(obs, entry, name)
    return _unmapped(obs, None, f"unknown code {obs.code} from {name}")


def map_observations(
    observations: Sequence[Observation], source: str, table: MappingTable
) -> tuple[MappedObservation, ...]:
    """Map each observation (see the module docstring); same length and order as the input."""
    return tuple(map_observation(obs, source, table) for obs in observations)
