"""The default test catalogue, shipped as TOML files in ``data/``, and the reader that checks them.

``read_catalogue(paths)`` parses and validates files into plain definitions; writing them to the
database (idempotently) is ``store.catalogue.load_catalogue``. A mistake in a file raises
``ConfigError`` naming the file and the entry (``chemistry.toml: [[test]] #3 (GLU): …``), and
nothing is loaded.

Shipped files (``default_paths()``): ``tests_*.toml`` define the tests by category,
``intervals_*.toml`` the reference intervals and critical limits per species, ``mappings_*.toml``
two example senders' code maps. Any file may hold any of the three tables; a site adds its own
files beside these and passes them all to ``vetgateway catalogue load``.

File format (every key not listed is an error, to catch typos)::

    description = "free text"          # optional, ignored
    source = "EXAMPLE_REFLAB"          # default sender for [[mapping]] in this file
    species = "canine"                 # default species for [[interval]] in this file
    citation = "where the ranges come from"   # default citation for [[interval]]

    [[test]]
    code = "GLU"                # upper case, unique; the catalogue's own code
    name = "Glucose"
    loinc = "14749-6"           # optional; the LOINC of the canonical unit's property
    category = "chemistry"      # CatalogueCategory value
    specimen = "serum"          # optional
    unit = "mmol/L"             # optional (unitless: USG, pH, ratios)
    value_type = "numeric"      # ValueType value; default numeric
    decimals = 1                # optional, 0-6: places shown; conversions keep two more
    delta_abs = 1.5             # optional delta check (numeric tests): flag a change from the
    delta_rel = 0.5             # patient's previous result beyond 1.5 (test's unit) or 50 %

    [[mapping]]
    source = "EXAMPLE_REFLAB"   # optional when the file sets it
    code = "GLUC"               # the sender's code (OBX-3 identifier)
    unit = "mg/dL"              # the sender's unit; omitted or "" for none
    test = "GLU"                # omitted: a known code deliberately not mapped
    factor = 0.0555             # canonical = value * factor + offset; default 1 and 0
    offset = 0

    [[interval]]
    test = "GLU"
    species = "canine"          # optional when the file sets it; a word of SPECIES_WORDS
    breed = "Greyhound"         # optional narrowing: breed, sex, age band in days
    sex = "male"                # a Sex value
    age_min_days = 0
    age_max_days = 365
    low = 4.1                   # in the test's unit; at least one of the four limits
    high = 7.9
    critical_low = 3.3
    critical_high = 27.8
    citation = "…"              # optional when the file sets it
    clinic = "north"            # optional: an override for one clinic (its code), and/or
    device = "Chemistry bench"  # for one analyzer (its [[analyzers]] name); both optional
                                # at the top of a file too. The most specific interval wins.

Numbers may be written as TOML integers, floats or strings (``"0.0555"``); they are read as
decimals with at most 10 places, because SQLite keeps NUMERIC as a binary float that SQLAlchemy
reads back to 10 places, and a longer number would never compare equal after a round trip.
Sources are upper-cased (``pipeline.mapping.source_key`` gives upper case).
"""

from __future__ import annotations

import itertools
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Final, NoReturn

from vetgateway.errors import ConfigError
from vetgateway.model import Sex
from vetgateway.pipeline.mapping import SOURCE_MAX_LENGTH, normalise_unit
from vetgateway.pipeline.species import SPECIES_WORDS
from vetgateway.store.models.catalogue import CatalogueCategory, ValueType

__all__ = [
    "CatalogueFiles",
    "CatalogueTestDef",
    "IntervalDef",
    "MappingDef",
    "default_paths",
    "read_catalogue",
]

