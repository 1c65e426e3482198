"""Clinics, veterinarians and the on-call rota over the API (issue 5: "an on-call schedule ...
from the config file and the API").

- ``GET /oncall?clinic=main&at=…``: who the pager would page at ``at`` (default now), per level,
  as ``rota_at`` sees it, plus the entries covering ``at`` (their ids are what ``DELETE`` takes).
- ``POST /oncall``: put a veterinarian on call: clinic code, veterinarian id, level, ``starts``
  and ``ends`` — ISO 8601 with an offset, or local times read in the clinic's time zone (the
  same rule as the file). ``DELETE /oncall/{entry_id}`` removes an entry.
- ``GET``/``POST /clinics``; ``GET``/``POST /veterinarians`` (with contacts);
  ``PUT /veterinarians/{id}/contacts`` replaces a veterinarian's contacts.

Reading is for veterinarians and technicians (and admins); contact *addresses* are shown to
admins only, others see each contact's kind and priority. Every write needs an admin token and
is audited with the token as actor (``store.clinics``). A body the store cannot use is 422 with
the reason (unknown clinic or veterinarian, ``ends`` not after ``starts``, unknown time zone),
a duplicate clinic code or licence 409, an unknown id in the path 404.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, NoReturn

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from pydantic import BaseModel, Field

from vetgateway.api.auth import Principal, require_role
from vetgateway.api.deps import get_database
from vetgateway.store import clinics as clinic_store
from vetgateway.store.db import Database
from vetgateway.store.models import (
    Clinic,
    ContactKind,
    OnCallEntry,
    OnCallLevel,
    Role,
    VeterinarianContact,
)
from vetgateway.store.models.base import utcnow
from vetgateway.store.oncall import rota_at

router = APIRouter(tags=["on-call"])

Reader = Annotated[Principal, Depends(require_role(Role.VETERINARIAN, Role.TECHNICIAN))]
Admin = Annotated[Principal, Depends(require_role(Role.ADMIN))]
Db = Annotated[Database, Depends(get_database)]

_STATUS = {
    "not_found": status.HTTP_404_NOT_FOUND,
    "conflict": status.HTTP_409_CONFLICT,
    "invalid": status.HTTP_422_UNPROCESSABLE_CONTENT,
}
_REFUSALS: dict[int | str, dict[str, str]] = {
    422: {"description": "the body cannot be used; `detail` says why"},
}


def _refuse(refused: clinic_store.Refused) -> NoReturn:
    raise HTTPException(_STATUS[refused.kind], detail=refused.reason)


class ClinicIn(BaseModel):
    code: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    name: str = Field(min_length=1, max_length=200)
    timezone: str = Field(default="UTC", max_length=64, description="IANA zone, e.g. Europe/London")


class ClinicOut(BaseModel):
    id: uuid.UUID
    code: str
    name: str
    timezone: str


class ContactIn(BaseModel):
    kind: ContactKind
    address: str = Field(min_length=1, max_length=500)
    priority: int | None = Field(default=None, ge=0, description="lowest first; default: position")


class ContactOut(BaseModel):
    kind: ContactKind
    priority: int
    address: str | None = Field(description="shown to admins only")


class VeterinarianIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    licence_state: str | None = Field(default=None, max_length=16)
    licence_number: str | None = Field(default=None, max_length=64)
    contacts: list[ContactIn] = Field(default_factory=list, max_length=20)


class VeterinarianOut(BaseModel):
    id: uuid.UUID
    name: str
    licence_state: str | None
    licence_number: str | None
    contacts: list[ContactOut]


class EntryIn(BaseModel):
    clinic: str = Field(min_length=1, max_length=64, description="the clinic's code")
    veterinarian_id: uuid.UUID
    level: OnCallLevel
    starts: datetime = Field(description="ISO 8601; without an offset, local to the clinic")
    ends: datetime = Field(description="ISO 8601; without an offset, local to the clinic")


class EntryOut(BaseModel):
    id: uuid.UUID
    clinic: str
    veterinarian_id: uuid.UUID
    level: OnCallLevel
    starts_at: datetime
    ends_at: datetime


class OnCallMember(BaseModel):
    veterinarian_id: uuid.UUID
    name: str
    contacts: list[ContactOut]


class OnCallNow(BaseModel):
    clinic: str
    timezone: str
    at: datetime = Field(description="the instant asked about, in UTC")
    levels: dict[OnCallLevel, list[OnCallMember]]
    entries: list[EntryOut]


def _contacts(rows: tuple[VeterinarianContact, ...], principal: Principal) -> list[ContactOut]:
    admin = principal.role is Role.ADMIN
    return [
        ContactOut(kind=c.kind, priority=c.priority, address=c.address if admin else None)
        for c in rows
    ]


def _vet_out(view: clinic_store.VeterinarianView, principal: Principal) -> VeterinarianOut:
    vet = view.veterinarian
    return VeterinarianOut(
        id=vet.id,
        name=vet.name,
        licence_state=vet.licence_state,
        licence_number=vet.licence_number,
        contacts=_contacts(view.contacts, principal),
    )


def _clinic_out(clinic: Clinic) -> ClinicOut:
    return ClinicOut(id=clinic.id, code=clinic.code, name=clinic.name, timezone=clinic.timezone)


def _entry_out(entry: OnCallEntry, code: str) -> EntryOut:
    return EntryOut(
        id=entry.id,
        clinic=code,
        veterinarian_id=entry.veterinarian_id,
        level=entry.level,
        starts_at=entry.starts_at,
        ends_at=entry.ends_at,
    )


def _specs(contacts: list[ContactIn]) -> list[clinic_store.ContactSpec]:
    return [
        clinic_store.ContactSpec(c.kind, c.address, index if c.priority is None else c.priority)
        for index, c in enumerate(contacts)
    ]


@router.get("/oncall", summary="Who is on call at a clinic, per level")
def get_oncall(
    principal: Reader,
    db: Db,
    clinic: Annotated[str, Query(min_length=1, max_length=64)],
    at: Annotated[
        datetime | None, Query(description="default now; without an offset, clinic-local")
    ] = None,
) -> OnCallNow:
    with db.session(readonly=True) as session:
        found = clinic_store.clinic_by_code(session, clinic)
        if found is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no clinic with code {clinic!r}")
        instant = (
            utcnow() if at is None else clinic_store.in_zone(at, clinic_store.clinic_zone(found))
        )
        rota = rota_at(session, found.id, instant)
        ids = [m.veterinarian_id for members in rota.values() for m in members]
        views = {v.veterinarian.id: v for v in clinic_store.list_veterinarians(session, ids)}
        levels = {
            level: [
                OnCallMember(
                    veterinarian_id=m.veterinarian_id,
                    name=views[m.veterinarian_id].veterinarian.name,
                    contacts=_contacts(views[m.veterinarian_id].contacts, principal),
                )
                for m in members
                if m.veterinarian_id in views
            ]
            for level, members in rota.items()
        }
        entries = [
            _entry_out(e, found.code)
            for e in clinic_store.entries_at(session, found.id, instant)
            if e.veterinarian_id in views
        ]
        return OnCallNow(
            clinic=found.code, timezone=found.timezone, at=instant, levels=levels, entries=entries
        )


@router.post(
    "/oncall",
    status_code=status.HTTP_201_CREATED,
    summary="Put a veterinarian on call",
    responses=_REFUSALS,
)
def add_oncall(body: EntryIn, admin: Admin, db: Db) -> EntryOut:
    with db.session() as session:
        entry = clinic_store.add_entry(
            session,
            clinic_code=body.clinic,
            veterinarian_id=body.veterinarian_id,
            level=body.level,
            starts=body.starts,
            ends=body.ends,
            actor=admin.actor,
        )
        if isinstance(entry, clinic_store.Refused):
            _refuse(entry)
        return _entry_out(entry, body.clinic)


@router.delete(
    "/oncall/{entry_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Remove an entry"
)
def remove_oncall(entry_id: uuid.UUID, admin: Admin, db: Db) -> Response:
    with db.session() as session:
        refused = clinic_store.remove_entry(session, entry_id, actor=admin.actor)
    if refused is not None:
        _refuse(refused)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/clinics", summary="Clinics, by code")
def list_clinics(_reader: Reader, db: Db) -> list[ClinicOut]:
    with db.session(readonly=True) as session:
        return [_clinic_out(c) for c in clinic_store.list_clinics(session)]


@router.post(
    "/clinics", status_code=status.HTTP_201_CREATED, summary="Add a clinic", responses=_REFUSALS
)
def create_clinic(body: ClinicIn, admin: Admin, db: Db) -> ClinicOut:
    with db.session() as session:
        clinic = clinic_store.create_clinic(
            session, code=body.code, name=body.name, timezone=body.timezone, actor=admin.actor
        )
        if isinstance(clinic, clinic_store.Refused):
            _refuse(clinic)
        return _clinic_out(clinic)


@router.get("/veterinarians", summary="Veterinarians with their contacts")
def list_veterinarians(principal: Reader, db: Db) -> list[VeterinarianOut]:
    with db.session(readonly=True) as session:
        return [_vet_out(v, principal) for v in clinic_store.list_veterinarians(session)]


@router.post(
    "/veterinarians",
    status_code=status.HTTP_201_CREATED,
    summary="Add a veterinarian",
    responses=_REFUSALS,
)
def create_veterinarian(body: VeterinarianIn, admin: Admin, db: Db) -> VeterinarianOut:
    with db.session() as session:
        view = clinic_store.create_veterinarian(
            session,
            name=body.name,
            licence_state=body.licence_state,
            licence_number=body.licence_number,
            contacts=_specs(body.contacts),
            actor=admin.actor,
        )
        if isinstance(view, clinic_store.Refused):
            _refuse(view)
        return _vet_out(view, admin)


@router.put(
    "/veterinarians/{veterinarian_id}/contacts",
    summary="Replace a veterinarian's contacts",
    responses=_REFUSALS,
)
def replace_contacts(
    veterinarian_id: uuid.UUID, body: list[ContactIn], admin: Admin, db: Db
) -> VeterinarianOut:
    with db.session() as session:
        view = clinic_store.replace_contacts(
            session, veterinarian_id, _specs(body), actor=admin.actor
        )
        if isinstance(view, clinic_store.Refused):
            _refuse(view)
        return _vet_out(view, admin)
