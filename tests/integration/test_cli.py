"""The ``vetgateway`` command as an operator runs it: a real process, real signals, real ports."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.gateway_process import VETGATEWAY, GatewayProcess, gateway_environment
from tests.waiting import wait_until
from vetgateway.store import migrate
from vetgateway.store.db import Database

environment = gateway_environment


def vetgateway(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [VETGATEWAY, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("http_port", "eighty"),
        ("http_port", "70000"),
        ("broker_url", "kafka://x"),
        ("database_url", "mysql://x"),
        ("event_loop", "trio"),
        ("timezone", "Mars/Olympus_Mons"),
        ("opening_hours_timezone", "CET-1CEST"),
    ],
)
def test_a_bad_setting_stops_with_one_line_naming_it(
    tmp_path: Path, setting: str, value: str
) -> None:
    result = vetgateway("run", env=environment(tmp_path, **{setting: value}))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"VETGATEWAY_{setting.upper()}" in lines[0]


@pytest.mark.parametrize(
    ("analyzer", "says"),
    [
        ({"name": "Chem", "sender_id": "C1", "driver": "acme_9000"}, "unknown analyzer driver"),
        ({"name": "Chem", "sender_id": "C1", "clinic": "nowhere"}, "no clinic 'nowhere'"),
    ],
)
def test_an_analyzer_that_cannot_work_stops_run_with_one_line(
    tmp_path: Path, analyzer: dict[str, str], says: str
) -> None:
    env = environment(tmp_path, analyzers=json.dumps([analyzer]))
    result = vetgateway("run", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert says in lines[-1]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("setting", "listener"),
    [
        ("http_port", "HTTP (API, acknowledge links)"),
        ("mllp_port", "HL7 over MLLP"),
        ("astm_port", "ASTM analyzers"),
    ],
)
def test_a_port_in_use_stops_run_with_one_line_naming_listener_and_setting(
    tmp_path: Path, setting: str, listener: str
) -> None:
    """Another process (an old gateway still running) holds the port: one line that says which
    listener, which address and which setting, exit status 1, and no traceback."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = vetgateway("run", env=environment(tmp_path, **{setting: str(port)}))
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        f"vetgateway: cannot listen for {listener} on 127.0.0.1:{port}"
        f" (VETGATEWAY_{setting.upper()}): {os.strerror(errno.EADDRINUSE)}"
    )
    assert "Traceback" not in result.stderr
    assert "vetgateway: http " not in result.stdout  # never announced as listening


def test_a_bad_config_file_is_named(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("http_port = [not toml")
    result = vetgateway("migrate", env=environment(tmp_path, config=str(config)))
    assert result.returncode == 2
    assert "VETGATEWAY_CONFIG" in result.stderr
    assert str(config) in result.stderr


def test_settings_come_from_the_config_file(tmp_path: Path) -> None:
    db_path = tmp_path / "from-config.db"
    config = tmp_path / "gateway.toml"
    config.write_text(f'database_url = "sqlite:///{db_path}"\n')
    result = vetgateway("migrate", env=environment(tmp_path, config=str(config)))
    assert result.returncode == 0, result.stderr
    assert db_path.exists()


@pytest.mark.parametrize("fresh_database_url", ["sqlite", "postgresql"], indirect=True)
def test_migrate_brings_an_empty_database_to_head(tmp_path: Path, fresh_database_url: str) -> None:
    result = vetgateway("migrate", env=environment(tmp_path, database_url=fresh_database_url))
    assert result.returncode == 0, result.stderr
    head = migrate.head_revision()
    assert f"database at revision {head}" in result.stdout
    db = Database(fresh_database_url)
    assert migrate.current_revision(db) == head
    db.dispose()


def test_tokens_create_prints_the_secret_once_and_stores_its_hash(tmp_path: Path) -> None:
    result = vetgateway(
        "tokens", "create", "--role", "device", "--name", "IDEXX", env=environment(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    secret = result.stdout.strip()
    assert secret.startswith("vgw_")
    assert "not shown again" in result.stderr
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'vetgateway.db'}")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT name, role, token_hash FROM api_tokens")).all()
    engine.dispose()
    assert rows == [("IDEXX", "device", hashlib.sha256(secret.encode()).hexdigest())]


def test_tokens_create_refuses_an_unknown_role(tmp_path: Path) -> None:
    result = vetgateway(
        "tokens", "create", "--role", "owner", "--name", "x", env=environment(tmp_path)
    )
    assert result.returncode != 0
    assert "owner" in result.stderr


def get_json(gateway: GatewayProcess, path: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(gateway.listening["http"] + path, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(environment(tmp_path), tmp_path / "gateway.log").start()
    try:
        yield process
    finally:
        process.ensure_dead()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_serves_on_embedded_defaults_and_stops_cleanly(
    gateway: GatewayProcess, tmp_path: Path, sig: signal.Signals
) -> None:
    assert gateway.listening["mllp"].startswith("mllp://127.0.0.1:")
    assert get_json(gateway, "/healthz") == (200, {"status": "ok"})
    status, body = get_json(gateway, "/readyz")
    assert status == 200, body
    db = Database(f"sqlite:///{tmp_path / 'vetgateway.db'}")
    assert migrate.current_revision(db) == migrate.head_revision()
    db.dispose()
    assert gateway.proc is not None
    gateway.proc.send_signal(sig)
    assert gateway.proc.wait(timeout=30) == 0
    events = [json.loads(line) for line in gateway.log_path.read_text().splitlines()]
    assert "gateway stopped" in [e["event"] for e in events]


def test_run_counts_what_it_acknowledges_and_audits_transport_incidents(tmp_path: Path) -> None:
    from tests.mllp_peer import MllpPeer, msa

    env = environment(tmp_path, mllp_frame_timeout="0.3")
    gateway = GatewayProcess(env, tmp_path / "gateway.log").start()
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'vetgateway.db'}")
    try:
        message = b"MSH|^~\\&|LAB|IDEXX|VG|CLINIC|20261126||ORU^R01|M1|P|2.5.1\rPID|1\r"
        with MllpPeer(*gateway.mllp) as peer:
            assert msa(peer.exchange(message))[1] == "AA"
            assert msa(peer.exchange(message))[1] == "AA"  # a resend
        with MllpPeer(*gateway.mllp) as stalled:
            stalled.send_raw(b"\x0bMSH|")
            assert stalled.closed_by_gateway()
        metrics_url = gateway.listening["http"] + "/metrics"
        with urllib.request.urlopen(metrics_url, timeout=10) as response:
            metrics = response.read().decode()
        assert 'vetgateway_hl7_messages_total{channel="mllp",code="AA"} 2.0' in metrics
        assert 'vetgateway_hl7_resends_total{channel="mllp"} 1.0' in metrics
        assert 'vetgateway_transport_incidents_total{kind="frame_timeout"} 1.0' in metrics

        def audited() -> list[str]:
            with engine.connect() as conn:
                return list(conn.execute(sa.text("SELECT action FROM audit_log")).scalars())

        wait_until(lambda: audited(), what="the incident written to the audit log")
        assert audited() == ["mllp.frame_timeout"]
        assert gateway.stop() == 0
    finally:
        engine.dispose()
        gateway.ensure_dead()
