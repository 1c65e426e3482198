"""The PID segment read into a ``PatientRef``: shared by results (ORU) and orders (ORM/OML), so
a report and its order name the same animal the same way. The rules are listed in
``parse/oru.py``'s module docstring (identifiers, name and owner, species and breed, sex)."""

from __future__ import annotations

import re
from datetime import date
from typing import Final

from vetgateway.model import Coded, Identifier, PatientRef, Sex
from vetgateway.pipeline.parse.er7 import Segment
from vetgateway.pipeline.parse.obx import read_coded
from vetgateway.pipeline.parse.sources import PmsIdRule
from vetgateway.pipeline.parse.values import parse_date

__all__ = ["read_patient"]

_MICROCHIP: Final = re.compile(r"\d{15}", re.ASCII)

_SEX: Final = {
    "M": Sex.MALE,
    "F": Sex.FEMALE,
    **dict.fromkeys(("MN", "MC", "CM", "NM", "C", "N"), Sex.MALE_NEUTERED),
    **dict.fromkeys(("FS", "SF", "FN", "NF", "S"), Sex.FEMALE_SPAYED),
}


class _PatientDraft:
    """A PatientRef being filled in; like ``obx._Draft``, it then takes the model's class.

    PatientRef's frozen ``__init__`` stores each of its ten fields through ``object.__setattr__``,
    ten times the cost of these plain stores. The declarations are the model's, for mypy; a test
    checks that they stay the same.
    """

    __slots__ = PatientRef.__slots__
    pms_id: str | None
    microchip: str | None
    identifiers: tuple[Identifier, ...]
    name: str | None
    owner_surname: str | None
    species: Coded | None
    breed: Coded | None
    sex: Sex | None
    birth_date: date | None
    comments: tuple[str, ...]


def _opt(text: str) -> str | None:
    text = text.strip()
    return text or None


def _identifiers(pid: Segment) -> list[Identifier]:
    """PID-2, PID-3 and PID-4 (CX): ID ^ check digit ^ scheme ^ authority (HD) ^ type code.

    A field without escapes is split once per repetition; one with escapes is read part by part
    through the accessors, which decode each part as it is needed (and fail where it is bad).
    """
    found: list[Identifier] = []
    fields, enc = pid.fields, pid.encoding
    for n in (2, 3, 4):
        raw = fields[n] if n < len(fields) else ""
        if not raw:
            continue
        if enc.escape not in raw:
            for text in raw.split(enc.repetition):
                parts = [*text.split(enc.component), "", "", "", ""]
                if value := parts[0].strip():
                    hd = parts[3].split(enc.subcomponent)
                    authority = _opt(hd[0]) or (_opt(hd[1]) if len(hd) > 1 else None)
                    found.append(Identifier(value, authority, _opt(parts[4])))
            continue
        for rep in range(1, len(pid.repetitions(n)) + 1):
            decoded = _opt(pid.component(n, 1, rep))
            if decoded is None:
                continue
            authority = _opt(pid.subcomponent(n, 4, 1, rep)) or _opt(pid.subcomponent(n, 4, 2, rep))
            found.append(Identifier(decoded, authority, _opt(pid.component(n, 5, rep))))
    return found


def _name(pid: Segment) -> tuple[str | None, str | None]:
    """PID-5's first repetition with a family or given name as (family, given), else Nones."""
    raw, enc = pid.raw(5), pid.encoding
    if enc.escape not in raw:  # split once; the accessors would split it once per component
        for text in raw.split(enc.repetition) if raw else ():
            parts = text.split(enc.component, 2)
            family, given = _opt(parts[0]), _opt(parts[1]) if len(parts) > 1 else None
            if family or given:
                return family, given
        return None, None
    for rep in range(1, len(pid.repetitions(5)) + 1):
        family, given = _opt(pid.component(5, 1, rep)), _opt(pid.component(5, 2, rep))
        if family or given:
            return family, given
    return None, None


_BY_TYPE_CODE: Final = PmsIdRule()


def read_patient(pid: Segment, pms_id: PmsIdRule = _BY_TYPE_CODE) -> PatientRef:
    """The animal as PID identifies it (rules in ``parse/oru.py``'s module docstring); which
    identifier is the PMS id is the source's rule (``parse/sources.py``)."""
    identifiers = _identifiers(pid)
    chips = [
        i for i in identifiers if i.type_code == "MC" or _MICROCHIP.fullmatch(i.value) is not None
    ]
    family, given = _name(pid)
    sex_code = pid.component(8, 1).strip().upper()
    patient = _PatientDraft()
    patient.pms_id = pms_id.pick(identifiers)
    patient.microchip = chips[0].value if chips else None
    patient.identifiers = tuple(identifiers)
    patient.name = given or family
    patient.owner_surname = family if given else None
    patient.species = read_coded(pid, 35)
    patient.breed = read_coded(pid, 36)
    patient.sex = _SEX.get(sex_code, Sex.UNKNOWN) if sex_code else None
    patient.birth_date = parse_date(pid.component(7, 1))
    patient.comments = ()
    patient.__class__ = PatientRef  # type: ignore[assignment]  # published: see _PatientDraft
    return patient  # type: ignore[return-value]
