"""Loading the test catalogue into the database, and reading it back as a ``MappingTable``.

``load_catalogue(session, paths)`` writes what ``catalogue.read_catalogue`` read, so loading the
same files twice changes nothing the second time (every row counted ``unchanged``):

- **Tests** by ``code``: inserted, or their fields updated. A soft-deleted (retired) test stays
  retired; loading does not resurrect it.
- **Code maps** by ``(source, source_code, source_unit)``, the unit compared normalised
  (``pipeline.mapping.normalise_unit``) so ``mg/dl`` in the database is the row ``mg/dL`` in a
  file. Each row's target unit is its test's unit. Rows of other sources, and columns the files
  do not describe (``device_id``), are left alone.
- **Reference intervals** by test, species, clinic, device, breed, sex and age band. A file is
  the whole truth for each (test, species, clinic, device) it mentions — the default scope (no
  clinic, no device), a clinic's overrides (``clinic = "code"``) or an analyzer's (``device =
  "name"``): such intervals missing from the files are soft-deleted (``removed``; results keep
  pointing at the interval they were read against), and one that comes back is revived. Loading
  the shipped defaults therefore never touches a clinic's or an analyzer's overrides.

A file mistake (syntax, a missing field, a test that does not exist, a unit that differs from the
test's) raises ``ConfigError`` naming file and entry before anything is written. Like every store
function these take a session and never commit; the caller's transaction makes a load all or
nothing.

``mapping_table(session)`` reads live tests and code maps into the immutable table the pipeline
caches. Device-specific rows (``device_id`` set) are left out: a ``MappingRule`` has no device,
and using such a row for every device of its source is exactly the widening the schema forbids.
``delta_rules(session)`` reads the tests' delta-check thresholds, cached beside it.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from vetgateway.catalogue import CatalogueFiles, CatalogueTestDef, IntervalDef, read_catalogue
from vetgateway.errors import ConfigError
from vetgateway.pipeline.delta import DeltaRule
from vetgateway.pipeline.mapping import CatalogueEntry, MappingRule, MappingTable, normalise_unit
from vetgateway.store.models import (
    CatalogueTest,
    Clinic,
    CodeMapping,
    Device,
    ReferenceInterval,
    ValueType,
)
from vetgateway.store.models.base import utcnow

__all__ = [
    "LoadCounts",
    "LoadSummary",
    "delta_rules",
    "ensure_catalogue",
    "load_catalogue",
    "mapping_table",
]

log = logging.getLogger(__name__)

_Names = dict[str, uuid.UUID]


@dataclass(frozen=True, slots=True)
class LoadCounts:
    """What a load did to one kind of row. ``removed`` only happens to reference intervals."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0

    def __str__(self) -> str:
        text = f"{self.inserted} inserted, {self.updated} updated, {self.unchanged} unchanged"
        return text + (f", {self.removed} removed" if self.removed else "")


@dataclass(frozen=True, slots=True)
class LoadSummary:
    """Counts per kind of row; ``str()`` is the one line ``vetgateway catalogue load`` prints."""

    tests: LoadCounts
    mappings: LoadCounts
    intervals: LoadCounts

    @property
    def inserted(self) -> int:
        return self.tests.inserted + self.mappings.inserted + self.intervals.inserted

    @property
    def updated(self) -> int:
        return self.tests.updated + self.mappings.updated + self.intervals.updated

    @property
    def unchanged(self) -> int:
        return self.tests.unchanged + self.mappings.unchanged + self.intervals.unchanged

    def __str__(self) -> str:
        return (
            f"tests: {self.tests}; mappings: {self.mappings}; reference intervals: {self.intervals}"
        )


def _counts(counter: Counter[str]) -> LoadCounts:
    return LoadCounts(
        counter["inserted"], counter["updated"], counter["unchanged"], counter["removed"]
    )


def _assign(row: Any, values: dict[str, Any]) -> bool:
    """Set the attributes that differ; True when any did."""
    changed = False
    for name, value in values.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed = True
    return changed


def _load_tests(
    session: Session,
    defs: Sequence[CatalogueTestDef],
    existing: dict[str, CatalogueTest],
    counter: Counter[str],
) -> dict[str, CatalogueTest]:
    """Upsert the file tests; returns every test in the database by code."""
    existing = dict(existing)
    for d in defs:
        values = {
            "name": d.name,
            "loinc": d.loinc,
            "category": d.category,
            "specimen": d.specimen,
            "unit": d.unit,
            "value_type": d.value_type,
            "decimals": d.decimals,
            "delta_abs": d.delta_abs,
            "delta_rel": d.delta_rel,
        }
        row = existing.get(d.code)
        if row is None:
            row = CatalogueTest(id=uuid.uuid4(), code=d.code, **values)
            session.add(row)
            existing[d.code] = row
            counter["inserted"] += 1
        else:
            counter["updated" if _assign(row, values) else "unchanged"] += 1
    return existing


