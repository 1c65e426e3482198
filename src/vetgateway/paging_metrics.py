"""Prometheus collectors for critical-value paging (issue 5): how fast the first page goes out,
how fast someone acknowledges, and what the channels do.

One ``PagingMetrics`` per registry: the gateway builds it on its shared registry and hands it to
both the pager and the API app (``create_app(paging_metrics=...)``), so ``GET /metrics`` shows
the pager's and the acknowledgement endpoints' series together. Latencies are measured from the
alert's ``created_at`` (the time the critical value was raised) on the observer's clock, and a
negative difference (clock skew between processes) is recorded as 0.
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["PagingMetrics"]

# Seconds. A first page should leave within a poll period or two; an acknowledgement may take
# several escalation timeouts (minutes to hours).
FIRST_PAGE_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
ACK_BUCKETS = (30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0)


def _seconds(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds())


class PagingMetrics:
    """The paging collectors, registered on ``registry`` (once per registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.time_to_first_page = Histogram(
            "vetgateway_alert_time_to_first_page_seconds",
            "Time from a critical alert being raised to its first page being sent, in seconds.",
            buckets=FIRST_PAGE_BUCKETS,
            registry=registry,
        )
        self.time_to_acknowledge = Histogram(
            "vetgateway_alert_time_to_acknowledge_seconds",
            "Time from a critical alert being raised to its acknowledgement, in seconds, "
            "by how it was acknowledged (api, link).",
            ("via",),
            buckets=ACK_BUCKETS,
            registry=registry,
        )
        self.alerts_opened = Counter(
            "vetgateway_alerts_opened",
            "Alerts taken up by the pager, counted once per alert at its first escalation round, "
            "by kind.",
            ("kind",),
            registry=registry,
        )
        self.pages_sent = Counter(
            "vetgateway_pages_sent",
            "Pages a channel accepted, by channel.",
            ("channel",),
            registry=registry,
        )
        self.pages_failed = Counter(
            "vetgateway_pages_failed",
            "Pages given up after their last delivery attempt (not cancellations), by channel.",
            ("channel",),
            registry=registry,
        )
        self.delivery_errors = Counter(
            "vetgateway_page_delivery_errors",
            "Delivery attempts that failed (each may be retried), by channel.",
            ("channel",),
            registry=registry,
        )

    def alert_opened(self, kind: str) -> None:
        self.alerts_opened.labels(kind).inc()

    def page_sent(self, channel: str, *, first_for: datetime | None, at: datetime) -> None:
        """A page went out; ``first_for`` is the alert's raise time when it is the alert's
        first sent page (else None)."""
        self.pages_sent.labels(channel).inc()
        if first_for is not None:
            self.time_to_first_page.observe(_seconds(first_for, at))

    def delivery_failed(self, channel: str) -> None:
        self.delivery_errors.labels(channel).inc()

    def page_given_up(self, channel: str) -> None:
        self.pages_failed.labels(channel).inc()

    def acknowledged(self, via: str, *, raised_at: datetime, at: datetime) -> None:
        self.time_to_acknowledge.labels(via).observe(_seconds(raised_at, at))
