"""The gateway process: every listener, and (with no broker URL) the pipeline worker, in one
asyncio loop that stops cleanly on SIGTERM or SIGINT.

Listeners are added here as they are built; each is started only after the database is migrated
and stopped before the database is released, so nothing is accepted that cannot be stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator

import uvicorn

from vetgateway.api.app import create_app
from vetgateway.config import Settings
from vetgateway.pipeline.broker import create_broker, start_embedded_worker
from vetgateway.store.db import Database

log = logging.getLogger(__name__)


class _HttpServer(uvicorn.Server):
    """uvicorn without its own signal handling: the gateway owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Gateway:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self._stop = asyncio.Event()
        self.listening: dict[str, str] = {}

    def stop(self) -> None:
        self._stop.set()

    async def serve(self) -> None:
        """Run until ``stop()`` or a termination signal, then shut everything down in order."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

        broker = create_broker(self.settings.broker_url)
        worker = start_embedded_worker(broker) if not self.settings.broker_url else None

        app = create_app(self.settings, self.db)
        http = _HttpServer(
            uvicorn.Config(
                app,
                host=self.settings.bind,
                port=self.settings.http_port,
                log_config=None,
                access_log=False,
                lifespan="on",
            )
        )
        http_task = asyncio.create_task(http.serve(), name="http")
        try:
            while not http.started:
                if http_task.done():
                    http_task.result()
                    raise RuntimeError("HTTP listener stopped during start-up")
                await asyncio.sleep(0.01)
            host, port = http.servers[0].sockets[0].getsockname()[:2]
            self._announce("http", f"http://{host}:{port}", "API, console, HL7 over HTTP")
            stop_task = asyncio.create_task(self._stop.wait())
            await asyncio.wait({stop_task, http_task}, return_when=asyncio.FIRST_COMPLETED)
            stop_task.cancel()
        finally:
            log.info("gateway stopping")
            http.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await http_task
            if worker is not None:
                worker.stop()
            broker.close()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            log.info("gateway stopped")

    def _announce(self, name: str, address: str, what: str) -> None:
        self.listening[name] = address
        log.info("listening", extra={"listener": name, "address": address})
        print(f"vetgateway: {name:<5} {address}  ({what})", flush=True)
