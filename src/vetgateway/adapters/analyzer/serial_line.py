"""Analyzer lines over RS-232 (pyserial): ``SerialSettings`` and ``AnalyzerSerialLine``.

Reading: one reader thread per port blocks in ``port.read`` (with a short timeout) and hands
what it reads to the event loop (``call_soon_threadsafe`` into an ``asyncio.Queue``). Chosen over
``loop.add_reader(port.fileno())`` with non-blocking reads because it works with every pyserial
backend: the ``serial_for_url`` handlers (``rfc2217://``, ``socket://``, ``loop://``) and Windows
ports have no descriptor the loop can poll. It also leaves pyserial's ``read`` to deal with the
device's quirks (EAGAIN, readiness without data when an adapter vanishes) instead of repeating
them around ``add_reader``. A thread per port costs nothing at the handful of ports a clinic
has; the read timeout only bounds how long it takes to notice ``close``.

Writing: ``drain`` writes in a worker thread (``asyncio.to_thread``): at 9600 baud a 256-byte
frame takes a quarter of a second, which must not stall the other lines on the loop, and
``write_timeout`` bounds a write that hardware flow control holds back.

Errors: pyserial is translated here and nowhere else. Settings that can never work are a
``ConfigError`` when ``SerialSettings`` is built. A port that cannot be opened or configured, or
fails while open (``SerialException``, ``OSError``, the ``termios.error`` pyserial lets through)
becomes ``ConnectionError`` (``raise … from exc``): ``vetgateway.errors`` has no class for a lost
line yet, and it is what a lost TCP line raises, so ``runner.Redialler`` reopens both the same
way, with backoff, until the adapter is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import serial

from vetgateway.adapters.analyzer.runner import (
    Backoff,
    DialledLine,
    IncidentHandler,
    MessageHandler,
)
from vetgateway.adapters.analyzer.station import LineStation
from vetgateway.errors import ConfigError

__all__ = ["AnalyzerSerialLine", "SerialLineStream", "SerialSettings", "open_port"]

# What pyserial raises for a port it cannot open, configure, read or write: its own errors,
# the OS's, ValueError for settings the driver refuses, and on POSIX termios.error, which it
# lets through from tcsetattr (a device that rejects the settings).
_PORT_ERRORS: tuple[type[Exception], ...] = (serial.SerialException, OSError, ValueError)
if sys.platform != "win32":
    import termios

    _PORT_ERRORS += (termios.error,)
# Reading, also TypeError: pyserial's own when the port is closed under a blocked read.
_READ_ERRORS: tuple[type[Exception], ...] = (*_PORT_ERRORS, TypeError)

READ_TIMEOUT = 0.1  # how soon the reader thread notices ``close``; not a protocol timer
WRITE_TIMEOUT = 10.0
READ_SIZE = 4096

Parity = Literal["N", "E", "O", "M", "S"]


@dataclass(frozen=True)
class SerialSettings:
    """One port and its line settings (the analyzer's LIS menu shows them). ``port`` is a
    device path (``/dev/ttyUSB0``, ``COM3``) or a pyserial URL (``rfc2217://host:port``)."""

    port: str
    baudrate: int = 9600
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Parity = "N"
    stopbits: float = 1
    xonxoff: bool = False
    rtscts: bool = False
    dsrdtr: bool = False

    def __post_init__(self) -> None:
        if not self.port:
            raise ConfigError("serial port: no device named")
        if self.baudrate <= 0:
            raise ConfigError(f"serial port {self.port}: baudrate {self.baudrate} is not positive")
        if self.bytesize not in (5, 6, 7, 8):
            raise ConfigError(f"serial port {self.port}: bytesize must be 5, 6, 7 or 8")
        if self.parity not in ("N", "E", "O", "M", "S"):
            raise ConfigError(f"serial port {self.port}: parity must be one of N, E, O, M, S")
        if self.stopbits not in (1, 1.5, 2):
            raise ConfigError(f"serial port {self.port}: stopbits must be 1, 1.5 or 2")


def _line_error(port: str, exc: Exception) -> ConnectionError:
    """The one translation of pyserial's errors (see the module docstring)."""
    return ConnectionError(f"serial port {port}: {exc}")


def open_port(settings: SerialSettings) -> Any:
    """Open and configure the port (blocking; run it in a thread). Raises ``ConnectionError``."""
    try:
        port = serial.serial_for_url(settings.port, do_not_open=True)
        port.baudrate = settings.baudrate
        port.bytesize = settings.bytesize
        port.parity = settings.parity
        port.stopbits = settings.stopbits
        port.xonxoff = settings.xonxoff
        port.rtscts = settings.rtscts
        port.dsrdtr = settings.dsrdtr
        port.timeout = READ_TIMEOUT
        port.write_timeout = WRITE_TIMEOUT
        port.open()
    except _PORT_ERRORS as exc:
        raise _line_error(settings.port, exc) from exc
    return port


class SerialLineStream:
    """``LineStream`` over an open pyserial port; see the module docstring for the threads."""

    def __init__(self, port: Any, name: str) -> None:
        self._port = port
        self._name = name
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[bytes | ConnectionError] = asyncio.Queue()
        self._pending = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._read_port, name=f"serial reader {name}", daemon=True
        )
        self._thread.start()

    async def read(self) -> bytes:
        item = await self._queue.get()
        if isinstance(item, ConnectionError):
            raise item
        return item

    def write(self, data: bytes) -> None:
        self._pending += data

    async def drain(self) -> None:
        data = bytes(self._pending)
        self._pending.clear()
        if data:
            await asyncio.to_thread(self._write_port, data)

    def close(self) -> None:
        """Stop the reader; it closes the port as it leaves (never under a blocked read)."""
        self._stop.set()
        with contextlib.suppress(Exception):
            self._port.cancel_read()

    def _write_port(self, data: bytes) -> None:
        try:
            self._port.write(data)
        except _PORT_ERRORS as exc:
            raise _line_error(self._name, exc) from exc

    def _read_port(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    data = self._port.read(max(1, min(self._port.in_waiting, READ_SIZE)))
                except _READ_ERRORS as exc:
                    if not self._stop.is_set():
                        self._hand_over(_line_error(self._name, exc))
                    return
                if data:
                    self._hand_over(bytes(data))
        finally:
            with contextlib.suppress(Exception):
                self._port.close()

    def _hand_over(self, item: bytes | ConnectionError) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is reading
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)


class AnalyzerSerialLine(DialledLine):
    """An analyzer on a serial port: opens it, runs the line, and reopens it with ``backoff``
    when it fails or disappears (``runner.Redialler``)."""

    def __init__(
        self,
        settings: SerialSettings,
        station_factory: Callable[[], LineStation],
        handler: MessageHandler,
        *,
        backoff: Backoff | None = None,
        on_incident: IncidentHandler | None = None,
        clock: Callable[[], float] = time.monotonic,
        tick: float = 0.25,
    ) -> None:
        self.settings = settings
        super().__init__(
            station_factory,
            handler,
            peer=settings.port,
            backoff=backoff,
            on_incident=on_incident,
            clock=clock,
            tick=tick,
        )

    async def open_stream(self) -> SerialLineStream:
        opening = asyncio.ensure_future(asyncio.to_thread(open_port, self.settings))
        try:
            port = await asyncio.shield(opening)
        except asyncio.CancelledError:  # closed while the thread opens it: close it after
            opening.add_done_callback(_close_late_port)
            raise
        return SerialLineStream(port, self.settings.port)


def _close_late_port(opening: asyncio.Future[Any]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()
