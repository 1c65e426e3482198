"""Acknowledge links: genuine ones verify, tampered and expired ones do not."""

from __future__ import annotations

import base64
import stat
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from vetgateway.ack_links import (
    AckLinkExpired,
    AckLinkInvalid,
    LinkMaker,
    make_token,
    signing_key,
    verify_token,
)
from vetgateway.config import Settings

KEY = b"k" * 32
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ALERT = uuid.UUID("12345678-1234-5678-1234-567812345678")


def _raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def test_round_trip() -> None:
    token = make_token(KEY, ALERT, 42, NOW + timedelta(hours=1))
    assert token.replace("-", "").replace("_", "").isalnum()
    assert verify_token(KEY, token, NOW) == (ALERT, 42)


def test_expired() -> None:
    token = make_token(KEY, ALERT, 42, NOW + timedelta(hours=1))
    assert verify_token(KEY, token, NOW + timedelta(minutes=59)) == (ALERT, 42)
    with pytest.raises(AckLinkExpired) as expired:
        verify_token(KEY, token, NOW + timedelta(hours=1))
    assert expired.value.alert_id == ALERT  # genuine, so its alert can still be looked up


def test_other_key_is_invalid() -> None:
    token = make_token(KEY, ALERT, 42, NOW + timedelta(hours=1))
    with pytest.raises(AckLinkInvalid):
        verify_token(b"x" * 32, token, NOW)


@pytest.mark.parametrize("position", [0, 10, 30, 45, 60, 84])
def test_any_changed_character_is_invalid(position: int) -> None:
    token = make_token(KEY, ALERT, 42, NOW + timedelta(hours=1))
    changed = "A" if token[position] != "A" else "B"
    tampered = token[:position] + changed + token[position + 1 :]
    with pytest.raises(AckLinkInvalid):
        verify_token(KEY, tampered, NOW)


@pytest.mark.parametrize("token", ["", "abc", "!!!!", "é" * 86, "A" * 200])
def test_garbage_is_invalid(token: str) -> None:
    with pytest.raises(AckLinkInvalid):
        verify_token(KEY, token, NOW)


def test_extended_expiry_is_invalid() -> None:
    """The expiry is inside the MAC: a holder cannot extend their link."""
    short = _raw(make_token(KEY, ALERT, 42, NOW - timedelta(seconds=1)))
    longer = _raw(make_token(KEY, ALERT, 42, NOW + timedelta(days=1)))
    spliced = short[:24] + longer[24:32] + short[32:]
    forged = base64.urlsafe_b64encode(spliced).rstrip(b"=").decode()
    with pytest.raises(AckLinkInvalid):
        verify_token(KEY, forged, NOW)


def test_signing_key_from_settings(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, signing_key="configured secret")
    assert signing_key(settings) == b"configured secret"
    assert not (tmp_path / "signing.key").exists()


def test_signing_key_generated_once_with_private_mode(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var")
    first = signing_key(settings)
    assert len(first) == 32
    path = tmp_path / "var" / "signing.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert signing_key(settings) == first


def test_link_maker_builds_a_verifiable_url() -> None:
    maker = LinkMaker(KEY, "https://gw.example.org/", ttl=timedelta(hours=2), clock=lambda: NOW)
    url = maker(ALERT, 7)
    prefix = "https://gw.example.org/api/v1/alerts/ack/"
    assert url.startswith(prefix)
    assert verify_token(KEY, url.removeprefix(prefix), NOW + timedelta(hours=1)) == (ALERT, 7)
