"""A real SMTP server (aiosmtpd's protocol on its own event-loop thread, 127.0.0.1, a free port)
that records each accepted message: the receiving end for email pages.

Options: ``tls`` offers STARTTLS with that server context (certificates from tests/pki.py);
``credentials`` requires AUTH (over TLS) with that user name and password; ``refuse(stage, reply)``
answers the next RCPT or DATA with an error reply instead of accepting.

aiosmtpd's ``Controller`` is not used because it cannot listen on port 0 (it connects to its own
port to start up); the same three steps are done here with ``loop.create_server``.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any, Literal

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.waiting import wait_until


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    over_tls: bool
    authenticated_as: str | None

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self.sink._refusal("RCPT")
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        reply = self.sink._refusal("DATA")
        if reply is not None:
            return reply
        content = envelope.original_content or b""
        self.sink._store(
            ReceivedMail(
                mail_from=envelope.mail_from or "",
                rcpt_tos=list(envelope.rcpt_tos),
                content=content,
                over_tls=session.ssl is not None,
                authenticated_as=self.sink._logins.get(id(session)),
            )
        )
        return "250 Message accepted for delivery"


class SmtpSink:
    """``with SmtpSink() as sink: ... (sink.host, sink.port) ... sink.messages``."""

    def __init__(
        self,
        *,
        tls: ssl.SSLContext | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.messages: list[ReceivedMail] = []
        self.host = "127.0.0.1"
        self.port = 0
        self._tls = tls
        self._credentials = credentials
        self._lock = threading.Lock()
        self._refusals: list[tuple[str, str]] = []
        self._logins: dict[int, str] = {}
        self._handler = _Handler(self)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None

    def refuse(self, stage: Literal["RCPT", "DATA"], reply: str, count: int = 1) -> None:
        """Answer the next ``count`` ``stage`` commands with ``reply`` (e.g. ``"550 no such
        user"``, ``"451 try again later"``)."""
        with self._lock:
            self._refusals.extend([(stage, reply)] * count)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMail]:
        wait_until(lambda: len(self.messages) >= count, timeout, f"{count} email(s)")
        return list(self.messages)

    def _refusal(self, stage: str) -> str | None:
        with self._lock:
            for index, (refused_stage, reply) in enumerate(self._refusals):
                if refused_stage == stage:
                    del self._refusals[index]
                    return reply
        return None

    def _store(self, mail: ReceivedMail) -> None:
        with self._lock:
            self.messages.append(mail)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword) or self._credentials is None:
            return AuthResult(success=False, handled=False)
        user, password = self._credentials
        ok = data.login.decode() == user and data.password.decode() == password
        if ok:
            self._logins[id(session)] = user
        return AuthResult(success=ok, handled=False)

    def _protocol(self) -> SMTP:
        return SMTP(
            self._handler,
            hostname="localhost",
            tls_context=self._tls,
            require_starttls=False,
            auth_required=self._credentials is not None,
            auth_require_tls=True,
            authenticator=self._authenticate if self._credentials else None,
            loop=self._loop,
        )

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    async def _start(self) -> None:
        self._server = await self._loop.create_server(self._protocol, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __enter__(self) -> SmtpSink:
        self._thread.start()
        self._run(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self._run(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
