"""ORU^R01 (HL7 v2.3 to v2.5.1) into the canonical model: ``parse_oru(raw) -> ParsedMessage``.

Pure: bytes in, frozen values out, built on the lazy ER7 reader. The message is walked once, in
order; the groups of ORU_R01 (PATIENT_RESULT = PID …, ORDER_OBSERVATION = ORC? OBR … OBX …) are
recognised by their leading segments rather than validated (hl7apy explains structure errors).

Decisions, each one a place a lab may disagree with us:

- **Groups.** PID starts a patient group; every OBR starts a report belonging to the current
  patient (an empty ``PatientRef`` before any PID). An ORC fills placer/filler numbers its OBR
  lacks, for every OBR until the next ORC or PID. OBX belong to the latest OBR, including OBX
  after SPM (v2.5.1 specimen observations). NTE belong to the latest PID, OBR or OBX (after an
  ORC: to the OBR that follows); NTE before any of them are message comments. Other segments
  (SFT, PV1, TQ1, SPM, CTI, Z…) are skipped.
- **Identifiers.** PID-2, PID-3 and PID-4 repetitions are all kept with authority and type code.
  PMS id: the first of type PI or PT, else the first MR (at a practice the medical record number
  is the PMS patient number). Microchip: type MC (note: HL7 table 0203 defines MC as a Medicare
  number; vet labs use it for the chip) or any value of exactly 15 digits (ISO 11784/11785).
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
  earliest; a timestamp without an offset is read as UTC; an invalid one is None.
- **Numbers**: ``[<|>|<=|>=|=] number`` in NM, ST and SN; SN components
  ``comparator^num1^separator^num2`` with a ratio or range leaving ``value_numeric`` None. Anything
  else keeps its text with ``value_numeric`` None.
- **Ranges** (OBX-7): ``a-b``, ``a - b``, ``a_b`` (GHH), negatives (``-3-3``), ``<x``/``<=x``
  (high only), ``>x``/``>=x`` (low only). Anything else is kept as text with no limits.

Raises ``ParseError`` whose ``location`` names segment and field for what cannot be used: not an
ORU (MSH-9), an OBX before any OBR (OBX-3 named as the observation it orphans), an empty OBX-3
(identifier, alternate identifier and text all empty; a text-only OBX-3 uses its text as code).
Errors of the ER7 reader (bad escapes, no MSH) pass through; nothing else escapes.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Final

from vetgateway.errors import ParseError
from vetgateway.model import (
    Attachment,
    Coded,
    Comparator,
    Identifier,
    Observation,
    OrderRef,
    ParsedMessage,
    PatientRef,
    Report,
    ReportStatus,
    ResultStatus,
    Sex,
)
from vetgateway.pipeline.parse.er7 import Segment, parse_er7
from vetgateway.pipeline.parse.values import (
    NUMBER,
    RANGE,
    parse_compared,
    parse_date,
    parse_datetime,
    parse_decimal,
    parse_range,
)

__all__ = ["parse_oru"]

_RATIO: Final = re.compile(rf"\s*({NUMBER})\s*([:/])\s*({NUMBER})\s*", re.ASCII)

_MICROCHIP: Final = re.compile(r"\d{15}", re.ASCII)

_SEX: Final = {
    "M": Sex.MALE,
    "F": Sex.FEMALE,
    **dict.fromkeys(("MN", "MC", "CM", "NM", "C", "N"), Sex.MALE_NEUTERED),
    **dict.fromkeys(("FS", "SF", "FN", "NF", "S"), Sex.FEMALE_SPAYED),
}
# HL7 table 0123 (OBR-25) and table 0085 (OBX-11).
_REPORT_STATUS: Final = {
    "F": ReportStatus.FINAL,
    "C": ReportStatus.CORRECTED,
    "X": ReportStatus.CANCELLED,
    **dict.fromkeys(("O", "I", "S", "A", "P", "R", "Y", "Z"), ReportStatus.PRELIMINARY),
}
_RESULT_STATUS: Final = {
    "F": ResultStatus.FINAL,
    "U": ResultStatus.FINAL,
    "C": ResultStatus.CORRECTED,
    **dict.fromkeys(("D", "W", "X", "N"), ResultStatus.CANCELLED),
    **dict.fromkeys(("P", "R", "S", "I", "O"), ResultStatus.PRELIMINARY),
}
_SPECIES_CODES: Final = frozenset({"SPECIES", "PATIENT SPECIES", "ANIMAL SPECIES"})
_BREED_CODES: Final = frozenset({"BREED", "PATIENT BREED", "ANIMAL BREED"})
_MEDIA: Final = {"AP": "application", "IM": "image", "TEXT": "text", "AU": "audio"}


def _opt(text: str) -> str | None:
    text = text.strip()
    return text or None


def _coded(seg: Segment, n: int, rep: int = 1) -> Coded | None:
    parts = seg.components(n, rep)
    if not any(p.strip() for p in parts):
        return None
    code, text, system = (_opt(parts[i]) if i < len(parts) else None for i in range(3))
    if code is None and text is None and len(parts) > 3:  # only the alternate triplet is sent
        code, text, system = (_opt(parts[i]) if i < len(parts) else None for i in range(3, 6))
    return Coded(code, text, system)


def _first(seg: Segment, n: int) -> str | None:
    """Component 1 of field ``n`` (an EI's entity identifier, a CE's code …), None when empty."""
    return _opt(seg.component(n, 1))


@dataclass(slots=True)
class _ReportBuilder:
    obr: Segment
    orc: Segment | None
    # Each observation with the NTE that followed it (filled in as they arrive).
    observations: list[tuple[Observation, list[str]]] = field(default_factory=list)
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


def _identifiers(pid: Segment) -> list[Identifier]:
    found: list[Identifier] = []
    for n in (2, 3, 4):
        for rep in range(1, len(pid.repetitions(n)) + 1):
            value = _opt(pid.component(n, 1, rep))
            if value is None:
                continue
            authority = _opt(pid.subcomponent(n, 4, 1, rep)) or _opt(pid.subcomponent(n, 4, 2, rep))
            found.append(Identifier(value, authority, _opt(pid.component(n, 5, rep))))
    return found


def _patient(pid: Segment) -> PatientRef:
    identifiers = _identifiers(pid)
    by_type = [i for i in identifiers if i.type_code in ("PI", "PT")]
    by_type = by_type or [i for i in identifiers if i.type_code == "MR"]
    chips = [
        i for i in identifiers if i.type_code == "MC" or _MICROCHIP.fullmatch(i.value) is not None
    ]
    name = owner = None
    for rep in range(1, len(pid.repetitions(5)) + 1):
        family, given = _opt(pid.component(5, 1, rep)), _opt(pid.component(5, 2, rep))
        if family or given:
            name = given or family
            owner = family if given else None
            break
    sex_code = pid.component(8, 1).strip().upper()
    return PatientRef(
        pms_id=by_type[0].value if by_type else None,
        microchip=chips[0].value if chips else None,
        identifiers=tuple(identifiers),
        name=name,
        owner_surname=owner,
        species=_coded(pid, 35),
        breed=_coded(pid, 36),
        sex=_SEX.get(sex_code, Sex.UNKNOWN) if sex_code else None,
        birth_date=parse_date(pid.component(7, 1)),
    )


def _sn(seg: Segment) -> tuple[Comparator | None, Decimal | None, str | None, Decimal | None]:
    """SN (comparator ^ num1 ^ separator/suffix ^ num2), or an SN sent as plain text."""
    parts = seg.components(5)
    if len(parts) <= 1:
        text = parts[0] if parts else ""
        compared = parse_compared(text)
        if compared is not None:
            return compared[0], compared[1], None, None
        m = _RATIO.fullmatch(text) or RANGE.fullmatch(text)
        if m is not None and m.re is _RATIO:
            return None, parse_decimal(m.group(1)), m.group(2), parse_decimal(m.group(3))
        if m is not None:
            return None, parse_decimal(m.group(1)), "-", parse_decimal(m.group(2))
        return None, None, None, None
    parts += [""] * (4 - len(parts))
    raw_cmp = parts[0].strip()
    comparator: Comparator | None = (
        raw_cmp if raw_cmp in ("<", ">", "<=", ">=", "=") else None  # type: ignore[assignment]
    )
    first = parse_decimal(parts[1].strip()) if parts[1].strip() else None
    separator = _opt(parts[2])
    second = parse_decimal(parts[3].strip()) if parts[3].strip() else None
    return comparator, first, separator, second


def _attachment(seg: Segment) -> Attachment:
    """ED: source ^ type of data ^ data subtype ^ encoding ^ data (HL7 v2.5.1 §2.A.24)."""
    kind = seg.component(5, 2).strip()
    subtype = seg.component(5, 3).strip()
    encoding = _opt(seg.component(5, 4))
    payload = seg.component(5, 5)
    media = None
    if kind or subtype:
        major = _MEDIA.get(kind.upper(), kind.lower() or "application")
        media = f"{major}/{subtype.lower()}" if subtype else major
    data: bytes | None = None
    enc = (encoding or "").upper()
    try:
        if enc == "BASE64":
            data = base64.b64decode("".join(payload.split()), validate=True)
        elif enc == "HEX":
            data = bytes.fromhex("".join(payload.split()))
        elif enc in ("A", ""):
            data = payload.encode("utf-8")
    except (binascii.Error, ValueError):
        data = None  # kept as text in value_text; the attachment says it could not be decoded
    return Attachment(media_type=media, encoding=encoding, data=data)


def _observation(seg: Segment) -> Observation:
    code_parts = _coded(seg, 3)
    code = (code_parts.code or code_parts.text) if code_parts is not None else None
    if code_parts is None or code is None:
        raise ParseError(
            "OBX-3 (observation identifier) is empty; a result without a code cannot be used",
            location=seg.location(3),
        )
    value_type = seg.field(2).strip().upper()
    # TX and FT repeat as lines; every other type keeps its separators as received.
    value_text = "\n".join(seg.repetitions(5)) if value_type in ("TX", "FT") else seg.field(5)
    comparator: Comparator | None = None
    numeric: Decimal | None = None
    first = second = None
    separator = None
    coded = None
    attachment = None
    if value_type == "SN":
        comparator, first, separator, second = _sn(seg)
        numeric = first if separator is None else None
        if numeric is None and separator is None:
            comparator = None
    elif value_type in ("NM", "ST", "FN") or not value_type:
        compared = parse_compared(value_text)
        if compared is not None:
            comparator, numeric = compared
    elif value_type in ("CE", "CWE", "CNE", "CF"):
        coded = _coded(seg, 5)
    elif value_type == "ED":
        attachment = _attachment(seg)
    reference = seg.field(7)
    low, high = parse_range(reference)
    flags = tuple(
        flag
        for rep in range(1, len(seg.repetitions(8)) + 1)
        if (flag := seg.component(8, 1, rep).strip())
    )
    status_code = _opt(seg.component(11, 1))
    set_id = seg.field(1).strip()
    return Observation(
        set_id=int(set_id) if set_id.isascii() and set_id.isdigit() else None,
        sub_id=_opt(seg.field(4)),
        value_type=value_type,
        code=code,
        code_text=code_parts.text,
        coding_system=code_parts.system,
        value_text=value_text,
        value_numeric=numeric,
        comparator=comparator,
        sn_first=first if separator is not None else None,
        sn_separator=separator,
        sn_second=second,
        value_coded=coded,
        unit=_opt(seg.component(6, 1)) or _opt(seg.component(6, 2)),
        reference_range=_opt(reference),
        range_low=low,
        range_high=high,
        abnormal_flags=flags,
        status=_RESULT_STATUS.get(status_code.upper()) if status_code else None,
        status_code=status_code,
        observed_at=parse_datetime(seg.component(14, 1)),
        attachment=attachment,
    )


def _demographic(obs: Observation) -> tuple[str | None, Coded | None]:
    """Which patient field (``species``/``breed``) a lab's demographic OBX carries, if any."""
    keys = {(obs.code or "").strip().upper(), (obs.code_text or "").strip().upper()}
    kind = "species" if keys & _SPECIES_CODES else "breed" if keys & _BREED_CODES else None
    if kind is None:
        return None, None
    if obs.value_coded is not None:
        return kind, obs.value_coded
    text = _opt(obs.value_text)
    return kind, Coded(None, text, None) if text else None


