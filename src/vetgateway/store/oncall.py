"""The on-call rota: who is paged for a clinic at a given time, and loading it from a TOML file.

The file (``Settings.oncall_file``, loaded at start; loading it again changes nothing)::

    [[clinics]]
    code = "main"                    # clinics.code; the alerts without a clinic use default_clinic
    name = "Main Street Clinic"
    timezone = "Europe/London"       # IANA zone; on-call times below are local to it

    [[veterinarians]]
    key = "jones"                    # how on_call entries in this file name the veterinarian
    name = "Dr A. Jones"
    licence_state = "NY"             # optional; with licence_number, identifies the vet on reload
    licence_number = "12345"
    contacts = [                     # tried in priority order, lowest first; phone is not paged
      { kind = "sms", address = "+15550100", priority = 0 },
      { kind = "email", address = "jones@example.org", priority = 1 },
      { kind = "webhook", address = "https://pager.example.org/hook", priority = 2 },
    ]

    [[on_call]]
    clinic = "main"
    veterinarian = "jones"
    level = "primary"                # primary | backup | lead
    starts = 2024-05-01T08:00:00     # a TOML local date-time: read in the clinic's time zone
    ends = 2024-05-01T20:00:00       # (an explicit offset is honoured as given)

What a reload does, so it can run at every start: clinics are matched by ``code`` and updated;
veterinarians by licence (state + number) when given, else by name, and their contacts replaced
by the file's; every on-call entry of the file's clinics is replaced by the file's entries.
Clinics, veterinarians and entries not in the file are left alone. Local times that fall twice
(a DST fall-back) are read as the first occurrence; times that do not exist are shifted forward
by the gap (``zoneinfo`` semantics).

Like every store function these take a session and never commit.
"""

from __future__ import annotations

import tomllib
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.orm import Session

from vetgateway.errors import ConfigError
from vetgateway.pipeline.escalation import LEVELS, Contact, RotaMember
from vetgateway.store.audit import audit
from vetgateway.store.models import (
    Clinic,
    ContactKind,
    OnCallEntry,
    OnCallLevel,
    Veterinarian,
    VeterinarianContact,
)

__all__ = ["LoadSummary", "default_clinic_id", "load_oncall_file", "rota_at"]


def rota_at(
    session: Session, clinic_id: uuid.UUID, at: datetime
) -> dict[OnCallLevel, list[RotaMember]]:
    """Who is on call at ``clinic_id`` at ``at``, by level (every level present, maybe empty).

    Members of a level are in the order their shifts started; each member's contacts are in
    priority order. Soft-deleted veterinarians are never paged.
    """
    rows = session.execute(
        sa.select(OnCallEntry.level, OnCallEntry.veterinarian_id)
        .join(Veterinarian, Veterinarian.id == OnCallEntry.veterinarian_id)
        .where(
            OnCallEntry.clinic_id == clinic_id,
            OnCallEntry.starts_at <= at,
            OnCallEntry.ends_at > at,
            Veterinarian.deleted_at.is_(None),
        )
        .order_by(OnCallEntry.starts_at, OnCallEntry.veterinarian_id)
    ).all()
    vet_ids = {row.veterinarian_id for row in rows}
    contacts: dict[uuid.UUID, list[Contact]] = defaultdict(list)
    if vet_ids:
        for c in session.scalars(
            sa.select(VeterinarianContact)
            .where(VeterinarianContact.veterinarian_id.in_(vet_ids))
            .order_by(VeterinarianContact.priority, VeterinarianContact.id)
        ):
            contacts[c.veterinarian_id].append(Contact(c.kind, c.address, c.priority))
    rota: dict[OnCallLevel, list[RotaMember]] = {level: [] for level in LEVELS}
    for row in rows:
        members = rota[row.level]
        if all(m.veterinarian_id != row.veterinarian_id for m in members):
            members.append(RotaMember(row.veterinarian_id, tuple(contacts[row.veterinarian_id])))
    return rota


def default_clinic_id(session: Session, code: str) -> uuid.UUID | None:
    """The id of the (not deleted) clinic with ``code``, or None."""
    return session.scalar(
        sa.select(Clinic.id).where(Clinic.code == code, Clinic.deleted_at.is_(None))
    )


@dataclass(frozen=True, slots=True)
class LoadSummary:
    clinics: int
    veterinarians: int
    entries: int


def _need(table: dict[str, Any], key: str, where: str) -> Any:
    if key not in table:
        raise ConfigError(f"{where}: '{key}' is missing")
    return table[key]


