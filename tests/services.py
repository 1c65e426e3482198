"""Finding the real services the integration tests need, and the skip-or-fail rule.

Without a service a test skips and says which one is missing; with ``CI=true`` the same absence is
a failure, so CI can never go green by skipping everything that matters.
"""

from __future__ import annotations

import os
import socket

import pytest

POSTGRES = ("PostgreSQL", "127.0.0.1", 5432)
RABBITMQ = ("RabbitMQ", "127.0.0.1", 5672)
REDIS = ("Redis", "127.0.0.1", 6379)

POSTGRES_ADMIN_URL = os.environ.get(
    "VETGATEWAY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def answers(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require(service: tuple[str, str, int]) -> None:
    """Skip the calling test (fail it under CI=true) unless the service accepts connections."""
    name, host, port = service
    if answers(host, port):
        return
    reason = f"{name} is not answering on {host}:{port}"
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing service is a failure)")
    pytest.skip(reason)
