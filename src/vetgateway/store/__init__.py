"""Persistence: the one place that opens database sessions (``db``), the schema (``models``),
the durable inbox every adapter writes to (``inbox``), and the Alembic migrations."""
