"""The store's fast bind processing writes exactly what SQLAlchemy's own would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql, sqlite

from vetgateway.store.bulk import bind_processor
from vetgateway.store.models import InboundMessage, LabResult

SQLITE = sqlite.dialect()
RECEIVED_AT = InboundMessage.__table__.c.received_at


def sqlalchemy_processing(column: sa.ColumnElement[object], value: object) -> object:
    process = column.type._cached_bind_processor(SQLITE)
    assert process is not None
    return process(value)


aware_datetimes = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
) | st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from([timezone(timedelta(hours=2)), timezone(timedelta(hours=-9.5))]),
)


@given(aware_datetimes)
def test_utc_timestamps_on_sqlite_match_sqlalchemy(value: datetime) -> None:
    fast = bind_processor(RECEIVED_AT, SQLITE)
    assert fast is not None
    assert fast(value) == sqlalchemy_processing(RECEIVED_AT, value)


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 11, 27, 0, 0, 0, tzinfo=UTC),  # no microseconds: still six digits
        datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC),  # a three-digit year: still four
    ],
)
def test_utc_timestamps_keep_sqlalchemys_fixed_width(value: datetime) -> None:
    fast = bind_processor(RECEIVED_AT, SQLITE)
    assert fast is not None
    assert fast(value) == sqlalchemy_processing(RECEIVED_AT, value)
    assert len(str(fast(value))) == len("2026-11-27 00:00:00.000000")


def test_none_and_naive_timestamps_are_handled_as_sqlalchemy_does() -> None:
    fast = bind_processor(RECEIVED_AT, SQLITE)
    assert fast is not None
    assert fast(None) is None
    with pytest.raises(ValueError, match="naive datetime"):
        fast(datetime(2026, 11, 27))
    with pytest.raises(ValueError, match="naive datetime"):
        sqlalchemy_processing(RECEIVED_AT, datetime(2026, 11, 27))


def test_other_columns_and_dialects_keep_sqlalchemys_processor() -> None:
    status = LabResult.__table__.c.status
    assert bind_processor(status, SQLITE) is status.type._cached_bind_processor(SQLITE)
    pg = postgresql.dialect()
    assert bind_processor(RECEIVED_AT, pg) is RECEIVED_AT.type._cached_bind_processor(pg)
