"""The PID segment read into a ``PatientRef``: shared by results (ORU) and orders (ORM/OML), so
a report and its order name the same animal the same way. The rules are listed in
``parse/oru.py``'s module docstring (identifiers, name and owner, species and breed, sex)."""

from __future__ import annotations

import re
from typing import Final

from vetgateway.model import Identifier, PatientRef, Sex
from vetgateway.pipeline.parse.er7 import Segment
from vetgateway.pipeline.parse.obx import read_coded
from vetgateway.pipeline.parse.values import parse_date

__all__ = ["read_patient"]

_MICROCHIP: Final = re.compile(r"\d{15}", re.ASCII)

_SEX: Final = {
    "M": Sex.MALE,
    "F": Sex.FEMALE,
    **dict.fromkeys(("MN", "MC", "CM", "NM", "C", "N"), Sex.MALE_NEUTERED),
    **dict.fromkeys(("FS", "SF", "FN", "NF", "S"), Sex.FEMALE_SPAYED),
}


def _opt(text: str) -> str | None:
    text = text.strip()
    return text or None


def _identifiers(pid: Segment) -> list[Identifier]:
    """PID-2, PID-3 and PID-4 (CX): ID ^ check digit ^ scheme ^ authority (HD) ^ type code.

    A field without escapes is split once per repetition; one with escapes is read part by part
    through the accessors, which decode each part as it is needed (and fail where it is bad).
    """
    found: list[Identifier] = []
    enc = pid.encoding
    for n in (2, 3, 4):
        raw = pid.raw(n)
        if not raw:
            continue
        reps = pid.repetitions(n)
        plain = enc.escape not in raw
        for rep, text in enumerate(reps, start=1):
            if plain:
                parts = [*text.split(enc.component), "", "", "", ""]
                value = _opt(parts[0])
                hd = parts[3].split(enc.subcomponent)
                authority = _opt(hd[0]) or (_opt(hd[1]) if len(hd) > 1 else None)
                type_code = _opt(parts[4])
            else:
                value = _opt(pid.component(n, 1, rep))
                if value is None:
                    continue
                authority = _opt(pid.subcomponent(n, 4, 1, rep)) or _opt(
                    pid.subcomponent(n, 4, 2, rep)
                )
                type_code = _opt(pid.component(n, 5, rep))
            if value is not None:
                found.append(Identifier(value, authority, type_code))
    return found


def read_patient(pid: Segment) -> PatientRef:
    """The animal as PID identifies it (rules in ``parse/oru.py``'s module docstring)."""
    identifiers = _identifiers(pid)
    by_type = [i for i in identifiers if i.type_code in ("PI", "PT")]
    by_type = by_type or [i for i in identifiers if i.type_code == "MR"]
    chips = [
        i for i in identifiers if i.type_code == "MC" or _MICROCHIP.fullmatch(i.value) is not None
    ]
    name = owner = None
    for rep in range(1, len(pid.repetitions(5)) + 1):
        family, given = _opt(pid.component(5, 1, rep)), _opt(pid.component(5, 2, rep))
        if family or given:
            name = given or family
            owner = family if given else None
            break
    sex_code = pid.component(8, 1).strip().upper()
    return PatientRef(
        pms_id=by_type[0].value if by_type else None,
        microchip=chips[0].value if chips else None,
        identifiers=tuple(identifiers),
        name=name,
        owner_surname=owner,
        species=read_coded(pid, 35),
        breed=read_coded(pid, 36),
        sex=_SEX.get(sex_code, Sex.UNKNOWN) if sex_code else None,
        birth_date=parse_date(pid.component(7, 1)),
    )
