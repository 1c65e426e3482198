"""Which broker delivers pipeline work, chosen by ``VETGATEWAY_BROKER_URL``.

The broker only delivers ids; the database is the queue of record (CONVENTIONS.md §1). So the
embedded default can be an in-memory broker served by a worker inside ``vetgateway run``
(``pipeline/runtime.py``): after a
crash the sweeper re-enqueues whatever the database still shows as unfinished.
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.stub import StubBroker


def create_broker(url: str) -> dramatiq.Broker:
    """Empty → in-memory (served in-process); ``amqp://`` → RabbitMQ; ``redis://`` → Redis."""
    if not url:
        return StubBroker()
    if url.startswith(("amqp://", "amqps://")):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        return RabbitmqBroker(url=url)
    if url.startswith(("redis://", "rediss://")):
        from dramatiq.brokers.redis import RedisBroker

        return RedisBroker(url=url)  # type: ignore[no-untyped-call]
    raise ValueError(f"unsupported broker URL scheme: {url.split(':', 1)[0]}")
