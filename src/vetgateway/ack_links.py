"""Signed, expiring acknowledge links for pages.

A token names one page of one alert and when it stops working; it is URL-safe base64 (no
padding) of ``alert_id (16 bytes) ‖ page_id (8, big-endian) ‖ expires (8, Unix seconds) ‖
HMAC-SHA256(key, "vetgateway-ack-v1" ‖ those 32 bytes)``. The domain prefix keeps these MACs
apart from anything else signed with the same key (webhook signatures). Nothing is stored for a
token: the HMAC is the authority, so a token cannot be revoked before it expires — but it only
ever acknowledges, and acknowledging is one-time per alert (a second use finds the alert already
acknowledged and says so).

``signing_key`` gives the key: ``Settings.signing_key`` when set, else 32 random bytes generated
once into ``data_dir/signing.key`` (mode 0600), so links stay valid across restarts and every
process sharing the data directory agrees.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from vetgateway.config import Settings
from vetgateway.errors import VetgatewayError

__all__ = [
    "AckLinkError",
    "AckLinkExpired",
    "AckLinkInvalid",
    "LinkMaker",
    "make_token",
    "signing_key",
    "verify_token",
]

_DOMAIN = b"vetgateway-ack-v1"
_PAYLOAD = 32
_MAC = 32
KEY_FILE = "signing.key"


class AckLinkError(VetgatewayError):
    """An acknowledge link that cannot be used; the message is safe to show its holder."""


class AckLinkInvalid(AckLinkError):
    """Malformed, or not signed with our key (tampered, or from another installation)."""


class AckLinkExpired(AckLinkError):
    """Genuine but past its expiry time. Being genuine, it still names its alert, so the page
    that refuses it can say whether that alert is still open."""

    def __init__(self, message: str, alert_id: uuid.UUID) -> None:
        super().__init__(message)
        self.alert_id = alert_id


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, _DOMAIN + payload, hashlib.sha256).digest()


def make_token(key: bytes, alert_id: uuid.UUID, page_id: int, expires_at: datetime) -> str:
    """A URL-safe token for acknowledging ``alert_id`` from page ``page_id`` until
    ``expires_at`` (timezone-aware; whole seconds)."""
    if expires_at.tzinfo is None:
        raise ValueError("expires_at must be timezone-aware")
    payload = (
        alert_id.bytes
        + page_id.to_bytes(8, "big", signed=False)
        + int(expires_at.timestamp()).to_bytes(8, "big", signed=True)
    )
    return base64.urlsafe_b64encode(payload + _mac(key, payload)).rstrip(b"=").decode("ascii")


def verify_token(key: bytes, token: str, now: datetime) -> tuple[uuid.UUID, int]:
    """``(alert_id, page_id)`` of a genuine, unexpired token; raises ``AckLinkInvalid`` or
    ``AckLinkExpired``. The signature is checked first, so an expired forgery is "invalid"."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (ValueError, UnicodeEncodeError):
        raise AckLinkInvalid("this acknowledge link is not valid") from None
    if len(raw) != _PAYLOAD + _MAC:
        raise AckLinkInvalid("this acknowledge link is not valid")
    payload, mac = raw[:_PAYLOAD], raw[_PAYLOAD:]
    if not hmac.compare_digest(mac, _mac(key, payload)):
        raise AckLinkInvalid("this acknowledge link is not valid")
    expires = int.from_bytes(payload[24:32], "big", signed=True)
    alert_id = uuid.UUID(bytes=payload[:16])
    if now.timestamp() >= expires:
        raise AckLinkExpired("this acknowledge link has expired", alert_id)
    return alert_id, int.from_bytes(payload[16:24], "big")


def signing_key(settings: Settings) -> bytes:
    """The HMAC key (see the module doc). Creating the file is race-free across processes."""
    if settings.signing_key:
        return settings.signing_key.encode("utf-8")
    path = Path(settings.data_dir) / KEY_FILE
    try:
        return bytes.fromhex(path.read_text("ascii").strip())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race; use its key
        return bytes.fromhex(path.read_text("ascii").strip())
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(key.hex() + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return key


class LinkMaker:
    """``link_maker(alert_id, page_id) -> URL`` for the pager: ``{base}/api/v1/alerts/ack/{token}``
    valid for ``ttl`` from the clock's now."""

    def __init__(
        self,
        key: bytes,
        base_url: str,
        *,
        ttl: timedelta,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._key = key
        self._base = base_url.rstrip("/")
        self._ttl = ttl
        self._clock = clock

    def __call__(self, alert_id: uuid.UUID, page_id: int) -> str:
        token = make_token(self._key, alert_id, page_id, self._clock() + self._ttl)
        return f"{self._base}/api/v1/alerts/ack/{token}"
