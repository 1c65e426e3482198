"""Alembic environment. Run through ``vetgateway.store.migrate``, which hands us a connection."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from vetgateway.store.models import Base

# One migrating process at a time on PostgreSQL, however many gateways start at once.
_PG_MIGRATION_LOCK = 0x76677731


def run_migrations_online() -> None:
    connection: sa.Connection = context.config.attributes["connection"]
    is_sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=is_sqlite,
        compare_type=True,
        transaction_per_migration=True,
    )
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        connection.commit()
    try:
        with context.begin_transaction():
            context.run_migrations()
    finally:
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_MIGRATION_LOCK})
            connection.commit()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run `vetgateway migrate`")
run_migrations_online()
