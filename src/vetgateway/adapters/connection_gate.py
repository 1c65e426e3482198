"""Who may connect to a listener: at most ``max_connections`` in all and ``max_per_peer`` from
one remote address (RELIABILITY R12: one misbehaving or flooding peer cannot take every slot).

Shared by the MLLP and the ASTM-over-TCP listeners. A refused connection is closed at once,
logged and reported as the incident ``connection_refused``; the gate also keeps the admitted
connections' tasks, so a closing listener can cancel them all.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["ConnectionGate"]

log = logging.getLogger(__name__)


class Connection(Protocol):
    """What the gate needs of a connection: an asyncio ``StreamWriter`` or a ``Transport``."""

    def get_extra_info(self, name: str, default: Any = None) -> Any: ...

    def close(self) -> None: ...


class ConnectionGate:
    """Admission and bookkeeping of one listener's connections (not thread-safe: one loop)."""

    def __init__(
        self,
        *,
        name: str,
        max_connections: int,
        max_per_peer: int,
        on_incident: Callable[[str, str, str], None],
    ) -> None:
        self._name = name
        self._max = max_connections
        self._max_per_peer = max_per_peer
        self._on_incident = on_incident
        self._per_peer: Counter[str] = Counter()
        self.tasks: set[asyncio.Task[None]] = set()

    def admit(self, writer: Connection) -> tuple[str, str] | None:
        """Admit the connection the current task serves: ``(peer, peer_host)``, or None when it
        was refused (and closed). An admitted connection must be ``release``d when it ends."""
        peername = writer.get_extra_info("peername") or ("?", 0)
        peer_host = str(peername[0])
        peer = f"{peer_host}:{peername[1]}"
        if len(self.tasks) >= self._max:
            self._refuse(writer, peer, "connection limit reached")
            return None
        if self._per_peer[peer_host] >= self._max_per_peer:
            self._refuse(writer, peer, "per-peer connection limit reached")
            return None
        task = asyncio.current_task()
        assert task is not None, "admit() is called from the connection's own task"
        self.tasks.add(task)
        self._per_peer[peer_host] += 1
        return peer, peer_host

    def release(self, peer_host: str) -> None:
        self._per_peer[peer_host] -= 1
        if not self._per_peer[peer_host]:
            del self._per_peer[peer_host]
        task = asyncio.current_task()
        if task is not None:
            self.tasks.discard(task)

    async def cancel_all(self) -> None:
        """Cancel every admitted connection and wait for them to end."""
        tasks = set(self.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def _refuse(self, writer: Connection, peer: str, why: str) -> None:
        log.warning(f"{self._name} connection refused", extra={"peer": peer, "reason": why})
        self._on_incident("connection_refused", peer, why)
        writer.close()
