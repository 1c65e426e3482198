"""Diagnostic orders as JSON: what a PMS integration posts instead of (or besides) HL7 ORM/OML.

- ``POST /orders``: place, update or cancel one order (``store.orders.upsert_order`` says how).
  Idempotent: the same placer number from the same ``source`` (else the same accession number)
  is the same order, so a retried request never duplicates it. 201 ``{id, created: true}`` when
  the order was created, 200 ``{id, created: false}`` when it existed (changed or not). 422 names
  what is wrong with the body (a missing key number, a field too long, an unknown field).
- ``GET /orders/{id}``: the order with its tests; 404 when there is no such order.

Who: posting needs a veterinarian, technician or device token (a PMS integration runs with a
device token); reading needs a veterinarian or technician, since a machine that posts orders has
no need to read patient details back. Admins may do both.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Response, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from vetgateway.api.auth import Principal, require_role
from vetgateway.api.deps import get_database, get_settings
from vetgateway.config import Settings
from vetgateway.model import Sex
from vetgateway.pipeline.parse.orm import FIELD_LIMITS, ITEM_CODE_LIMIT, OrderAction, OrderIn
from vetgateway.pipeline.rematch import rematch_for_order
from vetgateway.store import orders as order_store
from vetgateway.store.clinics import clinic_by_code
from vetgateway.store.db import Database
from vetgateway.store.models import OrderItemStatus, OrderStatus, Role
from vetgateway.store.models.base import utcnow

router = APIRouter(prefix="/orders", tags=["orders"])

Placer = Annotated[
    Principal, Depends(require_role(Role.VETERINARIAN, Role.TECHNICIAN, Role.DEVICE))
]
Reader = Annotated[Principal, Depends(require_role(Role.VETERINARIAN, Role.TECHNICIAN))]
Db = Annotated[Database, Depends(get_database)]
AppSettings = Annotated[Settings, Depends(get_settings)]

MAX_ITEMS = 200

ItemCode = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=ITEM_CODE_LIMIT)
]


def _text(field: str, description: str) -> Any:
    return Field(default=None, max_length=FIELD_LIMITS[field], description=description)


class OrderBody(BaseModel):
    """One order as the PMS knows it. Empty strings count as not sent."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    source: str = Field(
        default="api",
        min_length=1,
        max_length=FIELD_LIMITS["source"],
        description="the placing system, e.g. 'pms:vetstar'; placer numbers are unique within it",
    )
    action: OrderAction = Field(
        default="new", description="new (a resend updates), update, or cancel (all or `items`)"
    )
    placer_number: str | None = _text("placer_number", "the PMS's order number")
    accession_number: str | None = _text("accession_number", "the specimen/accession number")
    filler_number: str | None = _text("filler_number", "the lab's order number, if known")
    ordered_at: datetime | None = Field(
        default=None, description="when it was ordered (ISO 8601; no zone = UTC)"
    )
    patient_id: uuid.UUID | None = Field(default=None, description="the PMS's patient UUID")
    patient_pms_id: str | None = _text("patient_pms_id", "the PMS's patient number")
    patient_microchip: str | None = _text("patient_microchip", "any spelling; stored normalised")
    patient_name: str | None = _text("patient_name", "the animal's name")
    species: str | None = _text("species", "lower-case word: canine, feline, equine …")
    breed: str | None = _text("breed", "as the PMS names it")
    sex: Sex | None = None
    birth_date: date | None = None
    owner_surname: str | None = _text("owner_surname", "the owner's surname")
    clinic: str | None = _text(
        "clinic", "the placing clinic's code: its rota is paged for critical results"
    )
    items: list[ItemCode] = Field(
        default_factory=list,
        max_length=MAX_ITEMS,
        description=f"ordered test codes (at most {ITEM_CODE_LIMIT} characters each)",
    )

    @model_validator(mode="after")
    def _has_a_key(self) -> OrderBody:
        if not (self.placer_number or self.accession_number):
            raise ValueError(
                "placer_number or accession_number is required, so that a resend or a cancel "
                "finds the same order"
            )
        return self

    def to_order_in(self) -> OrderIn:
        ordered_at = self.ordered_at
        if ordered_at is not None and ordered_at.tzinfo is None:
            ordered_at = ordered_at.replace(tzinfo=UTC)
        return OrderIn(
            source=self.source,
            action=self.action,
            accession_number=self.accession_number or None,
            placer_number=self.placer_number or None,
            filler_number=self.filler_number or None,
            ordered_at=ordered_at,
            patient_id=self.patient_id,
            patient_pms_id=self.patient_pms_id or None,
            patient_microchip=self.patient_microchip or None,
            patient_name=self.patient_name or None,
            species=self.species or None,
            breed=self.breed or None,
            sex=self.sex,
            birth_date=self.birth_date,
            owner_surname=self.owner_surname or None,
            items=tuple(self.items),
            clinic=self.clinic or None,
        )


class OrderSaved(BaseModel):
    id: uuid.UUID
    created: bool = Field(description="true: a new order; false: an existing one was found")


class OrderItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    ordered_code: str
    status: OrderItemStatus


class OrderDetail(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    source: str
    status: OrderStatus
    accession_number: str | None
    placer_number: str | None
    filler_number: str | None
    ordered_at: datetime | None
    patient_id: uuid.UUID | None
    patient_pms_id: str | None
    patient_microchip: str | None
    patient_name: str | None
    species: str | None
    breed: str | None
    sex: Sex | None
    birth_date: date | None
    owner_surname: str | None
    created_at: datetime
    updated_at: datetime
    items: list[OrderItemOut]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Place, update or cancel an order (idempotent)",
    responses={
        200: {"model": OrderSaved, "description": "the order existed; it was updated if needed"},
        422: {"description": "the body cannot be used; `detail` says why"},
    },
)
def post_order(
    body: OrderBody, caller: Placer, db: Db, settings: AppSettings, response: Response
) -> OrderSaved:
    order = body.to_order_in()
    problems = order.problems()
    if problems:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=problems)
    with db.session() as session:
        if order.clinic is not None and clinic_by_code(session, order.clinic) is None:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=[f"no clinic with code {order.clinic!r}; see GET /api/v1/clinics"],
            )
        row, created = order_store.upsert_order(session, order, actor=caller.actor)
        # Results that came first wait in the unmatched queue; this order may be theirs.
        default_clinic = clinic_by_code(session, settings.default_clinic)
        rematch_for_order(
            session,
            row,
            window=timedelta(days=settings.match_window_days),
            now=utcnow(),
            alert_merge=timedelta(minutes=settings.alert_merge_minutes),
            default_clinic_id=default_clinic.id if default_clinic is not None else None,
        )
        saved = OrderSaved(id=row.id, created=created)
    if not created:
        response.status_code = status.HTTP_200_OK
    return saved


@router.get(
    "/{order_id}",
    summary="One order with its tests",
    responses={404: {"description": "no such order"}},
)
def get_order(order_id: uuid.UUID, _reader: Reader, db: Db) -> OrderDetail:
    with db.session(readonly=True) as session:
        row = order_store.get_order(session, order_id)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such order")
        detail = OrderDetail.model_validate(row)
        # Tests added in one transaction share created_at: the code breaks the tie.
        added = {item.id: (item.created_at, item.ordered_code) for item in row.items}
    detail.items.sort(key=lambda item: added[item.id])
    return detail
