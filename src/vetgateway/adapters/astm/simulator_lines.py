"""The lines the analyzer simulator talks over: a TCP connection it dials, one it waits for, or a
serial port (pyserial). Each endpoint opens a ``Line``: read bytes, write bytes, close or cut.

These are the only places the simulator touches sockets and ports. asyncio streams serve TCP;
the serial port is read through ``loop.add_reader`` on its file descriptor and written from the
default executor, so a slow line never blocks the event loop that runs the protocol timers.
pyserial's errors are translated into ``SimulatorError`` here (CONVENTIONS §7, one boundary).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from vetgateway.errors import VetgatewayError

__all__ = [
    "Endpoint",
    "Line",
    "SerialDevice",
    "SimulatorError",
    "TcpDial",
    "TcpListen",
    "chars_per_second",
    "parse_host_port",
]

log = logging.getLogger(__name__)

_READ_SIZE: Final = 4096
_PACE_SLICE: Final = 8  # bytes written at a time when pacing at a baud rate


class SimulatorError(VetgatewayError):
    """The simulator's line could not be opened or was unusable; the message says which and why."""


def parse_host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) into its parts; ``SimulatorError`` if malformed."""
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise SimulatorError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def chars_per_second(baud: int, bytesize: int = 8, parity: str = "N", stopbits: int = 1) -> float:
    """Characters a serial line carries per second: each has a start bit, its data bits, a parity
    bit unless parity is N, and its stop bits (9600 8N1 carries 960 characters a second)."""
    bits = 1 + bytesize + (parity.upper() != "N") + stopbits
    return baud / bits


class Line(Protocol):
    """One open connection. ``read`` returns ``b""`` once the peer has gone."""

    async def read(self) -> bytes: ...

    async def write(self, data: bytes) -> None: ...

    async def close(self, *, abort: bool = False) -> None:
        """Close; ``abort`` cuts the line with no orderly goodbye (TCP reset), as a fault."""
        ...


class Endpoint(Protocol):
    """Where the simulator's line comes from; ``open`` may be called again after a drop."""

    can_drop: bool  # whether the peer notices a cut line (TCP does; a serial peer does not)

    @property
    def description(self) -> str:
        """Where the line goes, for messages to a person."""
        ...

    async def open(self) -> Line: ...

    async def aclose(self) -> None: ...


class _StreamLine:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pace: float | None
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._pace = pace
        self._next_slot = 0.0

    async def read(self) -> bytes:
        try:
            return await self._reader.read(_READ_SIZE)
        except OSError:
            return b""

    async def write(self, data: bytes) -> None:
        if self._pace is None:
            self._writer.write(data)
            await self._writer.drain()
            return
        # Emulate a serial analyzer behind a converter: bytes leave at the line's rate.
        loop = asyncio.get_running_loop()
        self._next_slot = max(self._next_slot, loop.time())
        for start in range(0, len(data), _PACE_SLICE):
            piece = data[start : start + _PACE_SLICE]
            await asyncio.sleep(self._next_slot - loop.time())
            self._writer.write(piece)
            await self._writer.drain()
            self._next_slot += len(piece) / self._pace

    async def close(self, *, abort: bool = False) -> None:
        if abort:
            self._writer.transport.abort()
        else:
            self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


@dataclass(slots=True)
class TcpDial:
    """Dial the gateway's ASTM-over-TCP listener (default port 5001), as an analyzer behind a
    serial-to-TCP converter in client mode does. ``pace`` in characters a second, or None."""

    host: str
    port: int
    pace: float | None = None
    connect_timeout: float = 10.0
    can_drop: bool = True

    @property
    def description(self) -> str:
        return f"tcp {self.host}:{self.port}"

    async def open(self) -> Line:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            raise SimulatorError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        log.info("connected", extra={"endpoint": self.description})
        return _StreamLine(reader, writer, self.pace)

    async def aclose(self) -> None:
        return None


@dataclass(slots=True)
class TcpListen:
    """Wait for the gateway to dial in, as a converter in server mode does. ``on_listening`` is
    told the bound address (port 0 picks a free one); each ``open`` takes the next connection."""

    host: str
    port: int
    pace: float | None = None
    accept_timeout: float | None = None
    on_listening: Callable[[str, int], None] | None = None
    can_drop: bool = True
    _server: asyncio.Server | None = field(default=None, init=False)
    _accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = field(
        default_factory=asyncio.Queue, init=False
    )

    @property
    def description(self) -> str:
        return f"listening on {self.host}:{self.port}"

    async def open(self) -> Line:
        if self._server is None:
            try:
                self._server = await asyncio.start_server(self._accept, self.host, self.port)
            except OSError as exc:
                raise SimulatorError(f"cannot listen on {self.host}:{self.port}: {exc}") from exc
            bound = self._server.sockets[0].getsockname()
            self.port = bound[1]
            if self.on_listening is not None:
                self.on_listening(self.host, self.port)
        try:
            reader, writer = await asyncio.wait_for(self._accepted.get(), self.accept_timeout)
        except TimeoutError as exc:
            raise SimulatorError(f"nobody dialled {self.host}:{self.port}") from exc
        log.info("accepted", extra={"endpoint": self.description})
        return _StreamLine(reader, writer, self.pace)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._accepted.put((reader, writer))

    async def aclose(self) -> None:
        while not self._accepted.empty():
            _, writer = self._accepted.get_nowait()
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


_PARITIES: Final = {"N": "N", "E": "E", "O": "O"}


@dataclass(slots=True)
class SerialDevice:
    """A serial port (RS-232 through pyserial), as the analyzer's own port is wired."""

    device: str
    baud: int = 9600
    parity: str = "N"
    bytesize: int = 8
    stopbits: int = 1
    write_timeout: float = 10.0
    can_drop: bool = False  # the peer of a serial line cannot tell that it was cut

    @property
    def description(self) -> str:
        return f"serial {self.device} {self.baud} {self.bytesize}{self.parity}{self.stopbits}"

    async def open(self) -> Line:
        import serial

        try:
            port = serial.Serial(
                self.device,
                baudrate=self.baud,
                bytesize=self.bytesize,
                parity=_PARITIES[self.parity.upper()],
                stopbits=self.stopbits,
                timeout=0,
                write_timeout=self.write_timeout,
            )
        except (serial.SerialException, ValueError, KeyError) as exc:
            raise SimulatorError(f"cannot open {self.description}: {exc}") from exc
        log.info("opened", extra={"endpoint": self.description})
        return _SerialLine(port)

    async def aclose(self) -> None:
        return None


class _SerialLine:
    def __init__(self, port: Any) -> None:
        self._port = port
        self._loop = asyncio.get_running_loop()
        self._incoming: asyncio.Queue[bytes] = asyncio.Queue()
        self._fd: int = port.fileno()
        self._loop.add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        import serial

        try:
            data: bytes = self._port.read(self._port.in_waiting or 1)
        except (serial.SerialException, OSError):
            data = b""
        if not data:  # readable yet empty: the device went away
            self._loop.remove_reader(self._fd)
        self._incoming.put_nowait(data)

    async def read(self) -> bytes:
        return await self._incoming.get()

    async def write(self, data: bytes) -> None:
        import serial

        try:
            await self._loop.run_in_executor(None, self._port.write, data)
        except serial.SerialException as exc:
            raise OSError(f"serial write failed: {exc}") from exc

    async def close(self, *, abort: bool = False) -> None:
        self._loop.remove_reader(self._fd)
        self._port.close()
