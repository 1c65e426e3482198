"""Writing reports and results, with their versions and history.

One call per report of a message, inside the pipeline's one transaction per message. The same
report sent again is found by its ``report_key`` (sender, the first of accession / filler / placer
number, and the service) and then:

- **correction** (OBR-25 or any OBX-11 ``C``): a new report version (``version`` + 1,
  ``supersedes_id`` → the old one) with new result rows, each pointing at the result it replaces;
  the old results are kept, status ``superseded``. Matching carries over from the old version.
- **any other resend** (preliminary → final, a final resent with changes, more results): updated
  in place; each changed result's previous value and status go into one ``report.updated`` audit
  entry, so the history is kept without a row per state. Unchanged results are not touched.

Results go in with one multi-row INSERT per report and no ORM objects on this path: a 20-result
report is two statements. Strings are clipped to their column's length; the raw message keeps the
full text.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast, get_args

import sqlalchemy as sa
from sqlalchemy.orm import Session

from vetgateway.model import (
    Coded,
    Comparator,
    Observation,
    OrderRef,
    PatientRef,
    Report,
    ReportStatus,
    ResultStatus,
)
from vetgateway.pipeline.interpret import Reading
from vetgateway.pipeline.mapping import MappedObservation
from vetgateway.pipeline.matching import MatchDecision, normalise_microchip
from vetgateway.store.audit import audit
from vetgateway.store.bulk import insert_rows
from vetgateway.store.models import (
    DiagnosticReport,
    LabResult,
    ReportAttachment,
)
from vetgateway.store.models.reports import Interpretation, MappingStatus, MatchStatus

AnyRow = sa.Row[*tuple[Any, ...]]

__all__ = [
    "ReportInput",
    "SavedReport",
    "apply_match",
    "existing_keys",
    "insert_new_reports",
    "report_clues",
    "report_key",
    "result_ids",
    "save_report",
    "stored_observation",
]

_R = cast(sa.Table, DiagnosticReport.__table__)
_L = cast(sa.Table, LabResult.__table__)
_A = cast(sa.Table, ReportAttachment.__table__)

_RESULT_STATUS_OF_REPORT = {
    ReportStatus.PRELIMINARY: ResultStatus.PRELIMINARY,
    ReportStatus.FINAL: ResultStatus.FINAL,
    ReportStatus.CORRECTED: ResultStatus.CORRECTED,
    ReportStatus.CANCELLED: ResultStatus.CANCELLED,
}


@dataclass(frozen=True, slots=True)
class SavedReport:
    """What happened to one report: its row, its version, and whether it is matched."""

    report_id: uuid.UUID
    version: int
    action: Literal["created", "updated", "corrected"]
    matched: bool
    patient_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class ReportInput:
    """One parsed and mapped report, ready to be written for the message it came in."""

    message_id: int
    source: str
    report: Report
    mapped: tuple[MappedObservation, ...]
    species: str | None
    # Our reading of each mapped observation (same order); empty = not interpreted.
    readings: tuple[Reading, ...] = ()
    # The in-house analyzer that sent it (None: a reference lab).
    device_id: uuid.UUID | None = None
    # The clinic it is for: the analyzer's, else the matched order's (None: not known).
    clinic_id: uuid.UUID | None = None

    @property
    def key(self) -> str | None:
        return report_key(self.source, self.report)

    def pairs(self) -> list[tuple[MappedObservation, Reading | None]]:
        """Each observation with its reading (None when not interpreted)."""
        readings: list[Reading | None] = list(self.readings) or [None] * len(self.mapped)
        return list(zip(self.mapped, readings, strict=True))


def _clip(text: str | None, length: int) -> str | None:
    return None if text is None else text[:length]


def report_key(source: str, report: Report) -> str | None:
    """The identity of a report across resends, or None when the sender gave no number."""
    number = report.order.accession or report.order.filler or report.order.placer
    if not number:
        return None
    return _clip(f"{source}|{number}|{report.service_code or ''}", 255)


def _result_status(obs: Observation, report: Report) -> ResultStatus:
    if obs.status is not None:
        return obs.status
    if report.status is not None:
        return _RESULT_STATUS_OF_REPORT[report.status]
    return ResultStatus.FINAL


def _is_correction(report: Report) -> bool:
    return report.status is ReportStatus.CORRECTED or any(
        o.status is ResultStatus.CORRECTED for o in report.observations
    )


def _joined(texts: Sequence[str]) -> str | None:
    return "\n".join(texts) if texts else None


def _value_text(obs: Observation) -> str:
    """The value as sent, but an embedded document (ED: a PDF report, often megabytes of base64)
    is named, not copied: its bytes are stored once, as the report's attachment, and every PMS
    poll of ``GET /api/v1/results`` would otherwise carry them again. The raw message keeps the
    text as sent."""
    attached = obs.attachment
    if attached is None or attached.data is None:
        return obs.value_text
    kind = attached.media_type or "application/octet-stream"
    return (
        f"[{kind}, {len(attached.data):,} bytes, sha256 {_sha256(attached.data)[:16]}:"
        " one of the report's attachments]"
    )


def _result_row(
    m: MappedObservation,
    reading: Reading | None,
    report: Report,
    report_id: uuid.UUID,
    now: datetime,
) -> dict[str, Any]:
    obs = m.observation
    return {
        "report_id": report_id,
        "test_id": m.test_id,
        "source_code": _clip(obs.code, 64),
        "source_name": _clip(obs.code_text, 200),
        "value_numeric": m.value_numeric,
        "value_text": _value_text(obs),
        "comparator": obs.comparator,
        "unit": _clip(m.unit, 32),
        "source_unit": _clip(obs.unit, 32),
        "value_type": _clip(obs.value_type, 8),
        "reference_range": _clip(obs.reference_range, 100),
        "lab_low": obs.range_low,
        "lab_high": obs.range_high,
        "lab_flags": _clip("~".join(obs.abnormal_flags), 32) or None,
        "interpretation": Interpretation(reading.interpretation)
        if reading is not None
        else Interpretation.NOT_INTERPRETED,
        "reference_interval_id": reading.interval_id if reading is not None else None,
        "interpretation_note": _clip(reading.note, 255) if reading is not None else None,
        "status": _result_status(obs, report),
        "mapping_status": MappingStatus.MAPPED if m.mapped else MappingStatus.UNMAPPED,
        "mapping_note": _clip(m.reason, 255),
        "set_id": obs.set_id,
        "sub_id": _clip(obs.sub_id, 20),
        "observed_at": obs.observed_at or report.observed_at,
        "version": 1,
        "supersedes_id": None,
        "comments": _joined(obs.comments),
        "created_at": now,
        "updated_at": now,
    }


def _report_row(
    item: ReportInput, report_id: uuid.UUID, decision: MatchDecision | None, now: datetime
) -> dict[str, Any]:
    report = item.report
    p = report.patient
    chip = normalise_microchip(p.microchip) or p.microchip
    return {
        "id": report_id,
        "inbound_message_id": item.message_id,
        "device_id": item.device_id,
        "clinic_id": item.clinic_id,
        "source": _clip(item.source, 64),
        "report_key": item.key,
        "accession_number": _clip(report.order.accession, 64),
        "placer_number": _clip(report.order.placer, 64),
        "filler_number": _clip(report.order.filler, 64),
        "service_code": _clip(report.service_code, 64),
        "service_name": _clip(report.service_text, 200),
        "status": report.status or ReportStatus.FINAL,
        "observed_at": report.observed_at,
        "reported_at": report.reported_at,
        "comments": _joined(report.comments),
        "patient_pms_id": _clip(p.pms_id, 64),
        "patient_microchip": _clip(chip, 32),
        "patient_name": _clip(p.name, 200),
        "owner_surname": _clip(p.owner_surname, 200),
        "species": item.species,
        "breed": _clip(p.breed.display if p.breed else None, 100),
        "sex": p.sex,
        "birth_date": p.birth_date,
        **_match_values(decision),
        "version": 1,
        "supersedes_id": None,
        "created_at": now,
        "updated_at": now,
    }


def _match_values(decision: MatchDecision | None) -> dict[str, Any]:
    if decision is None:
        return {
            "order_id": None,
            "patient_id": None,
            "match_status": MatchStatus.UNMATCHED,
            "match_rule": None,
            "match_reason": None,
            "match_candidates": None,
        }
    matched = decision.matched
    return {
        "order_id": decision.order_id,
        "patient_id": decision.patient_id,
        "match_status": MatchStatus.MATCHED if matched else MatchStatus.UNMATCHED,
        "match_rule": decision.rule if matched else None,
        "match_reason": decision.reason,
        "match_candidates": [c.to_json() for c in decision.candidates] or None,
    }


def _attachment_rows(
    mapped: Sequence[MappedObservation], report_id: uuid.UUID, now: datetime
) -> list[dict[str, Any]]:
    return [
        {
            "report_id": report_id,
            "content_type": _clip(m.observation.attachment.media_type, 127)
            or "application/octet-stream",
            "filename": None,
            "sha256": _sha256(m.observation.attachment.data),
            "size": len(m.observation.attachment.data),
            "data": m.observation.attachment.data,
            "created_at": now,
            "updated_at": now,
        }
        for m in mapped
        if m.observation.attachment is not None and m.observation.attachment.data is not None
    ]


def _insert(
    session: Session,
    reports: list[dict[str, Any]],
    results: list[dict[str, Any]],
    attachments: list[dict[str, Any]],
) -> None:
    """At most three multi-row INSERTs, whatever the number of reports."""
    insert_rows(session, _R, reports)
    insert_rows(session, _L, results)
    insert_rows(session, _A, attachments)


def insert_new_reports(
    session: Session, items: Sequence[tuple[ReportInput, MatchDecision]], *, now: datetime
) -> list[SavedReport]:
    """Write reports seen for the first time (no earlier version), matched already.

    The pipeline's fast path for a batch of messages: the caller has checked with
    ``existing_keys`` that none of them is a resend.
    """
    reports: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    attachments: list[dict[str, Any]] = []
    saved = []
    for item, decision in items:
        report_id = uuid.uuid4()
        reports.append(_report_row(item, report_id, decision, now))
        results += [_result_row(m, r, item.report, report_id, now) for m, r in item.pairs()]
        attachments += _attachment_rows(item.mapped, report_id, now)
        saved.append(SavedReport(report_id, 1, "created", decision.matched, decision.patient_id))
    _insert(session, reports, results, attachments)
    return saved


def result_ids(session: Session, report_id: uuid.UUID) -> dict[tuple[str, str | None], int]:
    """The current result rows of one report version by (code, sub-id)."""
    rows = session.execute(
        sa.select(_L.c.id, _L.c.source_code, _L.c.sub_id).where(
            _L.c.report_id == report_id, _L.c.status != ResultStatus.SUPERSEDED
        )
    )
    return {(r.source_code, r.sub_id): r.id for r in rows}


def existing_keys(session: Session, keys: Collection[str]) -> set[str]:
    """Which of these report keys already have a (live) report."""
    if not keys:
        return set()
    found = session.execute(
        sa.select(_R.c.report_key)
        .where(_R.c.report_key.in_(sorted(keys)), _R.c.deleted_at.is_(None))
        .distinct()
    ).scalars()
    return {k for k in found if k is not None}


def _sha256(data: bytes | None) -> str:
    return hashlib.sha256(data or b"").hexdigest()


def report_clues(row: DiagnosticReport) -> Report:
    """The matching clues a stored report kept (``PatientIdentifiers``) as a canonical report."""
    return Report(
        order=OrderRef(
            placer=row.placer_number, filler=row.filler_number, accession=row.accession_number
        ),
        patient=PatientRef(
            pms_id=row.patient_pms_id,
            microchip=row.patient_microchip,
            name=row.patient_name,
            owner_surname=row.owner_surname,
            species=Coded(None, row.species, None) if row.species else None,
            sex=row.sex,
            birth_date=row.birth_date,
        ),
        service_code=row.service_code,
        service_text=row.service_name,
        status=row.status,
        status_code=None,
        observed_at=row.observed_at,
        reported_at=row.reported_at,
    )


_COMPARATORS: dict[str, Comparator] = {c: c for c in get_args(Comparator)}


def stored_observation(row: LabResult) -> Observation:
    """A stored result as the observation it was written from (``_result_row``'s inverse, as
    far as interpretation needs it): the lab's code, value, unit, range and flags as sent."""
    return Observation(
        set_id=row.set_id,
        sub_id=row.sub_id,
        value_type=row.value_type or "",
        code=row.source_code,
        code_text=row.source_name,
        coding_system=None,
        value_text=row.value_text or "",
        value_numeric=row.value_numeric if row.unit == row.source_unit else None,
        comparator=_COMPARATORS.get(row.comparator or ""),
        unit=row.source_unit,
        reference_range=row.reference_range,
        range_low=row.lab_low,
        range_high=row.lab_high,
        abnormal_flags=tuple(row.lab_flags.split("~")) if row.lab_flags else (),
        status=row.status,
        observed_at=row.observed_at,
        comments=tuple(row.comments.split("\n")) if row.comments else (),
    )


