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
from typing import cast

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

# While the runner stores a message, the analyzer waits for its ACK and sends nothing; a peer
# that sends anyway is paused at this many unread bytes (TCP then pushes back), never buffered
# without end.
READ_LIMIT = 64 * 1024


@dataclass(frozen=True)
class AnalyzerLimits:
    max_connections: int = 64
    max_connections_per_peer: int = 4
    idle_timeout: float | None = None


class _LineProtocol(asyncio.Protocol):
    """The asyncio end of one TCP analyzer line: what arrives goes to the ``consumer`` (the
    runner's ``take_now``) if it takes it, else waits here until ``read``.

    A protocol rather than asyncio's streams: a frame is one small read and one ACK written back,
    and dropping the streams' layers of Python per read and write took the gateway from 18-19%
    to 15-16% of a core at 32 analyzers (bench/astm.py). Semantics follow ``StreamReader.read`` and
    ``StreamWriter.drain``: what arrived is returned before an end or an error is reported, and
    writing pauses when the transport's buffer is full.
    """

    def __init__(self, on_made: Callable[[_LineProtocol], None] | None = None) -> None:
        self._on_made = on_made
        self.transport: asyncio.Transport | None = None
        # Offered each read first while nothing is buffered (``TcpLineStream.push_to``).
        self.consumer: Callable[[bytes], bool] | None = None
        self.track_activity = False
        self.last_data = 0.0  # loop time of the last read, kept when ``track_activity``
        self.buffer = bytearray()
        self.eof = False
        self.error: Exception | None = None
        self.lost = False
        self._reading_paused = False
        self.writing_paused = False
        self._data_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport on any loop (uvloop's do not subclass asyncio.Transport).
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if self._on_made is not None:
            self._on_made(self)

    def data_received(self, data: bytes) -> None:
        if self.track_activity:
            self.last_data = asyncio.get_running_loop().time()
        if not self.buffer and self.consumer is not None and self.consumer(data):
            return
        self.buffer += data
        if len(self.buffer) > READ_LIMIT and not self._reading_paused:
            assert self.transport is not None
            self.transport.pause_reading()
            self._reading_paused = True
        _wake(self._data_waiter)

    def eof_received(self) -> bool:
        self.eof = True
        _wake(self._data_waiter)
        return False  # close our side too: an analyzer line is not half-open

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = self.eof = True
        self.error = exc
        _wake(self._data_waiter)
        _wake(self._drain_waiter)
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        _wake(self._drain_waiter)

    def take(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    async def data_arrived(self) -> None:
        if self.buffer or self.eof:
            return
        self._data_waiter = asyncio.get_running_loop().create_future()
        try:
            await self._data_waiter
        finally:
            self._data_waiter = None

    async def writable(self) -> None:
        if self.lost:
            raise self.error or ConnectionResetError("Connection lost")
        if not self.writing_paused:
            return
        self._drain_waiter = asyncio.get_running_loop().create_future()
        try:
            await self._drain_waiter
        finally:
            self._drain_waiter = None
        if self.lost:
            raise self.error or ConnectionResetError("Connection lost")


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class TcpLineStream:
    """``LineStream`` over a TCP connection. With ``idle_timeout``, a read that waits longer
    raises ``TimeoutError``."""

    def __init__(self, protocol: _LineProtocol, *, idle_timeout: float | None = None) -> None:
        assert protocol.transport is not None, "the connection is made"
        self._protocol = protocol
        self._transport = protocol.transport
        self._idle_timeout = idle_timeout

    async def read(self) -> bytes:
        protocol = self._protocol
        if not protocol.buffer and not protocol.eof:
            if self._idle_timeout is None:
                await protocol.data_arrived()
            else:
                await self._data_before_idle_timeout()
        if protocol.buffer:
            return protocol.take()
        if protocol.error is not None:
            raise protocol.error
        return b""

    async def _data_before_idle_timeout(self) -> None:
        """Wait for data to read; ``TimeoutError`` once nothing arrived for ``idle_timeout``,
        counting what the consumer took (``push_to``) as activity."""
        assert self._idle_timeout is not None
        protocol = self._protocol
        loop = asyncio.get_running_loop()
        protocol.track_activity = True
        protocol.last_data = loop.time()
        while True:
            try:
                async with asyncio.timeout_at(protocol.last_data + self._idle_timeout):
                    await protocol.data_arrived()
                return
            except TimeoutError:
                if loop.time() >= protocol.last_data + self._idle_timeout:
                    raise

    def push_to(self, take: Callable[[bytes], bool] | None) -> None:
        """``runner.PushStream``: offer each read to ``take`` first."""
        self._protocol.consumer = take

    @property
    def writable_now(self) -> bool:
        protocol = self._protocol
        return not protocol.lost and not protocol.writing_paused

    def write(self, data: bytes) -> None:
        self._transport.write(data)

    async def drain(self) -> None:
        await self._protocol.writable()

    def close(self) -> None:
        self._transport.close()

    async def wait_closed(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._protocol.closed), 5)


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
        self._tasks: set[asyncio.Task[None]] = set()
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
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _LineProtocol(on_made=self._connected), self._host, self._port
        )

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        await self._gate.cancel_all()
        await self._server.wait_closed()

    def _connected(self, protocol: _LineProtocol) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(protocol))
        self._tasks.add(task)  # a running task is only weakly held by the loop
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, protocol: _LineProtocol) -> None:
        assert protocol.transport is not None
        admitted = self._gate.admit(protocol.transport)
        if admitted is None:
            return
        peer, peer_host = admitted
        stream = TcpLineStream(protocol, idle_timeout=self.limits.idle_timeout)
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
            # Only ``close`` cancels a connection: it ends here, logged as what it is.
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
        loop = asyncio.get_running_loop()
        _transport, protocol = await asyncio.wait_for(
            loop.create_connection(_LineProtocol, self._host, self._port), self._connect_timeout
        )
        return TcpLineStream(protocol)
