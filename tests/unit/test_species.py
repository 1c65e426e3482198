"""Species words for reference intervals (pipeline/species.py): what labs send, what we make of it,
and that anything unknown or contradictory is None rather than a guess."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vetgateway.model import Coded
from vetgateway.pipeline.parse.oru import parse_oru
from vetgateway.pipeline.species import SPECIES_WORDS, species_word

FIXTURES = Path(__file__).parent.parent / "fixtures" / "hl7"


@pytest.mark.parametrize(
    ("coded", "word"),
    [
        (Coded(None, "Canine", None), "canine"),
        (Coded("DOG", None, None), "canine"),
        (Coded("K9", None, "L"), "canine"),
        (Coded(None, "k-9", None), "canine"),
        (Coded(None, "  Canis   lupus familiaris (organism) ", None), "canine"),
        (Coded("Feline", None, None), "feline"),
        (Coded("CAT", "Cat", "99VET"), "feline"),
        (Coded(None, "Equine", None), "equine"),
        (Coded("horse", None, None), "equine"),
        (Coded(None, "Pony", None), "equine"),
        (Coded("BOVINE", None, None), "bovine"),
        (Coded(None, "cattle", None), "bovine"),
        (Coded(None, "Sheep", None), "ovine"),
        (Coded(None, "goat", None), "caprine"),
        (Coded(None, "Swine", None), "porcine"),
        (Coded(None, "Rabbit", None), "lagomorph"),
        (Coded(None, "bird", None), "avian"),
    ],
)
def test_words_and_common_names(coded: Coded, word: str) -> None:
    assert species_word(coded) == word


@pytest.mark.parametrize(
    ("code", "system", "word"),
    [
        ("448771007", "SCT", "canine"),
        ("448169003", "SCT", "feline"),
        ("35354009", "SNOMED", "equine"),
        ("388445009", "http://snomed.info/sct", "equine"),
        ("34618005", "2.16.840.1.113883.6.96", "bovine"),
        ("125099002", "SCT", "ovine"),
        ("125097000", "SCT", "caprine"),
        ("78678003", "SCT", "porcine"),
        ("36571002", "SCT", "lagomorph"),
        ("44696006", "SCT", "canine"),  # Beagle: a breed code implies the species
        ("448771007", None, "canine"),  # no system given: read as SNOMED CT
    ],
)
def test_snomed_ct_codes(code: str, system: str | None, word: str) -> None:
    assert species_word(Coded(code, None, system)) == word


def test_local_numbers_are_not_read_as_snomed_codes() -> None:
    assert species_word(Coded("448771007", None, "L")) is None
    assert species_word(Coded("1", "Dog", "99PMS")) == "canine"  # the text still counts


@pytest.mark.parametrize(
    "coded",
    [
        None,
        Coded(None, None, None),
        Coded("", "  ", ""),
        Coded("337915000", "Homo sapiens (organism)", "SCT"),  # human: no interval species
        Coded(None, "Guinea pig", None),  # rodents are deliberately not grouped
        Coded(None, "Donkey", None),
        Coded("C", None, None),  # single letters are ambiguous
        Coded("448771007", "Cat", "SCT"),  # code and text disagree
    ],
)
def test_unknown_absent_or_contradictory_is_none(coded: Coded | None) -> None:
    assert species_word(coded) is None


def test_the_elr_rabies_example_is_a_dog() -> None:
    """The HL7 v2.5.1 ELR example sends a breed (Beagle, 44696006^Beagle^SCT) in PID-35."""
    parsed = parse_oru(
        (FIXTURES / "nodehl7c" / "nodehl7c_realm_elr_animal_rabies_dog.hl7").read_bytes()
    )
    assert species_word(parsed.reports[0].patient.species) == "canine"


optional_text = st.none() | st.text(max_size=40)


@given(code=optional_text, text=optional_text, system=optional_text)
def test_any_input_gives_a_known_word_or_none(
    code: str | None, text: str | None, system: str | None
) -> None:
    word = species_word(Coded(code, text, system))
    assert word is None or word in SPECIES_WORDS
