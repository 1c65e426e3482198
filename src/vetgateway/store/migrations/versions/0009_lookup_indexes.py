"""Indexes for lookups that read whole tables once a clinic has years of data.

An audit of every statement the pipeline, the pager and the API run, against 2 million
messages, 1.8 million reports and 9 million results (EXPLAIN ANALYZE on PostgreSQL 15, EXPLAIN
QUERY PLAN on SQLite 3.40), found these scanning a table; the first four run inside the
pipeline's write transaction, where on SQLite every ACK waits behind them:

- a new order looking for the reports waiting for it (``pipeline.rematch``) by placer or filler
  number: no index on either, 344 ms on PostgreSQL, 489 ms on SQLite, per order;
- matching by owner surname and animal name (``store.orders.candidate_orders``), compared as
  ``lower(trim(...))``: 82-177 ms per report no number matched; an index on those expressions;
- a QC run sent again (``store.qc``), found by its analyzer time: 42 ms;
- a critical finding merging into a live alert of the merge window (``store.alerts``), and the
  alert lists, newest first by state: 1-33 ms and 58-274 ms;
- a practice-management system polling results changed since its last poll: 1.7-2.6 s. On
  PostgreSQL the index answers it; SQLite keeps walking the results in id order for the
  page's ORDER BY id (right for a first, full sync; slow for a poll with few changes), which
  only a change to the API's paging (by change time, then id) would cure;
- SQLite's silence watch scanning every alert for the few with a device, every 30 s: the
  device index becomes partial, as those of 0007 did;
- the unmatched queue (405-460 ms a page) and the mapping work list (2.4-3.3 s): partial
  indexes holding only the unmatched reports and the unmapped results, which those queries
  name by a literal status.

Each result and report written gains an index entry (``updated_at``; placer and filler numbers).
Building them reads the tables once: on a large PostgreSQL database run the upgrade in a quiet
hour.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (index, table, columns or expressions)
_PLAIN = (
    ("ix_diagnostic_reports_placer_number", "diagnostic_reports", ["placer_number"]),
    ("ix_diagnostic_reports_filler_number", "diagnostic_reports", ["filler_number"]),
    ("ix_qc_runs_run_at", "qc_runs", ["run_at"]),
    ("ix_alerts_state_created_at", "alerts", ["state", "created_at"]),
    ("ix_lab_results_updated_at", "lab_results", ["updated_at"]),
)
_NAMES = "ix_diagnostic_orders_owner_patient_name"
# (index, table, column, predicate): only the rows a work list shows
_PARTIAL = (
    (
        "ix_diagnostic_reports_unmatched",
        "diagnostic_reports",
        "created_at",
        "match_status = 'unmatched'",
    ),
    ("ix_lab_results_unmapped", "lab_results", "source_code", "mapping_status = 'unmapped'"),
)


def upgrade() -> None:
    for name, table, columns in _PLAIN:
        op.create_index(name, table, columns)
    op.create_index(
        _NAMES,
        "diagnostic_orders",
        [sa.text("lower(trim(owner_surname))"), sa.text("lower(trim(patient_name))")],
    )
    op.drop_index("ix_alerts_device_id", table_name="alerts")
    where = sa.text("device_id IS NOT NULL")
    op.create_index(
        "ix_alerts_device_id", "alerts", ["device_id"], postgresql_where=where, sqlite_where=where
    )
    for name, table, column, predicate in _PARTIAL:
        where = sa.text(predicate)
        op.create_index(name, table, [column], postgresql_where=where, sqlite_where=where)


def downgrade() -> None:
    for name, table, _column, _predicate in _PARTIAL:
        op.drop_index(name, table_name=table)
    op.drop_index("ix_alerts_device_id", table_name="alerts")
    op.create_index("ix_alerts_device_id", "alerts", ["device_id"])
    op.drop_index(_NAMES, table_name="diagnostic_orders")
    for name, table, _columns in reversed(_PLAIN):
        op.drop_index(name, table_name=table)
