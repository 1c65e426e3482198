"""ORU^R01 (HL7 v2.3 to v2.5.1) into the canonical model: ``parse_oru(raw) -> ParsedMessage``.

Pure: bytes in, frozen values out, built on the lazy ER7 reader. The message is walked once, in
order; the groups of ORU_R01 (PATIENT_RESULT = PID …, ORDER_OBSERVATION = ORC? OBR … OBX …) are
recognised by their leading segments rather than validated (``validate.validate_message`` explains
structure errors with hl7apy). Each OBX is read by ``obx.read_observation``, the hot path.

Decisions, each one a place a lab may disagree with us:

- **Groups.** PID starts a patient group; every OBR starts a report belonging to the current
  patient (an empty ``PatientRef`` before any PID). An ORC fills placer/filler numbers its OBR
  lacks, for every OBR until the next ORC or PID. OBX belong to the latest OBR, including OBX
  after SPM (v2.5.1 specimen observations). NTE belong to the latest PID, OBR or OBX (after an
  ORC: to the OBR that follows); NTE before any of them are message comments. Other segments
  (SFT, PV1, TQ1, SPM, CTI, Z…) are skipped.
- **Identifiers.** PID-2, PID-3 and PID-4 repetitions are all kept with authority and type code.
  PMS id: the first of type PI or PT, else the first MR (at a practice the medical record number
  is the PMS patient number), unless the sender is configured otherwise (``parse/sources.py``:
  the identifier with no type code, or the one from a named assigning authority). Microchip:
  type MC (note: HL7 table 0203 defines MC as a Medicare number; vet labs use it for the chip)
  or any value of exactly 15 digits (ISO 11784/11785).
- **Name and owner.** PID-5, the first repetition with a family or given name. Vet labs write
  ``OwnerSurname^AnimalName``, so the animal's name is the given name (the family name when no
  given name is sent) and the owner surname is the family name of NK1 with relationship ``OWN``
  (HL7 table 0063), else PID-5's family name when a given name is present.
- **Species and breed.** PID-35 and PID-36 (v2.5.1) as coded values, kept as sent: the mapper
  turns codes into the catalogue's species words (the ELR rabies example puts a breed code in
  PID-35). Else an OBX whose OBX-3 identifier or text is ``SPECIES``/``PATIENT SPECIES``/
  ``ANIMAL SPECIES`` or ``BREED``/``PATIENT BREED``/``ANIMAL BREED`` (case-insensitive) fills the
  gap; that OBX also stays in the report as an observation.
- **Sex** (PID-8): M, F; MN, MC, CM, NM, C, N → male neutered; FS, SF, FN, NF, S → female spayed;
  any other non-empty code → unknown; empty → None.
- **Accession**: OBR-18 (placer field 1), else OBR-20 (filler field 1), else the filler number.
- **Timestamps** (TS/DTM, ``YYYY[MM[DD[HH[MM[SS[.S…]]]]]][+/-ZZZZ]``): missing parts are the
  earliest; a timestamp without an offset is the sender's local time (HL7 v2), read in the
  sender's zone where one is configured (``parse/sources.py``), else in the ``zone`` given (the
  clinic's, ``VETGATEWAY_TIMEZONE``; UTC if none); an invalid one is None.
- **Numbers**: ``[<|>|<=|>=|=] number`` in NM, ST and SN; SN components
  ``comparator^num1^separator^num2`` with a ratio or range leaving ``value_numeric`` None. Anything
  else keeps its text with ``value_numeric`` None.
- **Ranges** (OBX-7): ``a-b``, ``a - b``, ``a_b`` (GHH), negatives (``-3-3``), ``<x``/``<=x``
  (high only), ``>x``/``>=x`` (low only). Anything else is kept as text with no limits.

Raises ``ParseError`` whose ``location`` names segment and field for what cannot be used: not an
ORU (MSH-9), an OBX before any OBR (OBX-3 named as the observation it orphans), an empty OBX-3
(identifier, alternate identifier and text all empty; a text-only OBX-3 uses its text as code).
Errors of the ER7 reader (bad escapes, no MSH) pass through; nothing else escapes.

Speed (bench/parse.py, a 20-OBX message, about 70 µs): a third is the 20 OBX, a third the ER7
reader (``read_header``'s MSH checks are a third of that), the rest patient, report and this loop.
Timestamps are parsed once per message and text (a report's results share their times), an OBX's
type, code, unit and reference range once per process and text (``obx._plain_analyte``); an
observation's NTE are attached without copying it (``obx.with_comments``), and only observations
that have NTE get a list for them. Reports, orders and the message are filled in as drafts that then
take the model's class (``_OrderDraft``), as ``obx`` does for observations.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo
from typing import Final

from vetgateway.errors import ParseError
from vetgateway.model import (
    Coded,
    Observation,
    OrderRef,
    ParsedMessage,
    PatientRef,
    Report,
    ReportStatus,
)
from vetgateway.pipeline.parse.demographics import demographic_kind
from vetgateway.pipeline.parse.er7 import Segment, parse_er7
from vetgateway.pipeline.parse.obx import read_coded, read_observation, with_comments
from vetgateway.pipeline.parse.pid import read_patient
from vetgateway.pipeline.parse.sources import NO_PROFILES, SourceProfiles
from vetgateway.pipeline.parse.values import TimestampMemo

__all__ = ["parse_oru"]

# HL7 table 0123 (OBR-25).
_REPORT_STATUS: Final = {
    "F": ReportStatus.FINAL,
    "C": ReportStatus.CORRECTED,
    "X": ReportStatus.CANCELLED,
    **dict.fromkeys(("O", "I", "S", "A", "P", "R", "Y", "Z"), ReportStatus.PRELIMINARY),
}
_NO_PATIENT: Final = PatientRef()  # reports before any PID (frozen, so one can be shared)


def _opt(text: str) -> str | None:
    text = text.strip()
    return text or None


def _first(seg: Segment, n: int) -> str | None:
    """Component 1 of field ``n`` (an EI's entity identifier, a CE's code …), None when empty."""
    return _opt(seg.component(n, 1))


class _OrderDraft:
    """An OrderRef being filled in; like ``obx._Draft``, it then takes the model's class.

    A frozen dataclass's ``__init__`` stores each field through ``object.__setattr__``: for the
    three objects of each report below that was a tenth of parse_oru, plain stores are ten times
    cheaper. The declarations are the model's, for mypy; a test checks that they stay the same.
    """

    __slots__ = OrderRef.__slots__
    placer: str | None
    filler: str | None
    accession: str | None


class _ReportDraft:
    """A Report being filled in (see ``_OrderDraft``)."""

    __slots__ = Report.__slots__
    order: OrderRef
    patient: PatientRef
    service_code: str | None
    service_text: str | None
    status: ReportStatus | None
    status_code: str | None
    observed_at: datetime | None
    reported_at: datetime | None
    observations: tuple[Observation, ...]
    comments: tuple[str, ...]


class _MessageDraft:
    """A ParsedMessage being filled in (see ``_OrderDraft``)."""

    __slots__ = ParsedMessage.__slots__
    control_id: str
    sending_application: str
    sending_facility: str
    message_type: str
    version: str
    reports: tuple[Report, ...]
    comments: tuple[str, ...]


@dataclass(slots=True)
class _ReportBuilder:
    obr: Segment
    orc: Segment | None
    observations: list[Observation] = field(default_factory=list)
    # The NTE after an observation, by its index: only for those that have any.
    observation_notes: list[tuple[int, list[str]]] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _PatientGroup:
    patient: PatientRef
    reports: list[_ReportBuilder] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    obx_species: Coded | None = None
    obx_breed: Coded | None = None


def _nte_text(seg: Segment) -> str:
    return "\n".join(seg.repetitions(3))


def _demographic_value(obs: Observation) -> Coded | None:
    """The species or breed a lab's demographic OBX carries, coded or as text."""
    if obs.value_coded is not None:
        return obs.value_coded
    text = obs.value_text.strip()
    return Coded(None, text, None) if text else None


