"""Inbound messages through the pipeline: parse → map → match → persist, exactly once.

``MessageProcessor.process_batch(ids)`` is what the actor calls, whichever broker delivered the
ids and however often. The order of things is chosen for that:

1. Read the rows outside any write transaction; those no longer ``received`` are skipped.
2. Parse and map: pure, CPU only, no lock held (an SQLite write lock held while parsing would
   stall the inbox, and with it every ACK). A ``ParseError`` quarantines the message with its
   reason, naming segment and field; it is never retried, retrying cannot fix the bytes.
3. Match the new reports against orders, still outside the write transaction (reads only, so
   on SQLite no ACK waits behind order lookups).
4. One write transaction for the batch (on SQLite, for each few messages of it; see
   ``SQLITE_WRITE_CHUNK``): lock the rows still ``received``
   (``lock_received_many``; a second delivery of an id waits there, then finds it finished and
   does nothing), write reports and results, and mark each message
   ``processed`` (every report matched), ``unmatched`` or ``quarantined``. Each message's reports
   and results are in that one transaction with its status, so they appear together or not at
   all; a batch only shares the commit, which is what makes the pipeline fast.

Orders (ORM/OML) look for the reports waiting for them once their chunk is written, and again
once the whole batch is: after a backlog an order and its results often share a batch, and each
of an ORM's orders is in before any of them matches (a report must go to its own order by
number, not to the animal's first order by PMS id).

Reports seen for the first time take a fast path: one query finds the orders of the whole batch
by number, and every report and result goes in with one multi-row INSERT each. A resend (a
correction, preliminary → final) or a report whose numbers did not settle it goes through the
full per-report path (``store/reports.save_report``, ``store/orders.candidate_orders``).

The pipeline's database handle does not wait for the disk on commit (``Database.redoable``):
everything it writes is derived from messages already durable in the inbox, and a crash that
loses a commit also loses the status change, so those messages are simply processed again.
Intake commits stay fully synchronous.

Anything else that goes wrong (database down, our own bug) propagates to the actor
(``actors.py``), which retries the batch message by message and records the error for backoff.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import logging
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any, NamedTuple, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from vetgateway.errors import ParseError
from vetgateway.model import Report
from vetgateway.pipeline.alerting import CRITICAL, critical_findings, patient_label
from vetgateway.pipeline.delta import DeltaRule, delta_check
from vetgateway.pipeline.interpret import IntervalTable, age_in_days, interpret
from vetgateway.pipeline.mapping import MappedObservation, MappingTable, map_observations
from vetgateway.pipeline.matching import (
    MatchDecision,
    OrderCandidate,
    OrderedAnimal,
    decide_match,
)
from vetgateway.pipeline.parse.orm import OrderIn, parse_order_message
from vetgateway.pipeline.parse.results import parse_results
from vetgateway.pipeline.parse.sources import NO_PROFILES, SourceProfiles
from vetgateway.pipeline.rematch import rematch_for_order
from vetgateway.pipeline.species import species_word
from vetgateway.store import work_queue
from vetgateway.store.alerts import note_no_longer_critical, raise_critical
from vetgateway.store.catalogue import delta_rules, mapping_table
from vetgateway.store.clinics import clinic_by_code
from vetgateway.store.db import Database
from vetgateway.store.intervals import interval_table
from vetgateway.store.models import DiagnosticOrder, InboundMessage, MessageStatus
from vetgateway.store.models.base import utcnow
from vetgateway.store.orders import (
    candidate_orders,
    orders_by_number,
    orders_of_reports,
    upsert_order,
)
from vetgateway.store.qc import QcInput, save_qc_runs
from vetgateway.store.reports import (
    ReportInput,
    SavedReport,
    existing_keys,
    insert_new_reports,
    result_ids,
    save_report,
)
from vetgateway.store.result_history import (
    HistoryQuery,
    previous_values_of_many,
    record_deltas,
)

__all__ = ["MessageProcessor", "Outcome", "Tables"]

log = logging.getLogger(__name__)

_M = cast(sa.Table, InboundMessage.__table__)
_ORDER_TYPES = frozenset({"ORM^O01", "OML^O21"})


class Outcome(enum.Enum):
    PROCESSED = "processed"
    UNMATCHED = "unmatched"
    QUARANTINED = "quarantined"
    SKIPPED = "skipped"  # already finished (a second delivery), or unknown id


class Tables(NamedTuple):
    """What the pipeline reads from the catalogue and caches: code maps, reference intervals and
    delta-check thresholds by test id."""

    mapping: MappingTable
    intervals: IntervalTable
    deltas: dict[uuid.UUID, DeltaRule]
    # The clinic whose interval overrides apply to a report that names no clinic of its own.
    default_clinic_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class _Prepared:
    """One message after the pure stages: its orders, its reports, or why it is quarantined."""

    message_id: int
    received_at: datetime
    orders: tuple[OrderIn, ...] = ()
    reports: tuple[ReportInput, ...] = ()
    qc_runs: tuple[QcInput, ...] = ()
    device_id: uuid.UUID | None = None
    refused: str | None = None


@dataclass(frozen=True, slots=True)
class _Plan:
    """Matching done before the write: report keys already seen (resends, handled in the write
    transaction) and the decision for every other report, by (message id, report index)."""

    resent: frozenset[str]
    decisions: dict[tuple[int, int], MatchDecision]
    # For resends: the order the report is already attached to, by report key.
    attached: dict[str, OrderCandidate] = dataclasses.field(default_factory=dict)


# SQLite has one write lock, and an ACK waits for it (``store/writer_gate.py`` only puts intake
# first in the queue; it cannot cut a transaction short). A whole batch of 20-result reports in one
# transaction held it for tens of milliseconds: bench/mllp.py at 1,000 msg/s had an ACK p50 of
# about 20 ms. Writing a few messages per transaction bounds that wait; each message's reports,
# results and status still commit together. Later transactions of a batch re-check what earlier
# ones wrote (``existing_keys``), exactly as for another worker's.
SQLITE_WRITE_CHUNK = 4


def _message_type(declared: str | None) -> str:
    """``ORU^R01^ORU_R01`` → ``ORU^R01``: the event is what decides the stages."""
    return "^".join((declared or "").split("^")[:2])


def _numbered(candidate: OrderCandidate, report: Report) -> bool:
    """The order carries one of the report's numbers in the same role (as ``candidate_orders``)."""
    ref = report.order
    return bool(
        (ref.accession and candidate.accession_number == ref.accession.strip())
        or (ref.placer and candidate.placer_number == ref.placer.strip())
        or (ref.filler and candidate.filler_number == ref.filler.strip())
    )


