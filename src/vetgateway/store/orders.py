"""Diagnostic orders from the practice-management system: stored once, found again for matching.

``upsert_order`` is what the HL7 order pipeline (``parse/orm.py``) and ``POST /api/v1/orders``
share. An order's identity is its placer number *within its source* (placer numbers are unique per
placing system), or its accession number when it has no placer number. The same order sent again
is therefore found and updated, never duplicated:

- ``new``: creates the order, or (a resend) updates the fields it carries and adds the tests the
  stored order does not have yet. A field sent empty never blanks a known value, and a resend
  never removes a test: PMSs send one message per test of a requisition, with one placer number.
- ``update``: the same for the fields; the tests become exactly those sent (tests no longer
  listed are cancelled, unless already resulted). ``items=()`` leaves the tests as they are.
- ``cancel``: cancels the tests given, or all of them; when no test is left the order's status
  becomes ``cancelled``. A cancel for an unknown order stores it as cancelled, so the later
  original (messages may arrive out of order) does not bring it back.
- A cancelled order stays cancelled: ``new`` and ``update`` for it change nothing (the PMS places
  a new order with a new number). ``ordered_at`` is set once, by the first message: later ones
  carry the time of the change, and matching's window is about when the animal was seen.

The microchip is stored in the form ``normalise_microchip`` gives (when it reads as one), so the
indexed column can be searched with the form a lab sends in any spelling; in the animal's and the
owner's names runs of whitespace become one space, so SQL can compare them as matching does.

Concurrency: on SQLite write transactions are serialised (``BEGIN IMMEDIATE``, see ``db.py``); on
PostgreSQL the order's key is taken as a transaction-scoped advisory lock first, so two workers
upserting the same order cannot both insert it.

Audit entries: ``order.created`` and ``order.updated`` (entity ``diagnostic_order``), naming the
action, the changed field names and the tests added or cancelled, never patient values. A resend
that changes nothing writes nothing.

``candidate_orders`` fetches, with one small indexed query per rule plus one for the tests, the
orders ``pipeline.matching.decide_match`` chooses from. Like every store function these take a
session and never commit.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from vetgateway.model import Report
from vetgateway.pipeline.matching import (
    DEFAULT_WINDOW,
    LATE_ORDER_GRACE,
    OrderCandidate,
    normalise_microchip,
)
from vetgateway.pipeline.parse.orm import OrderIn
from vetgateway.store.audit import audit
from vetgateway.store.models import (
    Clinic,
    DiagnosticOrder,
    DiagnosticReport,
    OrderItem,
    OrderItemStatus,
    OrderStatus,
)
from vetgateway.store.models.reports import MatchStatus

__all__ = [
    "ENTITY_TYPE",
    "MAX_PER_RULE",
    "OrderIn",
    "candidate_orders",
    "get_order",
    "orders_by_number",
    "orders_of_reports",
    "upsert_order",
]

log = logging.getLogger(__name__)

ENTITY_TYPE = "diagnostic_order"
MAX_PER_RULE = 50
"""At most this many orders are read per matching rule (newest first)."""

_O = DiagnosticOrder
_SCALARS = (
    "accession_number",
    "filler_number",
    "patient_id",
    "patient_pms_id",
    "patient_microchip",
    "patient_name",
    "species",
    "breed",
    "sex",
    "birth_date",
    "owner_surname",
    "clinic_id",
)


def _opt(text: str | None) -> str | None:
    text = text.strip() if text is not None else None
    return text or None


def _name(text: str | None) -> str | None:
    """Names keep their case; runs of whitespace become one space, so SQL can compare them."""
    return " ".join(text.split()) or None if text is not None else None


def _values(order: OrderIn) -> dict[str, Any]:
    """The order's column values as stored: trimmed, microchip normalised, species lower-case,
    whitespace in names collapsed."""
    chip = _opt(order.patient_microchip)
    species = _opt(order.species)
    return {
        "accession_number": _opt(order.accession_number),
        "placer_number": _opt(order.placer_number),
        "filler_number": _opt(order.filler_number),
        "patient_id": order.patient_id,
        "patient_pms_id": _opt(order.patient_pms_id),
        "patient_microchip": normalise_microchip(chip) or chip,
        "patient_name": _name(order.patient_name),
        "species": species.lower() if species else None,
        "breed": _opt(order.breed),
        "sex": order.sex,
        "birth_date": order.birth_date,
        "owner_surname": _name(order.owner_surname),
        "ordered_at": order.ordered_at,
    }


def _clinic_id(session: Session, code: str | None) -> uuid.UUID | None:
    """The clinic named by ``code``; None for none or an unknown one (an HL7 sending facility
    need not be one of ours; the API refuses unknown codes before it gets here)."""
    code = _opt(code)
    if code is None:
        return None
    return session.scalar(
        sa.select(Clinic.id).where(Clinic.code == code, Clinic.deleted_at.is_(None))
    )


def _codes(order: OrderIn) -> list[str]:
    seen: dict[str, None] = {}
    for code in order.items:
        seen.setdefault(code.strip(), None)
    return list(seen)


def _lock(session: Session, key: str) -> None:
    """Serialise upserts of one order key on PostgreSQL (SQLite writers are serial already)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": key}
        )


