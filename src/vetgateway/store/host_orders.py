"""Pending orders by specimen id, for answering an analyzer's host query (LIS2-A2 Q record).

An analyzer that reads a tube's barcode asks which tests to run on it. The specimen id on the
tube is the order's accession number (else its placer number, for practices that label tubes with
the PMS requisition number). Only tests still to be done are returned: cancelled orders and items,
items already resulted, and tests that already have a result matched to the order are left out.
Reads only; never commits.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from vetgateway.model import ResultStatus, Sex
from vetgateway.store.models import (
    CatalogueTest,
    DiagnosticOrder,
    DiagnosticReport,
    LabResult,
    OrderItemStatus,
    OrderStatus,
)

__all__ = ["PendingOrder", "pending_for_sample"]


@dataclass(frozen=True, slots=True)
class PendingOrder:
    """An order with tests still to run, as the host-query answer needs it."""

    sample_id: str
    placer_number: str | None
    patient_pms_id: str | None
    patient_name: str | None
    owner_surname: str | None
    species: str | None
    sex: Sex | None
    birth_date: date | None
    tests: tuple[tuple[uuid.UUID | None, str], ...]  # (catalogue test id, code as ordered)


def _resulted(
    session: Session, order_ids: list[uuid.UUID]
) -> dict[uuid.UUID, set[uuid.UUID | str]]:
    """Per order, the catalogue tests (ids and codes) that already have a live result matched
    to it: an analyzer must not be told to run them again, even while the item is still
    ``ordered`` (the order status follows the PMS, which may not have caught up)."""
    if not order_ids:
        return {}
    rows = session.execute(
        sa.select(DiagnosticReport.order_id, CatalogueTest.id, CatalogueTest.code)
        .join(LabResult, LabResult.report_id == DiagnosticReport.id)
        .join(CatalogueTest, CatalogueTest.id == LabResult.test_id)
        .where(
            DiagnosticReport.order_id.in_(order_ids),
            DiagnosticReport.deleted_at.is_(None),
            LabResult.deleted_at.is_(None),
            LabResult.status.not_in([ResultStatus.CANCELLED, ResultStatus.SUPERSEDED]),
        )
    ).all()
    done: dict[uuid.UUID, set[uuid.UUID | str]] = {}
    for order_id, test_id, code in rows:
        if order_id is not None:
            done.setdefault(order_id, set()).update((test_id, code.upper()))
    return done


def pending_for_sample(session: Session, sample_id: str) -> list[PendingOrder]:
    """Live orders whose accession (else placer) number is ``sample_id``, with open tests."""
    sample_id = sample_id.strip()
    if not sample_id:
        return []
    orders = session.scalars(
        sa.select(DiagnosticOrder)
        .where(
            sa.or_(
                DiagnosticOrder.accession_number == sample_id,
                DiagnosticOrder.placer_number == sample_id,
            ),
            DiagnosticOrder.status != OrderStatus.CANCELLED,
            DiagnosticOrder.status != OrderStatus.COMPLETED,
            DiagnosticOrder.deleted_at.is_(None),
        )
        .options(selectinload(DiagnosticOrder.items))
        .order_by(DiagnosticOrder.created_at)
    ).all()
    resulted = _resulted(session, [o.id for o in orders])
    found = []
    for order in orders:
        done = resulted.get(order.id, set())
        tests = tuple(
            (item.test_id, item.ordered_code)
            for item in order.items
            if item.status is OrderItemStatus.ORDERED
            and item.deleted_at is None
            and item.test_id not in done
            and item.ordered_code.strip().upper() not in done
        )
        if tests:
            found.append(
                PendingOrder(
                    sample_id=sample_id,
                    placer_number=order.placer_number,
                    patient_pms_id=order.patient_pms_id,
                    patient_name=order.patient_name,
                    owner_surname=order.owner_surname,
                    species=order.species,
                    sex=order.sex,
                    birth_date=order.birth_date,
                    tests=tests,
                )
            )
    return found
