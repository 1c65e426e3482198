"""One SQLite writer at a time within this process, intake first.

SQLite has a single write lock per database file. A writer that finds it taken waits in SQLite's
busy handler, which *sleeps* (1 ms, then 2, 5, 10 … up to 100 ms) rather than waking when the lock
is free. With the pipeline writing beside the inbox in one process, every inbox commit that met a
pipeline transaction slept, and ACK latency rose from milliseconds to a second.

So writers of one process queue here, on a condition variable that wakes the next one at once,
and an intake commit (``priority=True``) goes before any waiting pipeline or API write: the
pipeline's work can wait, a lab waiting for its ACK should not. Other processes (the CLI) still
meet SQLite's own lock and busy handler. Re-entrant per thread, like SQLite's own lock would
otherwise deadlock on. PostgreSQL needs none of this: its writers do not share one lock.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager

__all__ = ["WriterGate", "gate_for"]


class WriterGate:
    def __init__(self) -> None:
        # The mutex is a bare lock, entered and left in C; the condition over it is used only
        # to wait and to wake waiters, and only when someone waits: a writer that finds the
        # gate free (the usual case, every inbox commit) pays two lock operations, not a
        # Condition's Python methods: 1.9 us a pass instead of 3.1.
        self._lock = threading.Lock()
        self._condition = threading.Condition(self._lock)
        self._owner: int | None = None
        self._depth = 0
        self._waiting = 0
        self._priority_waiting = 0
        # ``held`` hands out these two, not a generator-based context manager per write: every
        # inbox commit passes here, and a generator's frame costs more than the gate's logic.
        self._holds = (_Hold(self, priority=False), _Hold(self, priority=True))

    def held(self, *, priority: bool = False) -> AbstractContextManager[None]:
        """Hold the gate for a ``with`` block (re-entrant per thread)."""
        return self._holds[priority]

    def _enter(self, priority: bool) -> None:
        me = threading.get_ident()
        with self._lock:
            if self._owner == me:
                self._depth += 1
                return
            if self._owner is not None or (not priority and self._priority_waiting > 0):
                self._wait_turn(priority)
            self._owner, self._depth = me, 1

    def _wait_turn(self, priority: bool) -> None:
        """Under ``_lock``: wait until the gate is free, and, unless ``priority``, no intake
        commit waits for it."""
        self._waiting += 1
        if priority:
            self._priority_waiting += 1
        try:
            while self._owner is not None or (not priority and self._priority_waiting > 0):
                self._condition.wait()
        finally:
            self._waiting -= 1
            if priority:
                self._priority_waiting -= 1

    def _exit(self) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                if self._waiting:
                    self._condition.notify_all()


class _Hold(AbstractContextManager[None]):
    """``with gate.held(...)``: stateless, so one per gate and priority serves every thread."""

    __slots__ = ("_gate", "_priority")

    def __init__(self, gate: WriterGate, *, priority: bool) -> None:
        self._gate = gate
        self._priority = priority

    def __enter__(self) -> None:
        self._gate._enter(self._priority)

    def __exit__(self, *exc_info: object) -> None:
        self._gate._exit()


_gates: dict[str, WriterGate] = {}
_gates_lock = threading.Lock()


def gate_for(database_file: str) -> WriterGate:
    """The gate of one SQLite file, shared by every ``Database`` of this process on it."""
    with _gates_lock:
        return _gates.setdefault(database_file, WriterGate())
