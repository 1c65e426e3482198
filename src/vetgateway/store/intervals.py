"""Reading the live reference intervals back as the pipeline's ``IntervalTable``.

Only rows not soft-deleted (``deleted_at IS NULL``) count: a retired interval stays in the
database for the results that point at it, but no new result is read against it. Clinic and
device overrides are included; ``pipeline.interpret.select_interval`` decides which applies.
Like every store function this takes a session and never commits.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from vetgateway.pipeline.interpret import IntervalRule, IntervalTable
from vetgateway.store.models import ReferenceInterval

__all__ = ["interval_table"]


def interval_table(session: Session) -> IntervalTable:
    """Every live reference interval, in a stable order (test, species, id)."""
    rows = session.scalars(
        sa.select(ReferenceInterval)
        .where(ReferenceInterval.deleted_at.is_(None))
        .order_by(ReferenceInterval.test_id, ReferenceInterval.species, ReferenceInterval.id)
    )
    return IntervalTable(
        tuple(
            IntervalRule(
                interval_id=r.id,
                test_id=r.test_id,
                species=r.species,
                breed=r.breed,
                sex=r.sex,
                age_min_days=r.age_min_days,
                age_max_days=r.age_max_days,
                clinic_id=r.clinic_id,
                device_id=r.device_id,
                unit=r.unit,
                low=r.low,
                high=r.high,
                critical_low=r.critical_low,
                critical_high=r.critical_high,
            )
            for r in rows
        )
    )
