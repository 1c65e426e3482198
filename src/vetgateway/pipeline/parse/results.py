"""Which parser reads a stored result message, chosen by what the intake recorded.

HL7 channels store ``ORU^R01``; analyzer lines store ``ASTM`` or ``TEXT`` with the device's
driver in the message's meta (``adapters/analyzer/intake.py``). Whatever the source, the result
is the same: reports (patient results), QC runs, and the code map's source key under which the
mapping stage looks up their codes. Pure, like the parsers it calls.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, tzinfo
from typing import Any

from vetgateway.analyzers.drivers import driver_named
from vetgateway.errors import ParseError
from vetgateway.model import QcRun, Report
from vetgateway.pipeline.mapping import source_key
from vetgateway.pipeline.parse.oru import parse_oru
from vetgateway.pipeline.parse.sources import NO_PROFILES, SourceProfiles

__all__ = ["ANALYZER_TYPES", "ParsedResults", "parse_results"]

ANALYZER_TYPES = frozenset({"ASTM", "TEXT"})


@dataclass(frozen=True, slots=True)
class ParsedResults:
    """A result message's content, ready for mapping."""

    source: str
    reports: tuple[Report, ...]
    qc_runs: tuple[QcRun, ...] = ()
    device_id: uuid.UUID | None = None
    clinic_id: uuid.UUID | None = None  # the analyzer's clinic; None: not known from the sender


def _meta_id(meta: Mapping[str, Any], key: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(meta[key]))
    except (KeyError, ValueError):
        return None


def parse_results(
    raw: bytes,
    message_type: str | None,
    meta: Mapping[str, Any],
    *,
    zone: tzinfo = UTC,
    profiles: SourceProfiles = NO_PROFILES,
) -> ParsedResults:
    """Parse with the parser the message type (and, for analyzers, the driver) calls for;
    times without an offset are in ``zone``, or the sender's own (``profiles``: an HL7 source's,
    or an analyzer's by the device its meta names).

    Raises ``ParseError`` for content nothing can be made of, including an analyzer message with
    neither results, control runs nor a query (a query alone is answered on the line already).
    """
    if (message_type or "") in ANALYZER_TYPES:
        driver = driver_named(meta.get("driver"), error=ParseError)
        message = driver.parse(raw, zone=profiles.analyzer_zone(meta.get("device")) or zone)
        if not (message.reports or message.qc_runs or message.queries):
            raise ParseError("the message carries no result, control run or query")
        sender = message.sender or str(meta.get("sender_id") or "")
        return ParsedResults(
            source=driver.source or source_key("", sender),
            reports=message.reports,
            qc_runs=message.qc_runs,
            device_id=_meta_id(meta, "device_id"),
            clinic_id=_meta_id(meta, "clinic_id"),
        )
    parsed = parse_oru(raw, zone=zone, profiles=profiles)
    if not parsed.reports:
        raise ParseError("the message carries no report: no OBR segment", location="OBR")
    return ParsedResults(
        source=source_key(parsed.sending_facility, parsed.sending_application),
        reports=parsed.reports,
    )
