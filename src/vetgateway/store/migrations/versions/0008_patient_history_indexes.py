"""Read a patient's report history through the (patient, observed_at) indexes only.

``diagnostic_reports`` had, for each of ``patient_id`` and ``patient_pms_id``, a single-column
index and the (column, ``observed_at``) index the delta check added in 0004. The single-column
ones answer nothing the composite ones cannot (same leading column), and they cost an entry per
report written. Worse, PostgreSQL chose the single-column index for the delta check's "reports
without an observation time" branch and filtered the patient's whole history row by row
(1,500 rows, 0.5 ms, for each report of a patient with 1,500 reports), where the composite index
finds them with ``observed_at IS NULL`` as an index condition. SQLite already used the composite
ones. Dropping an index is quick and takes no table rewrite.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 03:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_REDUNDANT = (
    ("ix_diagnostic_reports_patient_id", "patient_id"),
    ("ix_diagnostic_reports_patient_pms_id", "patient_pms_id"),
)


def upgrade() -> None:
    for name, _column in _REDUNDANT:
        op.drop_index(name, table_name="diagnostic_reports")


def downgrade() -> None:
    for name, column in _REDUNDANT:
        op.create_index(name, "diagnostic_reports", [column])