MAX_PLACES: Final = 10
_CODE: Final = re.compile(r"[A-Z0-9][A-Z0-9_.-]{0,31}", re.ASCII)
_TOP_KEYS: Final = frozenset({"description", "source", "species", "citation", "clinic", "device"})
_TEST_KEYS: Final = frozenset(
    {
        "code",
        "name",
        "loinc",
        "category",
        "specimen",
        "unit",
        "value_type",
        "decimals",
        "delta_abs",
        "delta_rel",
    }
)
_MAPPING_KEYS: Final = frozenset({"source", "code", "unit", "test", "factor", "offset"})
_INTERVAL_KEYS: Final = frozenset(
    {
        "test",
        "species",
        "clinic",
        "device",
        "breed",
        "sex",
        "age_min_days",
        "age_max_days",
        "unit",
        "low",
        "high",
        "critical_low",
        "critical_high",
        "citation",
    }
)


@dataclass(frozen=True, slots=True)
class CatalogueTestDef:
    """A ``[[test]]`` entry. ``origin`` names file and entry for error messages."""

    origin: str
    code: str
    name: str
    loinc: str | None
    category: CatalogueCategory
    specimen: str | None
    unit: str | None
    value_type: ValueType
    decimals: int | None
    # Delta-check thresholds (``pipeline.delta``): absolute, in ``unit``; relative, a fraction.
    delta_abs: Decimal | None = None
    delta_rel: Decimal | None = None


@dataclass(frozen=True, slots=True)
class MappingDef:
    """A ``[[mapping]]`` entry; ``test`` is a catalogue code or None (deliberately not mapped)."""

    origin: str
    source: str
    code: str
    unit: str
    test: str | None
    factor: Decimal
    offset: Decimal

    @property
    def key(self) -> tuple[str, str, str]:
        """The identity of the row: source, code and normalised unit."""
        return (self.source, self.code, normalise_unit(self.unit))


@dataclass(frozen=True, slots=True)
class IntervalDef:
    """An ``[[interval]]`` entry, in its test's unit."""

    origin: str
    test: str
    species: str
    breed: str | None
    sex: Sex | None
    age_min_days: int | None
    age_max_days: int | None
    unit: str | None
    low: Decimal | None
    high: Decimal | None
    critical_low: Decimal | None
    critical_high: Decimal | None
    citation: str | None
    # An override for one clinic (its code) and/or one analyzer (its device name); None: default.
    clinic: str | None = None
    device: str | None = None

    @property
    def scope(self) -> tuple[str, str, str | None, str | None]:
        """What a file states the whole truth about: test and species at one clinic/device."""
        return (self.test, self.species, self.clinic, self.device)

    @property
    def key(
        self,
    ) -> tuple[str, str, str | None, str | None, str | None, Sex | None, int | None, int | None]:
        """What makes two intervals the same one: test, species, clinic, device, breed, sex and
        age band."""
        return (
            self.test,
            self.species,
            self.clinic,
            self.device,
            self.breed,
            self.sex,
            self.age_min_days,
            self.age_max_days,
        )


@dataclass(frozen=True, slots=True)
class CatalogueFiles:
    """Everything the files define, in file order, validated within and across files (duplicates,
    limits in order). Whether a mapping's or interval's test exists is checked by the loader, which
    also knows the tests already in the database."""

    tests: tuple[CatalogueTestDef, ...]
    mappings: tuple[MappingDef, ...]
    intervals: tuple[IntervalDef, ...]


def default_paths() -> tuple[Traversable, ...]:
    """The catalogue shipped in the package, in name order."""
    data = files(__name__) / "data"
    return tuple(sorted((p for p in data.iterdir() if p.name.endswith(".toml")), key=_name))


def _name(path: Traversable) -> str:
    return path.name


