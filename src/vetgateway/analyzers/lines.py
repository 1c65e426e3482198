"""Every analyzer line of one gateway process, started and stopped together.

- the shared ASTM listener on ``astm_port`` (5001): converters that dial in; analyzers on it are
  told apart by their H-record sender id (``AnalyzerIntake.listener_handler``);
- one ``AnalyzerTcpClient`` per ``connection = "tcp_client"`` analyzer (a converter that waits
  to be dialled), redialled with backoff;
- one ``AnalyzerSerialLine`` per ``connection = "serial"`` analyzer, reopened with backoff;
- the silence watch (``analyzers.silence``).

The config is checked before anything listens (unknown driver or clinic, a plain-text analyzer on
the shared listener: ``ConfigError``), and the device rows are brought in step with it
(``store.devices.sync_devices``), so every stored message can name its device.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Protocol

from vetgateway.adapters.analyzer.intake import (
    ASTM_CHANNEL,
    TEXT_CHANNEL,
    AnalyzerIntake,
    StoredObserver,
)
from vetgateway.adapters.analyzer.runner import IncidentHandler
from vetgateway.adapters.analyzer.serial_line import AnalyzerSerialLine, SerialSettings
from vetgateway.adapters.analyzer.tcp import AnalyzerTcpClient, AnalyzerTcpServer
from vetgateway.adapters.astm.e1381 import MessageEnd
from vetgateway.adapters.astm.station import AstmStation
from vetgateway.analyzers.config import AnalyzerConfig
from vetgateway.analyzers.drivers import Driver, driver_named
from vetgateway.analyzers.host_query import HostQueryAnswerer
from vetgateway.analyzers.hours import parse_opening_hours
from vetgateway.analyzers.silence import SilenceWatch
from vetgateway.config import Settings
from vetgateway.errors import ConfigError, ListenerUnavailable
from vetgateway.pipeline.mapping import MappingTable
from vetgateway.store.clinics import clinic_by_code
from vetgateway.store.db import Database
from vetgateway.store.devices import DeviceView, sync_devices
from vetgateway.store.inbox import Inbox
from vetgateway.store.models import DeviceProtocol

__all__ = ["AnalyzerLines", "check_analyzers"]

log = logging.getLogger(__name__)


class _Line(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...


def check_analyzers(analyzers: tuple[AnalyzerConfig, ...]) -> dict[str, Driver]:
    """Each analyzer's driver, or ``ConfigError`` naming what cannot work."""
    drivers = {}
    for config in analyzers:
        driver = driver_named(config.driver)
        if driver.protocol is DeviceProtocol.PLAIN_TEXT and config.connection == "listener":
            raise ConfigError(
                f"analyzer {config.name!r}: a plain-text analyzer sends no sender id, so it "
                "needs a line of its own (serial or tcp_client), not the shared listener"
            )
        drivers[config.name] = driver
    return drivers


class AnalyzerLines:
    """Starts the listener, the dialled converters, the serial ports and the silence watch."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        inbox: Inbox,
        pool: Executor,
        *,
        mapping: Callable[[], MappingTable],
        on_incident: IncidentHandler,
        on_alert: Callable[[], None] | None = None,
        observer: StoredObserver | None = None,
    ) -> None:
        self._settings = settings
        self._db = db
        self._inbox = inbox
        self._pool = pool
        self._mapping = mapping
        self._on_incident = on_incident
        self._on_alert = on_alert
        self._observer = observer
        self._drivers = check_analyzers(settings.analyzers)
        self._hours = parse_opening_hours(settings.opening_hours, settings.opening_hours_zone)
        self.listener: AnalyzerTcpServer | None = None
        self.lines: dict[str, _Line] = {}
        self.watch: SilenceWatch | None = None
        self.intake: AnalyzerIntake | None = None

    def _sync(self) -> list[DeviceView]:
        with self._db.session() as session:
            clinics: dict[str, uuid.UUID] = {}
            for config in self._settings.analyzers:
                if config.clinic and config.clinic not in clinics:
                    clinic = clinic_by_code(session, config.clinic)
                    if clinic is None:
                        raise ConfigError(f"analyzer {config.name!r}: no clinic {config.clinic!r}")
                    clinics[config.clinic] = clinic.id
            protocols = {name: driver.protocol for name, driver in self._drivers.items()}
            models = {name: driver.model for name, driver in self._drivers.items()}
            return sync_devices(session, self._settings.analyzers, protocols, clinics, models)

    async def start(self) -> str:
        """Start everything; returns the listener's address (``host:port``)."""
        loop = asyncio.get_running_loop()
        devices = await loop.run_in_executor(self._pool, self._sync)
        answerer = HostQueryAnswerer(self._db, self._pool, self._mapping)
        intake = AnalyzerIntake(
            self._inbox, devices, answer_queries=answerer, observer=self._observer
        )
        self.intake = intake
        s = self._settings
        self.listener = AnalyzerTcpServer(
            lambda: AstmStation(MessageEnd.TERMINATOR_RECORD),
            intake.listener_handler(),
            host=s.bind,
            port=s.astm_port,
            on_incident=self._on_incident,
        )
        try:
            await self.listener.start()
        except OSError as exc:
            raise ListenerUnavailable.of(
                "ASTM analyzers", s.bind, s.astm_port, "VETGATEWAY_ASTM_PORT", exc
            ) from exc
        configs = {c.name: c for c in s.analyzers}
        for device in devices:
            config = configs[device.name]
            driver = self._drivers[device.name]
            channel = ASTM_CHANNEL if driver.protocol is DeviceProtocol.ASTM else TEXT_CHANNEL
            handler = intake.line_handler(device, channel)
            line: _Line
            if config.connection == "tcp_client":
                assert config.host is not None
                assert config.port is not None
                line = AnalyzerTcpClient(
                    driver.station,
                    handler,
                    host=config.host,
                    port=config.port,
                    on_incident=self._on_incident,
                )
            elif config.connection == "serial":
                assert config.serial_port is not None
                line = AnalyzerSerialLine(
                    SerialSettings(
                        port=config.serial_port,
                        baudrate=config.baudrate,
                        bytesize=config.bytesize,
                        parity=config.parity,
                        stopbits=config.stopbits,
                        xonxoff=config.xonxoff,
                        rtscts=config.rtscts,
                    ),
                    driver.station,
                    handler,
                    on_incident=self._on_incident,
                )
            else:
                continue
            await line.start()
            self.lines[device.name] = line
            log.info("analyzer line started", extra={"device": device.name})
        self.watch = SilenceWatch(
            self._db,
            intake.take_seen,
            self._hours,
            s.it_contacts,
            interval=s.silence_check_seconds,
            on_alert=self._on_alert,
        )
        self.watch.start()
        host, port = self.listener.address
        return f"{host}:{port}"

    async def close(self) -> None:
        """Stop listening and dialling first, then the watch (it flushes last-seen times)."""
        if self.listener is not None:
            await self.listener.close()
        for line in self.lines.values():
            await line.close()
        if self.watch is not None:
            self.watch.stop()
