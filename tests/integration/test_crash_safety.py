"""Crash safety (issue 3; RELIABILITY R01, R02, R10): SIGKILL the gateway process while several
labs stream results into it, restart it, let the labs resend what was not acknowledged, and check
that every AA'd message is stored exactly once.

Four sender threads, each on its own MLLP connection, send distinct ORU^R01 messages one at a
time. The gateway is killed after a random number of AAs (seeded, so a failure names the seed that
reproduces the kill points), three times, and restarted on a new port. A sender whose connection
breaks keeps the message it had in hand and sends it again to the new process, as a lab's
interface engine does. A message committed before the kill but never acknowledged (R01) must be
deduplicated on resend, not stored twice.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.gateway_process import GatewayProcess, gateway_environment
from tests.mllp_peer import MllpPeer, msa
from tests.oru import oru_r01
from tests.waiting import wait_until

SENDERS = 4
KILLS = 3
SEED = 20261126
ACKS_BEFORE_KILL = (20, 200)
ACKS_AFTER_LAST_RESTART = 40


class Target:
    """Where the gateway listens now; ``generation`` grows with each restart."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.generation = 0
        self.address: tuple[str, int] | None = None
        self.stopping = False

    def publish(self, address: tuple[str, int]) -> None:
        with self._changed:
            self.generation += 1
            self.address = address
            self._changed.notify_all()

    def current(self) -> tuple[int, tuple[str, int] | None]:
        with self._changed:
            return self.generation, self.address

    def wait_newer(self, generation: int) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self.generation > generation or self.stopping)

    def stop(self) -> None:
        with self._changed:
            self.stopping = True
            self._changed.notify_all()


class Sender(threading.Thread):
    """A lab: sends its own numbered messages, resends the one in hand after a broken link."""

    def __init__(self, index: int, target: Target, acks: Counter[str]) -> None:
        super().__init__(name=f"lab-{index}", daemon=True)
        self.index = index
        self.target = target
        self._acks = acks
        self._acks_lock = threading.Lock()
        self.next_number = 0
        self.in_hand: str | None = None  # sent (maybe more than once), not yet acknowledged
        self.sent: dict[str, bytes] = {}
        self.acked: dict[str, bytes] = {}  # control id -> the AA's bytes
        self.resent: set[str] = set()
        self.parked_at: int | None = None  # generation whose death this sender has noticed
        self.failure: str | None = None
        self.finish = threading.Event()

    def message(self, control_id: str) -> bytes:
        return self.sent.setdefault(control_id, oru_r01(control_id))

    def run(self) -> None:
        try:
            while not self.finish.is_set() and not self.target.stopping:
                generation, address = self.target.current()
                assert address is not None
                try:
                    with MllpPeer(*address, timeout=10) as peer:
                        self._stream(peer)
                except OSError:  # refused, reset, EOF (ConnectionError) or timeout: gateway gone
                    if self.in_hand is not None:
                        self.resent.add(self.in_hand)
                    self.parked_at = generation
                    self.target.wait_newer(generation)
        except Exception as exc:  # reported by the test, with the sender's name
            self.failure = f"{self.name}: {exc!r}"

    def _stream(self, peer: MllpPeer) -> None:
        while not self.finish.is_set():
            if self.in_hand is None:
                self.in_hand = f"L{self.index}-{self.next_number:05d}"
                self.next_number += 1
            ack = peer.exchange(self.message(self.in_hand))
            fields = msa(ack)
            if fields[1:3] != ["AA", self.in_hand]:
                raise AssertionError(f"expected AA for {self.in_hand}, got MSA {fields}")
            self.acked[self.in_hand] = ack
            self.in_hand = None
            with self._acks_lock:
                self._acks["AA"] += 1


def parked(senders: list[Sender], generation: int) -> Callable[[], bool]:
    """True once every sender has seen the connection to ``generation`` break (or failed)."""
    return lambda: all(s.parked_at == generation or s.failure for s in senders)


