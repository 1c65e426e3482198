"""The canonical model: what every parser produces and every later stage reads.

Parsers (HL7 ORU today; ASTM and DICOM later) turn bytes into these values, and mapping, matching,
interpretation and persistence work on them alone (CONVENTIONS.md §1). They are frozen, slotted
dataclasses so a value can be shared between stages, cached and compared without defensive copies,
and they hold no I/O and no ORM objects. Names follow the diagnostics schema
(``store/models/reports.py``, ``patients.py``, ``orders.py``) where a column exists, and the enums
mirror its values, so persisting is a field-by-field copy; the ORM is deliberately not imported.

Received text is kept as received (unescaped): a value that could not be read as a number stays in
``value_text`` with ``value_numeric`` None, so nothing a lab sent is lost by parsing.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Literal, NamedTuple

__all__ = [
    "AnalyzerMessage",
    "Attachment",
    "Coded",
    "Comparator",
    "CriticalFinding",
    "HostQuery",
    "Identifier",
    "Observation",
    "OrderRef",
    "ParsedMessage",
    "PatientRef",
    "QcRun",
    "Report",
    "ReportStatus",
    "ResultStatus",
    "Sex",
]

Comparator = Literal["<", ">", "<=", ">=", "="]
"""How a value relates to its number: ``<0.5`` is below 0.5, not 0.5 (HL7 SN component 1)."""


class Sex(enum.Enum):
    """Sex and neuter status. The store uses this very enum for its columns."""

    MALE = "male"
    FEMALE = "female"
    MALE_NEUTERED = "male_neutered"
    FEMALE_SPAYED = "female_spayed"
    UNKNOWN = "unknown"


class ReportStatus(enum.Enum):
    """A report's status (from OBR-25). The store uses this very enum for its columns."""

    PRELIMINARY = "preliminary"
    FINAL = "final"
    CORRECTED = "corrected"
    CANCELLED = "cancelled"


class ResultStatus(enum.Enum):
    """A result's status (from OBX-11). The store uses this very enum for its columns.

    ``SUPERSEDED`` is never produced by a parser: persistence sets it on the version a correction
    replaces.
    """

    PRELIMINARY = "preliminary"
    FINAL = "final"
    CORRECTED = "corrected"
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"


class Identifier(NamedTuple):
    """One patient identifier as sent: the value, who assigned it, and its HL7 table 0203 type.

    Every identifier is kept (not only the ones recognised as PMS id or microchip) so a technician
    resolving an unmatched report sees what the lab sent, and matching can be re-run later.
    """

    value: str
    authority: str | None
    type_code: str | None


@dataclass(frozen=True, slots=True)
class Coded:
    """A coded value (HL7 CE/CWE): code, display text and coding system, each None when absent.

    Kept whole rather than as text alone because the mapper resolves codes (a SNOMED CT breed code
    names a species too), while people read the text.
    """

    code: str | None
    text: str | None
    system: str | None

    @property
    def display(self) -> str | None:
        """The text, else the code: what a person should be shown."""
        return self.text or self.code


@dataclass(frozen=True, slots=True)
class PatientRef:
    """The animal as the sender identified it. The gateway owns no patients (the PMS does), so this
    is a set of clues for matching, never a record."""

    pms_id: str | None = None
    microchip: str | None = None
    identifiers: tuple[Identifier, ...] = ()
    name: str | None = None
    owner_surname: str | None = None
    species: Coded | None = None
    breed: Coded | None = None
    sex: Sex | None = None
    birth_date: date | None = None
    comments: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class OrderRef:
    """The numbers a report carries to find its order: matching tries accession, placer, filler."""

    placer: str | None = None
    filler: str | None = None
    accession: str | None = None


@dataclass(frozen=True, slots=True)
class Attachment:
    """An embedded document (HL7 ED), e.g. the lab's PDF report, stored beside the results.

    ``data`` is the decoded bytes when the encoding was understood (Base64, Hex, plain text), else
    None; the text as received is in the owning observation's ``value_text`` either way.
    """

    media_type: str | None
    encoding: str | None
    data: bytes | None


