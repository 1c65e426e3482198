"""Reference intervals from the database (store/intervals.py) on SQLite and PostgreSQL: the
packaged catalogue loads, ``interval_table`` reads it back, a US-unit glucose is mapped and then
interpreted against the canine interval, the breed and age overrides survive the round trip, and
soft-deleted intervals are left out."""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa

from vetgateway.model import Observation
from vetgateway.pipeline.interpret import interpret
from vetgateway.pipeline.mapping import map_observation, source_key
from vetgateway.store.catalogue import load_catalogue, mapping_table
from vetgateway.store.db import Database
from vetgateway.store.intervals import interval_table
from vetgateway.store.models import CatalogueTest, ReferenceInterval
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
            .where(CatalogueTest.code == "GLU", ReferenceInterval.species == "canine")
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
