"""The errors vetgateway raises on purpose, in one tree.

::

    VetgatewayError
    ├── ConfigError          a setting is missing or invalid; start-up stops with one line naming it
    ├── StorageError         the database could not make a write durable; the peer must not be ACKed
    │   └── StorageUnavailable   the database is unreachable right now (retry later)
    ├── BrokerUnavailable    the message broker (RabbitMQ, Redis) does not answer right now
    ├── DeliveryError        a page could not be delivered on one channel (escalation goes on)
    └── ParseError           the input is malformed; carries a reason a human can act on

Third-party errors (SQLAlchemy, psycopg, pika, redis, pyserial, pynetdicom) are translated into
these at one boundary each, with ``raise ... from exc``; any other exception escaping a component
is our bug.
"""

from __future__ import annotations

import os


class VetgatewayError(Exception):
    """Base of every error vetgateway raises deliberately."""


class ConfigError(VetgatewayError):
    """A setting is invalid; the message names the setting and what is wrong with it."""


class ListenerUnavailable(VetgatewayError):
    """A listener cannot open its address (another process holds the port, or the address is
    not this host's). The message names the listener, the address and the setting to change."""

    @classmethod
    def of(cls, what: str, host: str, port: int, setting: str, exc: OSError) -> ListenerUnavailable:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        return cls(f"cannot listen for {what} on {host}:{port} ({setting}): {reason}")


class StorageError(VetgatewayError):
    """A write could not be made durable. Whoever sent the data must not be told it was stored."""


class StorageUnavailable(StorageError):
    """The database did not answer (down, unreachable, disk full); the sender should retry later."""


class BrokerUnavailable(VetgatewayError):
    """The configured broker did not answer; the message says which one and why (no secrets)."""


class DeliveryError(VetgatewayError):
    """A notification was not delivered; the message says where and why (never the content)."""


class ParseError(VetgatewayError):
    """Malformed input. ``reason`` is written for the sender's interface analyst."""

    def __init__(self, reason: str, *, location: str | None = None) -> None:
        super().__init__(reason if location is None else f"{location}: {reason}")
        self.reason = reason
        self.location = location