def _find(session: Session, values: dict[str, Any], source: str) -> DiagnosticOrder | None:
    placer = values["placer_number"]
    if placer is not None:
        key = f"order|{source}|placer|{placer}"
        where = sa.and_(_O.placer_number == placer, _O.source == source)
    else:
        key = f"order|accession|{values['accession_number']}"
        where = _O.accession_number == values["accession_number"]
    _lock(session, key)
    return session.scalars(
        sa.select(_O)
        .where(where, _O.deleted_at.is_(None))
        .options(selectinload(_O.items))
        .order_by(_O.created_at, _O.id)
        .limit(1)
    ).first()


def upsert_order(session: Session, order: OrderIn, *, actor: str) -> tuple[DiagnosticOrder, bool]:
    """Store ``order`` (see the module docstring); the row, with ``items`` loaded, and whether it
    was created. Raises ``ValueError`` listing ``order.problems()`` when it cannot be stored
    (the parser and the API check first, so that is a caller's bug)."""
    problems = order.problems()
    if problems:
        raise ValueError("; ".join(problems))
    values = _values(order)
    values["clinic_id"] = _clinic_id(session, order.clinic)
    codes = _codes(order)
    source = order.source.strip()
    existing = _find(session, values, source)
    if existing is None:
        return _create(session, order, values, codes, source, actor), True
    _update(session, existing, order, values, codes, actor)
    return existing, False


def _create(
    session: Session,
    order: OrderIn,
    values: dict[str, Any],
    codes: list[str],
    source: str,
    actor: str,
) -> DiagnosticOrder:
    cancelled = order.action == "cancel"
    item_status = OrderItemStatus.CANCELLED if cancelled else OrderItemStatus.ORDERED
    row = DiagnosticOrder(
        **values,
        source=source,
        status=OrderStatus.CANCELLED if cancelled else OrderStatus.PLACED,
        items=[OrderItem(ordered_code=code, status=item_status) for code in codes],
    )
    session.add(row)
    session.flush()
    audit(
        session,
        actor=actor,
        action="order.created",
        entity_type=ENTITY_TYPE,
        entity_id=str(row.id),
        details={
            "action": order.action,
            "source": source,
            "placer_number": row.placer_number,
            "accession_number": row.accession_number,
            "items": codes,
            "status": row.status.value,
        },
    )
    log.info(
        "order created",
        extra={"order_id": str(row.id), "source": source, "order_action": order.action},
    )
    return row