def _enum(kind: type[ContactKind] | type[OnCallLevel], value: Any, where: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise ConfigError(f"{where}: {value!r} is not one of {allowed}") from None


def _instant(value: Any, zone: ZoneInfo, where: str) -> datetime:
    if not isinstance(value, datetime):
        raise ConfigError(f"{where}: expected a date-time like 2024-05-01T08:00:00, got {value!r}")
    local: datetime = value if value.tzinfo is not None else value.replace(tzinfo=zone)
    return local.astimezone(UTC)


def _upsert_clinic(session: Session, table: dict[str, Any], where: str) -> tuple[Clinic, ZoneInfo]:
    code = str(_need(table, "code", where))
    zone_name = str(table.get("timezone", "UTC"))
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{where}: unknown time zone {zone_name!r}") from None
    clinic = session.scalar(sa.select(Clinic).where(Clinic.code == code))
    if clinic is None:
        clinic = Clinic(code=code, name=str(table.get("name", code)), timezone=zone_name)
        session.add(clinic)
    else:
        clinic.name = str(table.get("name", clinic.name))
        clinic.timezone = zone_name
        clinic.deleted_at = None
    session.flush()
    return clinic, zone


def _upsert_veterinarian(session: Session, table: dict[str, Any], where: str) -> Veterinarian:
    name = str(_need(table, "name", where))
    state, number = table.get("licence_state"), table.get("licence_number")
    query = sa.select(Veterinarian).where(Veterinarian.deleted_at.is_(None))
    if number is not None:
        query = query.where(
            Veterinarian.licence_number == str(number),
            Veterinarian.licence_state.is_not_distinct_from(state),
        )
    else:
        query = query.where(Veterinarian.name == name, Veterinarian.licence_number.is_(None))
    vet = session.scalars(query.order_by(Veterinarian.created_at)).first()
    if vet is None:
        vet = Veterinarian(
            name=name,
            licence_state=None if state is None else str(state),
            licence_number=None if number is None else str(number),
        )
        session.add(vet)
        session.flush()
    else:
        vet.name = name
    session.execute(
        sa.delete(VeterinarianContact).where(VeterinarianContact.veterinarian_id == vet.id)
    )
    for index, contact in enumerate(table.get("contacts", [])):
        at = f"{where}.contacts[{index}]"
        session.add(
            VeterinarianContact(
                veterinarian_id=vet.id,
                kind=_enum(ContactKind, _need(contact, "kind", at), at),
                address=str(_need(contact, "address", at)),
                priority=int(contact.get("priority", index)),
            )
        )
    return vet


def load_oncall_file(session: Session, path: Path, *, actor: str = "system") -> LoadSummary:
    """Load (or reload) clinics, veterinarians and the rota from ``path`` (format above).

    Raises ``ConfigError`` naming the file and the entry when something is wrong; nothing is
    changed then, provided the caller rolls back (the session's transaction is theirs).
    """
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"on-call file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"on-call file {path} is not valid TOML: {exc}") from exc

    clinics: dict[str, tuple[Clinic, ZoneInfo]] = {}
    for index, table in enumerate(data.get("clinics", [])):
        clinic, zone = _upsert_clinic(session, table, f"{path}: clinics[{index}]")
        clinics[clinic.code] = (clinic, zone)

    vets: dict[str, Veterinarian] = {}
    for index, table in enumerate(data.get("veterinarians", [])):
        where = f"{path}: veterinarians[{index}]"
        key = str(table.get("key", _need(table, "name", where)))
        vets[key] = _upsert_veterinarian(session, table, where)

    if clinics:
        ids = [clinic.id for clinic, _zone in clinics.values()]
        session.execute(sa.delete(OnCallEntry).where(OnCallEntry.clinic_id.in_(ids)))
    entries = 0
    for index, table in enumerate(data.get("on_call", [])):
        where = f"{path}: on_call[{index}]"
        code = str(_need(table, "clinic", where))
        if code not in clinics:
            raise ConfigError(f"{where}: clinic {code!r} is not among this file's [[clinics]]")
        vet_key = str(_need(table, "veterinarian", where))
        if vet_key not in vets:
            raise ConfigError(f"{where}: veterinarian {vet_key!r} is not in [[veterinarians]]")
        clinic, zone = clinics[code]
        starts = _instant(_need(table, "starts", where), zone, f"{where}.starts")
        ends = _instant(_need(table, "ends", where), zone, f"{where}.ends")
        if ends <= starts:
            raise ConfigError(f"{where}: ends must be after starts")
        session.add(
            OnCallEntry(
                clinic_id=clinic.id,
                veterinarian_id=vets[vet_key].id,
                level=_enum(OnCallLevel, _need(table, "level", where), where),
                starts_at=starts,
                ends_at=ends,
            )
        )
        entries += 1
    session.flush()
    summary = LoadSummary(len(clinics), len(vets), entries)
    audit(
        session,
        actor=actor,
        action="oncall.loaded",
        entity_type="oncall_file",
        entity_id=str(path)[-64:],
        details={
            "clinics": summary.clinics,
            "veterinarians": summary.veterinarians,
            "entries": summary.entries,
        },
    )
    return summary