def stored_rows(url: str) -> list[tuple[str, str, str]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT control_id, sender, sha256 FROM inbound_messages"))
            return [(r.control_id, r.sender, r.sha256) for r in rows]
    finally:
        engine.dispose()


@pytest.fixture
def gateway_runs(tmp_path: Path) -> Iterator[list[GatewayProcess]]:
    runs: list[GatewayProcess] = []
    yield runs
    for run in runs:
        run.ensure_dead()


@pytest.mark.parametrize("fresh_database_url", ["sqlite", "postgresql"], indirect=True)
def test_r01_kill_9_every_aa_is_stored_exactly_once_and_a_resend_gets_the_stored_ack(
    tmp_path: Path, fresh_database_url: str, gateway_runs: list[GatewayProcess]
) -> None:
    rng = random.Random(SEED)
    env = gateway_environment(tmp_path, database_url=fresh_database_url)
    acks: Counter[str] = Counter()
    target = Target()
    senders = [Sender(i, target, acks) for i in range(SENDERS)]

    def launch() -> GatewayProcess:
        run = GatewayProcess(env, tmp_path / f"gateway-{len(gateway_runs)}.log").start()
        gateway_runs.append(run)
        target.publish(run.mllp)
        return run

    def progress(goal: int) -> None:
        def reached() -> bool:
            failures = [s.failure for s in senders if s.failure]
            assert not failures, failures
            return acks["AA"] >= goal

        wait_until(reached, timeout=30, what=f"{goal} AAs in all (seed {SEED})")

    committed_unacked = 0  # R01 cases seen: stored by the killed process, never acknowledged
    run = launch()
    try:
        for sender in senders:
            sender.start()
        for kill in range(KILLS):
            progress(acks["AA"] + rng.randint(*ACKS_BEFORE_KILL))
            run.kill()
            wait_until(
                parked(senders, target.generation),
                timeout=30,
                what=f"every sender noticing kill {kill + 1}",
            )
            stored = {row[0] for row in stored_rows(fresh_database_url)}
            committed_unacked += sum(1 for s in senders if s.in_hand in stored)
            run = launch()
        progress(acks["AA"] + ACKS_AFTER_LAST_RESTART)
        for sender in senders:
            sender.finish.set()
        for sender in senders:
            sender.join(timeout=30)
            assert not sender.is_alive(), f"{sender.name} did not finish"
        assert not [s.failure for s in senders if s.failure]

        # A lab unsure of an ACK resends a message the killed processes stored: same answer.
        for sender in senders:
            control_id, first_ack = next(iter(sender.acked.items()))
            with MllpPeer(*run.mllp, timeout=10) as peer:
                again = peer.exchange(sender.message(control_id))
            assert again == first_ack, f"{control_id}: resend answered {again!r}"
        assert run.stop() == 0, run.log_tail()
    finally:
        target.stop()

    sent = {cid: raw for s in senders for cid, raw in s.sent.items()}
    acked = {cid for s in senders for cid in s.acked}
    resent = {cid for s in senders for cid in s.resent}
    rows = stored_rows(fresh_database_url)
    per_id = Counter(control_id for control_id, _, _ in rows)
    summary = (
        f"seed {SEED}: {len(sent)} sent, {len(acked)} AA, {len(resent)} resent after a kill,"
        f" {committed_unacked} of them stored before the kill (R01), {len(rows)} rows"
    )
    twice = sorted(cid for cid, n in per_id.items() if n > 1)
    assert not twice, f"stored more than once: {twice[:10]} ({len(twice)}); {summary}"
    missing = sorted(acked - per_id.keys())
    assert not missing, f"AA'd but not stored: {missing[:10]} ({len(missing)}); {summary}"
    unknown = sorted(per_id.keys() - sent.keys())
    assert not unknown, f"rows nobody sent: {unknown[:10]}; {summary}"
    wrong = [
        cid
        for cid, sender, sha256 in rows
        if sender != "IDEXX|REFLAB" or sha256 != hashlib.sha256(sent[cid]).hexdigest()
    ]
    assert not wrong, f"stored bytes or sender differ from what was sent: {wrong[:10]}; {summary}"
    assert len(acked) >= KILLS * ACKS_BEFORE_KILL[0], summary
    assert resent, f"no message was in flight at any kill; {summary}"