def _check(files: CatalogueFiles, stored: dict[str, CatalogueTest]) -> None:
    """Cross-references that need the database's tests too, checked before anything changes. A
    test defined in the files counts as it will be after the load."""
    defined: dict[str, CatalogueTestDef | CatalogueTest] = {**stored}
    defined.update((d.code, d) for d in files.tests)

    def _test_for(origin: str, code: str) -> CatalogueTestDef | CatalogueTest:
        test = defined.get(code)
        if test is None:
            raise ConfigError(f"{origin}: test {code!r} is in neither the files nor the database")
        return test

    for m in files.mappings:
        if m.test is None:
            continue
        test = _test_for(m.origin, m.test)
        identity = m.factor == 1 and m.offset == 0
        if test.value_type is not ValueType.NUMERIC and not identity:
            raise ConfigError(f"{m.origin}: {m.test} is not numeric; its rows cannot convert")
    for i in files.intervals:
        test = _test_for(i.origin, i.test)
        if test.value_type is not ValueType.NUMERIC:
            raise ConfigError(f"{i.origin}: {i.test} is not numeric; it has no interval")
        if i.unit is not None and normalise_unit(i.unit) != normalise_unit(test.unit):
            raise ConfigError(
                f"{i.origin}: unit {i.unit!r} is not {i.test}'s unit {test.unit!r};"
                " intervals are never converted"
            )


def _load_mappings(
    session: Session,
    files: CatalogueFiles,
    tests: dict[str, CatalogueTest],
    counter: Counter[str],
) -> None:
    sources = {m.source for m in files.mappings}
    if not sources:
        return
    existing: dict[tuple[str, str, str], CodeMapping] = {}
    rows = session.scalars(
        sa.select(CodeMapping)
        .where(sa.func.upper(CodeMapping.source).in_(sources))
        .order_by(CodeMapping.created_at, CodeMapping.id)
    )
    for stored in rows:
        key = (stored.source.upper(), stored.source_code, normalise_unit(stored.source_unit))
        existing.setdefault(key, stored)
    for m in files.mappings:
        test = tests[m.test] if m.test is not None else None
        values = {
            "test_id": test.id if test else None,
            "unit": test.unit if test else None,
            "conversion_factor": m.factor,
            "conversion_offset": m.offset,
        }
        row = existing.get(m.key)
        if row is None:
            session.add(
                CodeMapping(
                    id=uuid.uuid4(),
                    source=m.source,
                    source_code=m.code,
                    source_unit=m.unit,
                    **values,
                )
            )
            counter["inserted"] += 1
        else:
            counter["updated" if _assign(row, values) else "unchanged"] += 1


def _scope_ids(session: Session, defs: Sequence[IntervalDef]) -> tuple[_Names, _Names]:
    """The clinic ids by code and device ids by name that the overrides in ``defs`` name;
    ``ConfigError`` naming the entry for one that does not exist."""
    clinics: _Names = {}
    devices: _Names = {}
    for d in defs:
        if d.clinic is not None and d.clinic not in clinics:
            found = session.scalar(
                sa.select(Clinic.id).where(Clinic.code == d.clinic, Clinic.deleted_at.is_(None))
            )
            if found is None:
                raise ConfigError(f"{d.origin}: no clinic with code {d.clinic!r}")
            clinics[d.clinic] = found
        if d.device is not None and d.device not in devices:
            found = session.scalar(
                sa.select(Device.id).where(Device.name == d.device, Device.deleted_at.is_(None))
            )
            if found is None:
                raise ConfigError(
                    f"{d.origin}: no device named {d.device!r} (devices are the [[analyzers]] "
                    "of the config; they are created when the gateway starts)"
                )
            devices[d.device] = found
    return clinics, devices


def _interval_key(
    row: ReferenceInterval, code: str, clinics: dict[uuid.UUID, str], devices: dict[uuid.UUID, str]
) -> tuple[Any, ...]:
    return (
        code,
        row.species,
        clinics.get(row.clinic_id) if row.clinic_id else None,
        devices.get(row.device_id) if row.device_id else None,
        row.breed,
        row.sex,
        row.age_min_days,
        row.age_max_days,
    )


