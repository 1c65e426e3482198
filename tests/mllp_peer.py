"""A real MLLP sender for tests: a blocking TCP (optionally TLS) client that frames messages,
sends bytes exactly as told (split, joined, junk, truncated), and reads the answers."""

from __future__ import annotations

import socket
import ssl

from vetgateway.adapters.mllp.framer import NEED_DATA, ConnectionClosed, Frame, MllpReceiver, frame


class MllpPeer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float = 15.0,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        raw = socket.create_connection((host, port), timeout=timeout)
        self.sock: socket.socket = (
            tls.wrap_socket(raw, server_hostname=server_hostname) if tls is not None else raw
        )
        self._receiver = MllpReceiver()
        self._frames: list[bytes] = []

    def __enter__(self) -> MllpPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, message: bytes) -> None:
        self.send_raw(frame(message))

    def read_ack(self) -> bytes:
        """The next answer; raises ``ConnectionError`` if the gateway closed instead."""
        while not self._frames:
            data = self.sock.recv(65536)
            self._receiver.receive_data(data)
            while (event := self._receiver.next_event()) is not NEED_DATA:
                if isinstance(event, Frame):
                    self._frames.append(event.payload)
                elif isinstance(event, ConnectionClosed):
                    if not self._frames:
                        raise ConnectionError("gateway closed the connection without answering")
                    break
        return self._frames.pop(0)

    def exchange(self, message: bytes) -> bytes:
        self.send(message)
        return self.read_ack()

    def closed_by_gateway(self) -> bool:
        """True when the gateway has closed its side (reads EOF or a reset) within the timeout."""
        try:
            return self.sock.recv(65536) == b""
        except (ConnectionResetError, ssl.SSLError):
            return True

    def close(self) -> None:
        self.sock.close()


def msa(ack: bytes) -> list[str]:
    """MSA fields of an ACK: [MSA, code, control id, text, ...]."""
    for segment in ack.replace(b"\n", b"\r").split(b"\r"):
        if segment.startswith(b"MSA"):
            text = segment.decode("latin-1")
            return text.split(text[3])
    raise AssertionError(f"no MSA segment in {ack!r}")


def segment(ack: bytes, name: str) -> list[str] | None:
    for seg in ack.replace(b"\n", b"\r").split(b"\r"):
        if seg.startswith(name.encode()):
            text = seg.decode("latin-1")
            return text.split(text[3])
    return None
