"""Pages as signed JSON POSTs to an http(s) URL, and the one HTTP POST the SMS gateway shares.

The request a receiver gets::

    POST <target>
    Content-Type: application/json
    X-Vetgateway-Timestamp: 1767225600
    X-Vetgateway-Signature: sha256=<hex>

    {"alert_id": "…", "page_id": 7, "level": 1, "subject": "…", "text": "…",
     "acknowledge_url": "https://…" | null, "sent_at": "2026-01-01T00:00:00+00:00"}

The signature is ``HMAC-SHA256(signing_key, timestamp + "." + body)`` over the exact body bytes,
hex-encoded (the scheme GitHub and Stripe webhooks use). Putting the timestamp inside the signed
string stops a captured request from being replayed later: a receiver recomputes the HMAC over
the header's timestamp and the raw body, compares it in constant time, and rejects a timestamp
more than a few minutes from its own clock (and, to be strict, a (timestamp, signature) pair it
has already seen).

One call is one attempt. Retrying, backing off and escalating are the caller's decisions
(``pipeline/pager.py``), so nothing here retries, and redirects are not followed either (a 3xx is
a failure: the signed request is not re-sent somewhere else).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import ssl
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from vetgateway import ack_links
from vetgateway.adapters.notify import Notification
from vetgateway.errors import ConfigError, DeliveryError
from vetgateway.store.models.alerts import PageChannel

if TYPE_CHECKING:
    from vetgateway.config import Settings

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "WebhookChannel", "http_post", "sign"]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Vetgateway-Signature"
TIMESTAMP_HEADER = "X-Vetgateway-Timestamp"

# Only the status line matters; a receiver's body is read (to keep the connection tidy) up to
# this much and then dropped, never logged: it may echo what it was sent.
_RESPONSE_READ_LIMIT = 64 * 1024


def sign(key: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Vetgateway-Signature`` value for ``body`` sent at ``timestamp`` (Unix seconds)."""
    digest = hmac.new(key, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def http_post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: float,
    channel: str,
    ssl_context: ssl.SSLContext | None = None,
) -> int:
    """POST ``body`` to ``url`` once; return the 2xx status or raise ``DeliveryError``.

    ``timeout`` bounds connecting and each read (a socket timeout), not the whole exchange.
    Proxies from the environment are not used: pages go straight to the configured address.
    Error reasons name ``channel``, the host and port and what happened; never the body, and
    never the URL's path or query (they may carry a receiver's token).
    """
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise DeliveryError(f"{channel}: target URL has an invalid port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DeliveryError(f"{channel}: target is not an http(s) URL with a host")
    where = f"{parts.hostname}:{port or (443 if parts.scheme == 'https' else 80)}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(
            parts.hostname,
            port,
            timeout=timeout,
            context=ssl_context or ssl.create_default_context(),
        )
    else:
        connection = http.client.HTTPConnection(parts.hostname, port, timeout=timeout)
    try:
        connection.request("POST", path, body=body, headers=dict(headers))
        response = connection.getresponse()
        response.read(_RESPONSE_READ_LIMIT)
        status, reason = response.status, response.reason
    except TimeoutError:
        raise DeliveryError(f"{channel}: {where} did not answer within {timeout:g} s") from None
    except ssl.SSLError as exc:
        raise DeliveryError(f"{channel}: TLS with {where} failed: {exc}") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise DeliveryError(
            f"{channel}: POST to {where} failed: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        connection.close()
    if not 200 <= status < 300:
        raise DeliveryError(f"{channel}: {where} answered HTTP {status} {reason}".rstrip())
    return status


class WebhookChannel:
    """Delivers a page as one signed JSON POST to ``notification.target``; 2xx means delivered."""

    kind = PageChannel.WEBHOOK

    def __init__(
        self,
        signing_key: bytes | str,
        *,
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        key = signing_key.encode("utf-8") if isinstance(signing_key, str) else signing_key
        if not key:
            raise ConfigError("signing_key: empty; webhook pages must be signed")
        self._key = key
        self._timeout = timeout
        self._ssl_context = ssl_context
        self._clock = clock

    @classmethod
    def from_settings(
        cls, settings: Settings, *, signing_key: bytes | str | None = None
    ) -> WebhookChannel:
        """Built from settings. The key is ``signing_key`` when given, else the one acknowledge
        links use (``ack_links.signing_key``: the setting, or the key generated under
        ``data_dir`` when it is empty), so a receiver configures one shared secret."""
        key = ack_links.signing_key(settings) if signing_key is None else signing_key
        return cls(key, timeout=settings.webhook_timeout_seconds)

    def deliver(self, notification: Notification) -> None:
        sent_at = self._clock().astimezone(UTC)
        body = json.dumps(
            {
                "alert_id": str(notification.alert_id),
                "page_id": notification.page_id,
                "level": notification.level,
                "subject": notification.subject,
                "text": notification.body,
                "acknowledge_url": notification.acknowledge_url,
                "sent_at": sent_at.isoformat(),
            },
            separators=(",", ":"),
        ).encode("utf-8")
        timestamp = str(int(sent_at.timestamp()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._key, timestamp, body),
        }
        status = http_post(
            notification.target,
            body,
            headers,
            timeout=self._timeout,
            channel="webhook",
            ssl_context=self._ssl_context,
        )
        log.info(
            "page delivered",
            extra={
                "channel": "webhook",
                "page_id": notification.page_id,
                "alert_id": str(notification.alert_id),
                "status": status,
            },
        )
