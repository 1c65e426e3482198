"""The MLLP listener bound to a real inbox, served from its own event-loop thread, so tests can
talk to it with a blocking real TCP client (tests/mllp_peer.py)."""

from __future__ import annotations

import asyncio
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from vetgateway.adapters.hl7.intake import Hl7Intake, Hl7Policy
from vetgateway.adapters.mllp.listener import hl7_mllp_server
from vetgateway.adapters.mllp.server import MllpLimits, MllpServer
from vetgateway.store.db import Database
from vetgateway.store.inbox import Inbox


class ServedMllp:
    def __init__(
        self,
        db: Database,
        *,
        limits: MllpLimits | None = None,
        policy: Hl7Policy | None = None,
        tls: ssl.SSLContext | None = None,
        inbox: Inbox | None = None,
    ) -> None:
        self.db = db
        self.incidents: list[tuple[str, str, str]] = []
        self.inbox = inbox or Inbox(db)
        self.intake = Hl7Intake(self.inbox, policy)
        self._pool = ThreadPoolExecutor(16)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.server: MllpServer = hl7_mllp_server(
            self.intake,
            self._pool,
            host="127.0.0.1",
            port=0,
            limits=limits,
            tls=tls,
            on_incident=lambda kind, peer, detail: self.incidents.append((kind, peer, detail)),
        )

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    def __enter__(self) -> ServedMllp:
        self._thread.start()
        self._run(self.server.start())
        self.host, self.port = self.server.address
        return self

    def __exit__(self, *exc: object) -> None:
        self._run(self.server.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
        self._pool.shutdown(wait=True)
        self.inbox.close()
