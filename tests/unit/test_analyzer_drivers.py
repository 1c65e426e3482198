"""Analyzer drivers and their configuration: the registry (``analyzers/drivers.py``), each
driver's line station and parser, ``parse_results`` choosing HL7, ASTM or plain text by message
type and driver, ``AnalyzerConfig`` validation, the ``Settings`` rules for analyzers (env JSON and
TOML ``[[analyzers]]``), and ``check_analyzers`` refusing what cannot work."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from vetgateway.adapters.astm.e1381 import MessageReceived, NeedData
from vetgateway.adapters.astm.e1381_frames import build_frame, split_message
from vetgateway.adapters.astm.station import AstmStation
from vetgateway.adapters.plaintext.framer import SPOTCHEM_EL_FRAMING, PlainTextFramer
from vetgateway.analyzers.config import AnalyzerConfig
from vetgateway.analyzers.drivers import DRIVERS, Driver, driver_named
from vetgateway.analyzers.lines import check_analyzers
from vetgateway.config import Settings, load_settings
from vetgateway.errors import ConfigError, ParseError
from vetgateway.pipeline.parse.astm import AstmDialect, parse_astm
from vetgateway.pipeline.parse.oru import parse_oru
from vetgateway.pipeline.parse.results import parse_results
from vetgateway.store.models import DeviceProtocol

FIXTURES = Path(__file__).parent.parent / "fixtures"
ASTM = FIXTURES / "astm" / "written"
SYSMEX_CBC = (ASTM / "sysmex_style_cbc_canine.astm").read_bytes()
HORIBA_QC = (ASTM / "horiba_style_qc_ctrl_medium.astm").read_bytes()
HOST_QUERY = (ASTM / "host_query_two_specimens.astm").read_bytes()
SPOTCHEM = (FIXTURES / "plaintext" / "spotchem_el_plasma.txt").read_bytes()
ORU = (FIXTURES / "hl7" / "prs" / "prs_oru_r01_nte_after_each_obx.hl7").read_bytes()
KNOWN = "arkray_spotchem_el, generic_astm, horiba_yumizen_h500, sysmex_xn_v"
DEVICE = uuid.UUID(int=7)
ENQ, ACK, EOT = b"\x05", b"\x06", b"\x04"


# --- the registry ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "protocol", "source"),
    [
        ("generic_astm", DeviceProtocol.ASTM, None),
        ("horiba_yumizen_h500", DeviceProtocol.ASTM, "HORIBA_YUMIZEN_H500"),
        ("sysmex_xn_v", DeviceProtocol.ASTM, "SYSMEX_XN_V"),
        ("arkray_spotchem_el", DeviceProtocol.PLAIN_TEXT, "ARKRAY_SPOTCHEM_EL"),
    ],
)
def test_shipped_drivers(name: str, protocol: DeviceProtocol, source: str | None) -> None:
    driver = DRIVERS[name]
    assert (driver.name, driver.protocol, driver.source) == (name, protocol, source)
    assert driver.description
    # Exactly one of the ASTM dialect and the plain-text template; framing goes with the template.
    assert (driver.dialect is None) != (driver.template is None)
    assert (driver.framing is None) == (driver.template is None)
    assert driver_named(name) is driver


def test_the_registry_holds_exactly_the_shipped_drivers() -> None:
    assert ", ".join(sorted(DRIVERS)) == KNOWN
    assert all(key == driver.name for key, driver in DRIVERS.items())


def test_no_driver_name_means_generic_astm() -> None:
    assert driver_named(None) is DRIVERS["generic_astm"]
    assert driver_named("") is DRIVERS["generic_astm"]


def test_an_unknown_driver_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        driver_named("idexx_catalyst")
    assert str(caught.value) == f"unknown analyzer driver 'idexx_catalyst'; known drivers: {KNOWN}"
    # The caller chooses the error: the pipeline wants a ParseError (quarantine, no retry).
    with pytest.raises(ParseError, match="known drivers: arkray_spotchem_el"):
        driver_named("Generic_ASTM", error=ParseError)


# --- stations and parsers ----------------------------------------------------------------------


def _events(station: AstmStation | PlainTextFramer) -> list[object]:
    found: list[object] = []
    while not isinstance(event := station.next_event(), NeedData):
        found.append(event)
    return found


@pytest.mark.parametrize("name", ["generic_astm", "horiba_yumizen_h500", "sysmex_xn_v"])
def test_astm_drivers_give_a_fresh_lis1a_station_each_time(name: str) -> None:
    driver = DRIVERS[name]
    first, second = driver.station(), driver.station()
    assert isinstance(first, AstmStation)
    assert first is not second
    first.receive_data(ENQ, 0.0)
    assert first.data_to_send() == ACK
    assert second.data_to_send() == b""  # its own state: the other's ENQ did not reach it


def test_astm_station_to_parser_end_to_end() -> None:
    driver = DRIVERS["sysmex_xn_v"]
    station = driver.station()
    assert isinstance(station, AstmStation)
    station.receive_data(ENQ, 0.0)
    assert station.data_to_send() == ACK
    pieces = split_message(SYSMEX_CBC)
    for number, (piece, final) in enumerate(pieces, start=1):
        station.receive_data(build_frame(number, piece, final=final), 0.0)
        if number < len(pieces):
            assert station.data_to_send() == ACK
    # The terminator's frame is acknowledged only once the message is stored.
    received = [e for e in _events(station) if isinstance(e, MessageReceived)]
    assert [e.text for e in received] == [SYSMEX_CBC]
    assert station.data_to_send() == b""
    station.message_stored(0.0)
    assert station.data_to_send() == ACK
    station.receive_data(EOT, 0.0)
    message = driver.parse(received[0].text)
    assert message.sender == "XN-V"
    (report,) = message.reports
    assert report.observations[0].code == "WBC"
    assert len(report.observations) == 15


def test_plain_text_driver_frames_with_its_framing_and_parses_the_print() -> None:
    driver = DRIVERS["arkray_spotchem_el"]
    station = driver.station()
    assert isinstance(station, PlainTextFramer)
    assert station.framing is SPOTCHEM_EL_FRAMING
    assert driver.station() is not station
    station.receive_data(SPOTCHEM, 0.0)
    (event,) = _events(station)
    assert isinstance(event, MessageReceived)
    assert station.data_to_send() == b""  # the SPOTCHEM EL expects no acknowledgement
    message = driver.parse(event.text)
    (report,) = message.reports
    assert report.order.accession == "VET0815"
    assert [(o.code, str(o.value_numeric)) for o in report.observations] == [
        ("Na", "148"),
        ("K", "4.3"),
        ("Cl", "112"),
    ]


def test_driver_dialects_differ_where_the_models_do() -> None:
    # The Yumizen sends its control lot as the sample id; the generic dialect does not assume it.
    (horiba,) = DRIVERS["horiba_yumizen_h500"].parse(HORIBA_QC).qc_runs
    (generic,) = DRIVERS["generic_astm"].parse(HORIBA_QC).qc_runs
    assert (horiba.sample_id, horiba.control, horiba.lot) == ("QX123N", "CTRL MEDIUM", "QX123N")
    assert (generic.sample_id, generic.control, generic.lot) == ("QX123N", "CTRL MEDIUM", None)
    assert DRIVERS["generic_astm"].parse(SYSMEX_CBC) == parse_astm(SYSMEX_CBC, AstmDialect())


def test_a_plain_text_driver_refuses_astm_and_an_astm_driver_refuses_a_print() -> None:
    with pytest.raises(ParseError):
        DRIVERS["arkray_spotchem_el"].parse(SYSMEX_CBC)
    with pytest.raises(ParseError):
        DRIVERS["generic_astm"].parse(SPOTCHEM)


# --- parse_results: which parser ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message_type", "driver", "source", "reports", "qc_lots"),
    [
        (SYSMEX_CBC, "ASTM", None, "XN-V", 1, []),
        (SYSMEX_CBC, "ASTM", "generic_astm", "XN-V", 1, []),
        (SYSMEX_CBC, "ASTM", "sysmex_xn_v", "SYSMEX_XN_V", 1, []),
        (HORIBA_QC, "ASTM", "generic_astm", "H500", 0, [None]),
        (HORIBA_QC, "ASTM", "horiba_yumizen_h500", "HORIBA_YUMIZEN_H500", 0, ["QX123N"]),
        (SPOTCHEM, "TEXT", "arkray_spotchem_el", "ARKRAY_SPOTCHEM_EL", 1, []),
    ],
)
def test_analyzer_messages_parse_by_their_driver(
    raw: bytes,
    message_type: str,
    driver: str | None,
    source: str,
    reports: int,
    qc_lots: list[str | None],
) -> None:
    meta = {"driver": driver, "device_id": str(DEVICE), "sender_id": "ignored"}
    parsed = parse_results(raw, message_type, meta)
    assert parsed.source == source
    assert len(parsed.reports) == reports
    assert [run.lot for run in parsed.qc_runs] == qc_lots
    assert parsed.device_id == DEVICE


def test_hl7_messages_ignore_the_analyzer_meta() -> None:
    parsed = parse_results(
        ORU, "ORU^R01", {"driver": "arkray_spotchem_el", "device_id": str(DEVICE)}
    )
    oru = parse_oru(ORU)
    assert parsed.source == "CAREEVOLUTION"  # MSH-4's namespace id, upper case
    assert parsed.reports == oru.reports
    assert (parsed.qc_runs, parsed.device_id) == ((), None)


def test_a_message_type_other_than_astm_or_text_is_read_as_hl7() -> None:
    with pytest.raises(ParseError, match="does not start with an MSH segment"):
        parse_results(SYSMEX_CBC, None, {"driver": "generic_astm"})


def test_a_host_query_alone_is_not_an_error() -> None:
    parsed = parse_results(HOST_QUERY, "ASTM", {"driver": "sysmex_xn_v"})
    assert (parsed.reports, parsed.qc_runs, parsed.source) == ((), (), "SYSMEX_XN_V")


def test_the_sender_id_from_meta_names_the_code_map_when_h5_is_empty() -> None:
    raw = b"H|\\^&\rP|1\rO|1|S-1||^^^GLU\rR|1|^^^GLU|5.2|mmol/L\rL|1|N\r"
    assert parse_results(raw, "ASTM", {"sender_id": " chem1 "}).source == "CHEM1"
    named = raw.replace(b"H|\\^&", b"H|\\^&|||chem2^X")
    assert parse_results(named, "ASTM", {"sender_id": "chem1"}).source == "CHEM2"


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({"device_id": str(DEVICE)}, DEVICE),
        ({"device_id": DEVICE}, DEVICE),
        ({"device_id": "not-a-uuid"}, None),
        ({"device_id": None}, None),
        ({}, None),
    ],
)
def test_device_id_from_meta(meta: dict[str, object], expected: uuid.UUID | None) -> None:
    assert parse_results(SYSMEX_CBC, "ASTM", meta).device_id == expected


@pytest.mark.parametrize(
    ("raw", "message_type", "meta", "words"),
    [
        (b"H|\\^&|||CHEM1\rL|1|N\r", "ASTM", {}, "no result, control run or query"),
        (b"hello", "TEXT", {"driver": "arkray_spotchem_el"}, "no result found"),
        (SYSMEX_CBC, "ASTM", {"driver": "idexx_catalyst"}, f"known drivers: {KNOWN}"),
        (b"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|1|P|2.5\r", "ORU^R01", {}, "no OBR segment"),
    ],
)
def test_unusable_messages_raise_parse_error(
    raw: bytes, message_type: str, meta: dict[str, object], words: str
) -> None:
    with pytest.raises(ParseError, match=words):
        parse_results(raw, message_type, meta)


# --- AnalyzerConfig ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"sender_id": "CHEM1"},
        {"connection": "tcp_client", "host": "192.0.2.40", "port": 4001},
        {"connection": "serial", "serial_port": "/dev/ttyUSB0", "stopbits": 1.5, "parity": "E"},
        {"connection": "serial", "serial_port": "COM3", "stopbits": 2, "sender_id": "X"},
    ],
)
def test_complete_lines_are_accepted(fields: dict[str, Any]) -> None:
    config = AnalyzerConfig(name="A", **fields)
    assert config.driver == "generic_astm"
    assert config.connection == fields.get("connection", "listener")


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({}, "a listener analyzer needs its sender_id"),
        ({"sender_id": ""}, "a listener analyzer needs its sender_id"),
        ({"connection": "tcp_client", "host": "192.0.2.40"}, "tcp_client needs host and port"),
        ({"connection": "tcp_client", "port": 4001}, "tcp_client needs host and port"),
        ({"connection": "tcp_client", "host": "h", "port": 0}, "greater than or equal to 1"),
        ({"connection": "serial"}, "serial needs serial_port"),
        ({"connection": "serial", "serial_port": "/dev/x", "stopbits": 3}, "stopbits is 1, 1.5"),
        ({"connection": "serial", "serial_port": "/dev/x", "bytesize": 9}, "bytesize"),
        ({"connection": "serial", "serial_port": "/dev/x", "parity": "X"}, "parity"),
        ({"connection": "usb", "sender_id": "X"}, "connection"),
        ({"sender_id": "X", "quiet_minutes": 0}, "greater than 0"),
        ({"sender_id": "X", "baud": 9600}, "Extra inputs are not permitted"),
    ],
)
def test_incomplete_or_wrong_lines_are_refused(fields: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        AnalyzerConfig(name="Chemistry", **fields)


def test_a_refusal_names_the_analyzer() -> None:
    with pytest.raises(ValidationError, match="analyzer 'Blood gas': serial needs serial_port"):
        AnalyzerConfig(name="Blood gas", connection="serial")


# --- Settings ----------------------------------------------------------------------------------


LISTENER_A = {"name": "A", "sender_id": "CHEM1"}


@pytest.mark.parametrize(
    ("analyzers", "message"),
    [
        (
            [LISTENER_A, {"name": "A", "sender_id": "CHEM2"}],
            "VETGATEWAY_ANALYZERS: two analyzers share a name",
        ),
        (
            [LISTENER_A, {"name": "B", "sender_id": "CHEM1"}],
            "VETGATEWAY_ANALYZERS: two listener analyzers share a sender_id",
        ),
        (
            [
                {"name": "A", "connection": "serial", "serial_port": "/dev/ttyUSB0"},
                {"name": "B", "connection": "serial", "serial_port": "/dev/ttyUSB0"},
            ],
            "VETGATEWAY_ANALYZERS: two analyzers on one serial port or converter address; "
            "analyzers sharing a converter go on the listener, told apart by sender_id",
        ),
        (
            [
                {"name": "A", "connection": "tcp_client", "host": "10.0.0.9", "port": 4001},
                {"name": "B", "connection": "tcp_client", "host": "10.0.0.9", "port": 4001},
            ],
            "VETGATEWAY_ANALYZERS: two analyzers on one serial port or converter address; "
            "analyzers sharing a converter go on the listener, told apart by sender_id",
        ),
        (
            [{"name": "A"}],
            "VETGATEWAY_ANALYZERS.0: analyzer 'A': a listener analyzer needs its sender_id (H-5), "
            "the only way to tell analyzers on one listener apart",
        ),
        (
            [LISTENER_A, {"name": "B", "sender_id": "X", "bogus": 3}],
            "VETGATEWAY_ANALYZERS.1.BOGUS: Extra inputs are not permitted (got 3)",
        ),
    ],
)
def test_settings_refuse_conflicting_analyzers(
    clean_env: pytest.MonkeyPatch, analyzers: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(analyzers=analyzers)
    assert str(caught.value) == message


def test_a_sender_id_may_repeat_on_dedicated_lines(clean_env: pytest.MonkeyPatch) -> None:
    serial = {"name": "B", "connection": "serial", "serial_port": "/dev/ttyS0", "sender_id": "X"}
    settings = load_settings(analyzers=[{"name": "A", "sender_id": "X"}, serial])
    assert [a.name for a in settings.analyzers] == ["A", "B"]


def test_analyzers_from_a_json_env_var(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv(
        "VETGATEWAY_ANALYZERS",
        '[{"name": "Blood gas", "connection": "tcp_client", "host": "192.0.2.40", "port": 4001},'
        ' {"name": "Chem", "sender_id": "CHEM1", "quiet_minutes": 90}]',
    )
    clean_env.setenv("VETGATEWAY_IT_CONTACTS", '[{"kind": "sms", "address": "+15550001"}]')
    settings = load_settings()
    gas, chem = settings.analyzers
    assert (gas.name, gas.connection, gas.host, gas.port) == (
        "Blood gas",
        "tcp_client",
        "192.0.2.40",
        4001,
    )
    assert (chem.sender_id, chem.quiet_minutes) == ("CHEM1", 90)
    assert [(c.kind, c.address) for c in settings.it_contacts] == [("sms", "+15550001")]


def test_malformed_json_in_the_env_is_a_config_error(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("VETGATEWAY_ANALYZERS", '[{"name": "Chem",')
    with pytest.raises(ConfigError, match="VETGATEWAY_ANALYZERS"):
        load_settings()


TOML = """
opening_hours = "mon-fri 08:00-18:00"

