"""What a lab or PMS sends as the species → the word reference intervals are keyed by.

``species_word(coded)`` turns PID-35 (or a species OBX) into one of ``SPECIES_WORDS``, lower case,
or None. Pure, no I/O. Reference intervals are only ever looked up by these words, so a species we
cannot name with confidence stays None and its results are simply not interpreted; a wrong word
would compare a cat's values with a dog's ranges, which is worse than no comparison.

The table is deliberately small:

- **Words** (code or text, compared case-insensitively with spaces collapsed and a trailing
  ``(organism)`` dropped): the species words themselves, the common English names (``dog``,
  ``cat``, ``horse``, ``pony``, ``cow``, ``cattle``, ``sheep``, ``goat``, ``pig``, ``swine``,
  ``rabbit``, ``bird``), ``K9``/``K-9``, and the Latin binomials.
- **SNOMED CT organism codes**, read only when the coding system is SNOMED CT (``SCT``,
  ``SNOMED``, ``SNOMEDCT``, ``SNM``, OID ``2.16.840.1.113883.6.96``, ``http://snomed.info/sct``) or
  absent, so a PMS's local number is never mistaken for a concept id:
  448771007 *Canis lupus familiaris*, 448169003 *Felis catus*, 35354009 *Equus caballus*,
  388445009 genus *Equus* (a horse, donkey or mule: all read as ``equine``, whose ranges are the
  horse's), 34618005 *Bos taurus*, 125099002 *Ovis aries*, 125097000 *Capra hircus*, 78678003
  *Sus scrofa*, 36571002 *Oryctolagus cuniculus*; and one breed code that names its species,
  44696006 Beagle (the HL7 v2.5.1 ELR implementation guide's animal rabies example sends it in
  PID-35).
- ``avian`` exists for labs that send "bird"; there is no ``rodent``: rats, mice, guinea pigs and
  chinchillas share no reference intervals, so grouping them would mislead.

When code and text name different species (``448771007^Cat``) the answer is None: we cannot tell
which half is wrong. Unknown input of any kind is None, never an exception.
"""

from __future__ import annotations

from typing import Final

from vetgateway.model import Coded

__all__ = ["SPECIES_WORDS", "species_word"]

SPECIES_WORDS: Final = frozenset(
    {
        "canine",
        "feline",
        "equine",
        "bovine",
        "ovine",
        "caprine",
        "porcine",
        "lagomorph",
        "avian",
    }
)

_WORDS: Final[dict[str, str]] = {
    **{w: w for w in SPECIES_WORDS},
    **dict.fromkeys(
        (
            "dog",
            "k9",
            "k-9",
            "canis familiaris",
            "canis lupus familiaris",
            "canis lupus subsp. familiaris",
        ),
        "canine",
    ),
    **dict.fromkeys(("cat", "felis catus", "felis silvestris catus", "felis domesticus"), "feline"),
    **dict.fromkeys(("horse", "pony", "equus caballus", "equus ferus caballus"), "equine"),
    **dict.fromkeys(("cow", "cattle", "bos taurus"), "bovine"),
    **dict.fromkeys(("sheep", "ovis aries"), "ovine"),
    **dict.fromkeys(("goat", "capra hircus"), "caprine"),
    **dict.fromkeys(("pig", "swine", "sus scrofa", "sus scrofa domesticus"), "porcine"),
    **dict.fromkeys(("rabbit", "oryctolagus cuniculus"), "lagomorph"),
    "bird": "avian",
}

_SNOMED_CODES: Final[dict[str, str]] = {
    "448771007": "canine",
    "44696006": "canine",  # Beagle (breed)
    "448169003": "feline",
    "35354009": "equine",
    "388445009": "equine",  # genus Equus
    "34618005": "bovine",
    "125099002": "ovine",
    "125097000": "caprine",
    "78678003": "porcine",
    "36571002": "lagomorph",
}

_SNOMED_SYSTEMS: Final = frozenset(
    {
        "sct",
        "snomed",
        "snomedct",
        "snomed-ct",
        "snomed ct",
        "snm",
        "2.16.840.1.113883.6.96",
        "http://snomed.info/sct",
    }
)


def _key(text: str) -> str:
    key = " ".join(text.split()).casefold()
    return key.removesuffix("(organism)").strip()


def _from_code(coded: Coded) -> str | None:
    code = (coded.code or "").strip()
    if not code:
        return None
    system = _key(coded.system or "")
    if code.isdigit():
        return _SNOMED_CODES.get(code) if system in _SNOMED_SYSTEMS or not system else None
    return _WORDS.get(_key(code))


def species_word(coded: Coded | None) -> str | None:
    """The species word for what was sent, or None when absent, unknown or contradictory."""
    if coded is None:
        return None
    found = {w for w in (_from_code(coded), _WORDS.get(_key(coded.text or ""))) if w is not None}
    return found.pop() if len(found) == 1 else None