def apply_match(
    session: Session, report_id: uuid.UUID, decision: MatchDecision, *, now: datetime
) -> bool:
    """Write a matching decision onto a report; True when it is now matched."""
    session.execute(
        sa.update(_R).where(_R.c.id == report_id).values(**_match_values(decision), updated_at=now)
    )
    return decision.matched


# What an update in place takes from the latest message: the patient as it names them, and the
# report's time. Read per message alone (the species may come from the order, so it stays).
_HEADER = (
    "observed_at", "patient_pms_id", "patient_microchip", "patient_name", "owner_surname",
    "breed", "sex", "birth_date",
)  # fmt: skip


def _current(session: Session, key: str) -> AnyRow | None:
    return session.execute(
        sa.select(
            _R.c.id, _R.c.version, _R.c.match_status, _R.c.patient_id, *(_R.c[c] for c in _HEADER)
        )
        .where(_R.c.report_key == key, _R.c.deleted_at.is_(None))
        .order_by(_R.c.version.desc())
        .limit(1)
    ).first()


def save_report(
    session: Session,
    item: ReportInput,
    *,
    decide: Callable[[], MatchDecision],
    now: datetime,
) -> SavedReport:
    """Write one report and its results, whatever came before it; ``decide()`` returns the
    ``MatchDecision`` and is only called when the report needs matching (new, or an earlier
    version still unmatched)."""
    key = item.key
    current = _current(session, key) if key is not None else None
    if current is None:
        return insert_new_reports(session, [(item, decide())], now=now)[0]
    if _is_correction(item.report):
        return _correct(session, current, item, now)
    return _update_in_place(session, current, item, decide, now)