[[analyzers]]
name = "Chemistry bench"
sender_id = "CHEM1"
quiet_minutes = 120

[[analyzers]]
name = "Haematology"
driver = "horiba_yumizen_h500"
connection = "serial"
serial_port = "/dev/ttyUSB0"
baudrate = 19200
stopbits = 1.5

[[it_contacts]]
kind = "email"
address = "it@example.org"
"""


def test_analyzers_from_the_toml_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "vetgateway.toml"
    path.write_text(TOML)
    clean_env.setenv("VETGATEWAY_CONFIG", str(path))
    settings = load_settings()
    chem, haem = settings.analyzers
    assert (chem.name, chem.connection, chem.sender_id, chem.quiet_minutes) == (
        "Chemistry bench",
        "listener",
        "CHEM1",
        120,
    )
    assert (haem.driver, haem.serial_port, haem.baudrate, haem.stopbits) == (
        "horiba_yumizen_h500",
        "/dev/ttyUSB0",
        19200,
        1.5,
    )
    assert [(c.kind, c.address) for c in settings.it_contacts] == [("email", "it@example.org")]
    assert settings.opening_hours == "mon-fri 08:00-18:00"
    # The environment wins over the file, for the whole list.
    clean_env.setenv("VETGATEWAY_ANALYZERS", '[{"name": "Only", "sender_id": "O"}]')
    assert [a.name for a in Settings().analyzers] == ["Only"]


def test_a_typo_in_a_toml_analyzer_is_refused(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "vetgateway.toml"
    path.write_text(TOML.replace("serial_port =", "serialport ="))
    clean_env.setenv("VETGATEWAY_CONFIG", str(path))
    with pytest.raises(ConfigError, match=r"VETGATEWAY_ANALYZERS\.1"):
        load_settings()


# --- check_analyzers ---------------------------------------------------------------------------


def test_check_analyzers_returns_each_analyzers_driver() -> None:
    configs = (
        AnalyzerConfig(name="Chem", sender_id="CHEM1"),
        AnalyzerConfig(name="Haem", driver="horiba_yumizen_h500", sender_id="H500"),
        AnalyzerConfig(
            name="Lytes", driver="arkray_spotchem_el", connection="serial", serial_port="/dev/x"
        ),
        AnalyzerConfig(
            name="Lytes 2",
            driver="arkray_spotchem_el",
            connection="tcp_client",
            host="192.0.2.41",
            port=4001,
        ),
    )
    drivers: dict[str, Driver] = check_analyzers(configs)
    assert {name: d.name for name, d in drivers.items()} == {
        "Chem": "generic_astm",
        "Haem": "horiba_yumizen_h500",
        "Lytes": "arkray_spotchem_el",
        "Lytes 2": "arkray_spotchem_el",
    }
    assert check_analyzers(()) == {}


def test_check_analyzers_refuses_a_plain_text_analyzer_on_the_listener() -> None:
    configs = (AnalyzerConfig(name="Lytes", driver="arkray_spotchem_el", sender_id="SE1520"),)
    with pytest.raises(ConfigError, match="'Lytes': a plain-text analyzer sends no sender id"):
        check_analyzers(configs)


def test_check_analyzers_refuses_an_unknown_driver_naming_the_known_ones() -> None:
    configs = (
        AnalyzerConfig(name="Chem", sender_id="CHEM1"),
        AnalyzerConfig(name="Catalyst", driver="idexx_catalyst", sender_id="CAT"),
    )
    with pytest.raises(ConfigError) as caught:
        check_analyzers(configs)
    assert str(caught.value) == f"unknown analyzer driver 'idexx_catalyst'; known drivers: {KNOWN}"
