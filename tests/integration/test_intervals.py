"""Reference intervals from the database (store/intervals.py) on SQLite and PostgreSQL: the
packaged catalogue loads, ``interval_table`` reads it back, a US-unit glucose is mapped and then
interpreted against the canine interval, the breed and age overrides survive the round trip, and
soft-deleted intervals are left out."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from vetgateway.analyzers.config import AnalyzerConfig
from vetgateway.errors import ConfigError
from vetgateway.model import Observation
from vetgateway.pipeline.interpret import interpret
from vetgateway.pipeline.mapping import map_observation, source_key
from vetgateway.store.catalogue import load_catalogue, mapping_table
from vetgateway.store.clinics import Refused, create_clinic
from vetgateway.store.db import Database
from vetgateway.store.devices import sync_devices
from vetgateway.store.intervals import interval_table
from vetgateway.store.models import CatalogueTest, DeviceProtocol, ReferenceInterval
from vetgateway.store.models.base import utcnow

SOURCE = source_key("example_reflab", "LIS")


def glucose(mg_dl: str, *flags: str) -> Observation:
    return Observation(
        1,
        None,
        "NM",
        "GLUC",
        "Glucose",
        None,
        mg_dl,
        Decimal(mg_dl),
        unit="mg/dL",
        abnormal_flags=flags,
    )


def canine_glucose_interval(db: Database) -> ReferenceInterval:
    with db.session(readonly=True) as s:
        return s.scalars(
            sa.select(ReferenceInterval)
            .join(CatalogueTest, CatalogueTest.id == ReferenceInterval.test_id)
            .where(
                CatalogueTest.code == "GLU",
                ReferenceInterval.species == "canine",
                ReferenceInterval.clinic_id.is_(None),
                ReferenceInterval.device_id.is_(None),
            )
        ).one()


def test_glucose_is_interpreted_against_the_loaded_interval(db: Database) -> None:
    with db.session() as s:
        load_catalogue(s)
    with db.session(readonly=True) as s:
        mappings, intervals = mapping_table(s), interval_table(s)
    expected = canine_glucose_interval(db)

    normal = map_observation(glucose("97"), SOURCE, mappings)
    assert (normal.mapped, normal.value_numeric, normal.unit) == (True, Decimal("5.384"), "mmol/L")
    reading = interpret(normal, intervals, species="canine")
    assert (reading.interpretation, reading.interval_id) == ("normal", expected.id)
    assert not reading.disagrees_with_lab

    critical = map_observation(glucose("500", "N"), SOURCE, mappings)
    reading = interpret(critical, intervals, species="canine")
    assert (reading.interpretation, reading.critical_limit) == ("critical_high", Decimal("25"))
    assert reading.disagrees_with_lab  # the lab said normal

    # 5.384 mmol/L is normal for a horse too, against the horse's own interval.
    equine = interpret(normal, intervals, species="equine")
    assert equine.interpretation == "normal"
    assert equine.interval_id not in (None, expected.id)


def test_overrides_survive_the_round_trip(db: Database) -> None:
    with db.session() as s:
        load_catalogue(s)
    with db.session(readonly=True) as s:
        mappings, intervals = mapping_table(s), interval_table(s)
    hct = mappings.by_code("HCT")
    alkp = mappings.by_code("ALKP")
    assert hct is not None
    assert alkp is not None
    greyhound = [r for r in intervals.rules_for(hct.test_id, "canine") if r.breed]
    assert [(r.breed, r.low, r.high) for r in greyhound] == [
        ("greyhound", Decimal("48"), Decimal("65"))
    ]
    puppy = [r for r in intervals.rules_for(alkp.test_id, "canine") if r.age_max_days is not None]
    assert [(r.age_min_days, r.age_max_days) for r in puppy] == [(0, 365)]


def test_soft_deleted_intervals_are_left_out(db: Database) -> None:
    with db.session() as s:
        load_catalogue(s)
    retired = canine_glucose_interval(db)
    with db.session() as s:
        row = s.get(ReferenceInterval, retired.id)
        assert row is not None
        row.deleted_at = utcnow()
    with db.session(readonly=True) as s:
        mappings, intervals = mapping_table(s), interval_table(s)
        live = s.scalar(
            sa.select(sa.func.count())
            .select_from(ReferenceInterval)
            .where(ReferenceInterval.deleted_at.is_(None))
        )
    assert len(intervals.rules) == live
    assert retired.id not in {r.interval_id for r in intervals.rules}
    reading = interpret(
        map_observation(glucose("97", "N"), SOURCE, mappings), intervals, species="canine"
    )
    assert (reading.interpretation, reading.interval_id) == ("normal", None)
    assert reading.note is not None
    assert "no canine reference interval for GLU" in reading.note


OVERRIDES = """
species = "canine"
citation = "the practice's own validation of its analyzer, 2026"

