"""LIS2-A2 (ASTM E1394) messages into the canonical model: ``parse_astm(raw, dialect)``.

Pure: the message text the link layer delivered (records separated by CR, frames already
stripped) in, an ``AnalyzerMessage`` out. ``astm_records.read_records`` splits records and fields,
``astm_readers`` reads P, R, Q and C records, and this module walks the record hierarchy of
LIS2-A2 (H, then P, its O, their R, with C after any of them; L last) once, in order. What an
analyzer does its own way is its ``AstmDialect`` (``astm_dialect.py``).

Decisions, each one a place an analyzer may disagree with us:

- **Header** (H): sender = H-5's first component, stripped (None when empty); instrument = the
  rest of H-5 as sent (model, software version, serial), escapes decoded; processing id H-12
  (P production, T training, D debugging, Q quality control); version H-13; sent_at H-14.
- **Groups.** P starts a patient: every O until the next P belongs to it (an empty
  ``PatientRef`` before any P). O starts an order: every R until the next O or P belongs to it.
  An R before any O raises ``ParseError`` naming that record. C records attach to the latest H,
  P, O or R (their ``comments``; after H or a Q: the message's). Q records are host queries.
  M (manufacturer: histograms, reagent lots) and S records and unknown record types are skipped.
  Records after L are ignored, except a second H: two messages in one text would mix senders,
  so that raises ``ParseError`` rather than dropping or merging either. A missing L is accepted
  (instruments on ``MessageEnd.END_FRAME`` links may not send one).
- **Order → Report.** Accession: the sample id (``dialect.sample_id_fields``, O-3 then O-4, the
  first non-empty component); placer: O-3; filler: O-4 (instrument specimen id), each its first
  non-empty component. Service: the first test of O-5 (code and name as for R-3). Status: O-26
  (report type: F final, C correction, X cannot be done → cancelled; O order, P preliminary,
  I pending in instrument, Q response to query, Y and Z → preliminary; the code is kept as sent).
  observed_at: O-8 (specimen collection), else O-7 (requested, which many instruments fill
  with the run time). reported_at: O-23 (results reported or last modified).
- **Control runs.** An order is a control run, not a patient's report, when H-12 is a QC
  processing id, O-12 a QC action code, O-16 (specimen descriptor) holds a QC marker or the
  sample id starts with a QC prefix (all per dialect). It becomes a ``QcRun``: sample id as
  above; control = the last non-empty component of O-16 (``CTRL^^CTRL MEDIUM`` → ``CTRL
  MEDIUM``), else the P name (some analyzers name the control material there); lot = the sample
  id when ``dialect.qc_lot_from_sample_id``, else None (LIS2-A2 has no lot field); run_at =
  O-8, O-7, else the first result's time; comments = the order's C records. A patient record
  in front of a control run is not a patient and is not reported.
- **Species and breed** from the P record where the dialect says, else from a result named
  ``SPECIES``/``PATIENT SPECIES``/``ANIMAL SPECIES`` or ``BREED``/… (as ``parse/oru.py``), whose
  text fills the gap; that result stays in the report.

``ParseError`` (with a ``location`` such as ``H-2`` or ``R-3 (record 5)``) for what cannot be
used: no header or a broken delimiter definition (``read_records``), an R with no order or no
test code, a second H. Nothing else escapes: every field accessor returns ``""`` for what is
missing, so short records read as empty fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo
from typing import Final

from vetgateway.errors import ParseError
from vetgateway.model import (
    AnalyzerMessage,
    Coded,
    HostQuery,
    Observation,
    OrderRef,
    PatientRef,
    QcRun,
    Report,
    ReportStatus,
)
from vetgateway.pipeline.parse.astm_dialect import AstmDialect
from vetgateway.pipeline.parse.astm_readers import (
    comment_text,
    first_text,
    read_patient,
    read_query,
    read_result,
    read_test_code,
)
from vetgateway.pipeline.parse.astm_records import AstmRecord, read_records
from vetgateway.pipeline.parse.demographics import demographic_kind
from vetgateway.pipeline.parse.obx import with_comments
from vetgateway.pipeline.parse.values import TimestampMemo

__all__ = ["DEFAULT_DIALECT", "AstmDialect", "parse_astm"]

DEFAULT_DIALECT: Final = AstmDialect()

# LIS2-A2 order record, field 26 (report types).
_REPORT_STATUS: Final = {
    "F": ReportStatus.FINAL,
    "C": ReportStatus.CORRECTED,
    "X": ReportStatus.CANCELLED,
    **dict.fromkeys(("O", "P", "I", "Q", "Y", "Z"), ReportStatus.PRELIMINARY),
}
_NO_PATIENT: Final = PatientRef()


@dataclass(slots=True)
class _Order:
    record: AstmRecord
    qc: bool
    observations: list[Observation] = field(default_factory=list)
    # The C records after each observation, by its index: only for those that have any.
    observation_notes: list[tuple[int, list[str]]] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _PatientGroup:
    record: AstmRecord | None
    orders: list[_Order] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    species: Coded | None = None
    breed: Coded | None = None


@dataclass(slots=True)
class _Outcome:
    reports: list[Report] = field(default_factory=list)
    qc_runs: list[QcRun] = field(default_factory=list)


def _sample_id(order: AstmRecord, dialect: AstmDialect) -> str | None:
    for n in dialect.sample_id_fields:
        sample = first_text(order.components(n))
        if sample is not None:
            return sample
    return None


def _is_qc(order: AstmRecord, message_qc: bool, dialect: AstmDialect) -> bool:
    if message_qc:
        return True
    if order.component(12, 1).strip().upper() in dialect.qc_action_codes:
        return True
    descriptor = order.field(16).upper()
    if descriptor and any(marker in descriptor for marker in dialect.qc_specimen_markers):
        return True
    if dialect.qc_sample_prefixes:
        sample = _sample_id(order, dialect)
        return sample is not None and sample.upper().startswith(dialect.qc_sample_prefixes)
    return False


def _demographic(obs: Observation, kind: str, group: _PatientGroup) -> None:
    """Fill the group's species or breed from a result naming one, if still unknown."""
    text = obs.value_text.strip()
    if not text:
        return
    if kind == "species" and group.species is None:
        group.species = Coded(None, text, None)
    elif kind == "breed" and group.breed is None:
        group.breed = Coded(None, text, None)


