"""The whole path with real processes and real services: an order over the API, results over
MLLP (and, from an analyzer, ASTM), read back over the API. On the embedded defaults (SQLite,
in-process worker) and on PostgreSQL + RabbitMQ with ``vetgateway worker`` processes.

Also RELIABILITY R05 (broker down: ACK on the database commit, delivered when the broker is back)
and R06 (a worker SIGKILLed in the middle of a message: done exactly once by another worker).
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
import redis
import sqlalchemy as sa

from tests.gateway_process import VETGATEWAY, GatewayProcess, WorkerProcess, gateway_environment
from tests.mllp_peer import MllpPeer, msa
from tests.oru import PANEL, vet_oru
from tests.services import RABBITMQ, REDIS, require
from tests.tcp_proxy import TcpProxy
from tests.waiting import wait_until
from vetgateway.store.db import Database
from vetgateway.store.models import Role
from vetgateway.store.tokens import create_token

AMQP = "amqp://guest:guest@127.0.0.1:5672/%2F"
HORIBA_CBC = (
    Path(__file__).parent.parent / "fixtures/astm/written/horiba_style_cbc_two_patients.astm"
)


class Site:
    """A running installation: the gateway, its workers, and a client for its API."""

    def __init__(self, tmp_path: Path, **settings: str) -> None:
        self.tmp_path = tmp_path
        self.env = gateway_environment(tmp_path, **settings)
        self.gateway = GatewayProcess(self.env, tmp_path / "gateway.log")
        self.workers: list[WorkerProcess] = []
        self.token = ""

    def start(self) -> Site:
        self.gateway.start()
        database_url = self.env.get("VETGATEWAY_DATABASE_URL") or (
            f"sqlite:///{self.tmp_path / 'vetgateway.db'}"
        )
        db = Database(database_url)
        try:
            with db.session() as session:
                _token, self.token = create_token(session, "e2e", Role.TECHNICIAN)
        finally:
            db.dispose()
        return self

    def worker(self, *args: str) -> WorkerProcess:
        log = self.tmp_path / f"worker-{len(self.workers)}.log"
        worker = WorkerProcess(self.env, log, *args)
        self.workers.append(worker)
        return worker.start()

    def api(self, method: str, path: str, body: object = None) -> Any:
        """One JSON request with the site's token; any status other than 2xx fails the test."""
        request = urllib.request.Request(
            self.gateway.listening["http"] + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {path}: {exc.code} {exc.read()!r}") from exc

    def results(self, accession: str) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"accession": accession})
        items: list[dict[str, Any]] = self.api("GET", f"/api/v1/results?{query}")["items"]
        return items

    def close(self) -> None:
        for worker in self.workers:
            worker.ensure_dead()
        self.gateway.ensure_dead()

    def diagnostics(self) -> str:
        logs = [self.gateway.log_tail()] + [w.log_tail() for w in self.workers]
        return "\n---\n".join(logs)


def _send(site: Site, messages: list[bytes]) -> None:
    with MllpPeer(*site.gateway.mllp, timeout=15) as peer:
        for raw in messages:
            assert msa(peer.exchange(raw))[1] == "AA"


def _order(site: Site, accession: str, patient_id: uuid.UUID) -> str:
    body = {
        "source": "PMS",
        "accession_number": accession,
        "placer_number": accession,
        "patient_id": str(patient_id),
        "patient_pms_id": "PMS-4711",
        "patient_name": "Rex",
        "owner_surname": "Smith",
        "species": "canine",
        "items": ["CHEM"],
    }
    created: dict[str, Any] = site.api("POST", "/api/v1/orders", body)
    return str(created["id"])


def _round_trip(site: Site, count: int = 3) -> None:
    """Orders over HTTP, results over MLLP, every result back over HTTP, matched and mapped."""
    patient = uuid.uuid4()
    accessions = [f"E2E-{uuid.uuid4().hex[:8]}" for _ in range(count)]
    orders = {a: _order(site, a, patient) for a in accessions}
    _send(site, [vet_oru(f"C-{a}", accession=a) for a in accessions])
    for accession in accessions:
        wait_until(
            lambda a=accession: len(site.results(a)) == len(PANEL),  # type: ignore[misc]
            timeout=30,
            what=f"results of {accession}\n{site.diagnostics()}",
        )
        items = {i["source_code"]: i for i in site.results(accession)}
        assert {i["order_id"] for i in items.values()} == {orders[accession]}
        assert {i["patient_id"] for i in items.values()} == {str(patient)}
        assert items["GLUC"]["test_code"] == "GLU"
        assert items["GLUC"]["unit"] == "mmol/L"
        assert items["CREAT"]["test_code"] == "CREA"


