"""Numbers as people read them, in pages, notes and the API.

Decimal columns come back from SQLite with the scale SQLAlchemy gives them (98 reads as
98.0000000000) and from PostgreSQL with the scale they were stored with: ``plain`` shows both the
same way, as a lab would print them. The value exactly as the sender wrote it is kept beside
every result (``value``, ``value_text``), so nothing a trailing zero said is lost.
"""

from __future__ import annotations

from decimal import Decimal

__all__ = ["plain"]


def plain(value: Decimal) -> str:
    """7.5, not 7.5000000000; 100, not 1E+2; an exponent only for magnitudes past 10^12."""
    if not value.is_finite():
        return str(value)
    value = value.normalize()
    if value.is_zero():
        return "0"
    if -12 <= value.adjusted() <= 12:
        return format(value, "f")
    return format(value, ".6E")
