"""Per-source HL7 reading rules (``pipeline/parse/sources.py``, ``Settings.hl7_sources``): which
PID identifier is the clinic's PMS id, and the sender's own time zone. Either, guessed wrong,
files a result under another animal or hours off."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.oru import vet_oru
from vetgateway.config import Settings, load_settings
from vetgateway.errors import ConfigError
from vetgateway.model import Identifier
from vetgateway.pipeline.parse.orm import parse_order_message
from vetgateway.pipeline.parse.oru import parse_oru
from vetgateway.pipeline.parse.results import parse_results
from vetgateway.pipeline.parse.sources import PmsIdRule, SourceProfile, SourceProfiles

FIXTURES = Path(__file__).parent.parent / "fixtures" / "hl7"
NEW_YORK = ZoneInfo("America/New_York")

OURS = Identifier("PMS-4711", None, None)
LABS = Identifier("L-77", "EXAMPLE_REFLAB", "PI")
RECORD = Identifier("MR-5", None, "MR")
CHIP = Identifier("985112003456789", "ISO", "MC")
BY_US = Identifier("4711", "SmithVet", None)


@pytest.mark.parametrize(
    ("identifiers", "expected"),
    [
        ([OURS, RECORD, LABS], "L-77"),  # PI or PT first, wherever it stands
        ([OURS, RECORD, Identifier("T-1", None, "PT")], "T-1"),
        ([OURS, RECORD, CHIP], "MR-5"),  # else the medical record number
        ([OURS, CHIP], None),  # an untyped number is not taken by default
        ([], None),
    ],
)
def test_by_default_the_pms_id_is_typed_pi_or_pt_else_mr(
    identifiers: list[Identifier], expected: str | None
) -> None:
    assert PmsIdRule().pick(identifiers) == expected


def test_a_source_that_sends_ours_untyped_takes_the_untyped_one_over_its_own_typed() -> None:
    rule = PmsIdRule("untyped")
    assert rule.pick([LABS, CHIP, OURS]) == "PMS-4711"
    assert rule.pick([LABS, CHIP, RECORD]) is None  # nothing untyped: no PMS id, not the lab's


def test_a_source_that_names_our_authority_takes_only_that_one() -> None:
    rule = PmsIdRule("authority", "SMITHVET")
    assert rule.pick([LABS, OURS, BY_US]) == "4711"  # case does not matter
    assert rule.pick([LABS, OURS, RECORD]) is None  # no fallback to the lab's PI


def test_an_authority_goes_with_the_authority_rule_only() -> None:
    with pytest.raises(ValueError, match="authority"):
        PmsIdRule("authority")
    with pytest.raises(ValueError, match="authority"):
        PmsIdRule("untyped", "SMITHVET")


def _lab_sending_ours_untyped(facility: str = "EXAMPLE_REFLAB") -> bytes:
    """The lab puts its own patient number first, typed PI, and echoes ours bare after it."""
    raw = vet_oru("P1", accession="A-1", facility=facility, observed="20261126113000")
    return raw.replace(b"PMS-4711^^^CLINIC^PI", b"L-77^^^EXAMPLE_REFLAB^PI~PMS-4711")


PROFILES = SourceProfiles(
    {"EXAMPLE_REFLAB": SourceProfile(zone=NEW_YORK, pms_id=PmsIdRule("untyped"))}
)


def test_results_from_a_configured_source_are_read_by_its_rules() -> None:
    raw = _lab_sending_ours_untyped()
    [report] = parse_oru(raw, zone=UTC, profiles=PROFILES).reports
    assert report.patient.pms_id == "PMS-4711"
    assert report.observed_at == datetime(2026, 11, 26, 16, 30, tzinfo=UTC)  # 11:30 EST
    assert report.observations[0].observed_at == datetime(2026, 11, 26, 16, 30, tzinfo=UTC)
    # Every identifier is still kept, the lab's included.
    assert [i.value for i in report.patient.identifiers] == ["L-77", "PMS-4711"]

    [default] = parse_oru(raw, zone=UTC).reports
    assert default.patient.pms_id == "L-77"
    assert default.observed_at == datetime(2026, 11, 26, 11, 30, tzinfo=UTC)

    parsed = parse_results(raw, "ORU^R01", {}, zone=UTC, profiles=PROFILES)
    assert parsed.reports[0].patient.pms_id == "PMS-4711"


def test_another_source_keeps_the_default_rules_and_the_gateways_zone() -> None:
    raw = _lab_sending_ours_untyped(facility="OTHERLAB")
    chicago = ZoneInfo("America/Chicago")
    [report] = parse_oru(raw, zone=chicago, profiles=PROFILES).reports
    assert report.patient.pms_id == "L-77"
    assert report.observed_at == datetime(2026, 11, 26, 17, 30, tzinfo=UTC)  # 11:30 CST


def test_the_source_is_msh4s_namespace_else_msh3s_as_code_maps_name_it() -> None:
    eastern = datetime(2026, 11, 26, 16, 30, tzinfo=UTC)
    profiles = SourceProfiles({"LIS": SourceProfile(zone=NEW_YORK)})
    raw = vet_oru("P2", accession="A-2", facility="", observed="20261126113000")
    assert parse_oru(raw, profiles=profiles).reports[0].observed_at == eastern
    with_oid = vet_oru("P3", accession="A-3", facility="example_reflab^2.16.840.1^ISO")
    assert parse_oru(with_oid, profiles=PROFILES).reports[0].observed_at == eastern


def test_orders_from_a_configured_source_are_read_by_its_rules() -> None:
    raw = (FIXTURES / "orders" / "vetclinic_orm_o01_canine_three_tests.hl7").read_bytes()
    assert b"PMS-20417^^^HAPPYPAWS^PI" in raw
    bare = raw.replace(b"PMS-20417^^^HAPPYPAWS^PI", b"20417").replace(b"+0100", b"")
    profiles = SourceProfiles(
        {"HAPPYPAWS": SourceProfile(zone=NEW_YORK, pms_id=PmsIdRule("untyped"))}
    )
    configured = parse_order_message(bare, zone=UTC, profiles=profiles)
    default = parse_order_message(bare, zone=UTC)
    assert {o.patient_pms_id for o in configured} == {"20417"}
    assert {o.patient_pms_id for o in default} == {None}
    for mine, plain in zip(configured, default, strict=True):
        assert mine.ordered_at is not None
        assert plain.ordered_at is not None
        assert (plain.ordered_at - mine.ordered_at).total_seconds() == -5 * 3600


# --- settings ------------------------------------------------------------------------------------


TOML = """
timezone = "Europe/London"

