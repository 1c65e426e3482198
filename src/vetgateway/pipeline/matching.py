"""Which order a diagnostic report belongs to: pure rules over candidates the store found.

``decide_match(report, species, candidates, observed_at=…)`` never touches the database: the store
(``store.orders.candidate_orders``) fetches the few orders that could match, this module decides.
The rules run in order and the first one that finds anything decides; later rules are not
consulted, so a weaker clue can never overrule a stronger one.

1. **Order numbers**: accession, then placer, then filler number, each compared with the same
   field of the order (exact, surrounding whitespace ignored; numbers are identifiers). Numbers
   identify an order whenever it was placed, so no time window applies. Exactly one order with the
   number → matched. Two or more different orders with the same number → unmatched: the numbers
   are inconsistent and a person must choose (the next rules are not tried, they could only guess).
2. **PMS patient id**, then 3. **microchip** (both sides through ``normalise_microchip``): the
   patient's orders placed within ``window`` before ``observed_at`` (or up to
   ``LATE_ORDER_GRACE`` after it: in-house analyzers often run before the order is typed in).
   One such order → matched. Several: if exactly one of them ordered the report's service code
   (OBR-4), that one; otherwise the order placed closest before the observation (else, if all came
   after it, the earliest). If the runner-up was placed within ``TIE_MARGIN`` of that order, the
   two are equally plausible (one visit, several orders entered together) → unmatched with both.
   Orders outside the window, or with no order time, are listed as candidates but never attached.
4. **Owner surname + animal name** (case- and whitespace-insensitive), plus species and birth date
   when both sides know them: only *proposes* scored candidates. It never attaches, even to a
   single perfect hit (R39): names are shared (every second dog is called Max) and a result
   attached to the wrong animal is the worst failure this gateway can have.

Nothing found → unmatched with the reason and whatever candidates scored above zero (R38).

Safety check on every attaching rule: an order whose patient *conflicts* with the report (both
sides have a PMS id and they differ, both have a readable microchip and they differ, or both have a
species and it differs) is never attached, even when the accession number matches; the decision is
unmatched and says which identifiers disagree. A false "unmatched" costs a technician one click; a
false match puts a result in the wrong animal's record.

Scores (``ScoredCandidate.score``, 0 to 1) are for the people choosing, never for deciding: they
sum fixed weights for every clue that agrees (a number 0.6, PMS id or microchip 0.5, owner and
animal name 0.15 each, species and birth date 0.1 each, ordered within the window 0.05) minus
penalties for conflicts, clipped to [0, 1]. ``reasons`` say what agreed and what did not.

Reasons are written for the technician resolving the queue; they name order numbers and
identifiers, never the animal's or the owner's name (they end up in logs and audit details).
Naive datetimes are read as UTC, so mixed inputs compare instead of raising.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final, Literal

from vetgateway.model import Report, Sex

__all__ = [
    "DEFAULT_WINDOW",
    "LATE_ORDER_GRACE",
    "MAX_CANDIDATES",
    "TIE_MARGIN",
    "MatchDecision",
    "MatchRule",
    "OrderCandidate",
    "OrderedAnimal",
    "ScoredCandidate",
    "decide_match",
    "normalise_microchip",
]

MatchRule = Literal["accession", "placer", "filler", "pms_id", "microchip"]

DEFAULT_WINDOW: Final = timedelta(days=30)
"""How long before the observation an order may have been placed and still match by patient."""
LATE_ORDER_GRACE: Final = timedelta(hours=24)
"""How long *after* the observation an order may have been placed (sample run before ordering)."""
TIE_MARGIN: Final = timedelta(hours=1)
"""Two orders of one patient placed this close together are equally plausible: nobody guesses."""
MAX_CANDIDATES: Final = 10
"""At most this many scored candidates are returned, best first."""

# Microchips: ISO 11784/11785 FDX-B/HDX (15 decimal digits: country or manufacturer code and
# national number), AVID's legacy encrypted format (9 digits, printed ``012*345*678``) and the
# 10-character hexadecimal codes of FECAVA/Trovan/Destron FDX-A chips (``0A0139785B``).
_CHIP_SEPARATORS: Final = re.compile(r"[\s.\-*]+")
_CHIP: Final = re.compile(r"\d{15}|\d{9}|[0-9A-F]{10}", re.ASCII)

_WEIGHTS: Final = {
    "accession": 0.6,
    "placer": 0.6,
    "filler": 0.6,
    "pms_id": 0.5,
    "microchip": 0.5,
    "owner": 0.15,
    "name": 0.15,
    "species": 0.1,
    "birth_date": 0.1,
    "window": 0.05,
}
_PENALTIES: Final = {"pms_id": 0.5, "microchip": 0.5, "species": 0.3, "birth_date": 0.2}

_NUMBER_RULES: Final[tuple[MatchRule, ...]] = ("accession", "placer", "filler")
_NUMBER_LABELS: Final = {
    "accession": "accession number",
    "placer": "placer order number",
    "filler": "filler order number",
}
_PATIENT_LABELS: Final = {"pms_id": "PMS patient id", "microchip": "microchip"}


def normalise_microchip(text: str | None) -> str | None:
    """A microchip number in one canonical spelling, or None when ``text`` is not one.

    Whitespace, dots, dashes and asterisks are removed (scanners and PMSs print
    ``985 112 003 456 789``, ``985.112.003.456.789``, AVID's ``012*345*678``), letters are
    upper-cased, and the rest must be one of: 15 decimal digits (ISO 11784/11785), 9 decimal
    digits (AVID encrypted), or 10 hexadecimal characters (FECAVA / Trovan / FDX-A, e.g.
    ``0A0139785B``). Anything else (wrong length, other letters, a name typed into the field)
    gives None, so a caller can tell a chip from text it should keep only as sent. The result is
    idempotent: ``normalise_microchip(normalise_microchip(x)) == normalise_microchip(x)``.
    """
    if text is None:
        return None
    compact = _CHIP_SEPARATORS.sub("", text).upper()
    return compact if _CHIP.fullmatch(compact) else None


@dataclass(frozen=True, slots=True)
class OrderCandidate:
    """An order as matching sees it: the numbers, the patient clues and when it was placed.

    ``ordered_codes`` are the tests ordered (``OrderItem.ordered_code``), used only to choose
    between several orders of one patient.
    """

    order_id: uuid.UUID
    patient_id: uuid.UUID | None = None
    accession_number: str | None = None
    placer_number: str | None = None
    filler_number: str | None = None
    patient_pms_id: str | None = None
    patient_microchip: str | None = None
    patient_name: str | None = None
    owner_surname: str | None = None
    species: str | None = None
    birth_date: date | None = None
    ordered_at: datetime | None = None
    ordered_codes: tuple[str, ...] = ()
    clinic_id: uuid.UUID | None = None  # the clinic that placed it: whose intervals and rota
    sex: Sex | None = None
    breed: str | None = None

    @property
    def animal(self) -> OrderedAnimal:
        return OrderedAnimal(self.species, self.breed, self.sex, self.birth_date)


@dataclass(frozen=True, slots=True)
class OrderedAnimal:
    """The animal as its order describes it: what a report's interpretation falls back on for
    whatever the lab left out (many labs send no species; the PMS always knows it)."""

    species: str | None = None
    breed: str | None = None
    sex: Sex | None = None
    birth_date: date | None = None


@dataclass(frozen=True, slots=True)
class ScoredCandidate:
    """One order offered to the person resolving a report, with why it was offered."""

    order_id: uuid.UUID
    patient_id: uuid.UUID | None
    score: float
    reasons: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict (UUIDs as strings), as stored in ``match_candidates``."""
        return {
            "order_id": str(self.order_id),
            "patient_id": None if self.patient_id is None else str(self.patient_id),
            "score": self.score,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True, slots=True)
class MatchDecision:
    """The outcome for one report.

    Matched: ``order_id`` is set, ``rule`` says which rule attached it and ``patient_id`` is that
    order's patient (None when the order did not carry the PMS's patient UUID). Unmatched:
    ``order_id``, ``patient_id`` and ``rule`` are all None and ``candidates`` holds what a person
    may choose from. ``reason`` always explains the outcome.
    """

    order_id: uuid.UUID | None
    patient_id: uuid.UUID | None
    rule: MatchRule | None
    reason: str
    candidates: tuple[ScoredCandidate, ...]
    clinic_id: uuid.UUID | None = None  # the matched order's clinic
    animal: OrderedAnimal | None = None  # the matched order's animal

    @property
    def matched(self) -> bool:
        return self.order_id is not None


def _number(value: str | None) -> str | None:
    value = value.strip() if value is not None else None
    return value or None


def _name(value: str | None) -> str | None:
    """Names compare case-insensitively with runs of whitespace as one space."""
    if value is None:
        return None
    return " ".join(value.split()).casefold() or None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class _Clues:
    """The report's side, normalised once."""

    accession: str | None
    placer: str | None
    filler: str | None
    pms_id: str | None
    microchip: str | None
    name: str | None
    owner: str | None
    species: str | None
    birth_date: date | None
    service_code: str | None

    @classmethod
    def of(cls, report: Report, species: str | None) -> _Clues:
        patient = report.patient
        return cls(
            accession=_number(report.order.accession),
            placer=_number(report.order.placer),
            filler=_number(report.order.filler),
            pms_id=_number(patient.pms_id),
            microchip=normalise_microchip(patient.microchip),
            name=_name(patient.name),
            owner=_name(patient.owner_surname),
            species=_name(species),
            birth_date=patient.birth_date,
            service_code=_name(report.service_code),
        )

    def number(self, rule: str) -> str | None:
        return {"accession": self.accession, "placer": self.placer, "filler": self.filler}[rule]


def _order_number(candidate: OrderCandidate, rule: str) -> str | None:
    if rule == "accession":
        return _number(candidate.accession_number)
    if rule == "placer":
        return _number(candidate.placer_number)
    return _number(candidate.filler_number)


def _compare(ours: object, theirs: object) -> bool | None:
    """True when both are known and equal, False when both are known and differ, else None."""
    if ours is None or theirs is None:
        return None
    return ours == theirs


class _Judge:
    """Everything the rules need about one report, and the evidence for each candidate."""

    def __init__(
        self, clues: _Clues, observed_at: datetime, window: timedelta, grace: timedelta
    ) -> None:
        self.clues = clues
        self.observed_at = observed_at
        self.window = window
        self.earliest = observed_at - window
        self.latest = observed_at + grace

    def ordered_at(self, candidate: OrderCandidate) -> datetime | None:
        return None if candidate.ordered_at is None else _aware(candidate.ordered_at)

    def in_window(self, candidate: OrderCandidate) -> bool:
        at = self.ordered_at(candidate)
        return at is not None and self.earliest <= at <= self.latest

    def patient_checks(self, candidate: OrderCandidate) -> dict[str, bool | None]:
        c = self.clues
        return {
            "pms_id": _compare(c.pms_id, _number(candidate.patient_pms_id)),
            "microchip": _compare(c.microchip, normalise_microchip(candidate.patient_microchip)),
            "owner": _compare(c.owner, _name(candidate.owner_surname)),
            "name": _compare(c.name, _name(candidate.patient_name)),
            "species": _compare(c.species, _name(candidate.species)),
            "birth_date": _compare(c.birth_date, candidate.birth_date),
        }

    def conflicts(self, candidate: OrderCandidate, *, with_birth_date: bool = False) -> list[str]:
        """The identifiers on which order and report disagree (see the module docstring)."""
        checks = self.patient_checks(candidate)
        keys = ["pms_id", "microchip", "species"] + (["birth_date"] if with_birth_date else [])
        labels = {**_PATIENT_LABELS, "species": "species", "birth_date": "birth date"}
        return [labels[k] for k in keys if checks[k] is False]

    def score(self, candidate: OrderCandidate) -> ScoredCandidate:
        clues = self.clues
        total = 0.0
        reasons: list[str] = []
        for rule, label in _NUMBER_LABELS.items():
            ours = clues.number(rule)
            if ours is not None and ours == _order_number(candidate, rule):
                total += _WEIGHTS[rule]
                reasons.append(f"{label} matches")
        agree = {
            "pms_id": "PMS patient id matches",
            "microchip": "microchip matches",
            "owner": "owner surname matches",
            "name": "animal name matches",
            "species": "species matches",
            "birth_date": "birth date matches",
        }
        differ = {
            "pms_id": "PMS patient id differs",
            "microchip": "microchip differs",
            "species": "species differs",
            "birth_date": "birth date differs",
        }
        for key, same in self.patient_checks(candidate).items():
            if same:
                total += _WEIGHTS[key]
                reasons.append(agree[key])
            elif same is False and key in differ:
                total -= _PENALTIES[key]
                reasons.append(differ[key])
        if clues.service_code is not None and clues.service_code in _codes(candidate):
            reasons.append("orders the report's service code")
        at = self.ordered_at(candidate)
        if at is None:
            reasons.append("order time unknown")
        else:
            if self.earliest <= at <= self.latest:
                total += _WEIGHTS["window"]
            reasons.append(_when(at, self.observed_at, self.window, self.latest))
        score = round(min(1.0, max(0.0, total)), 3)
        return ScoredCandidate(candidate.order_id, candidate.patient_id, score, tuple(reasons))


def _codes(candidate: OrderCandidate) -> set[str | None]:
    return {_name(code) for code in candidate.ordered_codes}


def _span(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    if hours < 48:
        return f"{hours:.0f} h"
    return f"{delta.days} days"


def _when(at: datetime, observed_at: datetime, window: timedelta, latest: datetime) -> str:
    if at <= observed_at:
        where = f"ordered {_span(observed_at - at)} before the observation"
        return where if observed_at - at <= window else f"{where} (outside the window)"
    where = f"ordered {_span(at - observed_at)} after the observation"
    return where if at <= latest else f"{where} (outside the window)"


def _ranked(judge: _Judge, candidates: Sequence[OrderCandidate]) -> tuple[ScoredCandidate, ...]:
    """Scored, best first (then most recently ordered, then by id, so the order is stable)."""

    def key(pair: tuple[ScoredCandidate, OrderCandidate]) -> tuple[float, float, str]:
        scored, candidate = pair
        at = judge.ordered_at(candidate)
        return (-scored.score, -at.timestamp() if at is not None else 0.0, str(scored.order_id))

    pairs = sorted(((judge.score(c), c) for c in candidates), key=key)
    return tuple(scored for scored, _ in pairs[:MAX_CANDIDATES])


def _unmatched(reason: str, judge: _Judge, candidates: Sequence[OrderCandidate]) -> MatchDecision:
    return MatchDecision(None, None, None, reason, _ranked(judge, candidates))


def _matched(
    rule: MatchRule, candidate: OrderCandidate, reason: str, judge: _Judge
) -> MatchDecision:
    return MatchDecision(
        candidate.order_id,
        candidate.patient_id,
        rule,
        reason,
        (judge.score(candidate),),
        candidate.clinic_id,
        candidate.animal,
    )


def _by_number(
    rule: MatchRule, key: str, hits: list[OrderCandidate], judge: _Judge
) -> MatchDecision:
    label = _NUMBER_LABELS[rule]
    if len(hits) > 1:
        return _unmatched(
            f"{label} {key!r} belongs to {len(hits)} different orders; choose one by hand",
            judge,
            hits,
        )
    [hit] = hits
    conflicts = judge.conflicts(hit)
    if conflicts:
        return _unmatched(
            f"{label} {key!r} names an order for a different patient ({', '.join(conflicts)} "
            "differ); check the sample and the order before attaching",
            judge,
            hits,
        )
    return _matched(rule, hit, f"{label} {key!r} matches exactly one order", judge)


def _closest(judge: _Judge, orders: list[OrderCandidate]) -> list[OrderCandidate]:
    """The order placed closest before the observation (else the earliest after it), plus any
    placed within ``TIE_MARGIN`` of it: more than one means nobody can tell them apart."""
    observed = judge.observed_at

    def at(c: OrderCandidate) -> datetime:
        stamp = judge.ordered_at(c)
        assert stamp is not None  # only orders within the window get here
        return stamp

    before = [c for c in orders if at(c) <= observed]
    if before:
        best = max(at(c) for c in before)
        return [c for c in before if best - at(c) <= TIE_MARGIN]
    best = min(at(c) for c in orders)
    return [c for c in orders if at(c) - best <= TIE_MARGIN]


def _by_patient(
    rule: MatchRule, key: str, hits: list[OrderCandidate], judge: _Judge
) -> MatchDecision | None:
    """Rules 2 and 3; None when no order of this patient may be attached (try the next rule)."""
    label = _PATIENT_LABELS[rule]
    eligible = [c for c in hits if judge.in_window(c) and not judge.conflicts(c)]
    if not eligible:
        return None
    within = _span(judge.window)
    if len(eligible) == 1:
        return _matched(
            rule, eligible[0], f"the only order for {label} {key!r} within {within}", judge
        )
    code = judge.clues.service_code
    if code is not None:
        with_code = [c for c in eligible if code in _codes(c)]
        if len(with_code) == 1:
            return _matched(
                rule,
                with_code[0],
                f"of {len(eligible)} orders for {label} {key!r} within {within}, the only one "
                "ordering the report's service",
                judge,
            )
        eligible = with_code or eligible
    closest = _closest(judge, eligible)
    if len(closest) == 1:
        return _matched(
            rule,
            closest[0],
            f"of {len(eligible)} orders for {label} {key!r} within {within}, the one placed "
            "closest to the observation",
            judge,
        )
    return _unmatched(
        f"{len(closest)} orders for {label} {key!r} were placed within "
        f"{TIE_MARGIN.total_seconds() / 3600:.0f} h of each other and are equally plausible; "
        "choose one by hand",
        judge,
        closest,
    )


def _by_name(judge: _Judge, candidates: Sequence[OrderCandidate]) -> list[OrderCandidate]:
    """Rule 4: orders with the same owner surname and animal name, nothing contradicting."""
    clues = judge.clues
    if clues.owner is None or clues.name is None:
        return []
    found = []
    for c in candidates:
        checks = judge.patient_checks(c)
        if (
            checks["owner"]
            and checks["name"]
            and judge.in_window(c)
            and not judge.conflicts(c, with_birth_date=True)
        ):
            found.append(c)
    return found


def decide_match(
    report: Report,
    species: str | None,
    candidates: Sequence[OrderCandidate],
    *,
    observed_at: datetime,
    window: timedelta = DEFAULT_WINDOW,
) -> MatchDecision:
    """Decide which of ``candidates`` the report belongs to, if any (module docstring: the rules).

    ``species`` is the report's species as a lower-case word (mapped from PID-35 or a demographic
    OBX), None when unknown. ``observed_at`` is when the sample was taken or run (OBR-7, else when
    the message arrived). Pure and total: any input gives a decision, nothing is raised.
    """
    observed = _aware(observed_at)
    clues = _Clues.of(report, species)
    judge = _Judge(clues, observed, window, LATE_ORDER_GRACE)
    first: dict[uuid.UUID, OrderCandidate] = {}
    for candidate in candidates:  # the same order found by two queries counts once
        first.setdefault(candidate.order_id, candidate)
    unique = list(first.values())

    tried: list[str] = []
    for rule in _NUMBER_RULES:
        key = clues.number(rule)
        if key is None:
            continue
        hits = [c for c in unique if _order_number(c, rule) == key]
        if hits:
            return _by_number(rule, key, hits, judge)
        tried.append(f"no order has {_NUMBER_LABELS[rule]} {key!r}")

    patient_rules: tuple[tuple[MatchRule, str | None, Callable[[OrderCandidate], bool]], ...] = (
        ("pms_id", clues.pms_id, lambda c: _number(c.patient_pms_id) == clues.pms_id),
        (
            "microchip",
            clues.microchip,
            lambda c: normalise_microchip(c.patient_microchip) == clues.microchip,
        ),
    )
    for rule, key, same in patient_rules:
        if key is None:
            continue
        hits = [c for c in unique if same(c)]
        decision = _by_patient(rule, key, hits, judge) if hits else None
        if decision is not None:
            return decision
        label = _PATIENT_LABELS[rule]
        tried.append(
            f"no order for {label} {key!r} placed within {_span(window)} of the observation "
            "without conflicting identifiers"
            if hits
            else f"no order for {label} {key!r}"
        )

    proposals = _by_name(judge, unique)
    if proposals:
        return _unmatched(
            f"{'; '.join(tried) + '; ' if tried else ''}{len(proposals)} order(s) proposed by "
            "owner surname and animal name: confirm by hand (never attached automatically)",
            judge,
            proposals,
        )
    if clues.owner is not None and clues.name is not None:
        tried.append("no order within the window for this owner surname and animal name")
    if not tried:
        tried.append("the report carries no order number and no patient identifier")
    others = [c for c in unique if judge.score(c).score > 0]
    return _unmatched(f"patient not found: {'; '.join(tried)}", judge, others)