@dataclass(frozen=True, slots=True)
class Observation:
    """One result (HL7 OBX). The lab's unit, range and flags are kept verbatim; interpretation
    against our own reference intervals happens later and never overwrites them.

    For SN ratios and ranges (``1:256``, ``2-5``) ``value_numeric`` is None and the parts are in
    ``sn_first``, ``sn_separator`` and ``sn_second``: a titre is not one number.
    """

    set_id: int | None
    sub_id: str | None
    value_type: str
    code: str
    code_text: str | None
    coding_system: str | None
    value_text: str
    value_numeric: Decimal | None = None
    comparator: Comparator | None = None
    sn_first: Decimal | None = None
    sn_separator: str | None = None
    sn_second: Decimal | None = None
    value_coded: Coded | None = None
    unit: str | None = None
    reference_range: str | None = None
    range_low: Decimal | None = None
    range_high: Decimal | None = None
    abnormal_flags: tuple[str, ...] = ()
    status: ResultStatus | None = None
    status_code: str | None = None
    observed_at: datetime | None = None
    comments: tuple[str, ...] = ()
    attachment: Attachment | None = None


@dataclass(frozen=True, slots=True)
class Report:
    """One diagnostic report (HL7 OBR with its OBX): the unit that is matched to an order."""

    order: OrderRef
    patient: PatientRef
    service_code: str | None
    service_text: str | None
    status: ReportStatus | None
    status_code: str | None
    observed_at: datetime | None
    reported_at: datetime | None
    observations: tuple[Observation, ...] = ()
    comments: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """A whole inbound message in canonical form, with the header fields logs and ACKs refer to."""

    control_id: str
    sending_application: str
    sending_facility: str
    message_type: str
    version: str
    reports: tuple[Report, ...] = ()
    comments: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CriticalFinding:
    """A result beyond a critical limit, as the pipeline hands it to alerting (issue 5).

    ``patient_label`` is what a page may show: the animal as matched, or, for a report still in
    the unmatched queue, "unmatched patient" with the identifiers the lab sent (RELIABILITY R38:
    matching must never delay a critical page). ``flag`` is ``critical_low`` or
    ``critical_high``; ``limit`` the critical limit crossed, in ``unit``.
    """

    report_id: uuid.UUID
    result_id: int | None
    test_id: uuid.UUID | None
    test_code: str
    test_name: str | None
    value_text: str
    value: Decimal | None
    unit: str | None
    flag: str
    limit: Decimal | None
    patient_id: uuid.UUID | None
    patient_label: str
    matched: bool
    clinic_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class QcRun:
    """A control run an analyzer sent (recognised by its driver's convention: processing id,
    action code, specimen type or a QC sample id). Stored as QC results, never as a patient's.

    ``control`` is the control material and level as sent (e.g. ``CTRL MEDIUM``), ``lot`` its
    lot number when the analyzer sends one; the QC store resolves both to its lots.
    """

    sample_id: str | None
    control: str | None
    lot: str | None
    run_at: datetime | None
    observations: tuple[Observation, ...] = ()
    comments: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HostQuery:
    """An analyzer asking the host for the orders of a specimen (LIS2-A2 Q record).

    ``sample_ids`` are the specimen ids of the starting range (Q-3); ``tests`` the universal test
    ids asked for (empty: ``ALL``). ``request_info`` is Q-13's status code (``O``: orders).
    """

    sequence: int
    sample_ids: tuple[str, ...]
    tests: tuple[str, ...] = ()
    request_info: str | None = None


@dataclass(frozen=True, slots=True)
class AnalyzerMessage:
    """One message from an in-house analyzer (an LIS2-A2 H … L message, or a plain-text print)
    in canonical form.

    ``sender`` is the H record's sender id (H-5, first component), by which the gateway tells
    apart analyzers that share a listener; ``instrument`` the rest of H-5 as sent (model,
    version, serial). Patient results are ``reports`` (one per order record, so a message with
    several patients and orders gives several), control runs ``qc_runs``, host queries
    ``queries``.
    """

    sender: str | None
    instrument: str | None = None
    processing_id: str | None = None
    version: str | None = None
    sent_at: datetime | None = None
    reports: tuple[Report, ...] = ()
    qc_runs: tuple[QcRun, ...] = ()
    queries: tuple[HostQuery, ...] = ()
    comments: tuple[str, ...] = ()
