"""Pipeline columns: how a report was matched and found again, why a result is unmapped.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 13:05:00

All columns are nullable, so the upgrade is an in-place ``ADD COLUMN`` on both back ends; the
batch context lets SQLite drop them again on downgrade.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("diagnostic_reports") as batch:
        batch.add_column(sa.Column("source", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("report_key", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("service_code", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("service_name", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("match_rule", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("match_candidates", _JSON, nullable=True))
        batch.add_column(sa.Column("comments", sa.Text(), nullable=True))
        batch.create_index(
            batch.f("ix_diagnostic_reports_report_key"), ["report_key"], unique=False
        )
    with op.batch_alter_table("lab_results") as batch:
        batch.add_column(sa.Column("mapping_note", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("source_unit", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("value_type", sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("lab_results") as batch:
        batch.drop_column("value_type")
        batch.drop_column("source_unit")
        batch.drop_column("mapping_note")
    with op.batch_alter_table("diagnostic_reports") as batch:
        batch.drop_index(batch.f("ix_diagnostic_reports_report_key"))
        batch.drop_column("comments")
        batch.drop_column("match_candidates")
        batch.drop_column("match_rule")
        batch.drop_column("service_name")
        batch.drop_column("service_code")
        batch.drop_column("report_key")
        batch.drop_column("source")