@pytest.fixture
def sites() -> Iterator[list[Site]]:
    made: list[Site] = []
    yield made
    for site in made:
        site.close()


@pytest.fixture
def amqp_queue() -> Iterator[str]:
    """A RabbitMQ queue of this test's own, deleted (with its delay and dead-letter queues)."""
    require(RABBITMQ)
    name = f"vgtest.{uuid.uuid4().hex[:10]}"
    yield name
    connection = pika.BlockingConnection(pika.URLParameters(AMQP))
    try:
        channel = connection.channel()
        for queue in (name, f"{name}.DQ", f"{name}.XQ"):
            channel.queue_delete(queue)
    finally:
        connection.close()


def test_embedded_defaults_end_to_end(tmp_path: Path, sites: list[Site]) -> None:
    site = Site(tmp_path)
    sites.append(site)
    _round_trip(site.start())


@pytest.mark.parametrize("fresh_database_url", ["postgresql"], indirect=True)
def test_postgresql_and_rabbitmq_with_two_workers_end_to_end(
    tmp_path: Path, sites: list[Site], fresh_database_url: str, amqp_queue: str
) -> None:
    site = Site(tmp_path, database_url=fresh_database_url, broker_url=AMQP, broker_queue=amqp_queue)
    sites.append(site)
    site.start()
    site.worker()
    site.worker()
    _round_trip(site, count=6)


