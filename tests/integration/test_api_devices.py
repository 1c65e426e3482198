"""``GET /api/v1/devices``: the configured analyzers, when each was last heard, and whether it
is silent now; on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from tests.integration.api_support import TestClient, bearer, build_app, issue
from vetgateway.analyzers.config import AnalyzerConfig, ContactConfig
from vetgateway.store.db import Database
from vetgateway.store.device_alerts import raise_silence
from vetgateway.store.devices import record_last_seen, sync_devices
from vetgateway.store.models import DeviceProtocol, Role

SEEN = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)


def test_devices_lists_analyzers_with_last_seen_and_silence(db: Database, tmp_path: Path) -> None:
    configs = [
        AnalyzerConfig(name="Haematology", driver="horiba_yumizen_h500", sender_id="H500"),
        AnalyzerConfig(
            name="Lytes",
            driver="arkray_spotchem_el",
            connection="serial",
            serial_port="/dev/ttyUSB0",
            quiet_minutes=60,
        ),
    ]
    with db.session() as session:
        devices = sync_devices(
            session,
            configs,
            {"Haematology": DeviceProtocol.ASTM, "Lytes": DeviceProtocol.PLAIN_TEXT},
            {},
            {"Haematology": "Horiba Yumizen H500", "Lytes": "Arkray SPOTCHEM EL"},
        )
        by_name = {d.name: d for d in devices}
        record_last_seen(session, {by_name["Haematology"].id: SEEN})
        alert_id = raise_silence(
            session,
            device_id=by_name["Lytes"].id,
            clinic_id=None,
            summary="Lytes silent",
            contacts=[ContactConfig(kind="email", address="it@example.org")],
            now=SEEN,
        )
    client = TestClient(build_app(db, tmp_path))
    assert client.get("/api/v1/devices").status_code == 401
    response = client.get("/api/v1/devices", headers=bearer(issue(db, Role.TECHNICIAN)))
    assert response.status_code == 200
    items = {i["name"]: i for i in response.json()["items"]}
    assert set(items) == {"Haematology", "Lytes"}
    haematology, lytes = items["Haematology"], items["Lytes"]
    assert haematology["model"] == "Horiba Yumizen H500"
    assert haematology["connection"] == "listener"
    assert haematology["sender_id"] == "H500"
    assert datetime.fromisoformat(haematology["last_seen_at"]) == SEEN
    assert haematology["silence_alert_id"] is None
    assert lytes["connection"] == "serial"
    assert lytes["quiet_limit_seconds"] == 3600
    assert lytes["last_seen_at"] is None
    assert lytes["silence_alert_id"] == str(alert_id)