class MessageProcessor:
    """Runs the stages for batches of message ids. Thread-safe; one per worker process.

    The mapping table is read from the database once and re-read every ``mapping_ttl`` seconds,
    so a mapping added through ``vetgateway catalogue load`` applies without a restart.
    ``write_chunk`` caps the messages per write transaction (default: ``SQLITE_WRITE_CHUNK`` on
    SQLite, the whole batch elsewhere). ``zone`` is the clinic's time zone, in which times
    without an offset are read (``Settings.zone``); ``profiles`` are the HL7 senders configured
    otherwise (``Settings.hl7_sources``: their own zone, which identifier is the PMS id).
    """

    def __init__(
        self,
        db: Database,
        *,
        match_window: timedelta = timedelta(days=30),
        alert_merge: timedelta = timedelta(hours=1),
        mapping_ttl: float = 30.0,
        default_clinic: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        write_chunk: int | None = None,
        zone: tzinfo = UTC,
        profiles: SourceProfiles = NO_PROFILES,
    ) -> None:
        self._db = db
        self._zone = zone
        self._profiles = profiles
        self._write_chunk = write_chunk or (
            SQLITE_WRITE_CHUNK if db.dialect == "sqlite" else sys.maxsize
        )
        self._default_clinic = default_clinic
        self._window = match_window
        self._alert_merge = alert_merge
        self._ttl = mapping_ttl
        self._clock = clock
        self._tables: Tables | None = None
        self._tables_loaded = 0.0
        self._tables_lock = threading.Lock()
        # Called after a commit that raised critical alerts (the in-process pager's nudge).
        self.alert_listeners: list[Callable[[], None]] = []

    def tables(self) -> Tables:
        """The code maps, reference intervals and delta thresholds, re-read every
        ``mapping_ttl`` seconds."""
        with self._tables_lock:
            if self._tables is None or time.monotonic() - self._tables_loaded > self._ttl:
                with self._db.session(readonly=True) as session:
                    clinic = (
                        clinic_by_code(session, self._default_clinic)
                        if self._default_clinic
                        else None
                    )
                    self._tables = Tables(
                        mapping_table(session),
                        interval_table(session),
                        delta_rules(session),
                        clinic.id if clinic is not None else None,
                    )
                self._tables_loaded = time.monotonic()
            return self._tables

    def process(self, message_id: int) -> Outcome:
        return self.process_batch([message_id])[message_id]

    def process_batch(self, ids: Sequence[int]) -> dict[int, Outcome]:
        """Process every id still ``received``; the others come back ``SKIPPED``."""
        outcomes = dict.fromkeys(ids, Outcome.SKIPPED)
        with self._db.session(readonly=True) as session:
            rows = session.execute(
                sa.select(_M.c.id, _M.c.raw, _M.c.message_type, _M.c.received_at, _M.c.meta)
                .where(_M.c.id.in_(list(ids)), _M.c.status == MessageStatus.RECEIVED)
                .order_by(_M.c.id)  # arrival order: a preliminary before its final
            ).all()
        prepared = [self._prepare(r.id, r.raw, r.message_type, r.received_at, r.meta) for r in rows]
        if prepared:
            with self._db.session(readonly=True) as session:
                plan = self._match_new_reports(session, prepared)
            prepared = self._read(prepared, plan)
            step = self._write_chunk
            placed: list[uuid.UUID] = []
            for start in range(0, len(prepared), step):
                written, orders = self._write(prepared[start : start + step], plan)
                outcomes.update(written)
                placed += orders
            if placed and Outcome.UNMATCHED in outcomes.values():
                self._match_again_for_batch_orders(placed, outcomes)
            if any(
                r.interpretation in CRITICAL
                for p in prepared
                for i in p.reports
                for r in i.readings
            ):
                for listener in self.alert_listeners:
                    listener()
        return outcomes

    def _prepare(
        self,
        message_id: int,
        raw: bytes,
        message_type: str | None,
        received_at: datetime,
        meta: dict[str, Any] | None,
    ) -> _Prepared:
        """The pure stages for one message."""
        try:
            if _message_type(message_type) in _ORDER_TYPES:
                orders = parse_order_message(raw, zone=self._zone, profiles=self._profiles)
                return _Prepared(message_id, received_at, orders=orders)
            parsed = parse_results(
                raw, message_type, meta or {}, zone=self._zone, profiles=self._profiles
            )
        except ParseError as exc:
            return _Prepared(message_id, received_at, refused=f"parse error: {exc}")
        maps = self.tables().mapping
        reports = []
        for report in parsed.reports:
            species = species_word(report.patient.species)
            item = ReportInput(
                message_id=message_id,
                source=parsed.source,
                report=report,
                mapped=map_observations(report.observations, parsed.source, maps),
                species=species,
                device_id=parsed.device_id,
                clinic_id=parsed.clinic_id,
            )
            reports.append(item)  # read in ``_read``, once its order is known
        qc_runs = tuple(
            QcInput(run, map_observations(run.observations, parsed.source, maps))
            for run in parsed.qc_runs
        )
        return _Prepared(
            message_id,
            received_at,
            reports=tuple(reports),
            qc_runs=qc_runs,
            device_id=parsed.device_id,
        )

    def _interpreted(
        self, item: ReportInput, received_at: datetime, ordered: OrderedAnimal | None = None
    ) -> ReportInput:
        """``item`` with our reading of each result, against the intervals of its device and
        clinic (no clinic: the default clinic's). What the sender left out of the animal (breed,
        sex, birth date) is taken from its order when ``ordered`` (species: ``item.species``)."""
        tables = self.tables()
        patient = item.report.patient
        ordered = ordered or OrderedAnimal()
        birth_date = patient.birth_date or ordered.birth_date
        age = age_in_days(birth_date, item.report.observed_at or received_at)
        breed = patient.breed.display if patient.breed else ordered.breed
        readings = tuple(
            interpret(
                m,
                tables.intervals,
                species=item.species,
                breed=breed,
                sex=patient.sex or ordered.sex,
                age_days=age,
                clinic_id=item.clinic_id or tables.default_clinic_id,
                device_id=item.device_id,
            )
            for m in item.mapped
        )
        return dataclasses.replace(item, readings=readings)

    def _read(self, prepared: list[_Prepared], plan: _Plan) -> list[_Prepared]:
        """Each report read once, after matching, with what its order knows that its sender
        left out (the order it matched, or, for a resend, the one it is attached to):

        - the clinic (a reference lab's report names none; its order does): recorded on the
          report and its alerts (that clinic's rota is paged), and whose intervals apply;
        - the animal: many labs send no species (or sex, breed, birth date), and without a
          species no result can be read against an interval, so a critical value would page
          nobody. The order's species becomes the report's, and its animal fills the gaps.
          What the lab did send is never overridden (matching refuses an order whose species
          or birth date differs)."""
        updated = []
        for p in prepared:
            reports = list(p.reports)
            for n, item in enumerate(reports):
                decision = plan.decisions.get((p.message_id, n))
                attached = plan.attached.get(item.key) if item.key is not None else None
                animal: OrderedAnimal | None = None
                if decision is not None and decision.matched:
                    clinic_id, animal = decision.clinic_id, decision.animal
                elif decision is None and attached is not None:  # a resend
                    clinic_id, animal = attached.clinic_id, attached.animal
                else:
                    clinic_id = None
                item = dataclasses.replace(
                    item,
                    clinic_id=item.clinic_id or clinic_id,
                    species=item.species or (animal.species if animal is not None else None),
                )
                reports[n] = self._interpreted(item, p.received_at, animal)
            updated.append(dataclasses.replace(p, reports=tuple(reports)))
        return updated

    def _match_new_reports(self, session: Session, prepared: list[_Prepared]) -> _Plan:
        """Match the reports seen for the first time, before the write transaction.

        Reads only, so on SQLite it holds no write lock and the inbox's commits (the ACKs) never
        wait behind order lookups. ``_write`` re-checks that each one is still new. An order in
        the same batch is matched to it afterwards (``_match_again_for_batch_orders``); one
        that another worker places in the milliseconds between is found by the unmatched
        queue's human, not lost.
        """
        items = [(p, n, item) for p in prepared for n, item in enumerate(p.reports)]
        keys = Counter(item.key for _p, _n, item in items if item.key is not None)
        resent = existing_keys(session, keys) | {k for k, count in keys.items() if count > 1}
        fresh = [(p, n, item) for p, n, item in items if item.key not in resent]
        numbers = {
            number
            for _p, _n, item in fresh
            for number in (
                item.report.order.accession,
                item.report.order.placer,
                item.report.order.filler,
            )
            if number
        }
        by_number = orders_by_number(session, numbers)
        decisions: dict[tuple[int, int], MatchDecision] = {}
        for p, n, item in fresh:
            observed_at = item.report.observed_at or p.received_at
            decision = decide_match(
                item.report,
                item.species,
                [c for c in by_number if _numbered(c, item.report)],
                observed_at=observed_at,
                window=self._window,
            )
            if not decision.matched:  # the patient rules need their own queries
                decision = self._decide(session, item, observed_at)
            decisions[(p.message_id, n)] = decision
        return _Plan(frozenset(resent), decisions, orders_of_reports(session, resent))

    def _write(
        self, prepared: list[_Prepared], plan: _Plan
    ) -> tuple[dict[int, Outcome], list[uuid.UUID]]:
        """Write a chunk of the batch; what became of each message, and the orders placed."""
        now = self._clock()
        outcomes: dict[int, Outcome] = {}
        placed: list[DiagnosticOrder] = []
        with self._db.session() as session:
            live = work_queue.lock_received_many(session, [p.message_id for p in prepared])
            prepared = [p for p in prepared if p.message_id in live]
            for p in prepared:
                if p.refused is not None:
                    work_queue.quarantine(session, p.message_id, reason=p.refused, now=now)
                    log.warning(
                        "message quarantined",
                        extra={"message_id": p.message_id, "reason": p.refused},
                    )
                    outcomes[p.message_id] = Outcome.QUARANTINED
                    continue
                save_qc_runs(
                    session,
                    message_id=p.message_id,
                    device_id=p.device_id,
                    runs=p.qc_runs,
                    received_at=p.received_at,
                )
                if not p.reports:
                    for order in p.orders:
                        row, _created = upsert_order(
                            session, order, actor=f"hl7:message:{p.message_id}"
                        )
                        placed.append(row)
                    outcomes[p.message_id] = Outcome.PROCESSED
            with_reports = [p for p in prepared if p.reports]
            outcomes |= self._save_reports(session, with_reports, plan, now)
            work_queue.finish_many(
                session,
                {
                    i: MessageStatus(o.value)
                    for i, o in outcomes.items()
                    if o in (Outcome.PROCESSED, Outcome.UNMATCHED)
                },
                now=now,
            )
            # Waiting reports are matched again once every order and report of the chunk is
            # in (and the statuses are set, which a match may then settle): an ORM often places
            # several orders for one animal, and a report waiting for the second must not go to
            # the first by the animal's PMS id before the second exists.
            for row in placed:
                self._rematch(session, row, now)
        return outcomes, [order.id for order in placed]

    def _rematch(self, session: Session, order: DiagnosticOrder, now: datetime) -> None:
        """``rematch_for_order`` with this processor's settings and the tables cached when the
        batch was mapped (never a catalogue re-read while a write transaction holds its lock)."""
        tables = self._tables
        rematch_for_order(
            session,
            order,
            window=self._window,
            now=now,
            alert_merge=self._alert_merge,
            default_clinic_id=tables.default_clinic_id if tables is not None else None,
            intervals=tables.intervals if tables is not None else None,
        )

    def _match_again_for_batch_orders(
        self, order_ids: list[uuid.UUID], outcomes: dict[int, Outcome]
    ) -> None:
        """An order and its results in one batch (common after a backlog: a restart, a broker
        outage): the match was planned before the batch was written, without the order, and the
        order's own matching, in its chunk, ran before the results were written (or in the same
        transaction, ahead of them). So once the whole batch is written, its orders look for
        waiting reports again; a message whose reports are now all matched is ``processed``."""
        waiting = [i for i, o in outcomes.items() if o is Outcome.UNMATCHED]
        now = self._clock()
        with self._db.session() as session:
            for order_id in order_ids:
                order = session.get(DiagnosticOrder, order_id)
                if order is not None:
                    self._rematch(session, order, now)
            settled = session.scalars(
                sa.select(_M.c.id).where(
                    _M.c.id.in_(waiting), _M.c.status == MessageStatus.PROCESSED
                )
            ).all()
        for message_id in settled:
            outcomes[message_id] = Outcome.PROCESSED

    def _save_reports(
        self, session: Session, prepared: list[_Prepared], plan: _Plan, now: datetime
    ) -> dict[int, Outcome]:
        planned = [
            (p, item, plan.decisions[(p.message_id, n)])
            for p in prepared
            for n, item in enumerate(p.reports)
            if (p.message_id, n) in plan.decisions
        ]
        # A report that another transaction wrote since the plan was made is a resend now.
        raced = existing_keys(session, {item.key for _p, item, _d in planned if item.key})
        fresh = [(item, d) for _p, item, d in planned if item.key not in raced]
        saved = insert_new_reports(session, fresh, now=now)
        written = [(item, result) for (item, _d), result in zip(fresh, saved, strict=True)]
        for p in prepared:  # in message order: a final after its preliminary
            for item in p.reports:
                if item.key in plan.resent or (item.key is not None and item.key in raced):
                    observed_at = item.report.observed_at or p.received_at
                    decide = functools.partial(self._decide, session, item, observed_at)
                    written.append((item, save_report(session, item, decide=decide, now=now)))
        matched = dict.fromkeys((p.message_id for p in prepared), True)
        received = {p.message_id: p.received_at for p in prepared}
        # The thresholds cached when these reports were mapped (``_prepare`` loaded the tables):
        # never a catalogue re-read while the write transaction holds its lock.
        rules = self._tables.deltas if self._tables is not None else {}
        asked: list[tuple[SavedReport, list[MappedObservation], HistoryQuery]] = []
        for item, result in written:
            matched[item.message_id] &= result.matched
            before = item.report.observed_at or received[item.message_id]
            if (question := self._delta_question(item, result, rules, before)) is not None:
                asked.append((result, *question))
        # Every report's history in one query: all of them are written by now, so each sees the
        # others of this batch that precede it, as if asked one after another.
        answers = previous_values_of_many(session, [question for *_, question in asked])
        for (result, checked, _question), previous in zip(asked, answers, strict=True):
            self._record_deltas(session, result, checked, previous, rules)
        for item, result in written:
            self._alert(session, item, result, now)
        return {i: Outcome.PROCESSED if m else Outcome.UNMATCHED for i, m in matched.items()}

    @staticmethod
    def _delta_question(
        item: ReportInput,
        saved: SavedReport,
        rules: dict[uuid.UUID, DeltaRule],
        before: datetime,
    ) -> tuple[list[MappedObservation], HistoryQuery] | None:
        """The delta check of one written report (issue 5) asks for the patient's latest earlier
        result of each test with a threshold: the results it checks and that question, or None
        when no result has a threshold or the patient is unknown (no matched patient id, no PMS
        id; never by name). A result observed before one already stored is checked against its
        own predecessor; the later one keeps the outcome it got when it was written."""
        checked = [
            m
            for m in item.mapped
            if m.mapped
            and m.test_id in rules
            and m.value_numeric is not None
            and m.comparator is None
        ]
        patient_id = saved.patient_id if saved.matched else None
        pms_id = item.report.patient.pms_id[:64] if item.report.patient.pms_id else None
        if not checked or (patient_id is None and pms_id is None):
            return None
        question = HistoryQuery(
            patient_id=patient_id,
            patient_pms_id=pms_id,
            test_ids=frozenset(m.test_id for m in checked if m.test_id is not None),
            before=before,
            exclude_report=saved.report_id,
        )
        return checked, question

    @staticmethod
    def _record_deltas(
        session: Session,
        saved: SavedReport,
        checked: list[MappedObservation],
        previous: dict[uuid.UUID, tuple[Decimal, datetime]],
        rules: dict[uuid.UUID, DeltaRule],
    ) -> None:
        """Flag the report's results that moved beyond their threshold since ``previous``."""
        if not previous:
            return
        ids = result_ids(session, saved.report_id)
        outcomes = []
        for m in checked:
            sub_id = m.observation.sub_id
            result_id = ids.get((m.observation.code[:64], sub_id[:20] if sub_id else sub_id))
            if m.test_id is None or m.test_id not in previous or result_id is None:
                continue
            value, observed_at = previous[m.test_id]
            flag, note = delta_check(
                value, m.value_numeric, rules[m.test_id], previous_at=observed_at, unit=m.unit
            )
            if flag is not None:
                outcomes.append((result_id, flag, note))
        record_deltas(session, outcomes)

    def _alert(
        self, session: Session, item: ReportInput, saved: SavedReport, now: datetime
    ) -> None:
        """Critical values open (or update) alerts in this very transaction (issue 5 §3); a
        correction that is no longer critical annotates the alert, never closes it (R23)."""
        pairs = item.pairs()
        if not any(r is not None and r.interpretation in CRITICAL for _m, r in pairs):
            if saved.action == "corrected":
                label = patient_label(item.report, item.species, matched=saved.matched)
                for m, _reading in pairs:
                    if m.test_id is not None:
                        note_no_longer_critical(
                            session,
                            patient_id=saved.patient_id if saved.matched else None,
                            patient_label=label,
                            test_id=m.test_id,
                            test_code=m.test_code,
                            value_text=m.observation.value_text,
                            now=now,
                        )
            return
        findings = critical_findings(
            item.report,
            pairs,
            report_id=saved.report_id,
            species=item.species,
            matched=saved.matched,
            patient_id=saved.patient_id,
            result_ids=result_ids(session, saved.report_id),
        )
        for finding in findings:
            if item.clinic_id is not None:
                finding = dataclasses.replace(finding, clinic_id=item.clinic_id)
            raise_critical(session, finding, now=now, merge_window=self._alert_merge)

    def _decide(self, session: Session, item: ReportInput, observed_at: datetime) -> MatchDecision:
        candidates = candidate_orders(
            session, item.report, item.species, observed_at=observed_at, window=self._window
        )
        return decide_match(
            item.report, item.species, candidates, observed_at=observed_at, window=self._window
        )
