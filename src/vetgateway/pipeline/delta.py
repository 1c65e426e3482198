"""The delta check (issue 5): does a result differ from the same patient's previous result of the
same test by more than the test's configured threshold?

A change between two results of one patient is partly analytical imprecision and normal
within-animal (biological) variation; a change larger than those two explain (the *reference
change value*, see Freeman KP et al., ASVCP guidelines on quality control and biological
variation) is worth a look even when both values are inside the reference interval. The
thresholds come from the catalogue (``catalogue_tests.delta_abs`` / ``delta_rel``), in the test's
canonical unit, so a change is only ever computed between two canonical values.

``delta_check`` is pure: no I/O, never raises for any decimal input. What a caller may rely on:

- ``(None, None)`` when it cannot be judged: no previous value, no current value, no rule (or a
  rule with neither threshold), a non-finite number, or a rule that is relative only with a
  previous value of zero (a relative change from zero is undefined).
- ``flag`` is True when the change is strictly *beyond* a threshold, either one being enough:
  ``|current - previous| > abs`` or ``|current - previous| > rel * |previous|``. A change exactly
  at the threshold is not flagged: the threshold is the largest change still explained by
  imprecision and biological variation.
- ``note`` (at most ``NOTE_LENGTH`` characters) names the previous value, its date when given,
  the change and the rule, whether flagged or not, so a reviewer sees what was compared.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Final

from vetgateway.numbers import plain

__all__ = ["NOTE_LENGTH", "DeltaRule", "delta_check"]

NOTE_LENGTH: Final = 255  # lab_results.delta_note

_ZERO: Final = Decimal(0)
_HUNDRED: Final = Decimal(100)


@dataclass(frozen=True, slots=True)
class DeltaRule:
    """A test's delta thresholds in its canonical unit: ``abs`` an absolute change, ``rel`` a
    fraction of the previous value (0.5 = 50 %). Either may be None; both None checks nothing."""

    abs: Decimal | None = None
    rel: Decimal | None = None

    @property
    def empty(self) -> bool:
        return self.abs is None and self.rel is None


def _finite(value: Decimal | None) -> bool:
    return value is not None and value.is_finite()


def _quiet() -> decimal.Context:
    """Arithmetic that gives Infinity or NaN instead of raising on huge or tiny operands."""
    context = decimal.Context(prec=28)
    context.traps = dict.fromkeys(context.traps, False)
    return context


def delta_check(
    previous: Decimal | None,
    current: Decimal | None,
    rule: DeltaRule | None,
    *,
    previous_at: datetime | None = None,
    unit: str | None = None,
) -> tuple[bool | None, str | None]:
    """Compare ``current`` with ``previous`` under ``rule``: ``(flag, note)``, ``(None, None)``
    when it cannot be judged (see the module docstring)."""
    if previous is None or current is None or rule is None or rule.empty:
        return None, None
    if not previous.is_finite() or not current.is_finite():
        return None, None
    limit_abs = rule.abs if _finite(rule.abs) else None
    limit_rel = rule.rel if _finite(rule.rel) else None
    if limit_abs is None and (limit_rel is None or previous.is_zero()):
        return None, None
    with decimal.localcontext(_quiet()):
        change = current - previous
        size = abs(change)
        beyond: list[str] = []
        if limit_abs is not None and size > limit_abs:
            beyond.append(plain(limit_abs))
        relative = None if previous.is_zero() else change / abs(previous)
        if limit_rel is not None and relative is not None and size > limit_rel * abs(previous):
            beyond.append(f"{plain(limit_rel * _HUNDRED)} %")
        flag = bool(beyond)
        unit_text = f" {unit}" if unit else ""
        sign = "+" if change > _ZERO else ""
        text = f"{sign}{plain(change)}{unit_text}"
        if relative is not None:
            text += f" ({sign}{plain(round(relative * _HUNDRED, 0))} %)"
        when = f" on {previous_at.date().isoformat()}" if previous_at is not None else ""
        note = f"delta {text} from {plain(previous)}{unit_text}{when}"
        if flag:
            note += ": beyond " + " and ".join(beyond)
        else:
            limits = [f"{plain(limit_abs)}"] if limit_abs is not None else []
            if limit_rel is not None and relative is not None:
                limits.append(f"{plain(limit_rel * _HUNDRED)} %")
            note += ": within " + " and ".join(limits)
    return flag, note[:NOTE_LENGTH]