[[interval]]
test = "GLU"
clinic = "north"
low = 4.0
high = 6.0
critical_low = 3.0
critical_high = 20.0

[[interval]]
test = "GLU"
device = "Chemistry bench"
low = 3.0
high = 5.0
"""


def test_clinic_and_analyzer_overrides_load_and_the_most_specific_wins(
    db: Database, tmp_path: Path
) -> None:
    overrides = tmp_path / "overrides.toml"
    overrides.write_text(OVERRIDES)
    with db.session() as s:
        load_catalogue(s)
        clinic = create_clinic(s, code="north", name="North", timezone="UTC", actor="test")
        assert not isinstance(clinic, Refused)
        (bench,) = sync_devices(
            s,
            [AnalyzerConfig(name="Chemistry bench", sender_id="C1")],
            {"Chemistry bench": DeviceProtocol.ASTM},
            {},
        )
        summary = load_catalogue(s, [overrides])
    assert summary.intervals.inserted == 2
    with db.session(readonly=True) as s:
        mappings, intervals = mapping_table(s), interval_table(s)
    value = map_observation(glucose("97"), SOURCE, mappings)  # 5.384 mmol/L
    default = interpret(value, intervals, species="canine")
    at_north = interpret(value, intervals, species="canine", clinic_id=clinic.id)
    on_bench = interpret(value, intervals, species="canine", device_id=bench.id)
    both = interpret(value, intervals, species="canine", clinic_id=clinic.id, device_id=bench.id)
    assert default.interval_id == canine_glucose_interval(db).id
    with db.session(readonly=True) as s:
        scoped = {
            (r.clinic_id, r.device_id): r.id
            for r in s.scalars(
                sa.select(ReferenceInterval).where(
                    sa.or_(
                        ReferenceInterval.clinic_id.is_not(None),
                        ReferenceInterval.device_id.is_not(None),
                    )
                )
            )
        }
    assert (at_north.interpretation, at_north.interval_id) == ("normal", scoped[(clinic.id, None)])
    assert (on_bench.interpretation, on_bench.interval_id) == ("high", scoped[(None, bench.id)])
    assert both.interval_id == on_bench.interval_id  # the analyzer's own beats its clinic's
    assert at_north.critical_limit is None
    assert (
        interpret(
            map_observation(glucose("400"), SOURCE, mappings),
            intervals,
            species="canine",
            clinic_id=clinic.id,
        ).interpretation
        == "critical_high"
    )  # 22.2 mmol/L is over north's 20, under the default 25

    with db.session() as s:  # the shipped defaults again: the overrides are left alone
        assert load_catalogue(s).intervals.removed == 0
        again = load_catalogue(s, [overrides])
    assert (again.intervals.inserted, again.intervals.unchanged) == (0, 2)


def test_an_override_for_an_unknown_clinic_or_analyzer_is_refused(
    db: Database, tmp_path: Path
) -> None:
    with db.session() as s:
        load_catalogue(s)
    for scope, words in (('clinic = "nowhere"', "no clinic"), ('device = "Ghost"', "no device")):
        path = tmp_path / "bad.toml"
        path.write_text(f'[[interval]]\ntest = "GLU"\nspecies = "canine"\n{scope}\nlow = 1\n')
        with pytest.raises(ConfigError, match=f"bad.toml: .*{words}"), db.session() as s:
            load_catalogue(s, [path])
