"""A real HTTP server on 127.0.0.1 that records every request and answers 200, or a chosen
status for the next few requests: the receiving end for webhook and SMS-gateway pages."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.waiting import wait_until


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        sink = self.server.sink
        status = sink._record(
            RecordedRequest(self.command, self.path, dict(self.headers.items()), body)
        )
        payload = b"ok\n" if status < 400 else b"failed\n"
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the default writes every request to stderr."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    sink: HttpSink


class HttpSink:
    """``with HttpSink() as sink: ... sink.url(path) ... sink.requests``."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._failures: list[int] = []
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.sink = self
        self.host, self.port = str(self._server.server_address[0]), self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def fail_next(self, status: int, count: int = 1) -> None:
        """Answer ``status`` to the next ``count`` requests, then 200 again."""
        with self._lock:
            self._failures.extend([status] * count)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[RecordedRequest]:
        wait_until(lambda: len(self.requests) >= count, timeout, f"{count} HTTP request(s)")
        return list(self.requests)

    def _record(self, request: RecordedRequest) -> int:
        with self._lock:
            self.requests.append(request)
            return self._failures.pop(0) if self._failures else 200

    def __enter__(self) -> HttpSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
