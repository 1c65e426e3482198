"""The unmatched-results queue, worked by technicians (issue 4 §5; RELIABILITY R38, R39).

- ``GET /unmatched``: reports the pipeline could not attach, newest first, with the reason and
  the scored candidates (owner + animal name + species only ever *propose*; a human decides).
- ``GET /mappings/unmapped``: the mapping work list, every sender code and unit stored
  ``unmapped`` (R36 unknown code, R37 unit without a conversion), most frequent first.
- ``POST /unmatched/{id}/resolve``: ``{"action": "attach", "order_id": …}`` (or ``patient_id``),
  or ``{"action": "reject", "reason": …}``. Audited with the token's name; 404 for an unknown
  report, 409 when it is no longer in the queue or the decision is incomplete.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import BaseModel, Field

from vetgateway.api.auth import Principal, require_role
from vetgateway.api.deps import get_database, get_settings
from vetgateway.api.v1.results import ReportHeader
from vetgateway.config import Settings
from vetgateway.pipeline.late_match import read_again_after_match
from vetgateway.store import results as result_store
from vetgateway.store.clinics import clinic_by_code
from vetgateway.store.db import Database
from vetgateway.store.models import Role
from vetgateway.store.models.base import utcnow
from vetgateway.store.models.reports import MatchStatus

router = APIRouter(prefix="/unmatched", tags=["unmatched"])

Technician = Annotated[Principal, Depends(require_role(Role.TECHNICIAN))]
Db = Annotated[Database, Depends(get_database)]
AppSettings = Annotated[Settings, Depends(get_settings)]


class UnmatchedReport(ReportHeader):
    created_at: datetime


class UnmatchedPage(BaseModel):
    items: list[UnmatchedReport]
    next_before: datetime | None = Field(description="pass as before for the next page")


class Resolve(BaseModel):
    action: Literal["attach", "reject"]
    order_id: uuid.UUID | None = None
    patient_id: uuid.UUID | None = Field(default=None, description="the PMS patient's UUID")
    reason: str | None = Field(default=None, max_length=2000)


class Resolved(BaseModel):
    id: uuid.UUID
    match_status: MatchStatus


@router.get("", summary="Reports waiting for a human to match them")
def list_unmatched(
    _tech: Technician,
    db: Db,
    before: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> UnmatchedPage:
    with db.session(readonly=True) as session:
        reports = result_store.find_unmatched(session, before=before, limit=limit)
        items = [UnmatchedReport.model_validate(r) for r in reports]
    return UnmatchedPage(
        items=items, next_before=items[-1].created_at if len(items) == limit else None
    )


@router.post("/{report_id}/resolve", summary="Attach an unmatched report, or reject it")
def resolve(
    report_id: uuid.UUID, body: Resolve, tech: Technician, db: Db, settings: AppSettings
) -> Resolved:
    """An attached report is read again with what its order knows (``pipeline.late_match``):
    species, clinic, and the alerts of its critical values, now for the animal it belongs to."""
    with db.session() as session:
        outcome = result_store.resolve_unmatched(
            session,
            report_id,
            action=body.action,
            actor=tech.actor,
            order_id=body.order_id,
            patient_id=body.patient_id,
            reason=body.reason,
        )
        if outcome.not_found:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no report {report_id}")
        if outcome.refused is not None:
            raise HTTPException(status.HTTP_409_CONFLICT, outcome.refused)
        if outcome.match_status is MatchStatus.MATCHED:
            default_clinic = clinic_by_code(session, settings.default_clinic)
            read_again_after_match(
                session,
                report_id,
                now=utcnow(),
                merge_window=timedelta(minutes=settings.alert_merge_minutes),
                default_clinic_id=default_clinic.id if default_clinic is not None else None,
            )
    return Resolved(id=outcome.report_id, match_status=outcome.match_status)


unmapped_router = APIRouter(prefix="/mappings", tags=["unmatched"])


class UnmappedCode(BaseModel):
    source: str | None = Field(description="the sender, as code maps name it")
    source_code: str
    source_unit: str | None
    source_name: str | None
    reason: str | None
    results: int = Field(description="current results stored unmapped with this code and unit")
    first_seen: datetime
    last_seen: datetime


@unmapped_router.get("/unmapped", summary="Codes and units waiting for a mapping (R36, R37)")
def list_unmapped(
    _tech: Technician, db: Db, limit: Annotated[int, Query(ge=1, le=5000)] = 500
) -> list[UnmappedCode]:
    with db.session(readonly=True) as session:
        rows = result_store.unmapped_codes(session, limit=limit)
        return [UnmappedCode(**row._mapping) for row in rows]
