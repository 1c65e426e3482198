"""Matching a report to its order (pipeline/matching.py): microchip spellings, each rule and its
precedence, the window and tie rules, the patient-conflict guard, R38 (patient not found →
unmatched with a reason) and R39 (owner + animal name only ever proposes), and properties over
generated reports and candidates."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vetgateway.model import OrderRef, PatientRef, Report
from vetgateway.pipeline.matching import (
    LATE_ORDER_GRACE,
    MAX_CANDIDATES,
    TIE_MARGIN,
    MatchDecision,
    OrderCandidate,
    ScoredCandidate,
    decide_match,
    normalise_microchip,
)

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
A, B, C = (uuid.UUID(int=n) for n in (1, 2, 3))
PATIENT_A, PATIENT_B = uuid.UUID(int=101), uuid.UUID(int=102)


def report(
    *,
    accession: str | None = None,
    placer: str | None = None,
    filler: str | None = None,
    pms_id: str | None = None,
    microchip: str | None = None,
    name: str | None = None,
    owner: str | None = None,
    birth_date: date | None = None,
    service_code: str | None = None,
) -> Report:
    return Report(
        order=OrderRef(placer=placer, filler=filler, accession=accession),
        patient=PatientRef(
            pms_id=pms_id,
            microchip=microchip,
            name=name,
            owner_surname=owner,
            birth_date=birth_date,
        ),
        service_code=service_code,
        service_text=None,
        status=None,
        status_code=None,
        observed_at=None,
        reported_at=None,
    )


def order(
    order_id: uuid.UUID = A, ago: timedelta | None = timedelta(days=1), **kw: object
) -> OrderCandidate:
    """A candidate placed ``ago`` before T0 (None: no order time)."""
    at = None if ago is None else T0 - ago
    return OrderCandidate(order_id=order_id, ordered_at=at, **kw)  # type: ignore[arg-type]


def decide(r: Report, *candidates: OrderCandidate, species: str | None = None) -> MatchDecision:
    return decide_match(r, species, candidates, observed_at=T0)


# --- microchips --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("985112003456789", "985112003456789"),  # ISO 11784/11785, as stored
        ("985 112 003 456 789", "985112003456789"),
        ("985.112.003.456.789", "985112003456789"),
        ("985-112003456789", "985112003456789"),
        (" 985 112\t003 456 789 ", "985112003456789"),
        ("985\u00a0112\u00a0003\u00a0456\u00a0789", "985112003456789"),  # NBSP from a PDF
        ("012*345*678", "012345678"),  # AVID encrypted, as printed
        ("012-345-678", "012345678"),
        ("012345678", "012345678"),
        ("0A0139785B", "0A0139785B"),  # FECAVA / Trovan hexadecimal
        ("0a0139785b", "0A0139785B"),
        ("0A01-3978-5B", "0A0139785B"),
        ("0123456789", "0123456789"),  # ten digits are ten hex characters too
    ],
)
def test_microchip_spellings_normalise(text: str, expected: str) -> None:
    assert normalise_microchip(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "   ",
        "98511200345678",  # 14 digits
        "9851120034567890",  # 16 digits
        "12345678",  # 8
        "0A0139785G",  # G is not hexadecimal
        "0A0139785",  # 9 characters, not all digits
        "AVID*012*345*678",
        "985_112_003_456_789",  # underscores are not a separator we accept
        "".join(chr(0xFF10 + int(d)) for d in "985112003456789"),  # full-width digits
        "unknown",
        "n/a",
    ],
)
def test_anything_else_is_not_a_microchip(text: str | None) -> None:
    assert normalise_microchip(text) is None


@settings(max_examples=300)
@given(st.text(max_size=40) | st.from_regex(r"[0-9A-Fa-f .*\-]{9,25}", fullmatch=True))
def test_microchip_normalisation_is_total_idempotent_and_canonical(text: str) -> None:
    chip = normalise_microchip(text)
    if chip is not None:
        assert re.fullmatch(r"\d{15}|\d{9}|[0-9A-F]{10}", chip, re.ASCII)
        assert normalise_microchip(chip) == chip


# --- rule 1: order numbers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "kwargs", "rule"),
    [
        ("accession_number", {"accession": "ACC-1"}, "accession"),
        ("placer_number", {"placer": "ACC-1"}, "placer"),
        ("filler_number", {"filler": "ACC-1"}, "filler"),
    ],
)
def test_each_number_matches_exactly_one_order(
    field: str, kwargs: dict[str, str], rule: str
) -> None:
    hit = order(A, **{field: "ACC-1"}, patient_id=PATIENT_A)
    other = order(B, **{field: "ACC-2"})
    decision = decide(report(**kwargs), other, hit)
    assert (decision.order_id, decision.patient_id, decision.rule) == (A, PATIENT_A, rule)
    assert decision.matched
    assert "matches exactly one order" in decision.reason
    assert [c.order_id for c in decision.candidates] == [A]


def test_numbers_are_compared_trimmed_but_exactly() -> None:
    assert decide(report(accession=" ACC-1 "), order(A, accession_number="ACC-1")).order_id == A
    assert decide(report(accession="acc-1"), order(A, accession_number="ACC-1")).order_id is None


def test_accession_beats_placer_beats_filler() -> None:
    by_accession = order(A, accession_number="X1", ago=timedelta(days=300))  # window is no matter
    by_placer = order(B, placer_number="P1")
    by_filler = order(C, filler_number="F1")
    r = report(accession="X1", placer="P1", filler="F1")
    assert decide(r, by_filler, by_placer, by_accession).rule == "accession"
    r = report(accession="nowhere", placer="P1", filler="F1")
    decision = decide(r, by_filler, by_placer)
    assert (decision.order_id, decision.rule) == (B, "placer")
    r = report(placer="nowhere", filler="F1")
    assert decide(r, by_filler).rule == "filler"


def test_two_orders_with_one_accession_number_are_ambiguous() -> None:
    first = order(A, accession_number="ACC-9", patient_pms_id="P1")
    second = order(B, accession_number="ACC-9", patient_pms_id="P1")
    decision = decide(report(accession="ACC-9", pms_id="P1"), first, second)
    assert (decision.order_id, decision.patient_id, decision.rule) == (None, None, None)
    assert "'ACC-9' belongs to 2 different orders" in decision.reason
    assert {c.order_id for c in decision.candidates} == {A, B}
    # The PMS id would have found them too, but an inconsistent number stops here: no guessing.
    assert "PMS" not in decision.reason


def test_the_same_order_found_twice_counts_once() -> None:
    hit = order(A, accession_number="ACC-1")
    decision = decide(report(accession="ACC-1"), hit, hit)
    assert decision.order_id == A


@pytest.mark.parametrize(
    ("report_kw", "order_kw", "species", "what"),
    [
        ({"pms_id": "P1"}, {"patient_pms_id": "P2"}, None, "PMS patient id"),
        (
            {"microchip": "985 112 003 456 789"},
            {"patient_microchip": "985112003456780"},
            None,
            "microchip",
        ),
        ({}, {"species": "feline"}, "canine", "species"),
    ],
)
def test_a_number_never_attaches_an_order_of_a_different_patient(
    report_kw: dict[str, str], order_kw: dict[str, str], species: str | None, what: str
) -> None:
    hit = order(A, accession_number="ACC-1", **order_kw)
    decision = decide(report(accession="ACC-1", **report_kw), hit, species=species)
    assert decision.order_id is None
    assert f"different patient ({what} differ)" in decision.reason
    assert [c.order_id for c in decision.candidates] == [A]
    assert any("differs" in reason for reason in decision.candidates[0].reasons)


def test_unknown_identifiers_on_one_side_are_no_conflict() -> None:
    hit = order(A, accession_number="ACC-1", patient_pms_id=None, species=None)
    decision = decide(report(accession="ACC-1", pms_id="P1"), hit, species="canine")
    assert decision.order_id == A


# --- rules 2 and 3: PMS id and microchip within the window --------------------------------------


def test_pms_id_matches_the_only_order_in_the_window() -> None:
    hit = order(A, patient_pms_id="P1", patient_id=PATIENT_A, ago=timedelta(days=29))
    decision = decide(report(pms_id="P1"), hit)
    assert (decision.order_id, decision.patient_id, decision.rule) == (A, PATIENT_A, "pms_id")
    assert decision.reason == "the only order for PMS patient id 'P1' within 30 days"


def test_pms_id_order_outside_the_window_or_without_time_is_shown_not_attached() -> None:
    old = order(A, patient_pms_id="P1", ago=timedelta(days=31))
    timeless = order(B, patient_pms_id="P1", ago=None)
    decision = decide(report(pms_id="P1"), old, timeless)
    assert decision.order_id is None
    assert decision.reason.startswith("patient not found: ")
    assert "no order for PMS patient id 'P1' placed within 30 days" in decision.reason
    reasons = {c.order_id: c.reasons for c in decision.candidates}
    assert "ordered 31 days before the observation (outside the window)" in reasons[A]
    assert "order time unknown" in reasons[B]


def test_window_is_a_parameter() -> None:
    hit = order(A, patient_pms_id="P1", ago=timedelta(days=40))
    r = report(pms_id="P1")
    assert decide(r, hit).order_id is None
    assert decide_match(r, None, [hit], observed_at=T0, window=timedelta(days=45)).order_id == A


def test_an_order_placed_after_the_observation_matches_within_the_grace() -> None:
    late = order(A, patient_pms_id="P1", ago=-(LATE_ORDER_GRACE - timedelta(minutes=1)))
    assert decide(report(pms_id="P1"), late).order_id == A
    too_late = order(A, patient_pms_id="P1", ago=-(LATE_ORDER_GRACE + timedelta(minutes=1)))
    assert decide(report(pms_id="P1"), too_late).order_id is None


def test_several_orders_of_a_patient_the_closest_before_the_observation_wins() -> None:
    older = order(A, patient_pms_id="P1", ago=timedelta(days=10))
    recent = order(B, patient_pms_id="P1", ago=timedelta(hours=3))
    after = order(C, patient_pms_id="P1", ago=-timedelta(hours=2))
    decision = decide(report(pms_id="P1"), older, after, recent)
    assert (decision.order_id, decision.rule) == (B, "pms_id")
    assert "of 3 orders for PMS patient id 'P1' within 30 days, the one placed closest" in (
        decision.reason
    )


def test_when_every_order_came_after_the_observation_the_earliest_wins() -> None:
    first = order(A, patient_pms_id="P1", ago=-timedelta(hours=2))
    second = order(B, patient_pms_id="P1", ago=-timedelta(hours=5))
    assert decide(report(pms_id="P1"), second, first).order_id == A


def test_orders_placed_within_the_tie_margin_are_equally_plausible() -> None:
    first = order(A, patient_pms_id="P1", ago=timedelta(hours=2))
    second = order(B, patient_pms_id="P1", ago=timedelta(hours=2) + TIE_MARGIN)
    older = order(C, patient_pms_id="P1", ago=timedelta(days=3))
    decision = decide(report(pms_id="P1"), first, second, older)
    assert (decision.order_id, decision.patient_id, decision.rule) == (None, None, None)
    assert "2 orders for PMS patient id 'P1' were placed within 1 h of each other" in (
        decision.reason
    )
    assert {c.order_id for c in decision.candidates} == {A, B}


def test_the_service_code_chooses_between_orders_of_one_patient() -> None:
    cbc = order(A, patient_pms_id="P1", ago=timedelta(hours=2), ordered_codes=("CBC",))
    chem = order(B, patient_pms_id="P1", ago=timedelta(hours=2), ordered_codes=("chem10", "T4"))
    decision = decide(report(pms_id="P1", service_code="CHEM10"), cbc, chem)
    assert (decision.order_id, decision.rule) == (B, "pms_id")
    assert "the only one ordering the report's service" in decision.reason
    # Without the code the two are a tie.
    assert decide(report(pms_id="P1"), cbc, chem).order_id is None


def test_a_conflicting_order_of_the_pms_id_is_skipped() -> None:
    cat = order(A, patient_pms_id="P1", species="feline", ago=timedelta(hours=1))
    dog = order(B, patient_pms_id="P1", species="canine", ago=timedelta(days=2))
    decision = decide(report(pms_id="P1"), cat, dog, species="canine")
    assert decision.order_id == B


def test_microchip_matches_in_any_spelling() -> None:
    hit = order(A, patient_microchip="985112003456789", patient_id=PATIENT_B)
    decision = decide(report(pms_id="UNKNOWN", microchip="985 112 003 456 789"), hit)
    assert (decision.order_id, decision.patient_id, decision.rule) == (A, PATIENT_B, "microchip")
    assert "no order for PMS patient id 'UNKNOWN'" not in decision.reason  # matched: no history
    avid = order(B, patient_microchip="012345678")
    assert decide(report(microchip="012*345*678"), avid).rule == "microchip"


def test_pms_id_beats_microchip() -> None:
    by_pms = order(A, patient_pms_id="P1")
    by_chip = order(B, patient_microchip="985112003456789")
    decision = decide(report(pms_id="P1", microchip="985112003456789"), by_chip, by_pms)
    assert decision.rule == "pms_id"


# --- R38: patient not found; R39: names only propose --------------------------------------------


def test_r38_no_candidates_means_unmatched_with_a_reason() -> None:
    decision = decide(report(accession="ACC-1", pms_id="P1", microchip="985112003456789"))
    assert (decision.order_id, decision.patient_id, decision.rule) == (None, None, None)
    assert decision.candidates == ()
    assert decision.reason == (
        "patient not found: no order has accession number 'ACC-1'; no order for PMS patient id "
        "'P1'; no order for microchip '985112003456789'"
    )


def test_r38_a_report_without_any_clue_says_so() -> None:
    decision = decide(report(), order(A, patient_pms_id="P1"))
    assert decision.order_id is None
    assert decision.reason == (
        "patient not found: the report carries no order number and no patient identifier"
    )


def test_r38_names_that_find_nothing_are_part_of_the_reason() -> None:
    decision = decide(report(pms_id="P9", name="Bella", owner="Smith"))
    assert decision.reason.endswith(
        "no order within the window for this owner surname and animal name"
    )
    assert "Bella" not in decision.reason
    assert "Smith" not in decision.reason


def test_r39_a_single_perfect_name_hit_is_only_proposed() -> None:
    hit = order(
        A,
        patient_id=PATIENT_A,
        owner_surname="Smith",
        patient_name="Bella",
        species="canine",
        birth_date=date(2019, 3, 14),
    )
    decision = decide(
        report(name="Bella", owner="Smith", birth_date=date(2019, 3, 14)), hit, species="canine"
    )
    assert (decision.order_id, decision.patient_id, decision.rule) == (None, None, None)
    assert "1 order(s) proposed by owner surname and animal name: confirm by hand" in (
        decision.reason
    )
    (proposal,) = decision.candidates
    assert (proposal.order_id, proposal.patient_id) == (A, PATIENT_A)
    assert proposal.score == pytest.approx(0.15 + 0.15 + 0.1 + 0.1 + 0.05)
    assert proposal.reasons[:4] == (
        "owner surname matches",
        "animal name matches",
        "species matches",
        "birth date matches",
    )


def test_r39_names_compare_without_case_or_extra_whitespace() -> None:
    hit = order(A, owner_surname="van der  Berg", patient_name="Mr  Whiskers")
    decision = decide(report(name=" MR WHISKERS ", owner="Van Der Berg"), hit)
    assert [c.order_id for c in decision.candidates] == [A]
    assert decision.order_id is None


def test_r39_names_with_a_contradiction_are_not_proposed() -> None:
    cat = order(A, owner_surname="Smith", patient_name="Max", species="feline")
    older = order(B, owner_surname="Smith", patient_name="Max", birth_date=date(2010, 1, 1))
    other_chip = order(C, owner_surname="Smith", patient_name="Max", patient_microchip="012345678")
    r = report(name="Max", owner="Smith", birth_date=date(2020, 5, 5), microchip="985112003456789")
    decision = decide(r, cat, older, other_chip, species="canine")
    assert decision.order_id is None
    assert decision.reason.startswith("patient not found")
    # Shown for what they are (scores lowered by the contradiction), never as proposals.
    assert {c.order_id for c in decision.candidates} == {A, B}  # C's chip cancels out the names
    reasons = {c.order_id: c.reasons for c in decision.candidates}
    assert "species differs" in reasons[A]
    assert "birth date differs" in reasons[B]


def test_r39_several_name_hits_are_proposed_best_first() -> None:
    plain = order(A, owner_surname="Smith", patient_name="Max", ago=timedelta(days=3))
    same_dog = order(
        B, owner_surname="Smith", patient_name="Max", species="canine", ago=timedelta(days=5)
    )
    outside = order(C, owner_surname="Smith", patient_name="Max", ago=timedelta(days=60))
    decision = decide(report(name="Max", owner="Smith"), plain, outside, same_dog, species="canine")
    assert decision.order_id is None
    assert [c.order_id for c in decision.candidates] == [B, A]
    assert "2 order(s) proposed" in decision.reason


def test_r39_names_are_tried_only_after_numbers_and_identifiers_failed() -> None:
    name_hit = order(A, owner_surname="Smith", patient_name="Max")
    decision = decide(report(pms_id="P1", name="Max", owner="Smith"), name_hit)
    assert decision.order_id is None
    assert decision.reason.startswith("no order for PMS patient id 'P1'; 1 order(s) proposed")


# --- output shape ------------------------------------------------------------------------------


def test_scored_candidate_to_json() -> None:
    scored = ScoredCandidate(A, None, 0.65, ("placer order number matches",))
    assert scored.to_json() == {
        "order_id": str(A),
        "patient_id": None,
        "score": 0.65,
        "reasons": ["placer order number matches"],
    }
    assert ScoredCandidate(A, PATIENT_A, 1.0, ()).to_json()["patient_id"] == str(PATIENT_A)


def test_candidates_are_capped_and_sorted() -> None:
    many = [
        order(uuid.UUID(int=n), owner_surname="Smith", patient_name="Max", ago=timedelta(hours=n))
        for n in range(1, 25)
    ]
    decision = decide(report(name="Max", owner="Smith"), *many)
    assert len(decision.candidates) == MAX_CANDIDATES
    assert [c.order_id.int for c in decision.candidates] == list(range(1, 11))  # newest first


def test_naive_datetimes_are_read_as_utc() -> None:
    naive = OrderCandidate(A, patient_pms_id="P1", ordered_at=datetime(2026, 11, 25, 10, 0))
    decision = decide_match(
        report(pms_id="P1"), None, [naive], observed_at=datetime(2026, 11, 26, 10, 0)
    )
    assert decision.order_id == A
    assert "ordered 24 h before the observation" in decision.candidates[0].reasons


# --- properties --------------------------------------------------------------------------------

_IDS = [uuid.UUID(int=n) for n in range(1, 6)]
_numbers = st.sampled_from([None, "", "A1", " A1", "A2", "P1"])
_pms = st.sampled_from([None, "P1", "P2", " P1 "])
_chips = st.sampled_from([None, "985112003456789", "985 112 003 456 789", "012*345*678", "x"])
_names = st.sampled_from([None, "", "Max", " max ", "Bella"])
_owners = st.sampled_from([None, "Smith", "SMITH ", "Jones"])
_species = st.sampled_from([None, "canine", "feline", "Canine"])
_births = st.sampled_from([None, date(2019, 3, 14), date(2020, 1, 1)])
_times = st.one_of(
    st.none(),
    st.timedeltas(min_value=timedelta(days=-40), max_value=timedelta(days=3)).map(lambda d: T0 - d),
    st.datetimes(min_value=datetime(2026, 10, 1), max_value=datetime(2026, 12, 31)),  # naive
)


@st.composite
def _reports(draw: st.DrawFn, *, identified: bool = True) -> Report:
    return report(
        accession=draw(_numbers) if identified else None,
        placer=draw(_numbers) if identified else None,
        filler=draw(_numbers) if identified else None,
        pms_id=draw(_pms) if identified else None,
        microchip=draw(_chips) if identified else None,
        name=draw(_names),
        owner=draw(_owners),
        birth_date=draw(_births),
        service_code=draw(st.sampled_from([None, "CBC", "cbc", "T4"])),
    )


_candidates = st.lists(
    st.builds(
        OrderCandidate,
        order_id=st.sampled_from(_IDS),
        patient_id=st.sampled_from([None, PATIENT_A, PATIENT_B]),
        accession_number=_numbers,
        placer_number=_numbers,
        filler_number=_numbers,
        patient_pms_id=_pms,
        patient_microchip=_chips,
        patient_name=_names,
        owner_surname=_owners,
        species=_species,
        birth_date=_births,
        ordered_at=_times,
        ordered_codes=st.lists(st.sampled_from(["CBC", "T4", "CHEM"]), max_size=2).map(tuple),
    ),
    max_size=8,
)


def _strip(value: str | None) -> str | None:
    return (value or "").strip() or None


@settings(max_examples=400)
@given(r=_reports(), species=_species, candidates=_candidates, observed=_times)
def test_decide_match_is_total_and_only_attaches_by_an_agreeing_identifier(
    r: Report, species: str | None, candidates: list[OrderCandidate], observed: datetime | None
) -> None:
    decision = decide_match(r, species, candidates, observed_at=observed or T0)
    assert isinstance(decision, MatchDecision)
    assert decision.reason
    assert len(decision.candidates) <= MAX_CANDIDATES
    assert all(0.0 <= c.score <= 1.0 for c in decision.candidates)
    if decision.order_id is None:
        assert (decision.patient_id, decision.rule) == (None, None)
        return
    chosen = next(c for c in candidates if c.order_id == decision.order_id)
    assert decision.patient_id == chosen.patient_id
    agreeing = {
        "accession": _strip(r.order.accession) == _strip(chosen.accession_number),
        "placer": _strip(r.order.placer) == _strip(chosen.placer_number),
        "filler": _strip(r.order.filler) == _strip(chosen.filler_number),
        "pms_id": _strip(r.patient.pms_id) == _strip(chosen.patient_pms_id),
        "microchip": normalise_microchip(r.patient.microchip)
        == normalise_microchip(chosen.patient_microchip),
    }
    assert decision.rule in agreeing
    assert agreeing[decision.rule]


@settings(max_examples=300)
@given(r=_reports(identified=False), species=_species, candidates=_candidates)
def test_decide_match_never_attaches_on_names_alone(
    r: Report, species: str | None, candidates: list[OrderCandidate]
) -> None:
    decision = decide_match(r, species, candidates, observed_at=T0)
    assert (decision.order_id, decision.patient_id, decision.rule) == (None, None, None)
