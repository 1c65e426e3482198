"""Diagnostic reports (one per HL7 OBR or analyzer run), their results and attachments.

Results are never edited in place: a correction is a new row (``version`` + 1) that points at the
one it ``supersedes``, whose status becomes ``superseded``. ``value_text`` always keeps what the
device sent, ``value_numeric`` the parsed number when there was one, with ``comparator`` for
values such as ``<0.1``.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from vetgateway.model import ReportStatus, ResultStatus
from vetgateway.store.models.base import (
    Base,
    BigId,
    IdentityKey,
    SoftDelete,
    Timestamps,
    UuidKey,
    enum_type,
    sparse_index,
)
from vetgateway.store.models.patients import PatientIdentifiers


class MatchStatus(enum.Enum):
    MATCHED = "matched"
    UNMATCHED = "unmatched"
    REJECTED = "rejected"


class Interpretation(enum.Enum):
    """Our reading of a value against the reference interval, independent of the lab's flags."""

    NORMAL = "normal"
    LOW = "low"
    HIGH = "high"
    CRITICAL_LOW = "critical_low"
    CRITICAL_HIGH = "critical_high"
    ABNORMAL = "abnormal"
    NOT_INTERPRETED = "not_interpreted"


class MappingStatus(enum.Enum):
    MAPPED = "mapped"
    UNMAPPED = "unmapped"


class DiagnosticReport(UuidKey, Timestamps, SoftDelete, PatientIdentifiers, Base):
    """A report as received, with the patient identifiers and numbers the sender used, and the
    outcome of matching it to an order. ``results`` loads only when asked for."""

    __tablename__ = "diagnostic_reports"
    # A patient's history in time order: the delta check's "previous result" query
    # (``store.result_history.previous_values``) reads only the reports observed before the new
    # one, or those without a time (``observed_at IS NULL`` is an index condition too). These are
    # the only indexes on the two patient columns: a lookup by patient alone uses their leading
    # column, and a single-column index beside them let PostgreSQL answer the "no time" half of
    # that query by reading the patient's whole history (migration 0008).
    __table_args__ = (
        sa.Index("ix_diagnostic_reports_patient_observed", "patient_id", "observed_at"),
        sa.Index("ix_diagnostic_reports_pms_observed", "patient_pms_id", "observed_at"),
        sparse_index("diagnostic_reports", "supersedes_id"),
        # The unmatched queue, newest first: only the reports waiting for a human. Queries must
        # name the status as a literal (``store.results``) for the planners to use it.
        sa.Index(
            "ix_diagnostic_reports_unmatched",
            "created_at",
            postgresql_where=sa.text("match_status = 'unmatched'"),
            sqlite_where=sa.text("match_status = 'unmatched'"),
        ),
    )
    patient_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid())
    patient_pms_id: Mapped[str | None] = mapped_column(sa.String(64))

    inbound_message_id: Mapped[int | None] = mapped_column(
        BigId, sa.ForeignKey("inbound_messages.id", ondelete="SET NULL"), index=True
    )
    order_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("diagnostic_orders.id", ondelete="SET NULL"), index=True
    )
    device_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("devices.id", ondelete="SET NULL"), index=True
    )
    clinic_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("clinics.id", ondelete="SET NULL"), index=True
    )
    accession_number: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    # Indexed, as accession_number is: a new order looks for the reports waiting for it by any
    # of its numbers (``pipeline.rematch``).
    placer_number: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    filler_number: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    # Who sent it, as the code maps know senders (``pipeline.mapping.source_key``).
    source: Mapped[str | None] = mapped_column(sa.String(64))
    # The same report sent again (preliminary, final, corrected) has the same key: source, the
    # first of accession/filler/placer number, and the service (OBR-4). None when the sender gave
    # no number, so such a report is never merged with another.
    report_key: Mapped[str | None] = mapped_column(sa.String(255), index=True)
    service_code: Mapped[str | None] = mapped_column(sa.String(64))
    service_name: Mapped[str | None] = mapped_column(sa.String(200))
    status: Mapped[ReportStatus] = mapped_column(enum_type(ReportStatus))
    match_status: Mapped[MatchStatus] = mapped_column(
        enum_type(MatchStatus), default=MatchStatus.UNMATCHED
    )
    # Which rule attached it ("accession", "pms_id", ..., "manual"), or None while unmatched.
    match_rule: Mapped[str | None] = mapped_column(sa.String(32))
    match_reason: Mapped[str | None] = mapped_column(sa.Text())
    # The scored candidates a technician chooses from (``ScoredCandidate.to_json``).
    match_candidates: Mapped[list[Any] | None] = mapped_column()
    comments: Mapped[str | None] = mapped_column(sa.Text())
    observed_at: Mapped[datetime | None]
    reported_at: Mapped[datetime | None]
    version: Mapped[int] = mapped_column(sa.Integer(), default=1)
    supersedes_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("diagnostic_reports.id", ondelete="SET NULL")
    )

    results: Mapped[list[LabResult]] = relationship(
        back_populates="report",
        lazy="raise",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="LabResult.id",
    )


