"""The delta check (``pipeline.delta``): thresholds, boundaries, and never raising."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vetgateway.catalogue import read_catalogue
from vetgateway.errors import ConfigError
from vetgateway.pipeline.delta import NOTE_LENGTH, DeltaRule, delta_check

D = Decimal
WHEN = datetime(2026, 11, 20, 8, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("previous", "current", "rule"),
    [
        (None, D("2"), DeltaRule(abs=D("1"))),
        (D("1"), None, DeltaRule(abs=D("1"))),
        (D("1"), D("9"), None),
        (D("1"), D("9"), DeltaRule()),
        (D("NaN"), D("9"), DeltaRule(abs=D("1"))),
        (D("1"), D("Infinity"), DeltaRule(abs=D("1"))),
        # A relative change from zero is undefined; with no absolute threshold nothing is judged.
        (D("0"), D("5"), DeltaRule(rel=D("0.5"))),
    ],
)
def test_cannot_be_judged(
    previous: Decimal | None, current: Decimal | None, rule: DeltaRule | None
) -> None:
    assert delta_check(previous, current, rule) == (None, None)


@pytest.mark.parametrize(
    ("current", "flag"),
    [
        (D("11"), False),  # exactly at the threshold: not beyond it
        (D("11.0001"), True),
        (D("10.9999"), False),
        (D("-1"), False),  # a fall of exactly the threshold
        (D("-1.01"), True),
    ],
)
def test_absolute_threshold_is_strictly_greater(current: Decimal, flag: bool) -> None:
    assert delta_check(D("5"), current, DeltaRule(abs=D("6")))[0] is flag


@pytest.mark.parametrize(
    ("current", "flag"),
    [
        (D("150"), False),  # +50 % exactly
        (D("150.01"), True),
        (D("50"), False),  # -50 % exactly
        (D("49.99"), True),
    ],
)
def test_relative_threshold_is_a_fraction_of_the_previous_value(
    current: Decimal, flag: bool
) -> None:
    assert delta_check(D("100"), current, DeltaRule(rel=D("0.5")))[0] is flag


def test_relative_threshold_uses_the_magnitude_of_a_negative_previous_value() -> None:
    assert delta_check(D("-10"), D("-14"), DeltaRule(rel=D("0.5")))[0] is False
    assert delta_check(D("-10"), D("-16"), DeltaRule(rel=D("0.5")))[0] is True


def test_either_threshold_flags() -> None:
    rule = DeltaRule(abs=D("26.4"), rel=D("0.5"))
    assert delta_check(D("400"), D("430"), rule)[0] is True  # +30 > 26.4, +7.5 % < 50 %
    assert delta_check(D("10"), D("16"), rule)[0] is True  # +6 < 26.4, +60 % > 50 %
    assert delta_check(D("100"), D("110"), rule)[0] is False


def test_previous_zero_uses_the_absolute_threshold_only() -> None:
    rule = DeltaRule(abs=D("1"), rel=D("0.5"))
    assert delta_check(D("0"), D("0.5"), rule)[0] is False
    assert delta_check(D("0"), D("2"), rule)[0] is True


def test_note_names_previous_value_date_change_and_rule() -> None:
    flag, note = delta_check(
        D("88.4"), D("212.16"), DeltaRule(abs=D("26.4")), previous_at=WHEN, unit="umol/L"
    )
    assert flag is True
    assert note == "delta +123.76 umol/L (+140 %) from 88.4 umol/L on 2026-11-20: beyond 26.4"


def test_note_within_limits() -> None:
    flag, note = delta_check(
        D("4.5"), D("4.2"), DeltaRule(abs=D("1.0"), rel=D("0.5")), unit="mmol/L"
    )
    assert flag is False
    assert note == "delta -0.3 mmol/L (-7 %) from 4.5 mmol/L: within 1 and 50 %"


numbers = st.one_of(
    st.none(),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.decimals(min_value=-1000, max_value=1000, places=3),
)
thresholds = st.one_of(st.none(), st.decimals(allow_nan=True, allow_infinity=True))


@given(
    previous=numbers,
    current=numbers,
    rule=st.one_of(st.none(), st.builds(DeltaRule, abs=thresholds, rel=thresholds)),
    unit=st.one_of(st.none(), st.text(max_size=40)),
)
def test_never_raises(
    previous: Decimal | None, current: Decimal | None, rule: DeltaRule | None, unit: str | None
) -> None:
    flag, note = delta_check(previous, current, rule, previous_at=WHEN, unit=unit)
    assert (flag is None) == (note is None)
    assert note is None or len(note) <= NOTE_LENGTH


@given(
    previous=st.decimals(min_value=-1000, max_value=1000, places=3),
    change=st.decimals(min_value=-1000, max_value=1000, places=3),
    limit=st.decimals(min_value="0.001", max_value=100, places=3),
)
def test_absolute_flag_is_exactly_the_size_of_the_change(
    previous: Decimal, change: Decimal, limit: Decimal
) -> None:
    flag, _note = delta_check(previous, previous + change, DeltaRule(abs=limit))
    assert flag is (abs(change) > limit)


def _catalogue(tmp_path: Path, test: str) -> Path:
    path = tmp_path / "tests_site.toml"
    path.write_text(f'[[test]]\nname = "X"\ncategory = "chemistry"\n{test}\n', encoding="utf-8")
    return path


def test_catalogue_reads_delta_thresholds(tmp_path: Path) -> None:
    path = _catalogue(tmp_path, 'code = "X1"\ndelta_abs = 26.4\ndelta_rel = "0.5"')
    [test] = read_catalogue([path]).tests
    assert (test.delta_abs, test.delta_rel) == (D("26.4"), D("0.5"))


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('code = "X1"\ndelta_abs = 0', "delta_abs must be greater than 0"),
        ('code = "X1"\ndelta_rel = -0.5', "delta_rel must be greater than 0"),
        ('code = "X1"\nvalue_type = "text"\ndelta_rel = 0.5', "only for numeric tests"),
        ('code = "X1"\ndelta_rel = "half"', "delta_rel must be a number"),
    ],
)
def test_catalogue_refuses_bad_delta_thresholds(tmp_path: Path, entry: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        read_catalogue([_catalogue(tmp_path, entry)])


def test_the_shipped_catalogue_has_thresholds_for_the_main_analytes() -> None:
    tests = {t.code: t for t in read_catalogue().tests}
    for code in ("GLU", "CREA", "ALT", "NA", "K", "WBC", "HCT", "PLT"):
        assert tests[code].delta_abs is not None or tests[code].delta_rel is not None, code
    assert tests["CREA"].delta_abs == D("26.4")