def _order(placer: str | None, filler: str | None, accession: str | None) -> OrderRef:
    order = _OrderDraft()
    order.placer, order.filler, order.accession = placer, filler, accession
    order.__class__ = OrderRef  # type: ignore[assignment]  # published: see _OrderDraft
    return order  # type: ignore[return-value]


def _report(builder: _ReportBuilder, patient: PatientRef, timestamps: TimestampMemo) -> Report:
    obr, orc = builder.obr, builder.orc
    for index, notes in builder.observation_notes:
        with_comments(builder.observations[index], notes)
    placer = _first(obr, 2) or (_first(orc, 2) if orc is not None else None)
    filler = _first(obr, 3) or (_first(orc, 3) if orc is not None else None)
    accession = _first(obr, 18) or _first(obr, 20) or filler
    service = read_coded(obr, 4)
    status_code = _opt(obr.component(25, 1))
    report = _ReportDraft()
    report.order = _order(placer, filler, accession)
    report.patient = patient
    report.service_code = service.code if service else None
    report.service_text = service.text if service else None
    report.status = _REPORT_STATUS.get(status_code.upper()) if status_code else None
    report.status_code = status_code
    report.observed_at = timestamps[obr.component(7, 1)]
    report.reported_at = timestamps[obr.component(22, 1)]
    report.observations = tuple(builder.observations)
    report.comments = tuple(builder.comments)
    report.__class__ = Report  # type: ignore[assignment]
    return report  # type: ignore[return-value]