def _report(builder: _ReportBuilder, patient: PatientRef) -> Report:
    obr, orc = builder.obr, builder.orc
    placer = _first(obr, 2) or (_first(orc, 2) if orc is not None else None)
    filler = _first(obr, 3) or (_first(orc, 3) if orc is not None else None)
    accession = _first(obr, 18) or _first(obr, 20) or filler
    service = _coded(obr, 4)
    status_code = _opt(obr.component(25, 1))
    return Report(
        order=OrderRef(placer=placer, filler=filler, accession=accession),
        patient=patient,
        service_code=service.code if service else None,
        service_text=service.text if service else None,
        status=_REPORT_STATUS.get(status_code.upper()) if status_code else None,
        status_code=status_code,
        observed_at=parse_datetime(obr.component(7, 1)),
        reported_at=parse_datetime(obr.component(22, 1)),
        observations=tuple(
            replace(obs, comments=tuple(notes)) if notes else obs
            for obs, notes in builder.observations
        ),
        comments=tuple(builder.comments),
    )


def _finish(group: _PatientGroup) -> list[Report]:
    patient = group.patient
    if patient.species is None and group.obx_species is not None:
        patient = replace(patient, species=group.obx_species)
    if patient.breed is None and group.obx_breed is not None:
        patient = replace(patient, breed=group.obx_breed)
    if group.comments:
        patient = replace(patient, comments=tuple(group.comments))
    return [_report(b, patient) for b in group.reports]


