"""``/healthz`` and ``/readyz`` against real databases and real (or absent) brokers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.integration.api_support import TestClient, build_app
from tests.services import RABBITMQ, REDIS, require
from vetgateway.errors import BrokerUnavailable
from vetgateway.store.db import Database

CLOSED_AMQP = "amqp://guest:guest@127.0.0.1:1/"
CLOSED_REDIS = "redis://:secret@127.0.0.1:1/0"


def unreachable_twin(db: Database, tmp_path: Path) -> Database:
    """A database of the same kind as ``db`` that cannot be reached: PostgreSQL on a port nothing
    listens on; SQLite whose file path is an existing directory (cannot be opened)."""
    if db.dialect == "sqlite":
        return Database(f"sqlite:///{tmp_path}")
    return Database("postgresql+psycopg://postgres@127.0.0.1:1/vetgateway")


def test_healthz_is_ok(db: Database, tmp_path: Path) -> None:
    with TestClient(build_app(db, tmp_path)) as client:
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_ok_with_embedded_broker(db: Database, tmp_path: Path) -> None:
    with TestClient(build_app(db, tmp_path)) as client:
        response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["failed"] == []
    assert body["checks"] == {
        "database": {"ok": True, "error": None},
        "broker": {"ok": True, "error": None},
    }


def test_readyz_names_the_database_when_it_is_unreachable(db: Database, tmp_path: Path) -> None:
    broken = unreachable_twin(db, tmp_path)
    try:
        with TestClient(build_app(broken, tmp_path)) as client:
            ready = client.get("/readyz")
            alive = client.get("/healthz")
    finally:
        broken.dispose()
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "unavailable"
    assert body["failed"] == ["database"]
    assert body["checks"]["database"]["ok"] is False
    assert "database unavailable" in body["checks"]["database"]["error"]
    assert body["checks"]["broker"]["ok"] is True
    assert alive.status_code == 200


@pytest.mark.parametrize(
    ("url", "product"), [(CLOSED_AMQP, "RabbitMQ"), (CLOSED_REDIS, "Redis")], ids=["amqp", "redis"]
)
def test_readyz_names_the_broker_when_it_is_unreachable(
    db: Database, tmp_path: Path, url: str, product: str
) -> None:
    with TestClient(build_app(db, tmp_path, broker_url=url)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["broker"]
    error = body["checks"]["broker"]["error"]
    assert product in error
    assert "127.0.0.1:1" in error
    assert "guest" not in error
    assert "secret" not in error
    assert body["checks"]["database"]["ok"] is True


@pytest.mark.rabbitmq
def test_readyz_ok_with_real_rabbitmq(db: Database, tmp_path: Path) -> None:
    require(RABBITMQ)
    app = build_app(db, tmp_path, broker_url="amqp://guest:guest@127.0.0.1:5672/")
    with TestClient(app) as client:
        response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ok"


@pytest.mark.redis
def test_readyz_ok_with_real_redis(db: Database, tmp_path: Path) -> None:
    require(REDIS)
    app = build_app(db, tmp_path, broker_url="redis://127.0.0.1:6379/0")
    with TestClient(app) as client:
        response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ok"


def test_readiness_checks_run_off_the_event_loop_and_can_be_added(
    db: Database, tmp_path: Path
) -> None:
    seen: list[bool] = []

    def worker_check() -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            seen.append(False)  # no loop in this thread: a worker thread, as intended
        else:
            seen.append(True)

    def failing_check() -> None:
        raise BrokerUnavailable("the embedded worker has stopped")

    app = build_app(db, tmp_path, readiness_checks={"loop": worker_check, "worker": failing_check})
    with TestClient(app) as client:
        response = client.get("/readyz")
    assert seen == [False]
    assert response.status_code == 503
    body = response.json()
    assert set(body["checks"]) == {"database", "broker", "loop", "worker"}
    assert body["failed"] == ["worker"]
    assert body["checks"]["worker"]["error"] == "the embedded worker has stopped"
