"""Delta check: per-test thresholds in the catalogue, the outcome on each result, and indexes
that read one patient's reports in time order (the "previous result" query).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 14:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("catalogue_tests") as batch:
        batch.add_column(sa.Column("delta_abs", sa.Numeric(), nullable=True))
        batch.add_column(sa.Column("delta_rel", sa.Numeric(), nullable=True))
    with op.batch_alter_table("lab_results") as batch:
        batch.add_column(sa.Column("delta_flag", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("delta_note", sa.String(length=255), nullable=True))
    op.create_index(
        "ix_diagnostic_reports_patient_observed",
        "diagnostic_reports",
        ["patient_id", "observed_at"],
    )
    op.create_index(
        "ix_diagnostic_reports_pms_observed",
        "diagnostic_reports",
        ["patient_pms_id", "observed_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_diagnostic_reports_pms_observed", table_name="diagnostic_reports")
    op.drop_index("ix_diagnostic_reports_patient_observed", table_name="diagnostic_reports")
    with op.batch_alter_table("lab_results") as batch:
        batch.drop_column("delta_note")
        batch.drop_column("delta_flag")
    with op.batch_alter_table("catalogue_tests") as batch:
        batch.drop_column("delta_rel")
        batch.drop_column("delta_abs")