def parse_oru(raw: bytes) -> ParsedMessage:
    """Parse one ORU^R01 message; raise ``ParseError`` naming segment and field if unusable."""
    message = parse_er7(raw)
    msh = message.segments[0]
    code = msh.component(9, 1).strip().upper()
    event = msh.component(9, 2).strip().upper()
    if code != "ORU" or event not in ("R01", ""):
        raise ParseError(
            f"message type is {msh.field(9)!r}, not ORU^R01; only results are parsed here",
            location=msh.location(9),
        )
    reports: list[Report] = []
    message_comments: list[str] = []
    group = _PatientGroup(PatientRef())
    orc: Segment | None = None
    orc_notes: list[str] = []  # NTE after an ORC, for the OBR that follows it
    # Where the next NTE goes: the latest PID, OBR or OBX comment list.
    notes: list[str] = message_comments
    for seg in message.segments[1:]:
        name = seg.name
        if name == "PID":
            reports.extend(_finish(group))
            group = _PatientGroup(_patient(seg))
            notes = group.comments
            orc = None
        elif name == "NK1":
            relation = seg.component(3, 1).strip().upper()
            surname = _opt(seg.component(2, 1))
            if relation == "OWN" and surname:
                group.patient = replace(group.patient, owner_surname=surname)
        elif name == "ORC":
            orc = seg
            notes = orc_notes = []
        elif name == "OBR":
            builder = _ReportBuilder(seg, orc, comments=orc_notes)
            orc_notes = []
            group.reports.append(builder)
            notes = builder.comments
        elif name == "OBX":
            if not group.reports:
                raise ParseError(
                    "OBX before any OBR: a result must follow the OBR of its order "
                    "(ORU^R01 ORDER_OBSERVATION group)",
                    location=seg.location(3),
                )
            obs = _observation(seg)
            kind, value = _demographic(obs)
            if kind == "species" and group.obx_species is None:
                group.obx_species = value
            elif kind == "breed" and group.obx_breed is None:
                group.obx_breed = value
            notes = []
            group.reports[-1].observations.append((obs, notes))
        elif name == "NTE":
            notes.append(_nte_text(seg))
    reports.extend(_finish(group))
    return ParsedMessage(
        control_id=msh.field(10).strip(),
        sending_application=msh.component(3, 1).strip(),
        sending_facility=msh.component(4, 1).strip(),
        message_type=msh.field(9).strip(),
        version=msh.component(12, 1).strip(),
        reports=tuple(reports),
        comments=tuple(message_comments),
    )
