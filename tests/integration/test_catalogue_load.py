"""Loading the test catalogue (store/catalogue.py) on SQLite and PostgreSQL: the packaged files
load, a second load changes nothing, changed files update in place, broken files are refused with
file and entry named, and the mapping table read back converts a US-unit glucose to mmol/L."""

from __future__ import annotations

import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from vetgateway.catalogue import read_catalogue
from vetgateway.errors import ConfigError
from vetgateway.model import Observation
from vetgateway.pipeline.mapping import map_observations, source_key
from vetgateway.store.catalogue import LoadCounts, load_catalogue, mapping_table
from vetgateway.store.db import Database
from vetgateway.store.models import Base, CatalogueTest, CodeMapping, ReferenceInterval


def count(db: Database, model: type[Base], *where: sa.ColumnElement[bool]) -> int:
    with db.session(readonly=True) as s:
        return s.scalar(sa.select(sa.func.count()).select_from(model).where(*where)) or 0


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_packaged_catalogue_loads_once_and_then_changes_nothing(db: Database) -> None:
    files = read_catalogue()
    with db.session() as s:
        first = load_catalogue(s)
    assert first.tests == LoadCounts(inserted=len(files.tests))
    assert first.mappings == LoadCounts(inserted=len(files.mappings))
    assert first.intervals == LoadCounts(inserted=len(files.intervals))

    with db.session() as s:
        second = load_catalogue(s)
    assert (second.inserted, second.updated) == (0, 0)
    assert second.intervals.removed == 0
    assert second.unchanged == len(files.tests) + len(files.mappings) + len(files.intervals)

    assert count(db, CatalogueTest) == len(files.tests)
    assert count(db, CodeMapping) == len(files.mappings)
    assert count(db, ReferenceInterval, ReferenceInterval.deleted_at.is_(None)) == len(
        files.intervals
    )


def test_mapping_table_round_trip_converts_glucose(db: Database) -> None:
    with db.session() as s:
        load_catalogue(s)
    with db.session(readonly=True) as s:
        table = mapping_table(s)
        glucose = s.scalars(sa.select(CatalogueTest).where(CatalogueTest.code == "GLU")).one()
        canine = s.scalars(
            sa.select(ReferenceInterval).where(
                ReferenceInterval.test_id == glucose.id, ReferenceInterval.species == "canine"
            )
        ).one()
    assert (canine.unit, canine.low, canine.high) == ("mmol/L", Decimal("4.1"), Decimal("7.9"))

    source = source_key("example_reflab^2.16.840.1^ISO", "LIS")
    observations = [
        Observation(1, None, "NM", "GLUC", "Glucose", None, "97", Decimal("97"), unit="mg/dL"),
        Observation(2, None, "NM", "GLUC", "Glucose", None, "97", Decimal("97"), unit="g/L"),
        Observation(3, None, "NM", "NEWTEST", None, None, "1", Decimal("1"), unit="U/L"),
    ]
    converted, mismatch, unknown = map_observations(observations, source, table)
    assert (converted.mapped, converted.test_id, converted.test_code) == (True, glucose.id, "GLU")
    assert (converted.value_numeric, converted.unit) == (Decimal("5.384"), "mmol/L")
    assert (mismatch.mapped, mismatch.test_id, mismatch.value_numeric) == (
        False,
        glucose.id,
        Decimal("97"),
    )
    assert unknown.reason == "unknown code NEWTEST from EXAMPLE_REFLAB"


def test_conversion_factors_survive_the_round_trip(db: Database) -> None:
    with db.session() as s:
        load_catalogue(s)
    with db.session(readonly=True) as s:
        table = mapping_table(s)
    factors = {(r.source, r.source_code, r.source_unit): r.factor for r in table.rules}
    assert factors[("EXAMPLE_REFLAB", "GLUC", "mg/dL")] == Decimal("0.0555")
    assert factors[("EXAMPLE_REFLAB", "CREAT", "mg/dL")] == Decimal("88.42")
    assert factors[("EXAMPLE_INHOUSE", "pCO2", "kPa")] == Decimal("7.50062")
    deliberately_unmapped = [r for r in table.rules if r.test_id is None]
    assert {r.source_code for r in deliberately_unmapped} >= {"HEMOLYSIS", "NEU%"}


