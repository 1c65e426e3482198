"""The gateway process: every listener, and (with no broker URL) the pipeline worker, in one
asyncio loop that stops cleanly on SIGTERM or SIGINT.

Listeners start only after the database is migrated and are closed before it is released, so
nothing is accepted that cannot be stored. All channels share one inbox, so MLLP, HTTP and file
messages arriving together share commits. MLLP awaits it on the loop; the blocking callers (HTTP,
files, very large MLLP messages) use a thread pool sized so that many of them can wait at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import uvicorn
from prometheus_client import CollectorRegistry

from vetgateway.adapters.filedrop import FileDropWatcher
from vetgateway.adapters.hl7.intake import Hl7Intake, Hl7Policy
from vetgateway.adapters.mllp.listener import hl7_mllp_server
from vetgateway.adapters.mllp.server import MllpLimits, MllpServer
from vetgateway.adapters.mllp.tls import server_context
from vetgateway.analyzers.lines import AnalyzerLines
from vetgateway.api.app import create_app
from vetgateway.config import Settings
from vetgateway.errors import ListenerUnavailable, StorageError
from vetgateway.heap import settle_after_startup
from vetgateway.intake_metrics import IntakeMetrics
from vetgateway.paging_metrics import PagingMetrics
from vetgateway.pipeline.pager import Pager
from vetgateway.pipeline.paging_runtime import build_pager, public_base_url
from vetgateway.pipeline.runtime import Pipeline
from vetgateway.store.audit import audit
from vetgateway.store.db import Database
from vetgateway.store.inbox import Inbox

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
        self.metrics_registry = CollectorRegistry()
        self.metrics = IntakeMetrics(self.metrics_registry)
        self.paging_metrics = PagingMetrics(self.metrics_registry)
        # With a broker URL the workers are other processes (``vetgateway worker``).
        self.pipeline = Pipeline(settings, db, dispatch=True, work=not settings.broker_url)
        self.inbox = Inbox(
            db,
            max_batch=settings.inbox_max_batch,
            commit_slots=settings.inbox_commit_slots,
            on_commit=self._committed,
        )
        self.hl7 = Hl7Intake(
            self.inbox, Hl7Policy.from_settings(settings), observer=self.metrics.observe_hl7
        )
        self._intake_pool = ThreadPoolExecutor(settings.intake_threads, thread_name_prefix="intake")
        self.analyzers = AnalyzerLines(
            settings,
            db,
            self.inbox,
            self._intake_pool,
            mapping=lambda: self.pipeline.processor.tables().mapping,
            on_incident=self._incident_reporter("analyzer"),
            observer=self.metrics.observe_analyzer,
        )

    def stop(self) -> None:
        self._stop.set()

    def _committed(self, count: int) -> None:
        """The inbox made ``count`` messages durable: count them and wake the dispatcher."""
        self.metrics.inbox_batch.observe(count)
        self.pipeline.nudge(count)

    async def serve(self) -> None:
        """Run until ``stop()`` or a termination signal, then shut everything down in order."""
        loop = asyncio.get_running_loop()
        log.info("event loop", extra={"loop": type(loop).__module__.split(".")[0]})
        http_socket = self._http_socket()  # first: nothing is started yet if the port is taken
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        if self.pipeline.worker is not None:
            # The in-process worker is CPU-bound Python; without this the event loop waits up to
            # 5 ms for the GIL each time it wakes, and ACK latency grows with the pipeline's load.
            sys.setswitchinterval(0.0001)
        self.pipeline.start()
        pager: Pager | None = None
        mllp = self._mllp_server()
        files = FileDropWatcher.from_settings(
            self.settings, self.hl7, self.inbox, self._intake_pool
        )
        http = self._http_server()
        settle_after_startup()  # before the first listener opens: nothing waits for it
        http_task = asyncio.create_task(http.serve([http_socket]), name="http")
        try:
            try:
                await mllp.start()
            except OSError as exc:
                s = self.settings
                raise ListenerUnavailable.of(
                    "HL7 over MLLP", s.bind, s.mllp_port, "VETGATEWAY_MLLP_PORT", exc
                ) from exc
            host, port = mllp.address
            scheme = "mllp+tls" if self.settings.mllp_tls_cert else "mllp"
            self._announce("mllp", f"{scheme}://{host}:{port}", "HL7 v2 from reference labs")
            astm = await self.analyzers.start()
            self._announce("astm", f"tcp://{astm}", "ASTM analyzers via serial-to-TCP converters")
            files_task = files.start()
            for folder in files.folders:
                self._announce("files", folder.absolute().as_uri(), "HL7 batch files")
            await self._wait_started(http, http_task)
            host, port = http.servers[0].sockets[0].getsockname()[:2]
            self._announce("http", f"http://{host}:{port}", "API, acknowledge links, HL7 over HTTP")
            # Critical-value pages link back to the API, so the pager starts once it listens.
            base_url = public_base_url(self.settings, f"http://{host}:{port}")
            pager = build_pager(
                self.settings, self.db, base_url=base_url, metrics=self.paging_metrics
            )
            self.pipeline.processor.alert_listeners.append(pager.nudge)
            if self.analyzers.watch is not None:
                self.analyzers.watch.on_alert = pager.nudge
            pager.start()
            stop_task = asyncio.create_task(self._stop.wait())
            await asyncio.wait(
                {stop_task, http_task, files_task}, return_when=asyncio.FIRST_COMPLETED
            )
            stop_task.cancel()
            if files_task.done():  # the watcher only ends early through a bug: say so, stop
                files_task.result()
        finally:
            log.info("gateway stopping")
            if pager is not None:
                pager.stop()
            await mllp.close()
            await self.analyzers.close()
            await files.close()
            http.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await http_task
            self._intake_pool.shutdown(wait=True)
            self.inbox.close()
            self.pipeline.stop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            log.info("gateway stopped")

    def _mllp_server(self) -> MllpServer:
        s = self.settings
        limits = MllpLimits(
            max_message_size=s.mllp_max_message_size,
            frame_timeout=s.mllp_frame_timeout,
            idle_timeout=s.mllp_idle_timeout,
            max_connections=s.mllp_max_connections,
            max_connections_per_peer=s.mllp_max_connections_per_peer,
        )
        tls = None
        if s.mllp_tls_cert is not None and s.mllp_tls_key is not None:
            tls = server_context(s.mllp_tls_cert, s.mllp_tls_key, s.mllp_tls_client_ca)
        return hl7_mllp_server(
            self.hl7,
            self._intake_pool,
            host=s.bind,
            port=s.mllp_port,
            limits=limits,
            tls=tls,
            on_incident=self._incident_reporter("mllp"),
        )

    def _incident_reporter(self, transport: str) -> Callable[[str, str, str], None]:
        """The handler for a transport's incidents (refused TLS, frame timeout, oversized
        message, an analyzer link alarm): counted, and written to the audit log as
        ``<transport>.<kind>`` off the event loop (IHE ATNA: node-authentication failures are
        audited)."""

        def report(kind: str, peer: str, detail: str) -> None:
            self.metrics.incidents.labels(kind).inc()
            self._intake_pool.submit(self._audit_incident, f"{transport}.{kind}", peer, detail)

        return report

    def _audit_incident(self, action: str, peer: str, detail: str) -> None:
        try:
            with self.db.session() as session:
                audit(
                    session,
                    actor=f"peer:{peer}"[:200],
                    action=action,
                    entity_type="peer",
                    entity_id=peer[:64],
                    details={"detail": detail},
                )
        except StorageError:
            log.exception("could not audit a transport incident", extra={"action": action})

    def _http_server(self) -> _HttpServer:
        app = create_app(
            self.settings,
            self.db,
            metrics_registry=self.metrics_registry,
            paging_metrics=self.paging_metrics,
            hl7_intake=self.hl7,
            intake_pool=self._intake_pool,
        )
        config = uvicorn.Config(
            app,
            host=self.settings.bind,
            port=self.settings.http_port,
            log_config=None,
            access_log=False,
            lifespan="on",
        )
        return _HttpServer(config)

    def _http_socket(self) -> socket.socket:
        """The HTTP listener's socket, bound here rather than by uvicorn, which answers a port
        in use with a log line and ``sys.exit``: the operator gets the same one line as for
        every other listener instead (``ListenerUnavailable``)."""
        host, port = self.settings.bind, self.settings.http_port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            return socket.create_server((host, port), family=family, backlog=2048)
        except OSError as exc:
            raise ListenerUnavailable.of(
                "HTTP (API, acknowledge links)", host, port, "VETGATEWAY_HTTP_PORT", exc
            ) from exc

    @staticmethod
    async def _wait_started(http: _HttpServer, task: asyncio.Task[None]) -> None:
        while not http.started:
            if task.done():
                task.result()
                raise RuntimeError("HTTP listener stopped during start-up")
            await asyncio.sleep(0.01)

    def _announce(self, name: str, address: str, what: str) -> None:
        self.listening[name] = address
        log.info("listening", extra={"listener": name, "address": address})
        # For the operator at the terminal; the JSON log line above is for machines.
        print(f"vetgateway: {name:<5} {address}  ({what})", flush=True)