def _order_time(order: AstmRecord, timestamps: TimestampMemo) -> datetime | None:
    return timestamps[order.component(8, 1).strip()] or timestamps[order.component(7, 1).strip()]


def _report(order: _Order, patient: PatientRef, dialect: AstmDialect, ts: TimestampMemo) -> Report:
    rec = order.record
    service_code, service_text = read_test_code(rec.components(5), dialect)
    status_code = rec.component(26, 1).strip() or None
    return Report(
        order=OrderRef(
            placer=first_text(rec.components(3)),
            filler=first_text(rec.components(4)),
            accession=_sample_id(rec, dialect),
        ),
        patient=patient,
        service_code=service_code,
        service_text=service_text,
        status=_REPORT_STATUS.get(status_code.upper()) if status_code else None,
        status_code=status_code,
        observed_at=_order_time(rec, ts),
        reported_at=ts[rec.component(23, 1).strip()],
        observations=tuple(order.observations),
        comments=tuple(order.comments),
    )


def _qc_run(
    order: _Order, patient: AstmRecord | None, dialect: AstmDialect, ts: TimestampMemo
) -> QcRun:
    rec = order.record
    sample = _sample_id(rec, dialect)
    descriptor = [part.strip() for part in rec.components(16) if part.strip()]
    control = descriptor[-1] if descriptor else None
    if control is None and patient is not None:
        control = " ".join(p.strip() for p in patient.components(6) if p.strip()) or None
    run_at = _order_time(rec, ts)
    if run_at is None:
        run_at = next((o.observed_at for o in order.observations if o.observed_at), None)
    return QcRun(
        sample_id=sample,
        control=control,
        lot=sample if dialect.qc_lot_from_sample_id else None,
        run_at=run_at,
        observations=tuple(order.observations),
        comments=tuple(order.comments),
    )