@pytest.mark.parametrize("fresh_database_url", ["postgresql"], indirect=True)
def test_astm_analyzer_on_postgresql_and_rabbitmq_matches_its_order(
    tmp_path: Path, sites: list[Site], fresh_database_url: str, amqp_queue: str
) -> None:
    """An in-house analyzer's ASTM message (over the ASTM listener, from the simulator) goes
    through the same workers, mapping and matching as HL7: its order, placed over the API, gets
    the results in catalogue units."""
    analyzer = {"name": "Haematology", "driver": "horiba_yumizen_h500", "sender_id": "ABX"}
    site = Site(
        tmp_path,
        database_url=fresh_database_url,
        broker_url=AMQP,
        broker_queue=amqp_queue,
        analyzers=json.dumps([analyzer]),
    )
    sites.append(site)
    site.start()
    site.worker()
    patient = uuid.uuid4()
    order = site.api(
        "POST",
        "/api/v1/orders",
        {
            "source": "PMS",
            "accession_number": "ACC-5001",
            "patient_id": str(patient),
            "patient_pms_id": "PMS-30001",
            "items": ["CBC"],
        },
    )
    host, port = site.gateway.astm
    run = subprocess.run(
        [VETGATEWAY, "simulate", "astm", "--tcp", f"{host}:{port}", str(HORIBA_CBC)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    wait_until(
        lambda: len(site.results("ACC-5001")) == 5,
        timeout=30,
        what=f"the analyzer's results\n{site.diagnostics()}",
    )
    items = {i["source_code"]: i for i in site.results("ACC-5001")}
    assert {i["order_id"] for i in items.values()} == {order["id"]}
    assert {i["patient_id"] for i in items.values()} == {str(patient)}
    assert items["HGB"]["test_code"] == "HGB"
    assert items["HGB"]["unit"] == "g/L"
    assert float(items["HGB"]["value_numeric"]) == 160.0


@pytest.fixture
def redis_queue() -> Iterator[str]:
    """A Redis queue name of this test's own; dramatiq's keys for it are deleted afterwards."""
    require(REDIS)
    name = f"vgtest.{uuid.uuid4().hex[:10]}"
    yield name
    client = redis.Redis(host=REDIS[1], port=REDIS[2])
    try:
        keys = list(client.scan_iter(match=f"dramatiq:{name}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.mark.parametrize("fresh_database_url", ["postgresql"], indirect=True)
def test_postgresql_and_redis_with_a_worker_end_to_end(
    tmp_path: Path, sites: list[Site], fresh_database_url: str, redis_queue: str
) -> None:
    site = Site(
        tmp_path,
        database_url=fresh_database_url,
        broker_url=f"redis://{REDIS[1]}:{REDIS[2]}/0",
        broker_queue=redis_queue,
    )
    sites.append(site)
    site.start()
    site.worker()
    _round_trip(site, count=3)


@pytest.mark.parametrize("fresh_database_url", ["postgresql"], indirect=True)
def test_r05_broker_down_still_acks_and_delivers_when_it_is_back(
    tmp_path: Path, sites: list[Site], fresh_database_url: str, amqp_queue: str
) -> None:
    proxy = TcpProxy((RABBITMQ[1], RABBITMQ[2]))  # RabbitMQ as the gateway sees it: down
    site = Site(
        tmp_path,
        database_url=fresh_database_url,
        broker_url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F",
        broker_queue=amqp_queue,
        pipeline_poll_seconds="0.2",
    )
    sites.append(site)
    site.start()
    accession = f"R05-{uuid.uuid4().hex[:6]}"
    _order(site, accession, uuid.uuid4())
    _send(site, [vet_oru("R05-1", accession=accession)])  # ACKed on the commit alone

    db = Database(fresh_database_url)
    try:

        def status() -> str:
            with db.session(readonly=True) as session:
                return str(
                    session.execute(
                        sa.text("SELECT status FROM inbound_messages WHERE control_id = 'R05-1'")
                    ).scalar_one()
                )

        assert status() == "received"
        worker_env = {**site.env, "VETGATEWAY_BROKER_URL": AMQP}
        worker = WorkerProcess(worker_env, tmp_path / "worker.log")
        site.workers.append(worker)
        worker.start()
        assert site.results(accession) == []
        proxy.open()  # the broker is back
        try:
            wait_until(
                lambda: status() == "processed", timeout=30, what=f"delivery\n{site.diagnostics()}"
            )
        finally:
            proxy.close()
        assert len(site.results(accession)) == len(PANEL)
    finally:
        db.dispose()


@pytest.mark.parametrize("fresh_database_url", ["postgresql"], indirect=True)
def test_r06_worker_killed_mid_message_is_done_exactly_once_by_another(
    tmp_path: Path, sites: list[Site], fresh_database_url: str, amqp_queue: str
) -> None:
    site = Site(tmp_path, database_url=fresh_database_url, broker_url=AMQP, broker_queue=amqp_queue)
    sites.append(site)
    site.start()
    accession = f"R06-{uuid.uuid4().hex[:6]}"
    _order(site, accession, uuid.uuid4())
    first = site.worker()

    db = Database(fresh_database_url)
    blocker = db.engine.connect()
    try:
        # Hold the reports table: the worker gets as far as writing the report and waits there,
        # inside its transaction, with the broker message unacknowledged.
        blocker.execute(sa.text("LOCK TABLE diagnostic_reports IN ACCESS EXCLUSIVE MODE"))
        _send(site, [vet_oru("R06-1", accession=accession)])

        def worker_waits_on_the_lock() -> bool:
            with db.engine.connect() as probe:
                waiting = probe.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock' AND query ILIKE '%diagnostic_reports%'"
                    )
                ).scalar_one()
            return bool(waiting)

        wait_until(worker_waits_on_the_lock, timeout=30, what=f"worker\n{site.diagnostics()}")
        first.kill()
        blocker.rollback()  # let go; the dead worker's transaction is rolled back by PostgreSQL
    finally:
        blocker.close()
    try:
        site.worker()  # RabbitMQ redelivers the unacknowledged message to this one
        wait_until(
            lambda: len(site.results(accession)) == len(PANEL),
            timeout=30,
            what=f"redelivery\n{site.diagnostics()}",
        )
        with db.session(readonly=True) as session:
            reports = session.execute(sa.text("SELECT count(*) FROM diagnostic_reports")).scalar()
            results = session.execute(sa.text("SELECT count(*) FROM lab_results")).scalar()
            status = session.execute(
                sa.text("SELECT status FROM inbound_messages WHERE control_id = 'R06-1'")
            ).scalar_one()
        assert (reports, results, status) == (1, len(PANEL), "processed")
    finally:
        db.dispose()
