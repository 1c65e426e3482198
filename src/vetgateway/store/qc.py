"""QC runs from analyzers, written in the pipeline's transaction for their message.

A run an analyzer sent is stored as sent (sample id, control, lot number) with one ``qc_results``
row per control result, mapped onto the catalogue like patient results (so Levey-Jennings charts
and Westgard rules work per catalogue test), and linked to a configured lot when one matches its
lot number (for that control material, when the material's name is the control as sent). The
verdict starts ``pending``: Westgard evaluation and review are their own step.

Exactly once: the message row is locked by the caller's transaction and runs are written only while
it is still ``received``, and a message that already has runs gets none again. An analyzer that
sends a run again (its ACK was lost, so it resent the message, stored as a new one) gets it
counted once: a run dated by the analyzer with the same device, sample and control is skipped, so
Westgard statistics never see a control twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from vetgateway.model import QcRun as QcRunIn
from vetgateway.pipeline.mapping import MappedObservation
from vetgateway.store.models import QcLot, QcMaterial, QcResult, QcRun

__all__ = ["QcInput", "save_qc_runs"]


@dataclass(frozen=True, slots=True)
class QcInput:
    """One control run after mapping, ready to store."""

    run: QcRunIn
    mapped: tuple[MappedObservation, ...]


def _lot_id(session: Session, run: QcRunIn) -> uuid.UUID | None:
    if not run.lot:
        return None
    query = sa.select(QcLot.id).where(QcLot.lot_number == run.lot.strip()[:64])
    if run.control:
        query = query.join(QcMaterial, QcMaterial.id == QcLot.material_id).where(
            sa.func.lower(QcMaterial.name) == run.control.strip().lower()
        )
    ids = session.scalars(query.limit(2)).all()
    return ids[0] if len(ids) == 1 else None  # two lots with that number: a person decides


def _already_stored(session: Session, row: QcRun) -> bool:
    """A live run of the same device, sample, control and analyzer time exists."""
    found = session.scalar(
        sa.select(QcRun.id)
        .where(
            QcRun.device_id.is_not_distinct_from(row.device_id),
            QcRun.sample_id.is_not_distinct_from(row.sample_id),
            QcRun.control.is_not_distinct_from(row.control),
            QcRun.run_at == row.run_at,
            QcRun.deleted_at.is_(None),
        )
        .limit(1)
    )
    return found is not None


def save_qc_runs(
    session: Session,
    *,
    message_id: int,
    device_id: uuid.UUID | None,
    runs: Sequence[QcInput],
    received_at: datetime,
) -> list[uuid.UUID]:
    """Store the runs of one message; returns their ids (none if the message has runs already)."""
    if not runs or session.scalar(
        sa.select(QcRun.id).where(QcRun.inbound_message_id == message_id).limit(1)
    ):
        return []
    ids = []
    for item in runs:
        run = item.run
        row = QcRun(
            device_id=device_id,
            lot_id=_lot_id(session, run),
            inbound_message_id=message_id,
            run_at=run.run_at or received_at,
            sample_id=run.sample_id[:64] if run.sample_id else None,
            control=run.control.strip()[:200] or None if run.control else None,
            lot_number=run.lot.strip()[:64] or None if run.lot else None,
        )
        if run.run_at is not None and _already_stored(session, row):
            continue  # the analyzer sent the same run again (its ACK was lost): counted once
        session.add(row)
        session.flush()
        session.add_all(
            QcResult(
                run_id=row.id,
                test_id=m.test_id if m.mapped else None,
                source_code=m.observation.code[:64],
                value_numeric=m.value_numeric,
                value_text=m.observation.value_text,
                unit=m.unit[:32] if m.unit else None,
                abnormal_flags="~".join(m.observation.abnormal_flags)[:64] or None,
            )
            for m in item.mapped
        )
        ids.append(row.id)
    session.flush()
    return ids
