"""ASTM analyzers end to end: a real gateway process and the analyzer simulator
(``vetgateway simulate astm``) over real TCP in both dial directions and over a real serial line
(two pseudo-terminal pairs joined like a null-modem cable), then the store is read back.

Covers issue 6 §2 (durability: SIGKILL mid-transcript loses no acknowledged message), §3 (records
through the same mapping and matching as HL7; QC runs stored as QC), §4 (device attribution by
H-5 sender id; unknown senders stored and flagged; last seen), §6 (host query answered over the
same line) and the plain-text driver.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.gateway_process import VETGATEWAY, GatewayProcess, gateway_environment
from tests.smtp_sink import SmtpSink
from tests.waiting import wait_until
from vetgateway.pipeline.parse.orm import OrderIn
from vetgateway.store.db import Database
from vetgateway.store.orders import upsert_order

FIXTURES = Path(__file__).parent.parent / "fixtures"
HORIBA_CBC = FIXTURES / "astm" / "written" / "horiba_style_cbc_two_patients.astm"
HORIBA_QC = FIXTURES / "astm" / "written" / "horiba_style_qc_ctrl_medium.astm"
SYSMEX_CBC = FIXTURES / "astm" / "written" / "sysmex_style_cbc_canine.astm"
SPOTCHEM = FIXTURES / "plaintext" / "spotchem_el_plasma.txt"

HAEMATOLOGY = {"name": "Haematology", "driver": "horiba_yumizen_h500", "sender_id": "ABX"}
YUMIZEN = {"name": "Yumizen", "driver": "horiba_yumizen_h500", "sender_id": "H500"}


def _environment(
    tmp_path: Path, analyzers: list[dict[str, object]], **extra: str
) -> dict[str, str]:
    return gateway_environment(
        tmp_path,
        analyzers=json.dumps(analyzers),
        pipeline_linger_seconds="0",
        silence_check_seconds="0.2",
        **extra,
    )


def _simulate(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [VETGATEWAY, "simulate", "astm", "--time-scale", "30", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'vetgateway.db'}")
    yield db
    db.dispose()


def _rows(db: Database, sql: str, **params: object) -> list[sa.Row[tuple[object, ...]]]:
    with db.session(readonly=True) as session:
        return list(session.execute(sa.text(sql), params).all())


def _settled(db: Database, count: int) -> bool:
    rows = _rows(db, "SELECT status FROM inbound_messages WHERE channel IN ('astm', 'plaintext')")
    return len(rows) >= count and all(r.status != "received" for r in rows)


def test_listener_attributes_messages_by_sender_and_stores_results_and_qc(
    tmp_path: Path, store: Database
) -> None:
    gateway = GatewayProcess(
        _environment(tmp_path, [HAEMATOLOGY, YUMIZEN]), tmp_path / "gateway.log"
    ).start()
    try:
        host, port = gateway.astm
        run = _simulate("--tcp", f"{host}:{port}", str(HORIBA_CBC), str(HORIBA_QC), str(SYSMEX_CBC))
        assert run.returncode == 0, run.stdout + run.stderr
        assert "sent 3, acknowledged 3, failed 0" in run.stdout
        wait_until(lambda: _settled(store, 3), timeout=30, what="three messages processed")

        messages = {
            r.sender: r
            for r in _rows(
                store, "SELECT id, sender, status, error, meta FROM inbound_messages ORDER BY id"
            )
        }
        # Patient results: parsed, mapped with the Horiba code map, no orders so unmatched.
        assert messages["Haematology"].status == "unmatched"
        results = {
            (r.accession, r.code): r
            for r in _rows(
                store,
                "SELECT t.code AS code, r.value_numeric AS value, r.unit AS unit, "
                "d.accession_number AS accession, d.device_id AS device "
                "FROM lab_results r JOIN diagnostic_reports d ON d.id = r.report_id "
                "LEFT JOIN catalogue_tests t ON t.id = r.test_id "
                "WHERE d.inbound_message_id = :id",
                id=messages["Haematology"].id,
            )
        }
        hgb = results[("ACC-5001", "HGB")]
        assert float(hgb.value) == pytest.approx(160.0)  # 16.0 g/dL → g/L
        assert hgb.unit == "g/L"
        assert float(results[("ACC-5001", "WBC")].value) == pytest.approx(5.2)
        assert float(results[("ACC-5003", "WBC")].value) == pytest.approx(9.8)
        assert {a for a, _code in results} == {"ACC-5001", "ACC-5002", "ACC-5003"}
        [haematology] = _rows(
            store, "SELECT id, model, driver, protocol FROM devices WHERE name = 'Haematology'"
        )
        assert (haematology.model, haematology.driver, haematology.protocol) == (
            "Horiba Yumizen H500",
            "horiba_yumizen_h500",
            "astm",
        )
        assert {str(r.device) for r in results.values()} == {str(haematology.id)}

        # The QC run is stored as QC, not as a patient's results.
        assert messages["Yumizen"].status == "processed"
        [run_row] = _rows(
            store,
            "SELECT q.id, q.control, q.sample_id, d.name AS device FROM qc_runs q "
            "JOIN devices d ON d.id = q.device_id WHERE q.inbound_message_id = :id",
            id=messages["Yumizen"].id,
        )
        assert (run_row.control, run_row.sample_id, run_row.device) == (
            "CTRL MEDIUM",
            "QX123N",
            "Yumizen",
        )
        qc = _rows(
            store, "SELECT source_code, test_id FROM qc_results WHERE run_id = :id", id=run_row.id
        )
        assert sorted(r.source_code for r in qc) == ["HGB", "PLT", "WBC"]
        assert all(r.test_id is not None for r in qc)
        assert not _rows(
            store,
            "SELECT id FROM diagnostic_reports WHERE inbound_message_id = :id",
            id=messages["Yumizen"].id,
        )

        # An analyzer nobody configured is stored and flagged, never attributed by guess.
        unknown = next(m for s, m in messages.items() if s not in ("Haematology", "Yumizen"))
        assert unknown.status == "quarantined"
        assert "unknown analyzer" in unknown.error

        # Each message is counted for /metrics, by device as configured.
        with urllib.request.urlopen(gateway.listening["http"] + "/metrics", timeout=10) as reply:
            metrics = reply.read().decode()
        counted = re.findall(r"^vetgateway_analyzer_messages_total\{(.*)\} (\S+)$", metrics, re.M)
        assert sorted(counted) == [
            ('channel="astm",device="Haematology",quarantined="false"', "1.0"),
            ('channel="astm",device="Yumizen",quarantined="false"', "1.0"),
            ('channel="astm",device="unknown",quarantined="true"', "1.0"),
        ]

        # Last seen is written by the silence watch's rounds.
        wait_until(
            lambda: len(_rows(store, "SELECT id FROM devices WHERE last_seen_at IS NOT NULL")) == 2,
            timeout=10,
            what="last_seen_at of both analyzers",
        )
    finally:
        gateway.stop()


def _place_order(store: Database, accession: str, tests: tuple[str, ...]) -> None:
    order = OrderIn(
        source="PMS",
        accession_number=accession,
        patient_pms_id="PMS-77",
        patient_name="Rex",
        owner_surname="Smith",
        items=tests,
    )
    with store.session() as session:
        upsert_order(session, order, actor="test")


def test_host_query_is_answered_with_pending_orders_over_the_same_line(
    tmp_path: Path, store: Database
) -> None:
    gateway = GatewayProcess(
        _environment(tmp_path, [HAEMATOLOGY]), tmp_path / "gateway.log"
    ).start()
    try:
        _place_order(store, "TUBE-1", ("HGB", "WBC", "GLU"))
        query = tmp_path / "query.astm"
        query.write_bytes(
            b"H|\\^&|||ABX|||||||P|LIS2-A2|20260101120000\r"
            b"Q|1|^TUBE-1||^^^ALL||||||||O\rQ|2|^TUBE-404||^^^ALL||||||||O\rL|1|N\r"
        )
        host, port = gateway.astm
        run = _simulate("--tcp", f"{host}:{port}", "--expect-replies", str(query))
        assert run.returncode == 0, run.stdout + run.stderr
        records = [line.strip() for line in run.stdout.splitlines() if line.startswith("  ")]
        orders = [r.split("|") for r in records if r.startswith("O|")]
        assert [o[2] for o in orders] == ["TUBE-1", "TUBE-404"]
        # In the analyzer's own codes (its code map), only the tests it can run: no GLU.
        assert sorted(orders[0][4].split("\\")) == ["^^^HGB", "^^^WBC"]
        assert orders[0][25] == "O"
        assert orders[1][25] == "Y"  # no order on record
        assert any(r.startswith("P|1|PMS-77|") for r in records)

        # Haemoglobin comes back for the tube: asked again, the analyzer is told WBC only.
        result = tmp_path / "result.astm"
        result.write_bytes(
            b"H|\\^&|||ABX|||||||P|LIS2-A2|20260101121000\r"
            b"P|1|PMS-77\rO|1|TUBE-1||^^^CBC\rR|1|^^^HGB^718-7^1|15.0|g/dL||||F\rL|1|N\r"
        )
        run = _simulate("--tcp", f"{host}:{port}", str(result))
        assert run.returncode == 0, run.stdout + run.stderr
        wait_until(lambda: _settled(store, 2), timeout=30, what="the result matched")
        run = _simulate("--tcp", f"{host}:{port}", "--expect-replies", str(query))
        assert run.returncode == 0, run.stdout + run.stderr
        records = [line.strip() for line in run.stdout.splitlines() if line.startswith("  ")]
        orders = [r.split("|") for r in records if r.startswith("O|")]
        assert orders[0][4] == "^^^WBC"
    finally:
        gateway.stop()


def test_sigkill_mid_transcript_loses_no_acknowledged_message(
    tmp_path: Path, store: Database
) -> None:
    env = _environment(tmp_path, [HAEMATOLOGY])
    gateway = GatewayProcess(env, tmp_path / "gateway.log").start()
    files = []
    for n in range(60):
        path = tmp_path / f"m{n:03}.astm"
        path.write_bytes(
            b"H|\\^&|||ABX|||||||P|LIS2-A2|20260101120000\r"
            b"P|1|PMS-1\r"
            + f"O|1|KILL-{n:03}||^^^CBC\r".encode()
            + b"R|1|^^^WBC^804-5^1|7.5|10E3/uL||N||F\rL|1|N\r"
        )
        files.append(str(path))
    host, port = gateway.astm
    simulator = subprocess.Popen(
        [VETGATEWAY, "simulate", "astm", "--time-scale", "30", "--tcp", f"{host}:{port}", *files],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert simulator.stdout is not None
    acknowledged: list[int] = []
    for line in simulator.stdout:
        found = re.match(r"message (\d+): acknowledged", line)
        if found:
            acknowledged.append(int(found.group(1)))
        if len(acknowledged) == 20:
            gateway.kill()  # SIGKILL, mid-transcript
            break
    simulator.send_signal(signal.SIGINT)
    simulator.communicate(timeout=60)
    assert gateway.proc is not None
    gateway.proc.wait(timeout=10)

    gateway = GatewayProcess(env, tmp_path / "gateway.log").start()
    try:
        raw = b"".join(r.raw for r in _rows(store, "SELECT raw FROM inbound_messages"))
        for number in acknowledged:  # the simulator numbers messages from 1
            assert f"KILL-{number - 1:03}".encode() in raw, f"acknowledged message {number} lost"
        wait_until(lambda: _settled(store, len(acknowledged)), timeout=30, what="processed")
    finally:
        gateway.stop()


class _ConverterWaitingToBeDialled:
    """A serial-to-TCP converter in 'server' mode: accepts the gateway's call and then plays an
    analyzer that prints plain text (no acknowledgement on such a line)."""

    def __init__(self, payload: bytes) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._payload = payload
        self.dialled = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        conn, _ = self._server.accept()
        self.dialled.set()
        with conn:
            conn.sendall(self._payload)
            conn.settimeout(30)
            try:
                while conn.recv(1024):
                    pass
            except OSError:
                pass

    def close(self) -> None:
        self._server.close()


def test_plain_text_analyzer_on_a_dialled_converter(tmp_path: Path, store: Database) -> None:
    converter = _ConverterWaitingToBeDialled(SPOTCHEM.read_bytes())
    analyzer = {
        "name": "Electrolytes",
        "driver": "arkray_spotchem_el",
        "connection": "tcp_client",
        "host": "127.0.0.1",
        "port": converter.port,
    }
    gateway = GatewayProcess(_environment(tmp_path, [analyzer]), tmp_path / "gateway.log").start()
    try:
        assert converter.dialled.wait(30)
        wait_until(lambda: _settled(store, 1), timeout=30, what="the print-out processed")
        codes = {
            r.code: r.value
            for r in _rows(
                store,
                "SELECT t.code AS code, r.value_numeric AS value FROM lab_results r "
                "JOIN catalogue_tests t ON t.id = r.test_id",
            )
        }
        assert set(codes) == {"NA", "K", "CL"}
        [message] = _rows(store, "SELECT channel, sender, message_type FROM inbound_messages")
        assert tuple(message) == ("plaintext", "Electrolytes", "TEXT")
    finally:
        gateway.stop()
        converter.close()


class _NullModem:
    """Two pseudo-terminal pairs joined master to master: whatever one slave's user writes, the
    other slave's user reads — a serial cable between two ports with real tty line discipline."""

    def __init__(self) -> None:
        self._a_master, a_slave = os.openpty()
        self._b_master, b_slave = os.openpty()
        self.a, self.b = os.ttyname(a_slave), os.ttyname(b_slave)
        self._slaves = (a_slave, b_slave)  # kept open so the masters never see a hang-up
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._relay, daemon=True)
        self._thread.start()

    def _relay(self) -> None:
        peers = {self._a_master: self._b_master, self._b_master: self._a_master}
        while not self._stop.is_set():
            ready, _, _ = select.select(list(peers), [], [], 0.1)
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                os.write(peers[fd], data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for fd in (self._a_master, self._b_master, *self._slaves):
            os.close(fd)


def test_serial_analyzer_over_a_real_tty_pair_with_a_bad_checksum(
    tmp_path: Path, store: Database
) -> None:
    cable = _NullModem()
    analyzer = {
        "name": "Haematology",
        "driver": "horiba_yumizen_h500",
        "connection": "serial",
        "serial_port": cable.a,
        "baudrate": 115200,
    }
    gateway = GatewayProcess(_environment(tmp_path, [analyzer]), tmp_path / "gateway.log").start()
    try:
        run = _simulate(
            "--serial", cable.b, "--baud", "115200", "--fault", "bad-checksum@1", str(HORIBA_CBC)
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert "NAKs received 1" in run.stdout
        wait_until(lambda: _settled(store, 1), timeout=30, what="the message processed")
        [message] = _rows(store, "SELECT channel, sender, peer FROM inbound_messages")
        assert (message.channel, message.sender) == ("astm", "Haematology")
    finally:
        gateway.stop()
        cable.close()


def test_silent_analyzer_pages_the_it_contact_once_and_clears_when_heard(
    tmp_path: Path, store: Database
) -> None:
    with SmtpSink() as smtp:
        analyzer = HAEMATOLOGY | {"quiet_minutes": 0.05}  # three seconds of opening time
        env = _environment(
            tmp_path,
            [analyzer],
            it_contacts=json.dumps([{"kind": "email", "address": "it@clinic.example"}]),
            smtp_host=smtp.host,
            smtp_port=str(smtp.port),
            pager_poll_seconds="0.1",
        )
        gateway = GatewayProcess(env, tmp_path / "gateway.log").start()
        try:
            [mail] = smtp.wait_for(1, timeout=30)
            assert mail.rcpt_tos == ["it@clinic.example"]
            assert "Haematology" in mail.message.get_content()

            host, port = gateway.astm
            run = _simulate("--tcp", f"{host}:{port}", str(HORIBA_CBC))
            assert run.returncode == 0, run.stdout + run.stderr

            def resolved() -> list[sa.Row[tuple[object, ...]]]:
                return _rows(store, "SELECT state FROM alerts WHERE kind = 'operational'")

            wait_until(
                lambda: [r.state for r in resolved()] == ["resolved"],
                timeout=30,
                what="the silence alert resolved once the analyzer sent",
            )
            assert len(smtp.messages) == 1  # paged once, not every round
        finally:
            gateway.stop()


def test_gateway_dials_a_converter_that_waits_with_the_simulator_behind_it(
    tmp_path: Path, store: Database
) -> None:
    """The other TCP direction: the simulator listens like a converter in server mode, the
    gateway dials it (``connection = "tcp_client"``) and the messages flow back over that call,
    here in the packed frame layout (a message in full 247-byte frames, records cut anywhere)."""
    with socket.socket() as probe:  # a free port for the simulator to listen on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    simulator = subprocess.Popen(
        [
            *(VETGATEWAY, "simulate", "astm", "--time-scale", "30"),
            *("--listen", f"127.0.0.1:{port}", "--fault", "garbage@1", "--packed"),
            *(str(HORIBA_CBC), str(HORIBA_QC)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    analyzer = HAEMATOLOGY | {"connection": "tcp_client", "host": "127.0.0.1", "port": port}
    gateway = GatewayProcess(_environment(tmp_path, [analyzer]), tmp_path / "gateway.log").start()
    try:
        output, _ = simulator.communicate(timeout=120)
        assert simulator.returncode == 0, output
        assert "sent 2, acknowledged 2, failed 0" in output
        wait_until(lambda: _settled(store, 2), timeout=30, what="both messages processed")
        rows = _rows(store, "SELECT sender, status, meta FROM inbound_messages ORDER BY id")
        assert [r.sender for r in rows] == ["Haematology", "Haematology"]
        # A dedicated line stores for its device even when H-5 names another sender id.
        assert [r.status for r in rows] == ["unmatched", "processed"]
        assert "sender_mismatch" in json.loads(rows[1].meta)
    finally:
        gateway.stop()
        if simulator.poll() is None:
            simulator.kill()
