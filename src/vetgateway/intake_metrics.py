"""Prometheus collectors for intake, shared by every listener: what arrived, how it was answered,
how commits were grouped, and what went wrong at the transport level.

Registered on the app's registry (``api/metrics.py``), so ``GET /metrics`` exports them with the
HTTP metrics.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from vetgateway.adapters.hl7.intake import IntakeResult

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class IntakeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.hl7_messages = Counter(
            "vetgateway_hl7_messages",
            "HL7 v2 messages answered, by channel and acknowledgement code (AR 207 = not stored).",
            ("channel", "code"),
            registry=registry,
        )
        self.hl7_resends = Counter(
            "vetgateway_hl7_resends",
            "HL7 v2 resends of a stored message, answered with the original acknowledgement.",
            ("channel",),
            registry=registry,
        )
        self.analyzer_messages = Counter(
            "vetgateway_analyzer_messages",
            "Analyzer messages stored, by channel, device (as configured; 'unknown' when none"
            " matched) and whether they were quarantined.",
            ("channel", "device", "quarantined"),
            registry=registry,
        )
        self.inbox_batch = Histogram(
            "vetgateway_inbox_commit_batch_size",
            "Messages per inbox commit (group commit).",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.incidents = Counter(
            "vetgateway_transport_incidents",
            "Refused connections, TLS refusals, frame timeouts and oversized messages, by kind.",
            ("kind",),
            registry=registry,
        )

    def observe_analyzer(self, channel: str, device: str | None, quarantined: bool) -> None:
        label = "true" if quarantined else "false"
        self.analyzer_messages.labels(channel, device or "unknown", label).inc()

    def observe_hl7(self, channel: str, result: IntakeResult) -> None:
        self.hl7_messages.labels(channel, result.code).inc()
        if result.duplicate:
            self.hl7_resends.labels(channel).inc()