def _update(
    session: Session,
    row: DiagnosticOrder,
    order: OrderIn,
    values: dict[str, Any],
    codes: list[str],
    actor: str,
) -> None:
    if row.status is OrderStatus.CANCELLED:
        if order.action != "cancel":
            log.info(
                "order is cancelled; the message for it changes nothing",
                extra={"order_id": str(row.id), "order_action": order.action},
            )
        return
    changed: list[str] = []
    added: list[str] = []
    cancelled: list[str] = []
    reinstated: list[str] = []
    live = [item for item in row.items if item.deleted_at is None]
    if order.action == "cancel":
        targets = set(codes) if codes else {item.ordered_code for item in live}
        for item in live:
            if item.ordered_code in targets and item.status is OrderItemStatus.ORDERED:
                item.status = OrderItemStatus.CANCELLED
                cancelled.append(item.ordered_code)
        if all(item.status is OrderItemStatus.CANCELLED for item in live):
            row.status = OrderStatus.CANCELLED
            changed.append("status")
    else:
        for name in _SCALARS:
            value = values[name]
            if value is not None and getattr(row, name) != value:
                setattr(row, name, value)
                changed.append(name)
        if row.ordered_at is None and values["ordered_at"] is not None:
            row.ordered_at = values["ordered_at"]
            changed.append("ordered_at")
        by_code = {item.ordered_code: item for item in live}
        for code in codes:
            known = by_code.get(code)
            if known is None:
                by_code[code] = OrderItem(ordered_code=code, status=OrderItemStatus.ORDERED)
                row.items.append(by_code[code])
                added.append(code)
            elif known.status is OrderItemStatus.CANCELLED:
                known.status = OrderItemStatus.ORDERED
                reinstated.append(code)
        if order.action == "update" and codes:
            for item in live:
                if item.ordered_code not in codes and item.status is OrderItemStatus.ORDERED:
                    item.status = OrderItemStatus.CANCELLED
                    cancelled.append(item.ordered_code)
    if not (changed or added or cancelled or reinstated):
        return
    session.flush()
    details: dict[str, object] = {"action": order.action, "fields": sorted(changed)}
    for key, codes_changed in (
        ("items_added", added),
        ("items_cancelled", cancelled),
        ("items_reinstated", reinstated),
    ):
        if codes_changed:
            details[key] = codes_changed
    audit(
        session,
        actor=actor,
        action="order.updated",
        entity_type=ENTITY_TYPE,
        entity_id=str(row.id),
        details=details,
    )
    log.info(
        "order updated",
        extra={"order_id": str(row.id), "order_action": order.action, "fields": sorted(changed)},
    )


def get_order(session: Session, order_id: uuid.UUID) -> DiagnosticOrder | None:
    """The order with its ``items`` loaded, or None (also for a soft-deleted one)."""
    return session.scalars(
        sa.select(_O)
        .where(_O.id == order_id, _O.deleted_at.is_(None))
        .options(selectinload(_O.items))
    ).first()


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _name_key(text: str | None) -> str | None:
    """How names are compared in SQL: ``lower(trim(column))`` against this. SQLite's ``lower``
    folds ASCII letters only, so there a name differing in the case of a non-ASCII letter is not
    found; this rule only proposes, and a person can still search by hand."""
    if text is None:
        return None
    return " ".join(text.split()).lower() or None


