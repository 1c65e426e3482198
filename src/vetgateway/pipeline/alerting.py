"""From interpreted results to critical findings (pure): what the pipeline hands to alerting.

A critical reading always becomes a finding, matched or not: for a report still in the
unmatched queue the page says "unmatched patient" and carries the identifiers the lab sent,
because matching must never delay a critical page (RELIABILITY R38).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from vetgateway.model import CriticalFinding, Report
from vetgateway.pipeline.interpret import Reading
from vetgateway.pipeline.mapping import MappedObservation

__all__ = ["CRITICAL", "critical_findings", "patient_label"]

CRITICAL = frozenset({"critical_low", "critical_high"})


def patient_label(report: Report, species: str | None, *, matched: bool) -> str:
    """What a page may show of the animal: name (species), owner; plus, when unmatched, every
    identifier the lab sent, so the veterinarian can find the animal without the gateway."""
    patient = report.patient
    who = patient.name or "unnamed animal"
    if species:
        who += f" ({species})"
    if patient.owner_surname:
        who += f", owner {patient.owner_surname}"
    if matched:
        return who[:200]
    clues = [
        f"PMS id {patient.pms_id}" if patient.pms_id else "",
        f"microchip {patient.microchip}" if patient.microchip else "",
        f"accession {report.order.accession}" if report.order.accession else "",
    ]
    return ", ".join(["unmatched patient: " + who, *(c for c in clues if c)])[:200]


def critical_findings(
    report: Report,
    pairs: list[tuple[MappedObservation, Reading | None]],
    *,
    report_id: uuid.UUID,
    species: str | None,
    matched: bool,
    patient_id: uuid.UUID | None,
    result_ids: Mapping[tuple[str, str | None], int],
) -> list[CriticalFinding]:
    """One finding per critical reading of the report. ``result_ids`` by (code, sub-id)."""
    label = patient_label(report, species, matched=matched)
    return [
        CriticalFinding(
            report_id=report_id,
            result_id=result_ids.get((m.observation.code[:64], m.observation.sub_id)),
            test_id=m.test_id,
            test_code=m.test_code or m.observation.code,
            test_name=m.test_name or m.observation.code_text,
            value_text=m.observation.value_text,
            value=m.value_numeric,
            unit=m.unit,
            flag=reading.interpretation,
            limit=reading.critical_limit,
            patient_id=patient_id if matched else None,
            patient_label=label,
            matched=matched,
        )
        for m, reading in pairs
        if reading is not None and reading.interpretation in CRITICAL
    ]