class LabResult(IdentityKey, Timestamps, SoftDelete, Base):
    """One observation (HL7 OBX, ASTM R record). ``interpretation`` is ours; the lab's own range
    and flags are kept verbatim beside it."""

    __tablename__ = "lab_results"
    __table_args__ = (
        sparse_index("lab_results", "supersedes_id"),
        # A practice-management system polls for results changed since its last poll.
        sa.Index("ix_lab_results_updated_at", "updated_at"),
        # The mapping work list: only the results no mapping row covered (a literal status in
        # the query, as for the unmatched queue).
        sa.Index(
            "ix_lab_results_unmapped",
            "source_code",
            postgresql_where=sa.text("mapping_status = 'unmapped'"),
            sqlite_where=sa.text("mapping_status = 'unmapped'"),
        ),
    )

    report_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("diagnostic_reports.id", ondelete="CASCADE"), index=True
    )
    test_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("catalogue_tests.id", ondelete="SET NULL"), index=True
    )
    source_code: Mapped[str] = mapped_column(sa.String(64))
    source_name: Mapped[str | None] = mapped_column(sa.String(200))
    value_numeric: Mapped[Decimal | None]
    value_text: Mapped[str] = mapped_column(sa.Text())
    comparator: Mapped[str | None] = mapped_column(sa.String(2))
    unit: Mapped[str | None] = mapped_column(sa.String(32))
    reference_range: Mapped[str | None] = mapped_column(sa.String(100))
    lab_low: Mapped[Decimal | None]
    lab_high: Mapped[Decimal | None]
    lab_flags: Mapped[str | None] = mapped_column(sa.String(32))
    interpretation: Mapped[Interpretation] = mapped_column(
        enum_type(Interpretation), default=Interpretation.NOT_INTERPRETED
    )
    reference_interval_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("reference_intervals.id", ondelete="SET NULL"), index=True
    )
    # Why the interpretation is what it is: the lab's flag used, no interval for the species,
    # units differ, or our flag disagrees with the lab's.
    interpretation_note: Mapped[str | None] = mapped_column(sa.String(255))
    # The delta check against the patient's previous result of the test (``pipeline.delta``):
    # True beyond the test's threshold, False within, None when not judged (no previous result,
    # no threshold, not a number, patient unknown). The note names the previous value and date.
    delta_flag: Mapped[bool | None] = mapped_column(sa.Boolean())
    delta_note: Mapped[str | None] = mapped_column(sa.String(255))
    status: Mapped[ResultStatus] = mapped_column(enum_type(ResultStatus))
    mapping_status: Mapped[MappingStatus] = mapped_column(enum_type(MappingStatus))
    # Why a result is unmapped (unknown code, unit with no conversion), for the reviewer.
    mapping_note: Mapped[str | None] = mapped_column(sa.String(255))
    # The code and unit exactly as sent, whatever mapping did to ``unit`` and the value.
    source_unit: Mapped[str | None] = mapped_column(sa.String(32))
    value_type: Mapped[str | None] = mapped_column(sa.String(8))
    set_id: Mapped[int | None] = mapped_column(sa.Integer())
    # OBX-4 observation sub-id: a string in HL7 ("1", "1.2"), not a number.
    sub_id: Mapped[str | None] = mapped_column(sa.String(20))
    observed_at: Mapped[datetime | None]
    version: Mapped[int] = mapped_column(sa.Integer(), default=1)
    supersedes_id: Mapped[int | None] = mapped_column(
        BigId, sa.ForeignKey("lab_results.id", ondelete="SET NULL")
    )
    comments: Mapped[str | None] = mapped_column(sa.Text())

    report: Mapped[DiagnosticReport] = relationship(back_populates="results", lazy="raise")


class ReportAttachment(IdentityKey, Timestamps, Base):
    """A document sent with a report (PDF, image of a smear, histogram), stored as bytes."""

    __tablename__ = "report_attachments"

    report_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("diagnostic_reports.id", ondelete="CASCADE"), index=True
    )
    content_type: Mapped[str] = mapped_column(sa.String(127))
    filename: Mapped[str | None] = mapped_column(sa.String(255))
    sha256: Mapped[str] = mapped_column(sa.String(64))
    size: Mapped[int] = mapped_column(sa.BigInteger())
    data: Mapped[bytes] = mapped_column(sa.LargeBinary())
