"""Interpretation note on results: why a result is read as it is (lab's flag used, no interval,
units differ, disagreement with the lab's flag).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 14:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("lab_results") as batch:
        batch.add_column(sa.Column("interpretation_note", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("lab_results") as batch:
        batch.drop_column("interpretation_note")
