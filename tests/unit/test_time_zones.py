"""Times without an offset are the clinic's local time (``VETGATEWAY_TIMEZONE``, else this host's
zone): HL7 v2 reads a timestamp without an offset as the sender's local time, and analyzers print
their own clock's. Read as UTC, a Chicago clinic's results were stamped six hours off."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from tests.oru import vet_oru
from vetgateway import config
from vetgateway.analyzers.drivers import driver_named
from vetgateway.config import Settings, host_zone
from vetgateway.pipeline.parse.orm import parse_order_message
from vetgateway.pipeline.parse.oru import parse_oru
from vetgateway.pipeline.parse.values import TimestampMemo, parse_datetime

CHICAGO = ZoneInfo("America/Chicago")
FIXTURES = Path(__file__).parent.parent / "fixtures"


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("20261126093000", datetime(2026, 11, 26, 15, 30, tzinfo=UTC)),  # CST, UTC-6
        ("20260715093000", datetime(2026, 7, 15, 14, 30, tzinfo=UTC)),  # CDT, UTC-5
        ("202607150930", datetime(2026, 7, 15, 14, 30, tzinfo=UTC)),
        ("20260715", datetime(2026, 7, 15, 5, 0, tzinfo=UTC)),
        ("20260715093000.25", datetime(2026, 7, 15, 14, 30, 0, 250000, tzinfo=UTC)),  # slow path
        ("20260715093000+0200", datetime(2026, 7, 15, 7, 30, tzinfo=UTC)),  # its own offset wins
        ("20260715093000-0000", datetime(2026, 7, 15, 9, 30, tzinfo=UTC)),
    ],
)
def test_a_time_without_an_offset_is_read_in_the_zone_given(text: str, utc: datetime) -> None:
    stamp = parse_datetime(text, CHICAGO)
    assert stamp is not None
    assert stamp == utc
    assert TimestampMemo(CHICAGO)[text] == utc


def test_without_a_zone_times_stay_utc_as_before() -> None:
    assert parse_datetime("20261126093000") == datetime(2026, 11, 26, 9, 30, tzinfo=UTC)


def test_a_wall_time_that_daylight_saving_skips_takes_the_offset_before_the_change() -> None:
    # 2026-03-08 02:30 does not exist in Chicago (clocks jump from 02:00 to 03:00 CST → CDT).
    stamp = parse_datetime("20260308023000", CHICAGO)
    assert stamp is not None
    assert stamp.astimezone(UTC) == datetime(2026, 3, 8, 8, 30, tzinfo=UTC)  # read as CST


def test_hl7_results_and_orders_are_read_in_the_zone() -> None:
    oru = vet_oru("Z1", accession="A-1", observed="20261126113000")
    [report] = parse_oru(oru, zone=CHICAGO).reports
    assert report.observed_at == datetime(2026, 11, 26, 17, 30, tzinfo=UTC)
    assert report.observations[0].observed_at == datetime(2026, 11, 26, 17, 30, tzinfo=UTC)
    assert parse_oru(oru).reports[0].observed_at == datetime(2026, 11, 26, 11, 30, tzinfo=UTC)

    orm = (FIXTURES / "hl7" / "orders" / "vetclinic_orm_o01_canine_three_tests.hl7").read_bytes()
    assert b"+0100" in orm  # this PMS states its offset: the zone changes nothing
    assert parse_order_message(orm, zone=CHICAGO) == parse_order_message(orm)
    local = parse_order_message(orm.replace(b"+0100", b""), zone=CHICAGO)
    for order, stated in zip(local, parse_order_message(orm), strict=True):
        assert order.ordered_at is not None
        assert stated.ordered_at is not None
        # The same wall time, now in Chicago (UTC-6) instead of at +01:00: seven hours later.
        assert order.ordered_at - stated.ordered_at == timedelta(hours=7)


def test_analyzer_clocks_are_read_in_the_zone() -> None:
    astm = (FIXTURES / "astm" / "written" / "horiba_style_cbc_two_patients.astm").read_bytes()
    generic = driver_named("generic_astm")
    utc_reports = generic.parse(astm).reports
    local_reports = generic.parse(astm, zone=CHICAGO).reports
    assert utc_reports
    for utc_report, local_report in zip(utc_reports, local_reports, strict=True):
        assert utc_report.observed_at is not None
        assert local_report.observed_at == utc_report.observed_at + timedelta(hours=6)

    spotchem = (FIXTURES / "plaintext" / "spotchem_el_plasma.txt").read_bytes()
    [printed] = driver_named("arkray_spotchem_el").parse(spotchem, zone=CHICAGO).reports
    assert printed.observed_at == datetime(2025, 3, 14, 14, 41, tzinfo=UTC)  # 09:41 CDT


def test_the_setting_names_the_zone_or_refuses_what_is_not_one() -> None:
    assert Settings(timezone="America/Chicago").zone == CHICAGO
    assert Settings(timezone="America/Chicago").opening_hours_zone == CHICAGO
    both = Settings(timezone="America/Chicago", opening_hours_timezone="Europe/Berlin")
    assert both.opening_hours_zone == ZoneInfo("Europe/Berlin")
    with pytest.raises(ValidationError, match="not a time zone name"):
        Settings(timezone="Mars/Olympus_Mons")


def test_empty_means_this_hosts_zone_from_tz(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Australia/Perth")
    assert Settings(timezone="").zone == ZoneInfo("Australia/Perth")
    assert host_zone() == ZoneInfo("Australia/Perth")


def test_else_from_the_zone_etc_localtime_links_to(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TZ", raising=False)
    link = tmp_path / "localtime"
    link.symlink_to("/usr/share/zoneinfo/America/Chicago")
    monkeypatch.setattr(config, "_LOCALTIME", link)
    assert host_zone() == CHICAGO

    monkeypatch.setenv("TZ", "CET-1CEST")  # a POSIX rule, not a name: /etc/localtime decides
    assert host_zone() == CHICAGO

    copied = tmp_path / "copied"
    copied.write_bytes(Path("/usr/share/zoneinfo/America/Chicago").read_bytes())
    monkeypatch.setattr(config, "_LOCALTIME", copied)  # a copy, not a link: read the file
    summer = datetime(2026, 7, 15, 12, 0)
    assert host_zone().utcoffset(summer) == CHICAGO.utcoffset(summer)

    monkeypatch.setattr(config, "_LOCALTIME", tmp_path / "missing")
    assert host_zone() is UTC
