"""Analyzer lines over TCP: the listener analyzers (or their converters) dial, and the client
that dials a serial-to-TCP converter waiting to be dialled.

Both run ``runner.run_line`` over a ``TcpLineStream`` with a fresh station per connection (a
new connection starts on a neutral line: LIS1-A §6 keeps no state across transfers that a
reconnect could carry over). Connection hygiene follows the MLLP server:

- at most ``max_connections`` in all and ``max_connections_per_peer`` per remote address; a
  refused connection is closed at once and reported (``connection_refused``);
- TCP keep-alive is on, so a converter that lost power does not hold a slot for ever; an
  ``idle_timeout`` may close silent connections too, but is off by default, since an analyzer
  may rightly say nothing for a whole night;
- a lost connection is logged with its peer; what it took with it (a partial message, replies
  not yet sent) is reported by the runner;
- ``close`` stops accepting and cancels the connections: nothing is acknowledged before its
  commit, so a cut connection only makes the analyzer send again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from vetgateway.adapters.analyzer.runner import (
    Backoff,
    DialledLine,
    IncidentHandler,
    MessageHandler,
    ignore_incident,
    run_line,
)
from vetgateway.adapters.analyzer.station import LineStation
from vetgateway.adapters.connection_gate import ConnectionGate

__all__ = ["AnalyzerLimits", "AnalyzerTcpClient", "AnalyzerTcpServer", "TcpLineStream"]

log = logging.getLogger(__name__)

READ_SIZE = 4096  # a frame is at most 256 bytes; the station keeps its own bounded buffer


@dataclass(frozen=True)
class AnalyzerLimits:
    max_connections: int = 64
    max_connections_per_peer: int = 4
    idle_timeout: float | None = None


class TcpLineStream:
    """``LineStream`` over an asyncio connection. With ``idle_timeout``, a read that waits
    longer raises ``TimeoutError``."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        idle_timeout: float | None = None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._idle_timeout = idle_timeout
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    async def read(self) -> bytes:
        if self._idle_timeout is None:
            return await self._reader.read(READ_SIZE)
        return await asyncio.wait_for(self._reader.read(READ_SIZE), self._idle_timeout)

    def write(self, data: bytes) -> None:
        self._writer.write(data)

    async def drain(self) -> None:
        await self._writer.drain()

    def close(self) -> None:
        self._writer.close()

    async def wait_closed(self) -> None:
        with contextlib.suppress(ConnectionError, TimeoutError, OSError):
            await asyncio.wait_for(self._writer.wait_closed(), 5)


class AnalyzerTcpServer:
    """The ASTM listener (port 5001 in the default config; the caller passes host and port)."""

    def __init__(
        self,
        station_factory: Callable[[], LineStation],
        handler: MessageHandler,
        *,
        host: str,
        port: int,
        limits: AnalyzerLimits | None = None,
        on_incident: IncidentHandler | None = None,
        clock: Callable[[], float] = time.monotonic,
        tick: float = 0.25,
    ) -> None:
        self._station_factory = station_factory
        self._handler = handler
        self._host = host
        self._port = port
        self.limits = limits or AnalyzerLimits()
        self._on_incident = on_incident if on_incident is not None else ignore_incident
        self._clock = clock
        self._tick = tick
        self._server: asyncio.Server | None = None
        self._gate = ConnectionGate(
            name="analyzer",
            max_connections=self.limits.max_connections,
            max_per_peer=self.limits.max_connections_per_peer,
            on_incident=self._on_incident,
        )

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None, "not started"
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self._host, self._port)

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        await self._gate.cancel_all()
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        admitted = self._gate.admit(writer)
        if admitted is None:
            return
        peer, peer_host = admitted
        stream = TcpLineStream(reader, writer, idle_timeout=self.limits.idle_timeout)
        log.info("analyzer connected", extra={"peer": peer})
        try:
            await run_line(
                stream,
                self._station_factory(),
                self._handler,
                peer=peer,
                on_incident=self._on_incident,
                clock=self._clock,
                tick=self._tick,
            )
        except asyncio.CancelledError:
            # Only ``close`` cancels a connection; ending normally here keeps Python 3.11's
            # start_server callback from logging the cancellation as an error.
            log.info("analyzer connection closed: server closing", extra={"peer": peer})
        except TimeoutError:
            log.info("analyzer connection idle; closing", extra={"peer": peer})
        except OSError as exc:  # ConnectionError among them
            log.info("analyzer connection lost", extra={"peer": peer, "reason": repr(exc)})
        except Exception:  # our bug: close this one, keep serving the others
            log.exception("analyzer connection failed; closed", extra={"peer": peer})
        finally:
            self._gate.release(peer_host)
            stream.close()
            await stream.wait_closed()


class AnalyzerTcpClient(DialledLine):
    """Dials a converter that waits to be dialled, and keeps dialling it (``Redialler``)."""

    def __init__(
        self,
        station_factory: Callable[[], LineStation],
        handler: MessageHandler,
        *,
        host: str,
        port: int,
        backoff: Backoff | None = None,
        connect_timeout: float = 10.0,
        on_incident: IncidentHandler | None = None,
        clock: Callable[[], float] = time.monotonic,
        tick: float = 0.25,
    ) -> None:
        self._host = host
        self._port = port
        self._connect_timeout = connect_timeout
        super().__init__(
            station_factory,
            handler,
            peer=f"{host}:{port}",
            backoff=backoff,
            on_incident=on_incident,
            clock=clock,
            tick=tick,
        )

    async def open_stream(self) -> TcpLineStream:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self._host, self._port), self._connect_timeout
        )
        return TcpLineStream(reader, writer)
