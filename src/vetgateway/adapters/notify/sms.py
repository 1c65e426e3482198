"""Pages as text messages through an HTTP SMS gateway: one POST of a configured body template.

Gateways differ in what they expect, so the body is ``body_template`` (a ``str.format`` string,
e.g. ``{{"to": "{to}", "text": "{text}"}}``) with ``{to}`` the page target (a phone number) and
``{text}`` the subject and body, shortened to ``MAX_TEXT`` characters. Both values are
JSON-string-escaped before they are put in, so quotes and line breaks cannot break out of the
template's string literals. 2xx means the gateway accepted the message; anything else, a
connection error or a timeout raises ``DeliveryError``. One call is one attempt; retrying is the
caller's job (``pipeline/pager.py``).

The acknowledge link is not part of the text: the gateway template decides what is sent.
"""

from __future__ import annotations

import json
import logging
import ssl
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from vetgateway.adapters.notify import Notification
from vetgateway.adapters.notify.webhook import http_post
from vetgateway.errors import ConfigError
from vetgateway.store.models.alerts import PageChannel

if TYPE_CHECKING:
    from vetgateway.config import Settings

__all__ = ["MAX_TEXT", "SmsChannel", "sms_text"]

log = logging.getLogger(__name__)

# Two concatenated GSM-7 segments (2 x 160); longer texts cost more and arrive split anyway.
MAX_TEXT = 320


def _json_escaped(value: str) -> str:
    """``value`` as it would appear between the quotes of a JSON string."""
    return json.dumps(value)[1:-1]


def sms_text(subject: str, body: str, limit: int = MAX_TEXT) -> str:
    """Subject and body on separate lines, cut to ``limit`` characters with an ellipsis."""
    text = f"{subject}\n{body}".strip() if body else subject.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


class SmsChannel:
    """Delivers a page as one POST of ``body_template`` to an SMS gateway at ``url``."""

    kind = PageChannel.SMS

    def __init__(
        self,
        url: str,
        body_template: str,
        *,
        authorization: str = "",
        timeout: float = 10.0,
        content_type: str = "application/json",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("sms_url: must be an http(s) URL of the SMS gateway")
        try:
            body_template.format(to="", text="")
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise ConfigError(
                f"sms_body_template: not a format string with only {{to}} and {{text}}: {exc!r}"
            ) from None
        self._url = url
        self._template = body_template
        self._authorization = authorization
        self._timeout = timeout
        self._content_type = content_type
        self._ssl_context = ssl_context

    @classmethod
    def from_settings(cls, settings: Settings) -> SmsChannel:
        """Built from settings; the gateway shares ``webhook_timeout_seconds`` with webhooks."""
        return cls(
            settings.sms_url,
            settings.sms_body_template,
            authorization=settings.sms_authorization,
            timeout=settings.webhook_timeout_seconds,
        )

    def body(self, notification: Notification) -> bytes:
        """The request body for ``notification``: the template filled in, UTF-8."""
        text = sms_text(notification.subject, notification.body)
        return self._template.format(
            to=_json_escaped(notification.target), text=_json_escaped(text)
        ).encode("utf-8")

    def deliver(self, notification: Notification) -> None:
        headers = {"Content-Type": self._content_type}
        if self._authorization:
            headers["Authorization"] = self._authorization
        status = http_post(
            self._url,
            self.body(notification),
            headers,
            timeout=self._timeout,
            channel=f"sms to {notification.target}",
            ssl_context=self._ssl_context,
        )
        log.info(
            "page delivered",
            extra={
                "channel": "sms",
                "page_id": notification.page_id,
                "alert_id": str(notification.alert_id),
                "status": status,
            },
        )