def test_changed_files_update_in_place_and_retire_dropped_intervals(
    db: Database, tmp_path: Path
) -> None:
    first = write(
        tmp_path,
        "site.toml",
        """\
        source = "site_lab"
        species = "canine"
        citation = "our lab"

        [[test]]
        code = "BHB"
        name = "Beta-hydroxybutyrate"
        category = "chemistry"
        unit = "mmol/L"
        decimals = 2

        [[mapping]]
        code = "B-HB"
        unit = "mmol/L"
        test = "BHB"

        [[interval]]
        test = "BHB"
        high = 0.6

        [[interval]]
        test = "BHB"
        age_min_days = 0
        age_max_days = 180
        high = 0.8
        """,
    )
    with db.session() as s:
        assert load_catalogue(s, [first]).inserted == 4

    second = write(
        tmp_path,
        "site2.toml",
        """\
        source = "SITE_LAB"
        species = "canine"
        citation = "our lab, 2nd edition"

        [[test]]
        code = "BHB"
        name = "Beta-hydroxybutyrate (3-HB)"
        category = "chemistry"
        unit = "mmol/L"
        decimals = 2

        [[mapping]]
        code = "B-HB"
        unit = "MMOL/L"
        test = "BHB"
        factor = "1.0"

        [[interval]]
        test = "BHB"
        high = 0.6
        """,
    )
    with db.session() as s:
        summary = load_catalogue(s, [second])
    assert summary.tests == LoadCounts(updated=1)
    assert summary.mappings == LoadCounts(unchanged=1)  # same row: unit spelling and 1 == 1.0
    assert summary.intervals == LoadCounts(updated=1, removed=1)  # citation; the age band left
    live = ReferenceInterval.deleted_at.is_(None)
    assert count(db, ReferenceInterval, live) == 1
    assert count(db, ReferenceInterval) == 2  # soft-deleted, never removed

    with db.session() as s:
        again = load_catalogue(s, [first])
    assert again.intervals == LoadCounts(updated=2)  # one edited back, one revived
    assert count(db, ReferenceInterval, live) == 2
    assert count(db, ReferenceInterval) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[test]]\ncode = 'GLU'\n", r"bad\.toml: \[\[test\]\] #1 \(GLU\): name is missing"),
        ("[[test\n", r"bad\.toml: not valid TOML"),
        (
            "source = 'X'\n[[mapping]]\ncode = 'FOO'\ntest = 'NOPE'\n",
            r"bad\.toml: \[\[mapping\]\] #1 \(FOO\): test 'NOPE' is in neither",
        ),
        (
            "source = 'X'\n[[mapping]]\ncode = 'FOO'\ntest = 'GLU'\nfactor = 0\n",
            r"#1 \(FOO\): factor must be greater than 0",
        ),
        (
            "[[interval]]\ntest = 'GLU'\nspecies = 'canin'\nlow = 1\n",
            r"#1 \(GLU\): species 'canin' is not one of",
        ),
        (
            "[[interval]]\ntest = 'GLU'\nspecies = 'feline'\nlow = 9\nhigh = 3\n",
            r"#1 \(GLU\): low 9 is above high 3",
        ),
        (
            "[[interval]]\ntest = 'GLU'\nspecies = 'feline'\nunit = 'mg/dL'\nhigh = 3\n",
            r"#1 \(GLU\): unit 'mg/dL' is not GLU's unit 'mmol/L'",
        ),
        (
            "[[interval]]\ntest = 'UPRO'\nspecies = 'feline'\nhigh = 3\n",
            r"#1 \(UPRO\): UPRO is not numeric",
        ),
        (
            "[[mapping]]\nsource = 'X'\ncode = 'A'\ntest = 'GLU'\nfactr = 2\n",
            r"#1 \(A\): unknown key\(s\) factr",
        ),
        (
            "[[mapping]]\nsource = 'X'\ncode = 'A'\ntest = 'GLU'\nfactor = '0.12345678901'\n",
            r"more than 10 decimal places",
        ),
    ],
)
def test_a_broken_file_is_refused_naming_file_and_entry(
    db: Database, tmp_path: Path, text: str, message: str
) -> None:
    with db.session() as s:
        load_catalogue(s)
    bad = tmp_path / "bad.toml"
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message), db.session() as s:
        load_catalogue(s, [bad])
    assert count(db, CodeMapping, CodeMapping.source == "X") == 0


def test_duplicates_across_files_are_refused(db: Database, tmp_path: Path) -> None:
    a = write(tmp_path, "a.toml", "[[interval]]\ntest = 'GLU'\nspecies = 'canine'\nhigh = 1\n")
    b = write(tmp_path, "b.toml", "[[interval]]\ntest = 'GLU'\nspecies = 'canine'\nhigh = 2\n")
    with pytest.raises(ConfigError, match=r"b\.toml: .* the same interval .* as .*a\.toml"):
        read_catalogue([a, b])