class _Entry:
    """Typed access to one TOML table, raising ConfigError that names where."""

    def __init__(self, origin: str, table: Any, allowed: frozenset[str]) -> None:
        self.origin = origin
        if not isinstance(table, dict):
            self.fail("must be a table")
        unknown = sorted(set(table) - allowed)
        if unknown:
            self.fail(f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
        self.table: dict[str, Any] = table

    def fail(self, problem: str) -> NoReturn:
        raise ConfigError(f"{self.origin}: {problem}")

    def text(self, key: str, default: str | None = None, *, max_length: int = 200) -> str | None:
        value = self.table.get(key, default)
        if value is None:
            return None
        if not isinstance(value, str):
            self.fail(f"{key} must be a string, not {value!r}")
        value = value.strip()
        if len(value) > max_length:
            self.fail(f"{key} is longer than {max_length} characters")
        return value or None

    def required(self, key: str, default: str | None = None, *, max_length: int = 200) -> str:
        value = self.text(key, default, max_length=max_length)
        if value is None:
            self.fail(f"{key} is missing")
        return value

    def integer(self, key: str, low: int, high: int) -> int | None:
        value = self.table.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(f"{key} must be a whole number from {low} to {high}, not {value!r}")
        return int(value)

    def decimal(self, key: str) -> Decimal | None:
        value = self.table.get(key)
        if value is None:
            return None
        number: Decimal | None = None
        if isinstance(value, int | float | str) and not isinstance(value, bool):
            try:
                number = Decimal(str(value).strip())
            except InvalidOperation:
                number = None
        if number is None or not number.is_finite():
            self.fail(f"{key} must be a number, not {value!r}")
        exponent = number.as_tuple().exponent
        if isinstance(exponent, int) and exponent < -MAX_PLACES:
            self.fail(f"{key} has more than {MAX_PLACES} decimal places: {value!r}")
        return number

    def choice(self, key: str, enum: type[Any], default: str | None = None) -> Any:
        value = self.table.get(key, default)
        if value is None:
            return None
        try:
            return enum(value)
        except ValueError:
            allowed = ", ".join(m.value for m in enum)
            self.fail(f"{key} {value!r} is not one of: {allowed}")


def _label(kind: str, index: int, table: Any, key: str) -> str:
    name = table.get(key) if isinstance(table, dict) else None
    return f"[[{kind}]] #{index}" + (f" ({name})" if isinstance(name, str) and name else "")


def _test(origin: str, raw: Any) -> CatalogueTestDef:
    e = _Entry(origin, raw, _TEST_KEYS)
    code = e.required("code", max_length=32)
    if not _CODE.fullmatch(code):
        e.fail(f"code {code!r} must be upper-case letters, digits, '_', '.' or '-'")
    value_type = e.choice("value_type", ValueType, "numeric")
    deltas = {k: e.decimal(k) for k in ("delta_abs", "delta_rel")}
    for key, limit in deltas.items():
        if limit is not None and limit <= 0:
            e.fail(f"{key} must be greater than 0, not {limit}")
        if limit is not None and value_type is not ValueType.NUMERIC:
            e.fail(f"{key} is only for numeric tests; {code} is {value_type.value}")
    return CatalogueTestDef(
        origin=origin,
        code=code,
        name=e.required("name"),
        loinc=e.text("loinc", max_length=16),
        category=e.choice("category", CatalogueCategory) or e.fail("category is missing"),
        specimen=e.text("specimen", max_length=64),
        unit=e.text("unit", max_length=32),
        value_type=value_type,
        decimals=e.integer("decimals", 0, 6),
        delta_abs=deltas["delta_abs"],
        delta_rel=deltas["delta_rel"],
    )


def _mapping(origin: str, raw: Any, top: _Entry) -> MappingDef:
    e = _Entry(origin, raw, _MAPPING_KEYS)
    source = e.required("source", top.text("source"), max_length=SOURCE_MAX_LENGTH).upper()
    factor, offset = e.decimal("factor"), e.decimal("offset")
    factor = Decimal(1) if factor is None else factor
    offset = Decimal(0) if offset is None else offset
    if factor <= 0:
        e.fail(f"factor must be greater than 0, not {factor}")
    test = e.text("test", max_length=32)
    if test is None and (factor != 1 or offset != 0):
        e.fail("a row without a test (deliberately not mapped) cannot convert")
    return MappingDef(
        origin=origin,
        source=source,
        code=e.required("code", max_length=64),
        unit=e.text("unit", max_length=32) or "",
        test=test,
        factor=factor,
        offset=offset,
    )


def _interval(origin: str, raw: Any, top: _Entry) -> IntervalDef:
    e = _Entry(origin, raw, _INTERVAL_KEYS)
    species = e.required("species", top.text("species"), max_length=32)
    if species not in SPECIES_WORDS:
        e.fail(f"species {species!r} is not one of: {', '.join(sorted(SPECIES_WORDS))}")
    limits = {k: e.decimal(k) for k in ("critical_low", "low", "high", "critical_high")}
    present = [(k, v) for k, v in limits.items() if v is not None]
    if not present:
        e.fail("needs at least one of low, high, critical_low, critical_high")
    for (k1, v1), (k2, v2) in itertools.pairwise(present):
        if v1 is not None and v2 is not None and v1 > v2:
            e.fail(f"{k1} {v1} is above {k2} {v2}")
    age_min, age_max = e.integer("age_min_days", 0, 36500), e.integer("age_max_days", 0, 36500)
    if age_min is not None and age_max is not None and age_min > age_max:
        e.fail(f"age_min_days {age_min} is above age_max_days {age_max}")
    return IntervalDef(
        origin=origin,
        test=e.required("test", max_length=32),
        species=species,
        breed=e.text("breed", max_length=100),
        sex=e.choice("sex", Sex),
        age_min_days=age_min,
        age_max_days=age_max,
        unit=e.text("unit", max_length=32),
        low=limits["low"],
        high=limits["high"],
        critical_low=limits["critical_low"],
        critical_high=limits["critical_high"],
        citation=e.text("citation", top.text("citation", max_length=2000), max_length=2000),
        clinic=e.text("clinic", top.text("clinic", max_length=64), max_length=64),
        device=e.text("device", top.text("device", max_length=200), max_length=200),
    )


def _parse(name: str, path: Path | Traversable) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{name}: cannot read the catalogue file: {exc}") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: not valid TOML: {exc}") from exc


