"""The inbox's own SHA-256 (fed in pieces to keep the GIL) is plain SHA-256."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vetgateway.store.inbox import sha256_hex


@given(st.binary(max_size=10_000))
def test_equals_hashlib_for_any_bytes(raw: bytes) -> None:
    assert sha256_hex(raw) == hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize(
    "size", [0, 1, 2046, 2047, 2048, 4094, 4095, 5173, 65_535, 65_536, 65_537, 200_000]
)
def test_equals_hashlib_around_the_piece_and_threshold_sizes(size: int) -> None:
    raw = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert len(raw) == size
    assert sha256_hex(raw) == hashlib.sha256(raw).hexdigest()
