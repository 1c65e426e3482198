"""Results and reports for the practice-management system (issue 4 §6).

- ``GET /results?accession=&patient_id=&since=&after_id=``: current results (corrections replace
  what they supersede), oldest first, keyset-paginated by ``after_id`` (= ``next_after_id``).
  ``accession`` finds a report by the lab's accession number or by its order's.
  Each carries the test (our catalogue code and name when mapped, always the sender's code), the
  value as sent and as a number, unit, the lab's range and flags, status and mapping status,
  and the delta check against the patient's previous result (``delta_flag``, ``delta_note``).
- ``GET /reports/{id}``: one report version with its results, attachments, match and the list of
  all its versions; ``GET /reports/{id}/attachments/{n}`` the attachment's bytes.

Readable by veterinarians, technicians and device tokens (a PMS integration), and admins.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from vetgateway.api.auth import Principal, require_role
from vetgateway.api.deps import get_database
from vetgateway.model import ReportStatus, ResultStatus, Sex
from vetgateway.numbers import plain
from vetgateway.store import results as result_store
from vetgateway.store.db import Database
from vetgateway.store.models import Role
from vetgateway.store.models.reports import Interpretation, MappingStatus, MatchStatus

router = APIRouter(tags=["results"])

Reader = Annotated[
    Principal, Depends(require_role(Role.VETERINARIAN, Role.TECHNICIAN, Role.DEVICE))
]
Db = Annotated[Database, Depends(get_database)]

MAX_LIMIT = 5000

# A number as the lab would print it, the same from SQLite and PostgreSQL (``numbers.plain``);
# a JSON string, as Decimal always was here, so no client rounds it through a float.
Number = Annotated[Decimal, PlainSerializer(plain, return_type=str, when_used="json")]


class ResultOut(BaseModel):
    id: int
    report_id: uuid.UUID
    test_code: str | None = Field(description="our catalogue code; null when unmapped")
    test_name: str | None
    loinc: str | None
    source_code: str = Field(description="the code as the sender sent it")
    source_name: str | None
    value: str = Field(description="the value exactly as sent")
    value_numeric: Number | None = Field(description="in `unit`; null if not a number")
    comparator: str | None
    unit: str | None
    source_unit: str | None
    value_type: str | None
    reference_range: str | None = Field(description="the lab's range, as sent")
    lab_low: Number | None
    lab_high: Number | None
    lab_flags: str | None
    interpretation: Interpretation
    reference_interval_id: uuid.UUID | None = Field(description="ours, when one was applied")
    status: ResultStatus
    mapping_status: MappingStatus
    mapping_note: str | None
    delta_flag: bool | None = Field(
        default=None,
        description="true when the change from the patient's previous result of the test is"
        " beyond the test's delta threshold; null when not checked",
    )
    delta_note: str | None = Field(
        default=None, description="the previous value and date compared with, and the change"
    )
    observed_at: datetime | None
    version: int
    supersedes_id: int | None
    comments: str | None
    updated_at: datetime


class ResultListItem(ResultOut):
    accession_number: str | None
    patient_id: uuid.UUID | None
    order_id: uuid.UUID | None
    report_status: ReportStatus


class ResultPage(BaseModel):
    items: list[ResultListItem]
    next_after_id: int | None


class AttachmentOut(BaseModel):
    id: int
    content_type: str
    filename: str | None
    size: int
    sha256: str
    url: str


class VersionOut(BaseModel):
    id: uuid.UUID
    version: int
    status: ReportStatus


class ReportHeader(BaseModel):
    """What identifies a report and its patient as the sender gave them, and how matching
    went: shared by the report itself and the unmatched queue."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    inbound_message_id: int | None
    source: str | None
    accession_number: str | None
    placer_number: str | None
    filler_number: str | None
    service_code: str | None
    service_name: str | None
    status: ReportStatus
    patient_pms_id: str | None
    patient_microchip: str | None
    patient_name: str | None
    owner_surname: str | None
    species: str | None
    match_reason: str | None
    match_candidates: list[dict[str, Any]] | None


class ReportOut(ReportHeader):
    observed_at: datetime | None
    reported_at: datetime | None
    version: int
    supersedes_id: uuid.UUID | None
    versions: list[VersionOut]
    order_id: uuid.UUID | None
    patient_id: uuid.UUID | None
    breed: str | None
    sex: Sex | None
    birth_date: date | None
    match_status: MatchStatus
    match_rule: str | None
    comments: str | None
    results: list[ResultOut]
    attachments: list[AttachmentOut]


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


@router.get("/results", summary="Current results, oldest first")
def list_results(
    _reader: Reader,
    db: Db,
    accession: str | None = None,
    patient_id: uuid.UUID | None = None,
    since: Annotated[
        datetime | None, Query(description="changed at or after (ISO 8601; no zone = UTC)")
    ] = None,
    after_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 500,
) -> ResultPage:
    with db.session(readonly=True) as session:
        rows = result_store.find_results(
            session,
            accession=accession,
            patient_id=patient_id,
            since=_aware(since),
            after_id=after_id,
            limit=limit,
        )
        items = [ResultListItem(value=r.value_text, **r._mapping) for r in rows]
    return ResultPage(items=items, next_after_id=items[-1].id if len(items) == limit else None)


@router.get("/reports/{report_id}", summary="One report version with its results")
def get_report(report_id: uuid.UUID, _reader: Reader, db: Db) -> ReportOut:
    with db.session(readonly=True) as session:
        report = result_store.get_report(session, report_id)
        if report is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no report {report_id}")
        results = [
            ResultOut(value=r.value_text, **r._mapping)
            for r in result_store.report_results(session, report_id)
        ]
        attachments = [
            AttachmentOut(**a._mapping, url=f"/api/v1/reports/{report_id}/attachments/{a.id}")
            for a in result_store.report_attachments(session, report_id)
        ]
        versions = [VersionOut(**v._mapping) for v in result_store.report_versions(session, report)]
        nested = {"results", "attachments", "versions"}
        fields = {n: getattr(report, n) for n in ReportOut.model_fields if n not in nested}
        fields.update(results=results, attachments=attachments, versions=versions)
        return ReportOut(**fields)


@router.get("/reports/{report_id}/attachments/{attachment_id}", summary="An attachment's bytes")
def get_attachment(report_id: uuid.UUID, attachment_id: int, _reader: Reader, db: Db) -> Response:
    with db.session(readonly=True) as session:
        row = result_store.get_attachment(session, report_id, attachment_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such attachment")
    headers = {}
    if row.filename:
        headers["Content-Disposition"] = f'attachment; filename="{row.filename}"'
    return Response(row.data, media_type=row.content_type, headers=headers)
