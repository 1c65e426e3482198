"""Numbers as people read them: the same from SQLite's scale-10 Decimals and PostgreSQL's."""

from __future__ import annotations

from decimal import Decimal

import pytest

from vetgateway.numbers import plain


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("98.0000000000", "98"),  # SQLite: every NUMERIC comes back with ten decimals
        ("98", "98"),  # PostgreSQL: as stored
        ("7.5000000000", "7.5"),
        ("100", "100"),  # never 1E+2
        ("1E+2", "100"),
        ("0.0000000000", "0"),
        ("-0.0", "0"),
        ("-2.50", "-2.5"),
        ("0.0005", "0.0005"),
        ("12345678901234", "1.234568E+13"),  # past 10^12: an exponent, not 14 digits
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
    ],
)
def test_a_number_is_shown_as_a_lab_prints_it(stored: str, shown: str) -> None:
    assert plain(Decimal(stored)) == shown