def _finish(
    group: _PatientGroup, dialect: AstmDialect, ts: TimestampMemo, outcome: _Outcome
) -> None:
    patient = _NO_PATIENT
    if group.record is not None and any(not o.qc for o in group.orders):
        patient = read_patient(group.record, dialect)
    if patient.species is None and group.species is not None:
        patient = replace(patient, species=group.species)
    if patient.breed is None and group.breed is not None:
        patient = replace(patient, breed=group.breed)
    if group.comments:
        patient = replace(patient, comments=tuple(group.comments))
    for order in group.orders:
        for index, notes in order.observation_notes:
            with_comments(order.observations[index], notes)
        if order.qc:
            outcome.qc_runs.append(_qc_run(order, group.record, dialect, ts))
        else:
            outcome.reports.append(_report(order, patient, dialect, ts))


def _instrument(header: AstmRecord) -> str | None:
    """H-5 after its first component (or first repeat), as sent, escapes decoded."""
    raw = header.raw(5)
    d = header.delimiters
    cuts = [i for i in (raw.find(d.component), raw.find(d.repeat)) if i >= 0]
    if not cuts:
        return None
    rest = raw[min(cuts) + 1 :]
    if not rest.strip(d.component + d.repeat + " \t"):
        return None
    return header.decode(rest).strip() or None


def parse_astm(
    raw: bytes, dialect: AstmDialect = DEFAULT_DIALECT, *, zone: tzinfo = UTC
) -> AnalyzerMessage:
    """Parse one LIS2-A2 message; raise ``ParseError`` naming record and field if unusable.
    Timestamps (never with an offset in LIS2-A2) are the analyzer's clock, in ``zone``."""
    records = read_records(raw)
    header = records.header
    timestamps = TimestampMemo(zone)
    processing_id = header.component(12, 1).strip() or None
    message_qc = processing_id is not None and processing_id.upper() in dialect.qc_processing_ids
    message_comments: list[str] = []
    queries: list[HostQuery] = []
    outcome = _Outcome()
    group = _PatientGroup(None)
    order: _Order | None = None
    # Where the next C record's text goes: the latest H, P, O or Q's list; None right after an
    # R, until a C follows (only results with comments get a list).
    notes: list[str] | None = message_comments
    rest = iter(records.records[1:])
    for rec in rest:
        kind = rec.type
        if kind == "R":  # most records are: tested first
            if order is None:
                raise ParseError(
                    "result record (R) before any order record (O): a result must follow the "
                    "order of its specimen",
                    location=rec.location(3),
                )
            obs = read_result(rec, dialect, timestamps)
            demographic = demographic_kind(obs)
            if demographic is not None:
                _demographic(obs, demographic, group)
            order.observations.append(obs)
            notes = None
        elif kind == "C":
            text = comment_text(rec)
            if not text:
                continue
            if notes is None:  # the first C after an R: that result's comments begin
                assert order is not None  # notes is None only right after an R
                notes = []
                order.observation_notes.append((len(order.observations) - 1, notes))
            notes.append(text)
        elif kind == "O":
            order = _Order(rec, _is_qc(rec, message_qc, dialect))
            group.orders.append(order)
            notes = order.comments
        elif kind == "P":
            _finish(group, dialect, timestamps, outcome)
            group = _PatientGroup(rec)
            order = None
            notes = group.comments
        elif kind == "Q":
            queries.append(read_query(rec, dialect, len(queries) + 1))
            notes = message_comments
        elif kind == "L":
            break
        elif kind == "H":
            raise ParseError(
                "a second header record (H) before the terminator (L): one message per text",
                location=rec.location(1),
            )
    for rec in rest:  # after L
        if rec.type == "H":
            raise ParseError(
                "a second message (H) follows the terminator (L): one message per text",
                location=rec.location(1),
            )
    _finish(group, dialect, timestamps, outcome)
    return AnalyzerMessage(
        sender=header.component(5, 1).strip() or None,
        instrument=_instrument(header),
        processing_id=processing_id,
        version=header.component(13, 1).strip() or None,
        sent_at=timestamps[header.component(14, 1).strip()],
        reports=tuple(outcome.reports),
        qc_runs=tuple(outcome.qc_runs),
        queries=tuple(queries),
        comments=tuple(message_comments),
    )