def candidate_orders(
    session: Session,
    report: Report,
    species: str | None,
    *,
    observed_at: datetime,
    window: timedelta = DEFAULT_WINDOW,
) -> list[OrderCandidate]:
    """The orders ``decide_match`` may choose from for ``report``, each once.

    One query per rule the report has clues for, each on an indexed column: order numbers (any
    order, cancelled ones included: a number names one order whatever became of it); PMS id;
    microchip (normalised and as sent); owner surname and animal name (case-insensitive, plus the
    species when known). The patient queries skip cancelled orders and orders placed outside the
    matching window (``window`` before ``observed_at`` to ``LATE_ORDER_GRACE`` after it; the PMS
    id and microchip queries keep orders with no order time, to show them). At most
    ``MAX_PER_RULE`` orders per rule, newest first; soft-deleted orders never.
    """
    observed = _aware(observed_at)
    earliest, latest = observed - window, observed + LATE_ORDER_GRACE
    live = _O.deleted_at.is_(None)
    open_ = _O.status != OrderStatus.CANCELLED
    in_window = _O.ordered_at.between(earliest, latest)
    patient = report.patient
    rules: list[sa.ColumnElement[bool]] = []

    numbers = [
        column == value
        for column, value in (
            (_O.accession_number, _opt(report.order.accession)),
            (_O.placer_number, _opt(report.order.placer)),
            (_O.filler_number, _opt(report.order.filler)),
        )
        if value is not None
    ]
    if numbers:
        rules.append(sa.and_(live, sa.or_(*numbers)))
    pms_id = _opt(patient.pms_id)
    if pms_id is not None:
        rules.append(
            sa.and_(
                live, open_, _O.patient_pms_id == pms_id, sa.or_(in_window, _O.ordered_at.is_(None))
            )
        )
    sent_chip = _opt(patient.microchip)
    chips = {c for c in (normalise_microchip(sent_chip), sent_chip) if c is not None}
    if chips:
        rules.append(
            sa.and_(
                live,
                open_,
                _O.patient_microchip.in_(sorted(chips)),
                sa.or_(in_window, _O.ordered_at.is_(None)),
            )
        )
    owner, name = _name_key(patient.owner_surname), _name_key(patient.name)
    if owner is not None and name is not None:
        same_species = (
            sa.true()
            if species is None
            else sa.or_(_O.species.is_(None), sa.func.lower(_O.species) == species.lower())
        )
        rules.append(
            sa.and_(
                live,
                open_,
                in_window,
                sa.func.lower(sa.func.trim(_O.owner_surname)) == owner,
                sa.func.lower(sa.func.trim(_O.patient_name)) == name,
                same_species,
            )
        )

    found: dict[uuid.UUID, DiagnosticOrder] = {}
    for where in rules:
        rows = session.scalars(
            sa.select(_O).where(where).order_by(_O.created_at.desc(), _O.id).limit(MAX_PER_RULE)
        )
        for row in rows:
            found.setdefault(row.id, row)
    if not found:
        return []
    codes: dict[uuid.UUID, list[str]] = {order_id: [] for order_id in found}
    for order_id, code in session.execute(
        sa.select(OrderItem.order_id, OrderItem.ordered_code)
        .where(
            OrderItem.order_id.in_(list(found)),
            OrderItem.deleted_at.is_(None),
            OrderItem.status != OrderItemStatus.CANCELLED,
        )
        .order_by(OrderItem.ordered_code)  # a set to matching; sorted, so runs compare equal
    ):
        codes[order_id].append(code)
    return [_candidate(row, tuple(codes[order_id])) for order_id, row in found.items()]


def orders_by_number(session: Session, numbers: Collection[str]) -> list[OrderCandidate]:
    """Every live order whose accession, placer or filler number is among ``numbers``, in one
    query: the pipeline's first matching step for a whole batch of reports.

    The same orders ``candidate_orders`` finds by number (cancelled ones included), without
    their ordered codes, which only the patient rules use to break ties.
    """
    wanted = sorted({n.strip() for n in numbers if n and n.strip()})
    if not wanted:
        return []
    rows = session.scalars(
        sa.select(_O).where(
            _O.deleted_at.is_(None),
            sa.or_(
                _O.accession_number.in_(wanted),
                _O.placer_number.in_(wanted),
                _O.filler_number.in_(wanted),
            ),
        )
    )
    return [_candidate(row, ()) for row in rows]


def orders_of_reports(session: Session, keys: Collection[str]) -> dict[str, OrderCandidate]:
    """For each report key whose live report is attached to an order, that order: what a
    resend (preliminary → final, a correction) falls back on for what its sender left out."""
    if not keys:
        return {}
    rows = session.execute(
        sa.select(DiagnosticReport.report_key, _O)
        .join(_O, _O.id == DiagnosticReport.order_id)
        .where(
            DiagnosticReport.report_key.in_(sorted(keys)),
            DiagnosticReport.deleted_at.is_(None),
            DiagnosticReport.match_status == MatchStatus.MATCHED,
        )
        .order_by(DiagnosticReport.version)  # the newest version's order wins
    )
    return {key: _candidate(order, ()) for key, order in rows if key is not None}


def _candidate(row: DiagnosticOrder, codes: Sequence[str]) -> OrderCandidate:
    return OrderCandidate(
        order_id=row.id,
        patient_id=row.patient_id,
        accession_number=row.accession_number,
        placer_number=row.placer_number,
        filler_number=row.filler_number,
        patient_pms_id=row.patient_pms_id,
        patient_microchip=row.patient_microchip,
        patient_name=row.patient_name,
        owner_surname=row.owner_surname,
        species=row.species,
        birth_date=row.birth_date,
        ordered_at=row.ordered_at,
        ordered_codes=tuple(codes),
        clinic_id=row.clinic_id,
        sex=row.sex,
        breed=row.breed,
    )
