"""Results that carry the patient's demographics instead of a measurement: a SPECIES or BREED
result, which some labs and analyzers send where their message format has no field for it.

Both the HL7 and the ASTM parsers use it to fill a patient's species or breed (the result also
stays in the report as sent). The lookup is on the result's code or its text, case-insensitive.
"""

from __future__ import annotations

from typing import Final, Literal

from vetgateway.model import Observation

__all__ = ["demographic_kind"]

SPECIES_CODES: Final = frozenset({"SPECIES", "PATIENT SPECIES", "ANIMAL SPECIES"})
BREED_CODES: Final = frozenset({"BREED", "PATIENT BREED", "ANIMAL BREED"})
_ALL: Final = SPECIES_CODES | BREED_CODES


def demographic_kind(obs: Observation) -> Literal["species", "breed"] | None:
    """``species`` or ``breed`` when the result names one, else None. Hot path: every result
    passes here, so the common case is two set lookups."""
    code, text = obs.code.upper(), (obs.code_text or "").upper()
    if code not in _ALL and text not in _ALL:
        return None
    return "species" if code in SPECIES_CODES or text in SPECIES_CODES else "breed"
