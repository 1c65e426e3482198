"""Is the configured broker reachable? Used by ``GET /readyz``; blocking, so call it in a thread.

Each probe opens a fresh connection with short timeouts and closes it again, so a broker that has
gone away is noticed within about ``timeout`` seconds instead of the client libraries' defaults
(pika's 15 s stack timeout, redis-py's retries with back-off).
"""

from __future__ import annotations

import contextlib
from urllib.parse import urlsplit

import pika
import pika.exceptions
import redis
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

from vetgateway.errors import BrokerUnavailable

DEFAULT_TIMEOUT = 2.0


def describe(url: str) -> str:
    """``scheme://host:port/path`` without credentials, fit for logs and error messages."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def check_broker(url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Return if the broker at ``url`` accepts a connection; raise BrokerUnavailable otherwise.

    An empty URL is the in-process broker, which is always there while the process runs.
    """
    if not url:
        return
    if url.startswith(("amqp://", "amqps://")):
        _check_rabbitmq(url, timeout)
    elif url.startswith(("redis://", "rediss://")):
        _check_redis(url, timeout)
    else:
        raise BrokerUnavailable(f"unsupported broker URL scheme: {url.split(':', 1)[0]}")


def _check_rabbitmq(url: str, timeout: float) -> None:
    params = pika.URLParameters(url)
    params.socket_timeout = timeout
    params.blocked_connection_timeout = timeout
    params.stack_timeout = timeout * 2
    params.connection_attempts = 1
    params.retry_delay = 0
    try:
        connection = pika.BlockingConnection(params)
    except (pika.exceptions.AMQPError, OSError) as exc:
        raise BrokerUnavailable(
            f"RabbitMQ at {describe(url)} is unreachable: {_reason(exc)}"
        ) from exc
    # Connected and authenticated is all readiness needs; a failed close changes nothing.
    with contextlib.suppress(pika.exceptions.AMQPError):
        connection.close()


def _check_redis(url: str, timeout: float) -> None:
    client = redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        client.ping()
    except (redis.exceptions.RedisError, OSError) as exc:
        raise BrokerUnavailable(f"Redis at {describe(url)} is unreachable: {_reason(exc)}") from exc
    finally:
        client.close()


def _reason(exc: BaseException) -> str:
    """pika often wraps the useful error (refused, timed out, auth) with an empty message."""
    text = str(exc).strip()
    if not text or text == "()":
        cause = exc.args[0] if exc.args else None
        text = repr(cause) if cause is not None else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
