"""Outbound notification channels for critical-value pages: webhook, email, SMS gateway.

Each channel speaks one protocol and nothing else: it is handed a ``Notification`` (who, where,
what to say, how to acknowledge) and either delivers it or raises ``DeliveryError`` with a reason
a person can act on. Deciding whom to page, when, and what to do after a failure is escalation's
job (``pipeline/escalation.py``, ``pipeline/pager.py``), not the channel's.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

from vetgateway.store.models.alerts import PageChannel

__all__ = ["Channel", "Notification"]


@dataclass(frozen=True, slots=True)
class Notification:
    """One page to one address. ``acknowledge_url`` is the signed, expiring link (or None)."""

    alert_id: uuid.UUID
    page_id: int
    level: int
    channel: PageChannel
    target: str
    subject: str
    body: str
    acknowledge_url: str | None


class Channel(Protocol):
    """Delivers notifications of one kind; raises ``vetgateway.errors.DeliveryError``."""

    kind: PageChannel

    def deliver(self, notification: Notification) -> None: ...