def _load_intervals(
    session: Session,
    defs: Sequence[IntervalDef],
    tests: dict[str, CatalogueTest],
    counter: Counter[str],
) -> None:
    if not defs:
        return
    clinic_ids, device_ids = _scope_ids(session, defs)
    clinic_codes = {v: k for k, v in clinic_ids.items()}
    device_names = {v: k for k, v in device_ids.items()}
    scopes = {
        (
            tests[d.test].id,
            d.species,
            clinic_ids[d.clinic] if d.clinic else None,
            device_ids[d.device] if d.device else None,
        )
        for d in defs
    }
    codes = {t.id: code for code, t in tests.items()}
    live: dict[tuple[Any, ...], list[ReferenceInterval]] = {}
    retired: dict[tuple[Any, ...], list[ReferenceInterval]] = {}
    rows = session.scalars(
        sa.select(ReferenceInterval)
        .where(ReferenceInterval.test_id.in_({scope[0] for scope in scopes}))
        .order_by(ReferenceInterval.created_at, ReferenceInterval.id)
    )
    for row in rows:
        if (row.test_id, row.species, row.clinic_id, row.device_id) not in scopes:
            continue
        bucket = live if row.deleted_at is None else retired
        key = _interval_key(row, codes[row.test_id], clinic_codes, device_names)
        bucket.setdefault(key, []).append(row)
    for d in defs:
        test = tests[d.test]
        values = {
            "unit": test.unit,
            "low": d.low,
            "high": d.high,
            "critical_low": d.critical_low,
            "critical_high": d.critical_high,
            "citation": d.citation,
        }
        matches = live.pop(d.key, [])
        if matches:
            row, duplicates = matches[0], matches[1:]
            counter["updated" if _assign(row, values) else "unchanged"] += 1
            _retire(duplicates, counter)
        elif retired.get(d.key):
            row = retired[d.key].pop(0)
            _assign(row, values)
            row.deleted_at = None
            counter["updated"] += 1
        else:
            session.add(
                ReferenceInterval(
                    id=uuid.uuid4(),
                    test_id=test.id,
                    species=d.species,
                    clinic_id=clinic_ids[d.clinic] if d.clinic else None,
                    device_id=device_ids[d.device] if d.device else None,
                    breed=d.breed,
                    sex=d.sex,
                    age_min_days=d.age_min_days,
                    age_max_days=d.age_max_days,
                    **values,
                )
            )
            counter["inserted"] += 1
    for leftovers in live.values():
        _retire(leftovers, counter)


def _retire(rows: Iterable[ReferenceInterval], counter: Counter[str]) -> None:
    now = utcnow()
    for row in rows:
        row.deleted_at = now
        counter["removed"] += 1


def load_catalogue(
    session: Session, paths: Sequence[Path | Traversable] | None = None
) -> LoadSummary:
    """Upsert tests, code maps and reference intervals from catalogue files (the packaged
    catalogue when ``paths`` is None). Idempotent; see the module docstring for what "the same
    row" means for each. Raises ``ConfigError`` for a broken file, naming file and entry."""
    files = read_catalogue(paths)
    counts: dict[str, Counter[str]] = {k: Counter() for k in ("tests", "mappings", "intervals")}
    stored = {t.code: t for t in session.scalars(sa.select(CatalogueTest))}
    _check(files, stored)
    tests = _load_tests(session, files.tests, stored, counts["tests"])
    session.flush()
    _load_mappings(session, files, tests, counts["mappings"])
    _load_intervals(session, files.intervals, tests, counts["intervals"])
    session.flush()
    summary = LoadSummary(*(_counts(counts[k]) for k in ("tests", "mappings", "intervals")))
    log.info(
        "catalogue loaded",
        extra={
            "files": len(paths) if paths is not None else "packaged",
            "inserted": summary.inserted,
            "updated": summary.updated,
            "unchanged": summary.unchanged,
            "intervals_removed": summary.intervals.removed,
        },
    )
    return summary


def ensure_catalogue(session: Session) -> LoadSummary | None:
    """Load the shipped catalogue into a database that has no tests yet; None otherwise.

    So ``make run`` on a fresh machine maps the example sources out of the box, while a
    catalogue someone has loaded or edited is never overwritten behind their back.
    """
    if session.execute(sa.select(CatalogueTest.id).limit(1)).first() is not None:
        return None
    return load_catalogue(session)


def mapping_table(session: Session) -> MappingTable:
    """Live tests and every source-wide code map, as the pipeline's ``MappingTable``."""
    entries = tuple(
        CatalogueEntry(
            test_id=t.id, code=t.code, name=t.name, unit=t.unit, loinc=t.loinc, decimals=t.decimals
        )
        for t in session.scalars(
            sa.select(CatalogueTest)
            .where(CatalogueTest.deleted_at.is_(None))
            .order_by(CatalogueTest.code)
        )
    )
    rules = tuple(
        MappingRule(
            source=m.source,
            source_code=m.source_code,
            source_unit=m.source_unit,
            test_id=m.test_id,
            unit=m.unit,
            factor=m.conversion_factor,
            offset=m.conversion_offset,
        )
        for m in session.scalars(
            sa.select(CodeMapping)
            .where(CodeMapping.device_id.is_(None))
            .order_by(CodeMapping.source, CodeMapping.source_code, CodeMapping.source_unit)
        )
    )
    return MappingTable(entries, rules)


def delta_rules(session: Session) -> dict[uuid.UUID, DeltaRule]:
    """The delta-check thresholds of live tests that have any, by test id."""
    rows = session.execute(
        sa.select(CatalogueTest.id, CatalogueTest.delta_abs, CatalogueTest.delta_rel).where(
            CatalogueTest.deleted_at.is_(None),
            sa.or_(CatalogueTest.delta_abs.is_not(None), CatalogueTest.delta_rel.is_not(None)),
        )
    )
    return {r.id: DeltaRule(abs=r.delta_abs, rel=r.delta_rel) for r in rows}
