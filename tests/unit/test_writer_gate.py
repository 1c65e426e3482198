"""The in-process SQLite writer gate: one writer at a time, re-entrant, intake first."""

from __future__ import annotations

import threading

import pytest

from tests.waiting import wait_until
from vetgateway.store.writer_gate import WriterGate


def waiting(gate: WriterGate) -> int:
    """Threads blocked on the gate (the condition's own waiter list)."""
    return len(gate._condition._waiters)  # type: ignore[attr-defined]


def test_re_entrant_within_a_thread_and_released_after_the_outermost() -> None:
    gate = WriterGate()
    other_got_in = threading.Event()

    def other() -> None:
        with gate.held():
            other_got_in.set()

    with gate.held(priority=True):
        with gate.held():  # the same thread again: no deadlock
            thread = threading.Thread(target=other)
            thread.start()
            wait_until(lambda: waiting(gate) == 1, what="the other thread waiting")
        assert waiting(gate) == 1  # the inner block's end does not let it in
        assert not other_got_in.is_set()
    thread.join(timeout=5)
    assert other_got_in.is_set()


def test_released_when_the_block_raises() -> None:
    gate = WriterGate()
    with pytest.raises(RuntimeError), gate.held():
        raise RuntimeError("write failed")
    done = threading.Event()

    def other() -> None:
        with gate.held():
            done.set()

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(timeout=5)
    assert done.is_set()


def test_a_waiting_intake_commit_goes_before_waiting_pipeline_writes() -> None:
    gate = WriterGate()
    order: list[str] = []
    threads: list[threading.Thread] = []

    def write(name: str, priority: bool) -> None:
        with gate.held(priority=priority):
            order.append(name)

    with gate.held():
        for name, priority in [("pipeline", False), ("intake", True)]:
            thread = threading.Thread(target=write, args=(name, priority))
            thread.start()
            threads.append(thread)
            # each is waiting on the gate before the next starts
            wait_until(lambda: waiting(gate) == len(threads), what=f"{name} waiting")
    for thread in threads:
        thread.join(timeout=5)
    assert order == ["intake", "pipeline"]
