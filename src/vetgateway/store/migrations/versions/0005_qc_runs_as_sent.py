"""QC runs keep what the analyzer sent: its sample id, control material/level and lot number, so
a run is reviewable before (or without) being linked to a configured lot; QC results keep the
analyzer's flags; an operational alert names the device it is about (silence watch).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("qc_runs") as batch:
        batch.add_column(sa.Column("sample_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("control", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("lot_number", sa.String(length=64), nullable=True))
    with op.batch_alter_table("qc_results") as batch:
        batch.add_column(sa.Column("abnormal_flags", sa.String(length=64), nullable=True))
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("device_id", sa.Uuid(), nullable=True))
        batch.create_foreign_key(
            "fk_alerts_device_id_devices", "devices", ["device_id"], ["id"], ondelete="SET NULL"
        )
        batch.create_index("ix_alerts_device_id", ["device_id"])


def downgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.drop_index("ix_alerts_device_id")
        batch.drop_constraint("fk_alerts_device_id_devices", type_="foreignkey")
        batch.drop_column("device_id")
    with op.batch_alter_table("qc_results") as batch:
        batch.drop_column("abnormal_flags")
    with op.batch_alter_table("qc_runs") as batch:
        batch.drop_column("lot_number")
        batch.drop_column("control")
        batch.drop_column("sample_id")
