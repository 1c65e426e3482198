"""Assembling the pager for the gateway process: channels from settings, acknowledge links.

A channel is offered only when it is configured: webhooks always (a contact's address is the
URL), email when ``smtp_host`` is set, SMS when ``sms_url`` is set. A contact whose channel is not
configured fails to deliver and the pager falls back to that veterinarian's next contact, so a
half-configured installation still pages whoever it can reach.
"""

from __future__ import annotations

from datetime import timedelta

from vetgateway.ack_links import LinkMaker, signing_key
from vetgateway.adapters.notify import Channel
from vetgateway.adapters.notify.email import EmailChannel
from vetgateway.adapters.notify.sms import SmsChannel
from vetgateway.adapters.notify.webhook import WebhookChannel
from vetgateway.config import Settings
from vetgateway.paging_metrics import PagingMetrics
from vetgateway.pipeline.pager import Pager
from vetgateway.store.db import Database
from vetgateway.store.models import PageChannel

__all__ = ["build_pager", "public_base_url"]


def public_base_url(settings: Settings, http_address: str | None = None) -> str:
    """Where acknowledge links point: ``public_url``, else the address HTTP listens on."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    return (http_address or f"http://{settings.bind}:{settings.http_port}").rstrip("/")


def build_pager(
    settings: Settings, db: Database, *, base_url: str, metrics: PagingMetrics | None = None
) -> Pager:
    key = signing_key(settings)
    channels: dict[PageChannel, Channel] = {
        PageChannel.WEBHOOK: WebhookChannel.from_settings(settings, signing_key=key)
    }
    if settings.smtp_host:
        channels[PageChannel.EMAIL] = EmailChannel.from_settings(settings)
    if settings.sms_url:
        channels[PageChannel.SMS] = SmsChannel.from_settings(settings)
    link = LinkMaker(key, base_url, ttl=timedelta(hours=settings.ack_link_ttl_hours))
    return Pager(
        db,
        channels,
        timeout=timedelta(seconds=settings.escalation_timeout_seconds),
        poll=settings.pager_poll_seconds,
        link_maker=link,
        default_clinic=settings.default_clinic,
        metrics=metrics,
    )
