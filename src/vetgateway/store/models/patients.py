"""How clinical rows point at a patient the gateway does not own.

Patients live in the practice-management system (PMS). The gateway never keeps a patients table,
so orders, reports and imaging studies carry the patient's UUID *without* a foreign key, plus the
identifiers as they were sent (PMS id, microchip, name, species …). Keeping the received
identifiers lets a human resolve an unmatched report later, and lets matching be re-run.
"""

from __future__ import annotations

import uuid
from datetime import date

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from vetgateway.model import Sex
from vetgateway.store.models.base import enum_type


class PatientIdentifiers:
    """The patient columns shared by orders, reports and imaging studies (no foreign key)."""

    patient_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid(), index=True)
    patient_pms_id: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    patient_microchip: Mapped[str | None] = mapped_column(sa.String(32), index=True)
    patient_name: Mapped[str | None] = mapped_column(sa.String(200))
    # Lower-case species word as used by reference intervals: "canine", "feline", "equine" …
    species: Mapped[str | None] = mapped_column(sa.String(32))
    breed: Mapped[str | None] = mapped_column(sa.String(100))
    sex: Mapped[Sex | None] = mapped_column(enum_type(Sex))
    birth_date: Mapped[date | None] = mapped_column(sa.Date())
    owner_surname: Mapped[str | None] = mapped_column(sa.String(200))