def _correct(session: Session, current: AnyRow, item: ReportInput, now: datetime) -> SavedReport:
    old = session.execute(
        sa.select(
            _R.c.order_id,
            _R.c.patient_id,
            _R.c.match_status,
            _R.c.match_rule,
            _R.c.match_reason,
            _R.c.match_candidates,
        ).where(_R.c.id == current.id)
    ).one()
    previous = {
        (r.source_code, r.sub_id): r.id
        for r in session.execute(
            sa.select(_L.c.id, _L.c.source_code, _L.c.sub_id).where(
                _L.c.report_id == current.id, _L.c.status != ResultStatus.SUPERSEDED
            )
        )
    }
    version = current.version + 1
    report_id = uuid.uuid4()
    row = _report_row(item, report_id, None, now)
    row.update(
        version=version,
        supersedes_id=current.id,
        order_id=old.order_id,
        patient_id=old.patient_id,
        match_status=old.match_status,
        match_rule=old.match_rule,
        match_reason=old.match_reason,
        match_candidates=old.match_candidates,
    )
    results = []
    for m, reading in item.pairs():
        result = _result_row(m, reading, item.report, report_id, now)
        result.update(
            supersedes_id=previous.get((result["source_code"], result["sub_id"])),
            version=version,
        )
        results.append(result)
    _insert(session, [row], results, _attachment_rows(item.mapped, report_id, now))
    if previous:
        session.execute(
            sa.update(_L)
            .where(_L.c.id.in_(list(previous.values())))
            .values(status=ResultStatus.SUPERSEDED, updated_at=now)
        )
    audit(
        session,
        actor="pipeline",
        action="report.corrected",
        entity_type="diagnostic_report",
        entity_id=str(report_id),
        details={
            "supersedes": str(current.id),
            "version": version,
            "inbound_message_id": item.message_id,
        },
    )
    matched = old.match_status is MatchStatus.MATCHED
    return SavedReport(report_id, version, "corrected", matched, old.patient_id)


