"""ORM^O01 and OML^O21 (HL7 v2.3 to v2.5.1) into ``OrderIn`` values: ``parse_order_message(raw)``.

Pure: bytes in, frozen values out, on the lazy ER7 reader; no ORM imports (``store.orders`` turns
an ``OrderIn`` into rows, the orders API builds one from JSON). The message is walked once; the
groups (PATIENT = PID …, ORDER = ORC [TQ1] OBR …) are recognised by their leading segments rather
than validated, as in ``parse/oru.py``.

Decisions, each one a place a practice-management system (PMS) may disagree with us:

- **One ``OrderIn`` per placer order number.** Every ORC starts an order; its OBR (one per ORC in
  both ORM_O01 and OML_O21; a second OBR under one ORC is read as another order with the same ORC)
  gives the ordered test. Orders of one message with the same action, numbers and patient are
  merged into one ``OrderIn`` whose ``items`` are their tests in message order: PMSs send a
  requisition of three tests as three ORC/OBR pairs with the same placer number. Orders with
  different placer numbers stay apart, because the lab's results quote the per-order number.
- **Numbers.** Placer: ORC-2, else OBR-2; filler: ORC-3, else OBR-3 (entity identifier, EI.1).
  Accession: OBR-18 (placer field 1), else OBR-20 (filler field 1), else the filler number, the
  same rule ``parse/oru.py`` applies to results, so both sides compare like with like. An order
  needs a placer number or an accession number (the keys resends and cancels are found by).
- **Action** (ORC-1, HL7 table 0119): NW → ``new``; CA, OC, CR, DC, OD, DR → ``cancel``; XO, XX,
  XR, SC → ``update``. Any other control code (RP replacement, HD hold, …) or none is refused: a
  cancel applied as a new order, or the reverse, would be a clinical error.
- **Order time**: ORC-9 (date/time of transaction), else OBR-6 (requested date/time), else MSH-7.
- **Tests** (OBR-4): the identifier, else the text, else the alternate identifier, as ordered;
  the catalogue maps it later. An OBR without OBR-4 is refused (nothing would be ordered).
- **Patient** (PID, with the conventions of ``parse/oru.py``): PMS id = first PID-2/3/4 identifier
  of type PI or PT, else MR; microchip = first of type MC or of exactly 15 digits (the store
  normalises it); name ``OwnerSurname^AnimalName`` in PID-5, owner from NK1 with relationship
  ``OWN`` (table 0063); sex codes as for results; birth date PID-7; species from PID-35 as a
  lower-case word (below); breed PID-36 text, else code. A message without PID gives orders with
  no patient clues (they can still be matched by number). ``patient_id`` (the PMS's UUID) is
  never in HL7: it is None.
- **Species**: PID-35 through ``pipeline.species.species_word``, the very function results go
  through, so an order and its report use one vocabulary (``canine``, ``feline`` …); None when it
  names no species we know. That matters: matching treats two different species words as
  *different animals*.
- **Source**: ``hl7:<MSH-3>`` plus ``/<MSH-4>`` when sent: placer numbers are unique per placer
  application, so the sending application is part of an order's identity.
- **Lengths**: identifiers (numbers, PMS id, microchip, codes, source) longer than their column
  are refused, since clipping an identifier makes another one; free text (animal name, owner
  surname, breed) is clipped to its column.

Raises ``ParseError`` whose ``location`` names segment and field for what cannot be used; errors
of the ER7 reader (no MSH, bad escapes) pass through; nothing else escapes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields, replace
from datetime import UTC, date, datetime, tzinfo
from typing import Final, Literal

from vetgateway.errors import ParseError
from vetgateway.model import Sex
from vetgateway.pipeline.parse.er7 import Segment, parse_er7
from vetgateway.pipeline.parse.pid import read_patient
from vetgateway.pipeline.parse.sources import NO_PROFILES, PmsIdRule, SourceProfiles
from vetgateway.pipeline.parse.values import parse_datetime
from vetgateway.pipeline.species import species_word

__all__ = ["FIELD_LIMITS", "ORDER_ACTIONS", "OrderAction", "OrderIn", "parse_order_message"]

OrderAction = Literal["new", "update", "cancel"]
ORDER_ACTIONS: Final[tuple[OrderAction, ...]] = ("new", "update", "cancel")

FIELD_LIMITS: Final = {
    "source": 64,
    "accession_number": 64,
    "placer_number": 64,
    "filler_number": 64,
    "patient_pms_id": 64,
    "patient_microchip": 32,
    "patient_name": 200,
    "species": 32,
    "breed": 100,
    "owner_surname": 200,
    "clinic": 64,
}
"""The column lengths of ``diagnostic_orders`` for each text field of ``OrderIn``."""
ITEM_CODE_LIMIT: Final = 64  # order_items.ordered_code

_ACTIONS: Final[dict[str, OrderAction]] = {
    "NW": "new",
    **dict.fromkeys(("CA", "OC", "CR", "DC", "OD", "DR"), "cancel"),
    **dict.fromkeys(("XO", "XX", "XR", "SC"), "update"),
}
_MESSAGE_TYPES: Final = {("ORM", "O01"), ("ORM", ""), ("OML", "O21"), ("OML", "")}


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderIn:
    """One order as a PMS sent it (HL7 or JSON), before it becomes a ``DiagnosticOrder`` row.

    ``action`` says what the sender wants: ``new`` places (a resend updates, never duplicates),
    ``update`` changes, ``cancel`` cancels the order or, when ``items`` are given, those tests.
    Patient fields are named as in ``PatientIdentifiers``; ``species`` is a lower-case word.
    ``ordered_at`` must be timezone-aware.
    """

    source: str
    action: OrderAction = "new"
    accession_number: str | None = None
    placer_number: str | None = None
    filler_number: str | None = None
    ordered_at: datetime | None = None
    patient_id: uuid.UUID | None = None
    patient_pms_id: str | None = None
    patient_microchip: str | None = None
    patient_name: str | None = None
    species: str | None = None
    breed: str | None = None
    sex: Sex | None = None
    birth_date: date | None = None
    owner_surname: str | None = None
    items: tuple[str, ...] = ()
    # The placing clinic's code (clinics.code): its rota is paged for the order's critical
    # results and its interval overrides apply. An unknown code is kept as no clinic.
    clinic: str | None = None

    def problems(self) -> list[str]:
        """Why this order cannot be stored, one sentence each; empty when it can."""
        found: list[str] = []
        if not self.source.strip():
            found.append("source is empty; name the system that placed the order")
        if self.action not in ORDER_ACTIONS:
            found.append(f"action {self.action!r} is not one of {', '.join(ORDER_ACTIONS)}")
        if not (_opt(self.placer_number) or _opt(self.accession_number)):
            found.append(
                "the order has neither a placer number nor an accession number; one is needed "
                "so that a resend or a cancel finds the same order"
            )
        for name, limit in FIELD_LIMITS.items():
            value = getattr(self, name)
            if value is not None and len(value) > limit:
                found.append(f"{name} is {len(value)} characters long; at most {limit} are kept")
        for code in self.items:
            if not code.strip():
                found.append("an ordered test code is empty")
            elif len(code) > ITEM_CODE_LIMIT:
                found.append(
                    f"ordered test code {code[:20]!r}… is {len(code)} characters long; "
                    f"at most {ITEM_CODE_LIMIT} are kept"
                )
        if self.ordered_at is not None and self.ordered_at.tzinfo is None:
            found.append("ordered_at has no time zone")
        return found


@dataclass(frozen=True, slots=True)
class _Patient:
    patient_pms_id: str | None = None
    patient_microchip: str | None = None
    patient_name: str | None = None
    species: str | None = None
    breed: str | None = None
    sex: Sex | None = None
    birth_date: date | None = None
    owner_surname: str | None = None


@dataclass(slots=True)
class _Group:
    """One ORC with (at most) one OBR, and the index of its patient."""

    orc: Segment
    patient: int
    obr: Segment | None = None


def _opt(text: str | None) -> str | None:
    text = text.strip() if text is not None else None
    return text or None


def _clip(text: str | None, field: str) -> str | None:
    return None if text is None else text[: FIELD_LIMITS[field]]


def _identifier(seg: Segment, n: int, field: str, *, c: int = 1, rep: int = 1) -> str | None:
    """An identifier (EI.1, CX.1 …), refused when longer than its column."""
    value = _opt(seg.component(n, c, rep))
    limit = FIELD_LIMITS.get(field, ITEM_CODE_LIMIT)
    if value is not None and len(value) > limit:
        raise ParseError(
            f"{field.replace('_', ' ')} {value[:20]!r}… is {len(value)} characters long; "
            f"at most {limit} are kept and an identifier cannot be shortened",
            location=seg.location(n),
        )
    return value


def _patient(pid: Segment, pms_id: PmsIdRule) -> _Patient:
    """PID read as for results (``parse/pid.py``), fitted to the order's columns: identifiers
    longer than their column are refused (a cut identifier would match the wrong animal),
    names are cut to fit."""
    ref = read_patient(pid, pms_id)
    for field, value in (("patient_pms_id", ref.pms_id), ("patient_microchip", ref.microchip)):
        limit = FIELD_LIMITS[field]
        if value is not None and len(value) > limit:
            raise ParseError(
                f"{field.replace('_', ' ')} {value[:20]!r}… is {len(value)} characters long; "
                f"at most {limit} are kept and an identifier cannot be shortened",
                location=pid.location(3),
            )
    return _Patient(
        patient_pms_id=ref.pms_id,
        patient_microchip=ref.microchip,
        patient_name=_clip(ref.name, "patient_name"),
        species=species_word(ref.species),
        breed=_clip(ref.breed.display if ref.breed else None, "breed"),
        sex=ref.sex,
        birth_date=ref.birth_date,
        owner_surname=_clip(ref.owner_surname, "owner_surname"),
    )


def _action(orc: Segment) -> OrderAction:
    code = orc.component(1, 1).strip().upper()
    action = _ACTIONS.get(code)
    if action is None:
        known = ", ".join(sorted(_ACTIONS))
        said = f"is {code!r}" if code else "is empty"
        raise ParseError(
            f"order control code (ORC-1) {said}; supported: {known} (HL7 table 0119)",
            location=orc.location(1),
        )
    return action


def _ordered_code(obr: Segment) -> str:
    for c in (1, 2, 4, 5):  # identifier, text, alternate identifier, alternate text
        code = _opt(obr.component(4, c))
        if code is not None:
            if len(code) > ITEM_CODE_LIMIT:
                raise ParseError(
                    f"ordered test code {code[:20]!r}… is {len(code)} characters long; at most "
                    f"{ITEM_CODE_LIMIT} are kept",
                    location=obr.location(4),
                )
            return code
    raise ParseError(
        "OBR-4 (universal service identifier) is empty: the order names no test",
        location=obr.location(4),
    )


def _clinic(orc: Segment, msh: Segment) -> str | None:
    """The placing clinic: ORC-21 (ordering facility, XON: its identifier in component 10, else
    the name in 1), else MSH-4 (sending facility) — a PMS names the practice there."""
    code = _opt(orc.component(21, 10)) or _opt(orc.component(21, 1)) or _opt(msh.component(4, 1))
    return code[: FIELD_LIMITS["clinic"]] if code else None


def _order(
    group: _Group,
    patient: _Patient,
    source: str,
    sent_at: datetime | None,
    msh: Segment,
    zone: tzinfo,
) -> OrderIn:
    orc, obr = group.orc, group.obr
    action = _action(orc)
    placer = _identifier(orc, 2, "placer_number")
    filler = _identifier(orc, 3, "filler_number")
    accession = None
    ordered_at = parse_datetime(orc.component(9, 1), zone)
    items: tuple[str, ...] = ()
    if obr is not None:
        placer = placer or _identifier(obr, 2, "placer_number")
        filler = filler or _identifier(obr, 3, "filler_number")
        accession = _identifier(obr, 18, "accession_number") or _identifier(
            obr, 20, "accession_number"
        )
        ordered_at = ordered_at or parse_datetime(obr.component(6, 1), zone)
        items = (_ordered_code(obr),)
    accession = accession or filler
    if placer is None and accession is None:
        raise ParseError(
            "the order has no placer order number (ORC-2, OBR-2) and no accession or filler "
            "number (OBR-18, OBR-20, ORC-3): a resend or a cancel could not find it",
            location=orc.location(2),
        )
    return OrderIn(
        source=source,
        action=action,
        accession_number=accession,
        placer_number=placer,
        filler_number=filler,
        ordered_at=ordered_at or sent_at,
        items=items,
        clinic=_clinic(orc, msh),
        **{f.name: getattr(patient, f.name) for f in fields(_Patient)},
    )


def _source(msh: Segment) -> str:
    app, facility = _opt(msh.component(3, 1)), _opt(msh.component(4, 1))
    source = "hl7" + (f":{app}" if app else "") + (f"/{facility}" if facility else "")
    if len(source) > FIELD_LIMITS["source"]:
        raise ParseError(
            f"sending application and facility make a source of {len(source)} characters; "
            f"at most {FIELD_LIMITS['source']} are kept",
            location=msh.location(3),
        )
    return source


def _merged(orders: list[OrderIn]) -> tuple[OrderIn, ...]:
    """Orders differing only in their tests become one, with the tests in message order."""
    by_key: dict[OrderIn, OrderIn] = {}
    for order in orders:
        key = replace(order, items=(), ordered_at=None)
        first = by_key.get(key)
        if first is None:
            by_key[key] = order
        else:
            extra = tuple(code for code in order.items if code not in first.items)
            by_key[key] = replace(first, items=first.items + extra)
    return tuple(by_key.values())


def parse_order_message(
    raw: bytes, *, zone: tzinfo = UTC, profiles: SourceProfiles = NO_PROFILES
) -> tuple[OrderIn, ...]:
    """Parse one ORM^O01 or OML^O21; raise ``ParseError`` naming segment and field if unusable.

    Returns the orders in message order, at least one. Times without an offset are in the
    sender's zone (``profiles``), else in ``zone``; the PMS id is found by the sender's rule.
    """
    message = parse_er7(raw)
    msh = message.segments[0]
    code = msh.component(9, 1).strip().upper()
    event = msh.component(9, 2).strip().upper()
    if (code, event) not in _MESSAGE_TYPES:
        raise ParseError(
            f"message type is {msh.field(9)!r}, not ORM^O01 or OML^O21; only orders are parsed "
            "here",
            location=msh.location(9),
        )
    source = _source(msh)
    profile = profiles.for_sender(msh.component(4, 1), msh.component(3, 1))
    zone = profile.zone or zone
    sent_at = parse_datetime(msh.component(7, 1), zone)
    patients: list[_Patient] = [_Patient()]
    groups: list[_Group] = []
    current: _Group | None = None
    for seg in message.segments[1:]:
        name = seg.name
        if name == "PID":
            patients.append(_patient(seg, profile.pms_id))
            current = None
        elif name == "NK1":
            relation = seg.component(3, 1).strip().upper()
            surname = _opt(seg.component(2, 1))
            if relation == "OWN" and surname:
                patients[-1] = replace(patients[-1], owner_surname=_clip(surname, "owner_surname"))
        elif name == "ORC":
            current = _Group(seg, len(patients) - 1)
            groups.append(current)
        elif name == "OBR":
            if current is None:
                raise ParseError(
                    "OBR before any ORC: in ORM^O01 and OML^O21 every order starts with its ORC",
                    location=seg.location(2),
                )
            if current.obr is not None:
                current = _Group(current.orc, current.patient)
                groups.append(current)
            current.obr = seg
    if not groups:
        raise ParseError("the message carries no order: no ORC segment", location="ORC")
    return _merged([_order(g, patients[g.patient], source, sent_at, msh, zone) for g in groups])