def _tables(name: str, document: Mapping[str, Any], kind: str) -> list[Any]:
    tables = document.get(kind, [])
    if not isinstance(tables, list):
        raise ConfigError(f"{name}: {kind} must be an array of tables, written [[{kind}]]")
    return tables


def _unique(kind: str, items: Sequence[Any], key: str = "key") -> None:
    seen: dict[Any, str] = {}
    for item in items:
        k = getattr(item, key)
        if k in seen:
            raise ConfigError(f"{item.origin}: the same {kind} as {seen[k]}")
        seen[k] = item.origin


def read_catalogue(paths: Sequence[Path | Traversable] | None = None) -> CatalogueFiles:
    """Parse and validate catalogue files (the packaged ones when ``paths`` is None)."""
    tests: list[CatalogueTestDef] = []
    mappings: list[MappingDef] = []
    intervals: list[IntervalDef] = []
    for path in default_paths() if paths is None else paths:
        name = str(path) if isinstance(path, Path) else path.name
        document = _parse(name, path)
        top = _Entry(name, document, _TOP_KEYS | {"test", "mapping", "interval"})
        for i, raw in enumerate(_tables(name, document, "test"), 1):
            tests.append(_test(f"{name}: {_label('test', i, raw, 'code')}", raw))
        for i, raw in enumerate(_tables(name, document, "mapping"), 1):
            mappings.append(_mapping(f"{name}: {_label('mapping', i, raw, 'code')}", raw, top))
        for i, raw in enumerate(_tables(name, document, "interval"), 1):
            intervals.append(_interval(f"{name}: {_label('interval', i, raw, 'test')}", raw, top))
    _unique("test code", tests, "code")
    _unique("mapping (source, code and unit)", mappings)
    _unique("interval (test, species, clinic, device, breed, sex and age band)", intervals)
    return CatalogueFiles(tuple(tests), tuple(mappings), tuple(intervals))
