"""Clinics, veterinarians, their contacts and on-call entries as the API changes them (issue 5).

The TOML file (``store.oncall.load_oncall_file``) and these functions write the same tables, and
``store.oncall.rota_at`` reads both alike. Every change is audited in the caller's transaction
(actions ``clinic.created``, ``veterinarian.created``, ``veterinarian.contacts_replaced``,
``oncall.entry_added``, ``oncall.entry_removed``; contact addresses are not written to the log).

Input the caller cannot use comes back as a ``Refused`` with a reason for a human, not an
exception, so the API can answer 404 / 409 / 422 without guessing. On-call entries are rota
planning, not clinical records: removing one deletes the row (a reload of the file does too),
and the audit entry keeps what it was. Like every store function these never commit.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.orm import Session

from vetgateway.store.audit import audit
from vetgateway.store.models import (
    Clinic,
    ContactKind,
    OnCallEntry,
    OnCallLevel,
    Veterinarian,
    VeterinarianContact,
)

__all__ = [
    "ContactSpec",
    "Refused",
    "VeterinarianView",
    "add_entry",
    "clinic_by_code",
    "clinic_zone",
    "create_clinic",
    "create_veterinarian",
    "entries_at",
    "in_zone",
    "list_clinics",
    "list_veterinarians",
    "remove_entry",
    "replace_contacts",
]


@dataclass(frozen=True, slots=True)
class Refused:
    """Why a change was not made: ``not_found`` (the addressed record does not exist),
    ``conflict`` (it would duplicate one) or ``invalid`` (the input cannot be used)."""

    kind: Literal["not_found", "conflict", "invalid"]
    reason: str


@dataclass(frozen=True, slots=True)
class ContactSpec:
    kind: ContactKind
    address: str
    priority: int


@dataclass(frozen=True, slots=True)
class VeterinarianView:
    veterinarian: Veterinarian
    contacts: tuple[VeterinarianContact, ...]


def clinic_zone(clinic: Clinic) -> ZoneInfo:
    """The clinic's zone; a zone unknown to this host (never written by this module) is UTC."""
    try:
        return ZoneInfo(clinic.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def in_zone(value: datetime, zone: ZoneInfo) -> datetime:
    """``value`` in UTC; a naive (local) time is read in ``zone`` (a time that falls twice is
    its first occurrence, one skipped by DST is moved forward by the gap, as ``zoneinfo`` does)."""
    local = value if value.tzinfo is not None else value.replace(tzinfo=zone)
    return local.astimezone(UTC)


def list_clinics(session: Session) -> list[Clinic]:
    return list(
        session.scalars(sa.select(Clinic).where(Clinic.deleted_at.is_(None)).order_by(Clinic.code))
    )


def clinic_by_code(session: Session, code: str) -> Clinic | None:
    return session.scalar(sa.select(Clinic).where(Clinic.code == code, Clinic.deleted_at.is_(None)))


def create_clinic(
    session: Session, *, code: str, name: str, timezone: str, actor: str
) -> Clinic | Refused:
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return Refused("invalid", f"unknown time zone {timezone!r}; use an IANA name")
    if session.scalar(sa.select(Clinic.id).where(Clinic.code == code)) is not None:
        return Refused("conflict", f"a clinic with code {code!r} exists")
    clinic = Clinic(code=code, name=name, timezone=timezone)
    session.add(clinic)
    session.flush()
    audit(
        session,
        actor=actor,
        action="clinic.created",
        entity_type="clinic",
        entity_id=str(clinic.id),
        details={"code": code, "name": name, "timezone": timezone},
    )
    return clinic


def _contacts_of(
    session: Session, vet_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[VeterinarianContact]]:
    found: dict[uuid.UUID, list[VeterinarianContact]] = defaultdict(list)
    if vet_ids:
        for contact in session.scalars(
            sa.select(VeterinarianContact)
            .where(VeterinarianContact.veterinarian_id.in_(vet_ids))
            .order_by(VeterinarianContact.priority, VeterinarianContact.id)
        ):
            found[contact.veterinarian_id].append(contact)
    return found


def list_veterinarians(
    session: Session, ids: Sequence[uuid.UUID] | None = None
) -> list[VeterinarianView]:
    """Veterinarians not deleted (all, or those in ``ids``) by name, contacts by priority."""
    query = sa.select(Veterinarian).where(Veterinarian.deleted_at.is_(None))
    if ids is not None:
        query = query.where(Veterinarian.id.in_(ids))
    vets = list(session.scalars(query.order_by(Veterinarian.name, Veterinarian.id)))
    contacts = _contacts_of(session, [v.id for v in vets])
    return [VeterinarianView(v, tuple(contacts[v.id])) for v in vets]


def _check_contacts(contacts: Sequence[ContactSpec]) -> Refused | None:
    for index, c in enumerate(contacts):
        where = f"contacts[{index}]"
        if not c.address.strip():
            return Refused("invalid", f"{where}: address is empty")
        if c.kind is ContactKind.WEBHOOK and not c.address.startswith(("https://", "http://")):
            return Refused("invalid", f"{where}: a webhook address must be an http(s) URL")
        if c.kind is ContactKind.EMAIL and "@" not in c.address:
            return Refused("invalid", f"{where}: {c.address!r} is not an email address")
    return None


def _write_contacts(
    session: Session, vet_id: uuid.UUID, contacts: Sequence[ContactSpec]
) -> tuple[VeterinarianContact, ...]:
    session.execute(
        sa.delete(VeterinarianContact).where(VeterinarianContact.veterinarian_id == vet_id)
    )
    rows = [
        VeterinarianContact(
            veterinarian_id=vet_id, kind=c.kind, address=c.address, priority=c.priority
        )
        for c in contacts
    ]
    session.add_all(rows)
    session.flush()
    return tuple(sorted(rows, key=lambda r: r.priority))


def _contact_details(contacts: Sequence[ContactSpec]) -> list[dict[str, object]]:
    return [{"kind": c.kind.value, "priority": c.priority} for c in contacts]


def create_veterinarian(
    session: Session,
    *,
    name: str,
    licence_state: str | None,
    licence_number: str | None,
    contacts: Sequence[ContactSpec],
    actor: str,
) -> VeterinarianView | Refused:
    refused = _check_contacts(contacts)
    if refused is not None:
        return refused
    if licence_number is not None:
        clash = session.scalar(
            sa.select(Veterinarian.id).where(
                Veterinarian.licence_number == licence_number,
                Veterinarian.licence_state.is_not_distinct_from(licence_state),
            )
        )
        if clash is not None:
            return Refused("conflict", f"licence {licence_state or ''} {licence_number} is taken")
    vet = Veterinarian(name=name, licence_state=licence_state, licence_number=licence_number)
    session.add(vet)
    session.flush()
    rows = _write_contacts(session, vet.id, contacts)
    audit(
        session,
        actor=actor,
        action="veterinarian.created",
        entity_type="veterinarian",
        entity_id=str(vet.id),
        details={"name": name, "contacts": _contact_details(contacts)},
    )
    return VeterinarianView(vet, rows)


def replace_contacts(
    session: Session, vet_id: uuid.UUID, contacts: Sequence[ContactSpec], *, actor: str
) -> VeterinarianView | Refused:
    vet = session.get(Veterinarian, vet_id)
    if vet is None or vet.deleted_at is not None:
        return Refused("not_found", f"no veterinarian {vet_id}")
    refused = _check_contacts(contacts)
    if refused is not None:
        return refused
    rows = _write_contacts(session, vet.id, contacts)
    audit(
        session,
        actor=actor,
        action="veterinarian.contacts_replaced",
        entity_type="veterinarian",
        entity_id=str(vet.id),
        details={"contacts": _contact_details(contacts)},
    )
    return VeterinarianView(vet, rows)


def add_entry(
    session: Session,
    *,
    clinic_code: str,
    veterinarian_id: uuid.UUID,
    level: OnCallLevel,
    starts: datetime,
    ends: datetime,
    actor: str,
) -> OnCallEntry | Refused:
    """Put a veterinarian on call at a clinic over ``[starts, ends)``; times without an offset
    are local to the clinic (``in_zone``). Overlapping entries are allowed (two primaries are
    both paged)."""
    clinic = clinic_by_code(session, clinic_code)
    if clinic is None:
        return Refused("invalid", f"no clinic with code {clinic_code!r}")
    vet = session.get(Veterinarian, veterinarian_id)
    if vet is None or vet.deleted_at is not None:
        return Refused("invalid", f"no veterinarian {veterinarian_id}")
    zone = clinic_zone(clinic)
    starts_at, ends_at = in_zone(starts, zone), in_zone(ends, zone)
    if ends_at <= starts_at:
        return Refused(
            "invalid",
            f"ends ({ends_at.isoformat()}) must be after starts ({starts_at.isoformat()}), "
            f"both read in {clinic.timezone} when they carry no offset",
        )
    entry = OnCallEntry(
        clinic_id=clinic.id,
        veterinarian_id=vet.id,
        level=level,
        starts_at=starts_at,
        ends_at=ends_at,
    )
    session.add(entry)
    session.flush()
    audit(
        session,
        actor=actor,
        action="oncall.entry_added",
        entity_type="on_call_entry",
        entity_id=str(entry.id),
        details={
            "clinic": clinic.code,
            "veterinarian_id": str(vet.id),
            "level": level.value,
            "starts_at": starts_at.isoformat(),
            "ends_at": ends_at.isoformat(),
        },
    )
    return entry


def remove_entry(session: Session, entry_id: uuid.UUID, *, actor: str) -> Refused | None:
    entry = session.get(OnCallEntry, entry_id)
    if entry is None:
        return Refused("not_found", f"no on-call entry {entry_id}")
    details: dict[str, object] = {
        "clinic_id": str(entry.clinic_id),
        "veterinarian_id": str(entry.veterinarian_id),
        "level": entry.level.value,
        "starts_at": entry.starts_at.isoformat(),
        "ends_at": entry.ends_at.isoformat(),
    }
    session.delete(entry)
    session.flush()
    audit(
        session,
        actor=actor,
        action="oncall.entry_removed",
        entity_type="on_call_entry",
        entity_id=str(entry_id),
        details=details,
    )
    return None


def entries_at(session: Session, clinic_id: uuid.UUID, at: datetime) -> list[OnCallEntry]:
    """The clinic's entries covering ``at`` (as ``rota_at`` selects them), by start."""
    return list(
        session.scalars(
            sa.select(OnCallEntry)
            .where(
                OnCallEntry.clinic_id == clinic_id,
                OnCallEntry.starts_at <= at,
                OnCallEntry.ends_at > at,
            )
            .order_by(OnCallEntry.starts_at, OnCallEntry.id)
        )
    )
