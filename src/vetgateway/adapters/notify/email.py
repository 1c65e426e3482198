"""Pages as plain-text email through one SMTP relay (RFC 5321), upgraded with STARTTLS (RFC 3207).

The session: connect, EHLO; if the server offers STARTTLS, upgrade and verify its certificate
(the default context: system CAs and the host name; tests pass their own ``ssl.SSLContext``),
then EHLO again; AUTH when a user name is set; one message, From ``sender`` To the page target.
Credentials are never sent over a connection that did not upgrade. Implicit TLS (SMTPS, port
465) is not spoken.

One call is one attempt; retrying and escalating are the caller's job (``pipeline/pager.py``).
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING

from vetgateway.adapters.notify import Notification
from vetgateway.errors import ConfigError, DeliveryError
from vetgateway.store.models.alerts import PageChannel

if TYPE_CHECKING:
    from vetgateway.config import Settings

__all__ = ["EmailChannel"]

log = logging.getLogger(__name__)

_SERVER_TEXT_LIMIT = 200


def _one_line(text: str) -> str:
    """Header values may not contain line breaks (they would start new headers)."""
    return " ".join(text.split())


def _reason(exc: Exception) -> str:
    """What the server said, for the error: code and (shortened) text, never our message."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, said = next(iter(exc.recipients.values()), (0, b""))
        return f"recipient refused: {code} {said.decode('utf-8', 'replace')[:_SERVER_TEXT_LIMIT]}"
    if isinstance(exc, smtplib.SMTPResponseException):
        error = exc.smtp_error
        decoded = error.decode("utf-8", "replace") if isinstance(error, bytes) else str(error)
        return f"{type(exc).__name__}: {exc.smtp_code} {decoded[:_SERVER_TEXT_LIMIT]}"
    return f"{type(exc).__name__}: {exc}"


class EmailChannel:
    """Delivers a page as one plain-text email; delivered = the relay answered 250 to DATA."""

    kind = PageChannel.EMAIL

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        username: str = "",
        password: str = "",
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not host:
            raise ConfigError("smtp_host: empty; email pages need an SMTP relay")
        self._host = host
        self._port = port
        self._sender = sender
        self._username = username
        self._password = password
        self._timeout = timeout
        self._ssl_context = ssl_context
        self._where = f"{host}:{port}"

    @classmethod
    def from_settings(cls, settings: Settings) -> EmailChannel:
        return cls(
            settings.smtp_host,
            settings.smtp_port,
            settings.smtp_from,
            username=settings.smtp_username,
            password=settings.smtp_password,
            timeout=settings.smtp_timeout_seconds,
        )

    def message(self, notification: Notification) -> EmailMessage:
        """The email for ``notification`` (exposed so its layout can be tested without SMTP)."""
        message = EmailMessage()
        message["From"] = self._sender
        message["To"] = notification.target
        message["Subject"] = _one_line(notification.subject)
        message["Date"] = formatdate(localtime=False, usegmt=True)
        domain = self._sender.rpartition("@")[2] or "localhost"
        message["Message-ID"] = make_msgid(f"page{notification.page_id}", domain=domain)
        message["X-Vetgateway-Alert-Id"] = str(notification.alert_id)
        message["X-Vetgateway-Page-Id"] = str(notification.page_id)
        text = notification.body.rstrip("\n") + "\n"
        if notification.acknowledge_url:
            text += f"\nAcknowledge: {notification.acknowledge_url}\n"
        message.set_content(text)
        return message

    def deliver(self, notification: Notification) -> None:
        target = notification.target
        if not target or any(ch in target for ch in "\r\n"):
            raise DeliveryError(f"email: invalid recipient address {target!r}")
        try:
            message = self.message(notification)
        except (ValueError, TypeError) as exc:
            raise DeliveryError(f"email to {target}: message not built: {exc}") from exc
        try:
            with smtplib.SMTP(self._host, self._port, timeout=self._timeout) as smtp:
                smtp.ehlo()
                encrypted = False
                if smtp.has_extn("starttls"):
                    smtp.starttls(context=self._ssl_context or ssl.create_default_context())
                    smtp.ehlo()
                    encrypted = True
                if self._username:
                    if not encrypted:
                        raise DeliveryError(
                            f"email to {target} via {self._where}: server does not offer "
                            "STARTTLS; credentials are not sent in clear"
                        )
                    smtp.login(self._username, self._password)
                smtp.send_message(message, from_addr=self._sender, to_addrs=[target])
        except TimeoutError:
            raise DeliveryError(
                f"email to {target} via {self._where}: no answer within {self._timeout:g} s"
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            # SMTPException and ssl.SSLError are OSErrors; listed for the reader.
            raise DeliveryError(f"email to {target} via {self._where}: {_reason(exc)}") from exc
        log.info(
            "page delivered",
            extra={
                "channel": "email",
                "page_id": notification.page_id,
                "alert_id": str(notification.alert_id),
                "relay": self._where,
            },
        )
