"""The asyncio MLLP listener: sockets around the sans-I/O ``MllpReceiver``.

It knows framing and connection hygiene, nothing about HL7: each complete frame goes to a
handler that returns the bytes to answer with (an ACK), or ``None`` when the sender asked for
none. The handler returns only after the message is durable, so the answer always follows the
commit (R02).

Connection hygiene (RELIABILITY R11-R16):

- frames on one connection are answered strictly in order; a sender may pipeline several;
- a frame must complete within ``frame_timeout`` of its start block, however slowly its bytes
  trickle in (a slowloris peer is closed, R12); an idle connection is closed after ``idle_timeout``;
- at most ``max_connections`` in all and ``max_connections_per_peer`` per remote address;
- an oversized frame gets the handler's rejection (``on_too_large``) and the connection is closed;
- with TLS, the handshake runs inside the connection handler, so a plaintext or untrusted client is
  refused *and reported* (R16) instead of vanishing into asyncio's logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from vetgateway.adapters.connection_gate import ConnectionGate
from vetgateway.adapters.mllp.framer import (
    NEED_DATA,
    ConnectionClosed,
    Frame,
    FrameTooLarge,
    JunkDiscarded,
    MllpReceiver,
    frame,
)

log = logging.getLogger(__name__)

# payload, peer -> answer, sent only once the message is durable; None: nothing to send
FrameHandler = Callable[[bytes, str], Awaitable[bytes | None]]
# the start of the oversized payload, peer -> rejection to send before closing
TooLargeHandler = Callable[[bytes, str], Awaitable[bytes | None]]
# what happened, peer, detail (for audit and alerts)
IncidentHandler = Callable[[str, str, str], None]

READ_SIZE = 64 * 1024


@dataclass(frozen=True)
class MllpLimits:
    max_message_size: int = 16 * 1024 * 1024
    frame_timeout: float = 30.0
    idle_timeout: float = 600.0
    max_connections: int = 512
    max_connections_per_peer: int = 64
    tls_handshake_timeout: float = 10.0


class MllpServer:
    def __init__(
        self,
        handler: FrameHandler,
        *,
        host: str,
        port: int,
        limits: MllpLimits | None = None,
        on_too_large: TooLargeHandler | None = None,
        on_incident: IncidentHandler | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._handler = handler
        self._host = host
        self._port = port
        self.limits = limits or MllpLimits()
        self._on_too_large = on_too_large
        self._on_incident = on_incident or (lambda kind, peer, detail: None)
        self._tls = tls
        self._server: asyncio.Server | None = None
        self._gate = ConnectionGate(
            name="mllp",
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
        self._server = await asyncio.start_server(
            self._accept, self._host, self._port, limit=READ_SIZE, backlog=1024
        )

    async def close(self) -> None:
        """Stop accepting, then let connections finish the message in hand (answers are sent only
        after a commit, so cutting them mid-way would only force a resend)."""
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
        try:
            if self._tls is not None and not await self._handshake(writer, peer):
                return
            await self._serve(reader, writer, peer)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            log.info("mllp connection lost", extra={"peer": peer, "reason": repr(exc)})
        except Exception:  # our bug: no answer, close this one, keep serving the others
            log.exception("mllp handler failed; connection closed unanswered", extra={"peer": peer})
        finally:
            self._gate.release(peer_host)
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 5)

    async def _handshake(self, writer: asyncio.StreamWriter, peer: str) -> bool:
        assert self._tls is not None
        try:
            await writer.start_tls(
                self._tls, ssl_handshake_timeout=self.limits.tls_handshake_timeout
            )
        except (ssl.SSLError, ConnectionError, TimeoutError, OSError) as exc:
            detail = f"TLS handshake refused: {exc}"
            log.warning("mllp tls refused", extra={"peer": peer, "reason": detail})
            self._on_incident("tls_refused", peer, detail)
            return False
        return True

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        loop = asyncio.get_running_loop()
        receiver = MllpReceiver(self.limits.max_message_size)
        frame_deadline: float | None = None
        while True:
            if receiver.in_frame:
                frame_deadline = frame_deadline or loop.time() + self.limits.frame_timeout
                timeout = frame_deadline - loop.time()
            else:
                frame_deadline = None
                timeout = self.limits.idle_timeout
            try:
                # ``timeout`` arms a timer on this task; ``wait_for`` would start a task per read.
                async with asyncio.timeout(max(timeout, 0)):
                    data = await reader.read(READ_SIZE)
            except TimeoutError:
                what = "frame timeout" if receiver.in_frame else "idle timeout"
                log.warning(f"mllp {what}; closing", extra={"peer": peer})
                if receiver.in_frame:
                    self._on_incident("frame_timeout", peer, "frame not completed in time")
                return
            receiver.receive_data(data)
            while (event := receiver.next_event()) is not NEED_DATA:
                if isinstance(event, Frame):
                    answer = await self._handler(event.payload, peer)
                    if answer is not None:  # None: the sender asked for no acknowledgement
                        writer.write(frame(answer))
                        await writer.drain()
                elif isinstance(event, JunkDiscarded):
                    log.warning(
                        "mllp bytes outside a frame discarded",
                        extra={"peer": peer, "size": event.size, "reason": event.reason},
                    )
                elif isinstance(event, FrameTooLarge):
                    await self._reject_too_large(writer, peer, event)
                    return
                elif isinstance(event, ConnectionClosed):
                    if event.incomplete:
                        log.warning("mllp peer closed mid-frame", extra={"peer": peer})
                    return
            if not data:
                return

    async def _reject_too_large(
        self, writer: asyncio.StreamWriter, peer: str, event: FrameTooLarge
    ) -> None:
        detail = f"message larger than the {event.limit}-byte limit"
        log.error("mllp message too large; closing", extra={"peer": peer, "limit": event.limit})
        self._on_incident("message_too_large", peer, detail)
        if self._on_too_large is not None:
            answer = await self._on_too_large(event.head, peer)
            if answer is not None:
                writer.write(frame(answer))
                await writer.drain()
