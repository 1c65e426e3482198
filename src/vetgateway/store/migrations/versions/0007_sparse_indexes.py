"""Leave mostly-empty references and an unqueried hash out of the hot tables' indexes.

Every result, report and received message paid for index entries nobody reads:

- ``lab_results.supersedes_id``, ``diagnostic_reports.supersedes_id`` and
  ``inbound_messages.duplicate_of_id`` are NULL on all but corrected results and refused copies,
  yet each row, and each status update of a message, added a NULL entry to their indexes. They
  become partial indexes (``WHERE ... IS NOT NULL``): the lookups by value, including the foreign
  keys' ``ON DELETE SET NULL``, use them as before.
- ``inbound_messages.sha256`` on its own: no query looks a message up by hash alone. Resends and
  collisions are found through the unique (sender, control id, hash) index, which stays.

For a 20-result report that is 22 fewer index entries per message written, and 3 per status
change. Building the partial indexes reads the tables once; on a large PostgreSQL database run
the upgrade in a quiet hour.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 22:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (index, table, column): mostly NULL, indexed only where set
_SPARSE = (
    ("ix_lab_results_supersedes_id", "lab_results", "supersedes_id"),
    ("ix_diagnostic_reports_supersedes_id", "diagnostic_reports", "supersedes_id"),
    ("ix_inbound_messages_duplicate_of_id", "inbound_messages", "duplicate_of_id"),
)


def upgrade() -> None:
    op.drop_index("ix_inbound_messages_sha256", table_name="inbound_messages")
    for name, table, column in _SPARSE:
        op.drop_index(name, table_name=table)
        where = sa.text(f"{column} IS NOT NULL")
        op.create_index(name, table, [column], postgresql_where=where, sqlite_where=where)


def downgrade() -> None:
    for name, table, column in _SPARSE:
        op.drop_index(name, table_name=table)
        op.create_index(name, table, [column])
    op.create_index("ix_inbound_messages_sha256", "inbound_messages", ["sha256"])