def _finish(group: _PatientGroup, timestamps: TimestampMemo) -> list[Report]:
    patient = group.patient
    if patient.species is None and group.obx_species is not None:
        patient = replace(patient, species=group.obx_species)
    if patient.breed is None and group.obx_breed is not None:
        patient = replace(patient, breed=group.obx_breed)
    if group.comments:
        patient = replace(patient, comments=tuple(group.comments))
    return [_report(b, patient, timestamps) for b in group.reports]


def parse_oru(
    raw: bytes, *, zone: tzinfo = UTC, profiles: SourceProfiles = NO_PROFILES
) -> ParsedMessage:
    """Parse one ORU^R01 message; raise ``ParseError`` naming segment and field if unusable.
    Timestamps without an offset are in the sender's zone (``profiles``), else in ``zone``
    (``values.parse_datetime``); the PMS id is found by the sender's rule."""
    message = parse_er7(raw)
    msh = message.segments[0]
    code = msh.component(9, 1).strip().upper()
    event = msh.component(9, 2).strip().upper()
    if code != "ORU" or event not in ("R01", ""):
        raise ParseError(
            f"message type is {msh.field(9)!r}, not ORU^R01; only results are parsed here",
            location=msh.location(9),
        )
    sending_application = msh.component(3, 1).strip()
    sending_facility = msh.component(4, 1).strip()
    profile = profiles.for_sender(sending_facility, sending_application)
    timestamps = TimestampMemo(profile.zone or zone)
    reports: list[Report] = []
    message_comments: list[str] = []
    group = _PatientGroup(_NO_PATIENT)
    orc: Segment | None = None
    orc_notes: list[str] = []  # NTE after an ORC, for the OBR that follows it
    # Where the next NTE goes: the latest PID, OBR or OBX comment list.
    notes: list[str] | None = message_comments  # None: the OBX just read, until an NTE follows
    report: _ReportBuilder | None = None  # the latest OBR's, in the current patient group
    for seg in message.segments[1:]:
        name = seg.name
        if name == "OBX":  # most segments are: tested first
            if report is None:
                raise ParseError(
                    "OBX before any OBR: a result must follow the OBR of its order "
                    "(ORU^R01 ORDER_OBSERVATION group)",
                    location=seg.location(3),
                )
            obs = read_observation(seg, timestamps)
            # code and code_text come stripped; nearly every OBX is decided by these two lookups
            kind = demographic_kind(obs)
            if kind is not None:
                value = _demographic_value(obs)
                if kind == "species" and group.obx_species is None:
                    group.obx_species = value
                elif kind == "breed" and group.obx_breed is None:
                    group.obx_breed = value
            report.observations.append(obs)
            notes = None
        elif name == "NTE":
            if notes is None:  # the first NTE after an OBX: that observation's comments begin
                assert report is not None  # notes is None only right after an OBX
                notes = []
                report.observation_notes.append((len(report.observations) - 1, notes))
            notes.append(_nte_text(seg))
        elif name == "OBR":
            report = _ReportBuilder(seg, orc, comments=orc_notes)
            orc_notes = []
            group.reports.append(report)
            notes = report.comments
        elif name == "PID":
            reports.extend(_finish(group, timestamps))
            group = _PatientGroup(read_patient(seg, profile.pms_id))
            notes = group.comments
            orc = report = None
        elif name == "ORC":
            orc = seg
            notes = orc_notes = []
        elif name == "NK1":
            relation = seg.component(3, 1).strip().upper()
            surname = _opt(seg.component(2, 1))
            if relation == "OWN" and surname:
                group.patient = replace(group.patient, owner_surname=surname)
    reports.extend(_finish(group, timestamps))
    parsed = _MessageDraft()
    parsed.control_id = msh.field(10).strip()
    parsed.sending_application = sending_application
    parsed.sending_facility = sending_facility
    parsed.message_type = msh.field(9).strip()
    parsed.version = msh.component(12, 1).strip()
    parsed.reports = tuple(reports)
    parsed.comments = tuple(message_comments)
    parsed.__class__ = ParsedMessage  # type: ignore[assignment]  # published: see _OrderDraft
    return parsed  # type: ignore[return-value]
