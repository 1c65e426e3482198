"""What an analyzer-simulator run counted, and its summary as text (pure).

The summary is what a person reads after a run and what a script greps, so its wording is stable:
``sent N, acknowledged N, failed N (N expected), retransmissions N, NAKs received N`` first, and
``result: ok`` or ``result: FAILED: …`` last.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vetgateway.adapters.astm.simulator_faults import FaultKind
from vetgateway.adapters.astm.simulator_station import LinkStats

__all__ = ["MessageOutcome", "SimulationReport", "format_summary"]


@dataclass(frozen=True, slots=True)
class MessageOutcome:
    """What became of message ``number`` (from 1, over the whole run)."""

    number: int
    delivered: bool
    reason: str | None  # why not delivered: too_many_naks, timeout, line lost
    faults: frozenset[FaultKind]
    failure_expected: bool
    attempts: int

    @property
    def unexpected(self) -> bool:
        """A failure nobody planned, or a delivery that should have failed (a gateway that
        accepted a frame with a bad checksum six times)."""
        return self.delivered == self.failure_expected


@dataclass(slots=True)
class SimulationReport:
    """Everything counted over a run; ``format_summary`` renders it."""

    outcomes: list[MessageOutcome] = field(default_factory=list)
    stats: LinkStats = field(default_factory=LinkStats)
    replies: list[bytes] = field(default_factory=list)
    replies_missing: int = 0
    reconnects: int = 0
    drops: int = 0
    corrupted_frames: int = 0
    garbled_acks: int = 0
    noise_bytes: int = 0
    line_error: str | None = None

    @property
    def sent(self) -> int:
        return len(self.outcomes)

    @property
    def acknowledged(self) -> int:
        return sum(o.delivered for o in self.outcomes)

    @property
    def failed(self) -> int:
        return self.sent - self.acknowledged

    @property
    def expected_failures(self) -> int:
        return sum(not o.delivered and o.failure_expected for o in self.outcomes)

    @property
    def unexpected(self) -> int:
        return sum(o.unexpected for o in self.outcomes)

    @property
    def ok(self) -> bool:
        """True when every message went as planned and every expected reply came."""
        return not self.unexpected and not self.replies_missing and self.line_error is None


def format_summary(report: SimulationReport) -> str:
    """The run in four lines, for a person and for scripts that grep it."""
    s = report.stats
    verdict = "ok"
    if not report.ok:
        problems = [f"{report.unexpected} message(s) went unexpectedly"]
        if report.replies_missing:
            problems.append(f"{report.replies_missing} reply(ies) missing")
        if report.line_error:
            problems.append(f"line: {report.line_error}")
        verdict = "FAILED: " + "; ".join(problems)
    return "\n".join(
        [
            f"sent {report.sent}, acknowledged {report.acknowledged}, failed {report.failed}"
            f" ({report.expected_failures} expected), retransmissions {s.retransmissions},"
            f" NAKs received {s.naks_received}",
            f"faults injected: corrupted frames {report.corrupted_frames}, garbled ACKs"
            f" {report.garbled_acks}, dropped connections {report.drops}, noise bytes"
            f" {report.noise_bytes}",
            f"link: contentions {s.contentions}, ENQ refused {s.enq_refused}, interrupted"
            f" {s.interruptions}, reconnects {report.reconnects}, replies {len(report.replies)}"
            f" (missing {report.replies_missing})",
            f"result: {verdict}",
        ]
    )