_COMPARED = (
    "value_text", "value_numeric", "unit", "status", "lab_flags", "reference_range", "observed_at",
)  # fmt: skip


def _update_in_place(
    session: Session,
    current: AnyRow,
    item: ReportInput,
    decide: Callable[[], MatchDecision],
    now: datetime,
) -> SavedReport:
    report, message_id = item.report, item.message_id
    report_id: uuid.UUID = current.id
    existing = {
        (r.source_code, r.sub_id): r
        for r in session.execute(
            sa.select(_L.c.id, _L.c.source_code, _L.c.sub_id, *(_L.c[c] for c in _COMPARED)).where(
                _L.c.report_id == report_id, _L.c.status != ResultStatus.SUPERSEDED
            )
        )
    }
    changes: list[dict[str, Any]] = []
    new: list[tuple[MappedObservation, Reading | None]] = []
    for m, reading in item.pairs():
        row = _result_row(m, reading, report, report_id, now)
        old = existing.get((row["source_code"], row["sub_id"]))
        if old is None:
            new.append((m, reading))
            continue
        differs = {c: (old._mapping[c], row[c]) for c in _COMPARED if old._mapping[c] != row[c]}
        if not differs:
            continue
        changes.append(
            {
                "result_id": old.id,
                "code": row["source_code"],
                "from": {c: _jsonable(a) for c, (a, _b) in differs.items()},
                "to": {c: _jsonable(b) for c, (_a, b) in differs.items()},
            }
        )
        values = {k: v for k, v in row.items() if k not in ("report_id", "created_at")}
        session.execute(sa.update(_L).where(_L.c.id == old.id).values(**values))
    _insert(
        session,
        [],
        [_result_row(m, reading, report, report_id, now) for m, reading in new],
        _attachment_rows([m for m, _reading in new], report_id, now),
    )
    # The patient and time as this message reads them: a resend or replay read by a source's
    # new rules (its zone, which identifier is ours) must not leave the old reading behind.
    latest = _report_row(item, report_id, None, now)
    header = {
        c: (current._mapping[c], latest[c]) for c in _HEADER if current._mapping[c] != latest[c]
    }
    session.execute(
        sa.update(_R)
        .where(_R.c.id == report_id)
        .values(
            status=report.status or ReportStatus.FINAL,
            reported_at=report.reported_at,
            inbound_message_id=message_id,
            updated_at=now,
            **{c: new_value for c, (_old, new_value) in header.items()},
        )
    )
    if changes or new or header:
        audit(
            session,
            actor="pipeline",
            action="report.updated",
            entity_type="diagnostic_report",
            entity_id=str(report_id),
            details={
                "inbound_message_id": message_id,
                "status": (report.status or ReportStatus.FINAL).value,
                "changed": changes,
                "added": [m.observation.code for m, _reading in new],
                "report_changed": {
                    c: {"from": _jsonable(a), "to": _jsonable(b)} for c, (a, b) in header.items()
                },
            },
        )
    matched = current.match_status is MatchStatus.MATCHED
    patient_id = current.patient_id
    if not matched:
        decision = decide()
        matched = apply_match(session, report_id, decision, now=now)
        patient_id = decision.patient_id
    return SavedReport(report_id, current.version, "updated", matched, patient_id)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if hasattr(value, "value"):  # enums
        return value.value
    return str(value)
