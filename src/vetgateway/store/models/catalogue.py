"""The test catalogue: our canonical tests, how each source's codes map onto them, and the
species-specific reference intervals and critical limits used to interpret results.

Every device and lab speaks its own codes and units; mapping turns ``(source, code, unit)`` into a
catalogue test and a linear unit conversion (``canonical = value * factor + offset``) so
interpretation only ever sees canonical units.
"""

from __future__ import annotations

import enum
import uuid
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from vetgateway.model import Sex
from vetgateway.store.models.base import Base, SoftDelete, Timestamps, UuidKey, enum_type


class CatalogueCategory(enum.Enum):
    CHEMISTRY = "chemistry"
    HAEMATOLOGY = "haematology"
    ELECTROLYTES = "electrolytes"
    ENDOCRINE = "endocrine"
    URINALYSIS = "urinalysis"
    BLOOD_GAS = "blood_gas"
    COAGULATION = "coagulation"
    SEROLOGY = "serology"
    MICROBIOLOGY = "microbiology"
    OTHER = "other"


class ValueType(enum.Enum):
    NUMERIC = "numeric"
    CODED = "coded"
    TEXT = "text"


class CatalogueTest(UuidKey, Timestamps, SoftDelete, Base):
    """One canonical test (analyte), e.g. ``GLU`` glucose in mmol/L."""

    __tablename__ = "catalogue_tests"

    code: Mapped[str] = mapped_column(sa.String(32), unique=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    loinc: Mapped[str | None] = mapped_column(sa.String(16))
    category: Mapped[CatalogueCategory] = mapped_column(enum_type(CatalogueCategory))
    specimen: Mapped[str | None] = mapped_column(sa.String(64))
    unit: Mapped[str | None] = mapped_column(sa.String(32))
    value_type: Mapped[ValueType] = mapped_column(enum_type(ValueType))
    decimals: Mapped[int | None] = mapped_column(sa.Integer())
    # Delta check (``pipeline.delta``): a change from the patient's previous result beyond
    # ``delta_abs`` (in ``unit``) or ``delta_rel`` (a fraction of the previous value) is flagged.
    delta_abs: Mapped[Decimal | None]
    delta_rel: Mapped[Decimal | None]


class CodeMapping(UuidKey, Timestamps, Base):
    """A source's code (and unit) → a catalogue test, with the conversion into its unit.

    ``source_unit`` is ``""`` rather than NULL when the source sends none, so the unique key holds
    (NULLs never collide in a unique constraint). A NULL ``test_id`` records a known code that is
    deliberately not mapped. A device-specific mapping is removed with its device: setting the
    device to NULL would silently widen it to every device of that source.
    """

    __tablename__ = "code_mappings"
    __table_args__ = (sa.UniqueConstraint("source", "source_code", "source_unit"),)

    # A lab or analyzer key, e.g. "idexx_reference_lab" or "abaxis_vetscan".
    source: Mapped[str] = mapped_column(sa.String(64))
    device_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("devices.id", ondelete="CASCADE"), index=True
    )
    source_code: Mapped[str] = mapped_column(sa.String(64))
    source_unit: Mapped[str] = mapped_column(
        sa.String(32), default="", server_default=sa.text("''")
    )
    test_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("catalogue_tests.id", ondelete="SET NULL"), index=True
    )
    unit: Mapped[str | None] = mapped_column(sa.String(32))
    conversion_factor: Mapped[Decimal] = mapped_column(default=Decimal(1))
    conversion_offset: Mapped[Decimal] = mapped_column(default=Decimal(0))


class ReferenceInterval(UuidKey, Timestamps, SoftDelete, Base):
    """Normal range and critical limits for a test in a species, optionally narrowed by breed,
    sex, age band (days, inclusive), clinic or device. NULL narrowing columns mean "any".

    The interval is part of its test's definition and cascades with it; clinic and device overrides
    cascade too, because SET NULL would silently turn an override into the species-wide default.
    """

    __tablename__ = "reference_intervals"
    __table_args__ = (sa.Index("ix_reference_intervals_test_species", "test_id", "species"),)

    test_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("catalogue_tests.id", ondelete="CASCADE"), index=True
    )
    species: Mapped[str] = mapped_column(sa.String(32))
    breed: Mapped[str | None] = mapped_column(sa.String(100))
    sex: Mapped[Sex | None] = mapped_column(enum_type(Sex))
    age_min_days: Mapped[int | None] = mapped_column(sa.Integer())
    age_max_days: Mapped[int | None] = mapped_column(sa.Integer())
    clinic_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("clinics.id", ondelete="CASCADE"), index=True
    )
    device_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("devices.id", ondelete="CASCADE"), index=True
    )
    unit: Mapped[str | None] = mapped_column(sa.String(32))
    low: Mapped[Decimal | None]
    high: Mapped[Decimal | None]
    critical_low: Mapped[Decimal | None]
    critical_high: Mapped[Decimal | None]
    citation: Mapped[str | None] = mapped_column(sa.Text())
