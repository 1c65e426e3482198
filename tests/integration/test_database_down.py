"""Database stopped during intake (issue 3; RELIABILITY R02, R03): while the database is down no
message gets AA; each gets AR with ERR code 207 ("retry later"), or the connection is closed. Once
the database is back, the same messages resent are stored and acknowledged.

The PostgreSQL server here is a private cluster (``tests/pgcluster.py``) that the test stops with
``pg_ctl stop -m immediate``: every server process quits at once, as in a crash, and open
connections break mid-stream. The shared server on port 5432 is never touched.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.gateway_process import GatewayProcess, gateway_environment
from tests.mllp_peer import MllpPeer, msa, segment
from tests.oru import oru_r01
from tests.pgcluster import PostgresCluster

BEFORE, DURING = 5, 5


@pytest.fixture
def gateway_on_cluster(tmp_path: Path, pg_cluster: PostgresCluster) -> Iterator[GatewayProcess]:
    url = pg_cluster.create_database("vetgateway")
    run = GatewayProcess(gateway_environment(tmp_path, database_url=url), tmp_path / "gw.log")
    try:
        yield run.start()
    finally:
        run.ensure_dead()


def answer(address: tuple[str, int], message: bytes) -> list[str] | None:
    """MSA of the gateway's answer on a fresh connection, or None if it closed without one."""
    with MllpPeer(*address, timeout=30) as peer:
        try:
            ack = peer.exchange(message)
        except ConnectionError:
            return None
    err = segment(ack, "ERR")
    return [*msa(ack), *(["ERR", *err] if err else [])]


def test_r03_database_stopped_no_aa_while_down_and_intake_resumes_when_back(
    pg_cluster: PostgresCluster, gateway_on_cluster: GatewayProcess
) -> None:
    gateway = gateway_on_cluster
    address = gateway.mllp
    before = [f"UP-{n}" for n in range(BEFORE)]
    during = [f"DOWN-{n}" for n in range(DURING)]

    # Up: several messages on one connection, each AA'd after its commit.
    with MllpPeer(*address, timeout=30) as peer:
        for control_id in before:
            assert msa(peer.exchange(oru_r01(control_id)))[1:3] == ["AA", control_id]

    pg_cluster.stop("immediate")
    answers: dict[str, list[str] | None] = {}
    for control_id in during:
        answers[control_id] = answer(address, oru_r01(control_id))
    for control_id, fields in answers.items():
        if fields is None:
            continue  # closed without an answer: allowed (R03), the lab resends
        assert fields[1:3] == ["AR", control_id], f"{control_id} while down: {fields}"
        err = fields[fields.index("ERR") + 1 :] if "ERR" in fields else []
        assert len(err) > 3, f"{control_id}: no ERR-3 in {fields}"
        assert err[3].startswith("207^"), f"{control_id}: ERR-3 {err[3]!r}, expected 207"
        assert "retry" in err[-1], f"{control_id}: ERR-8 {err[-1]!r}"
    outcome = Counter("closed" if f is None else f[1] for f in answers.values())

    # Back: the very same messages, resent, are stored and acknowledged on the first try.
    pg_cluster.start()
    with MllpPeer(*address, timeout=30) as peer:
        for control_id in during:
            fields = msa(peer.exchange(oru_r01(control_id)))
            assert fields[1:3] == ["AA", control_id], (
                f"{control_id} after the database came back: {fields}; while down: {outcome}"
            )
    assert gateway.stop() == 0, gateway.log_tail()

    engine = sa.create_engine(pg_cluster.url("vetgateway"))
    try:
        with engine.connect() as conn:
            stored = Counter(
                conn.execute(sa.text("SELECT control_id FROM inbound_messages")).scalars()
            )
    finally:
        engine.dispose()
    assert stored == Counter(before + during), f"while down: {outcome}"


def test_r03_database_restarted_between_messages_the_next_one_is_stored_on_first_try(
    pg_cluster: PostgresCluster, gateway_on_cluster: GatewayProcess
) -> None:
    """``store/db.py`` promises: after a database restart one stale pooled connection fails
    before anything reached the commit, and ``Database.write`` retries on a fresh one."""
    address = gateway_on_cluster.mllp
    assert answer(address, oru_r01("BEFORE-RESTART")) == ["MSA", "AA", "BEFORE-RESTART"]
    pg_cluster.stop("fast")
    pg_cluster.start()
    assert answer(address, oru_r01("AFTER-RESTART")) == ["MSA", "AA", "AFTER-RESTART"]