[[hl7_sources]]
source = "example_reflab"
timezone = "America/New_York"
pms_id = "untyped"

[[hl7_sources]]
source = "IDEXX"
pms_id = "authority"
pms_id_authority = "SmithVet"
"""


def test_sources_from_the_toml_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "vetgateway.toml"
    path.write_text(TOML)
    clean_env.setenv("VETGATEWAY_CONFIG", str(path))
    profiles = load_settings().source_profiles.by_source
    assert profiles == {
        "EXAMPLE_REFLAB": SourceProfile(zone=NEW_YORK, pms_id=PmsIdRule("untyped")),
        "IDEXX": SourceProfile(zone=None, pms_id=PmsIdRule("authority", "SmithVet")),
    }
    # A source without a zone of its own is read in the gateway's.
    raw = vet_oru("P4", accession="A-4", facility="IDEXX", observed="20260715113000")
    settings = load_settings()
    [report] = parse_oru(raw, zone=settings.zone, profiles=settings.source_profiles).reports
    assert report.observed_at == datetime(2026, 7, 15, 10, 30, tzinfo=UTC)  # 11:30 BST
    assert report.patient.pms_id is None  # PMS-4711^^^CLINIC^PI: not SmithVet's


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        ([{"source": "IDEXX", "pms_id": "authority"}], ".0: source 'IDEXX': pms_id_authority"),
        ([{"source": "IDEXX", "pms_id_authority": "X"}], "pms_id_authority is set exactly"),
        ([{"source": "IDEXX^2.16.840^ISO"}], ".0.SOURCE: source 'IDEXX^2.16.840^ISO'"),
        ([{"source": " "}], ".0.SOURCE"),
        ([{"source": "IDEXX"}, {"source": "idexx"}], ": two entries name the same source"),
        ([{"source": "IDEXX", "timezone": "Mars/Base"}], ".0.TIMEZONE: 'Mars/Base' is not a"),
        ([{"source": "IDEXX", "pms_id": "any"}], ".0.PMS_ID"),
        ([{"source": "IDEXX", "zone": "UTC"}], ".0.ZONE"),  # a typo is refused, not ignored
    ],
)
def test_a_bad_source_entry_stops_start_up_naming_it(
    clean_env: pytest.MonkeyPatch, sources: list[dict[str, str]], message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(hl7_sources=sources)
    text = str(refused.value)
    assert text.startswith("VETGATEWAY_HL7_SOURCES")
    assert message in text
    assert "\n" not in text


def test_no_sources_means_the_default_rules_everywhere(clean_env: pytest.MonkeyPatch) -> None:
    assert Settings().source_profiles.for_sender("ANY", "LIS") == SourceProfile()


# --- analyzers -----------------------------------------------------------------------------------

ASTM = Path(__file__).parent.parent / "fixtures" / "astm" / "written"


def test_an_analyzer_with_a_zone_of_its_own_is_read_in_it() -> None:
    raw = (ASTM / "horiba_style_cbc_two_patients.astm").read_bytes()
    meta = {"driver": "generic_astm", "device": "Denver chemistry"}
    denver = SourceProfiles(analyzer_zones={"Denver chemistry": ZoneInfo("America/Denver")})
    chicago = ZoneInfo("America/Chicago")
    own = parse_results(raw, "ASTM", meta, zone=chicago, profiles=denver).reports
    gateways = parse_results(raw, "ASTM", meta, zone=chicago).reports
    other = parse_results(raw, "ASTM", meta | {"device": "Other"}, zone=chicago, profiles=denver)
    assert own
    for mine, plain, elsewhere in zip(own, gateways, other.reports, strict=True):
        assert mine.observed_at is not None
        assert plain.observed_at is not None
        # The same wall time one zone further west (Mountain, not Central): an hour later.
        assert (mine.observed_at - plain.observed_at).total_seconds() == 3600
        assert elsewhere.observed_at == plain.observed_at


def test_an_analyzers_zone_comes_from_its_config_entry(clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings(
        analyzers=[
            {"name": "Denver chemistry", "sender_id": "C1", "timezone": "America/Denver"},
            {"name": "Local haematology", "sender_id": "H1"},
        ]
    )
    assert settings.source_profiles.analyzer_zones == {
        "Denver chemistry": ZoneInfo("America/Denver")
    }
    with pytest.raises(ConfigError, match=r"VETGATEWAY_ANALYZERS\.0\.TIMEZONE: 'Denver'"):
        load_settings(analyzers=[{"name": "A", "sender_id": "C1", "timezone": "Denver"}])
