"""LIS2-A2 records read into canonical values: P → ``PatientRef``, R → ``Observation``,
Q → ``HostQuery``, C → comment text, and the universal test id → a test code.

The per-record half of ``parse_astm`` (``parse/astm.py`` walks the message and groups the
records). Pure; every reader takes an ``AstmRecord`` (``parse/astm_records.py``) and the
analyzer's ``AstmDialect``. The rules, field by field:

- **Test code** (universal test id: R-3, O-5, Q-5): per ``AstmDialect.test_code_component``;
  auto is the fourth component (the manufacturer's local code) when present, else the first
  non-empty one. The name is component 2 (universal test id name) when sent and not the code.
- **Value** (R-4): white space around it stripped (Sysmex pads, ``  5.5``). A value sent in one
  component of several (``^0.0``, ``40^^``) is that component; a composite one (``A^NEG^NEG``,
  ``3+^3+^45``) keeps its whole text. A number, optionally with a comparator (``< 1.20``,
  ``>8``; and ``7,41`` under ``decimal_comma``) is ``value_type`` ``NM`` with ``value_numeric``;
  anything else is ``ST`` with text only (``-----``, ``NEGATIVE``).
- **Unit** (R-5): the first component. **Reference range** (R-6): the first component (Horiba
  sends ``84.0 - 94.0^REFERENCE_RANGE``), kept as text; limits read from ``a-b``, ``a - b``,
  ``a to b``/``a TO b``, ``<x``, ``>x`` (``values.parse_range``).
- **Abnormal flags** (R-7): every non-empty component of every repeat, in order (``EXP^<``).
- **Result status** (R-9): F final; C correction; X cannot be done → cancelled; P preliminary,
  I pending in instrument, S partial, W validity questionable → preliminary; V operator
  verified, R previously transmitted, Q response to query → final. The code is kept as sent.
- **Time** (R-13, date/time test completed; else R-12, started): ``YYYYMMDD[HHMM[SS]]``, the
  analyzer's clock, read in the clinic's zone like the HL7 parser (``values.parse_datetime``);
  an invalid one is None.
- **Patient** (P): see ``read_patient``.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Final

from vetgateway.errors import ParseError
from vetgateway.model import (
    Coded,
    Comparator,
    HostQuery,
    Identifier,
    Observation,
    PatientRef,
    ResultStatus,
    Sex,
)
from vetgateway.pipeline.parse.astm_dialect import AstmDialect
from vetgateway.pipeline.parse.astm_records import AstmRecord
from vetgateway.pipeline.parse.values import (
    TimestampMemo,
    parse_compared,
    parse_date,
    parse_range,
)

__all__ = [
    "comment_text",
    "first_text",
    "read_patient",
    "read_query",
    "read_result",
    "read_test_code",
]

# LIS2-A2 result record, field 9 (result status).
_RESULT_STATUS: Final = {
    **dict.fromkeys(("F", "V", "R", "Q"), ResultStatus.FINAL),
    "C": ResultStatus.CORRECTED,
    "X": ResultStatus.CANCELLED,
    **dict.fromkeys(("P", "I", "S", "W"), ResultStatus.PRELIMINARY),
}
# The codes PID-8 uses in parse/pid.py, so both parsers read a neutered animal alike.
_SEX: Final = {
    "M": Sex.MALE,
    "F": Sex.FEMALE,
    **dict.fromkeys(("MN", "MC", "CM", "NM", "C", "N"), Sex.MALE_NEUTERED),
    **dict.fromkeys(("FS", "SF", "FN", "NF", "S"), Sex.FEMALE_SPAYED),
}
_MAX_INT_DIGITS: Final = 9  # a sequence number longer than this is not one


def first_text(parts: Sequence[str]) -> str | None:
    """The first non-blank of ``parts``, stripped; None when all are blank."""
    for part in parts:
        text = part.strip()
        if text:
            return text
    return None


def _small_int(text: str) -> int | None:
    text = text.strip()
    if text.isascii() and text.isdigit() and len(text) <= _MAX_INT_DIGITS:
        return int(text)
    return None


def read_test_code(parts: Sequence[str], dialect: AstmDialect) -> tuple[str | None, str | None]:
    """A universal test id's components as (code, name); (None, None) when it names nothing.

    A component the dialect names but the analyzer left empty falls back to the auto rule, so
    one odd record does not lose its code.
    """
    stripped = [p.strip() for p in parts]
    count = len(stripped)
    chosen = dialect.test_code_component
    code = stripped[chosen - 1] if chosen is not None and chosen <= count else ""
    if not code:
        code = stripped[3] if count > 3 and stripped[3] else (first_text(stripped) or "")
    if not code:
        return None, None
    if dialect.test_code_suffix_components:
        suffixes = [stripped[i - 1] for i in dialect.test_code_suffix_components if i <= count]
        code = "^".join([code, *(s for s in suffixes if s)])
    name = stripped[1] if count > 1 and stripped[1] and stripped[1] != code else None
    return code, name


def _number(text: str, dialect: AstmDialect) -> tuple[Comparator | None, Decimal] | None:
    if dialect.decimal_comma and "," in text and "." not in text and text.count(",") == 1:
        text = text.replace(",", ".")
    return parse_compared(text)


def _range_text(text: str, dialect: AstmDialect) -> str:
    """A range text as ``values.parse_range`` reads it: ``TO`` in lower case, commas as points."""
    text = text.lower()
    return text.replace(",", ".") if dialect.decimal_comma else text


def _value_text(rec: AstmRecord) -> str:
    """R-4 as text: the one non-empty component if only one is (none: empty), else the whole."""
    raw = rec.raw(4)
    if not raw:
        return ""
    d = rec.delimiters
    if d.component in raw and d.repeat not in raw:
        filled = [text for part in rec.components(4) if (text := part.strip())]
        if len(filled) <= 1:
            return filled[0] if filled else ""
    return rec.field(4).strip()


def read_result(rec: AstmRecord, dialect: AstmDialect, timestamps: TimestampMemo) -> Observation:
    """One R record as an Observation; ``ParseError`` at R-3 when it names no test."""
    code, name = read_test_code(rec.components(3), dialect)
    if code is None:
        raise ParseError(
            "R-3 (universal test id) is empty; a result without a test code cannot be used",
            location=rec.location(3),
        )
    value_text = _value_text(rec)
    compared = _number(value_text, dialect) if value_text else None
    comparator, numeric = compared if compared is not None else (None, None)
    reference = rec.component(6, 1).strip()
    low, high = parse_range(_range_text(reference, dialect)) if reference else (None, None)
    raw_flags = rec.raw(7)
    d = rec.delimiters
    if d.repeat in raw_flags or d.component in raw_flags or d.escape in raw_flags:
        flags = tuple(
            flag
            for r in range(1, rec.repeat_count(7) + 1)
            for part in rec.components(7, r)
            if (flag := part.strip())
        )
    else:  # the usual single flag (N, L, H): no splitting
        flags = (flag,) if (flag := raw_flags.strip()) else ()
    status_code = rec.component(9, 1).strip() or None
    completed = rec.component(13, 1).strip() or rec.component(12, 1).strip()
    return Observation(
        set_id=_small_int(rec.field(2)),
        sub_id=None,
        value_type="NM" if numeric is not None else "ST",
        code=code,
        code_text=name,
        coding_system=None,
        value_text=value_text,
        value_numeric=numeric,
        comparator=comparator,
        unit=rec.component(5, 1).strip() or None,
        reference_range=reference or None,
        range_low=low,
        range_high=high,
        abnormal_flags=flags,
        status=_RESULT_STATUS.get(status_code.upper()) if status_code else None,
        status_code=status_code,
        observed_at=timestamps[completed],
    )


def _is_microchip(text: str) -> bool:
    return len(text) == 15 and text.isascii() and text.isdigit()


def read_patient(rec: AstmRecord, dialect: AstmDialect) -> PatientRef:
    """The animal as a P record identifies it.

    - **Identifiers**: P-3 (practice assigned; HL7 table 0203 type ``PI``), P-4 (laboratory
      assigned), P-5 (patient id no. 3) and any other field of ``dialect.patient_id_fields``,
      every repeat, the first non-empty component of each; a 15-digit number is typed ``MC``
      (microchip). PMS id: the first non-microchip value
      in ``dialect.patient_id_fields`` order; microchip: the first 15-digit value.
    - **Name** (P-6, ``last^first``): vet analyzers are set up with ``Owner^Animal`` as the HL7
      labs use PID-5, so, as there, the animal's name is the first name (the last name when no
      first name is sent) and the owner surname is the last name when a first name is present.
    - **Birth date** P-8 (first eight digits), **sex** P-9 (the codes of PID-8 in ``pid.py``:
      M, F, neutered and spayed forms; any other code unknown; empty None).
    - **Species and breed** from the P fields the dialect names (text in ``Coded.text``).
    """
    found: dict[int, list[str]] = {}
    identifiers: list[Identifier] = []
    for n in dict.fromkeys((3, 4, 5, *dialect.patient_id_fields)):
        for r in range(1, rec.repeat_count(n) + 1):
            value = first_text(rec.components(n, r))
            if value is None:
                continue
            found.setdefault(n, []).append(value)
            chip = _is_microchip(value)
            type_code = "MC" if chip else "PI" if n == 3 else None
            identifiers.append(Identifier(value, None, type_code))
    pms_id = next(
        (v for n in dialect.patient_id_fields for v in found.get(n, ()) if not _is_microchip(v)),
        None,
    )
    microchip = next((i.value for i in identifiers if i.type_code == "MC"), None)
    family, given = rec.component(6, 1).strip(), rec.component(6, 2).strip()
    sex_code = rec.component(9, 1).strip().upper()
    return PatientRef(
        pms_id=pms_id,
        microchip=microchip,
        identifiers=tuple(identifiers),
        name=given or family or None,
        owner_surname=(family or None) if given else None,
        species=_coded_text(rec, dialect.species_field),
        breed=_coded_text(rec, dialect.breed_field),
        sex=_SEX.get(sex_code, Sex.UNKNOWN) if sex_code else None,
        birth_date=parse_date(rec.component(8, 1).strip()),
    )


def _coded_text(rec: AstmRecord, n: int | None) -> Coded | None:
    text = rec.component(n, 1).strip() if n is not None else ""
    return Coded(None, text, None) if text else None


def read_query(rec: AstmRecord, dialect: AstmDialect, ordinal: int) -> HostQuery:
    """A Q record (request information) as a HostQuery.

    ``sequence`` is Q-2, else ``ordinal`` (the query's place among the message's Q records).
    Sample ids: per repeat of Q-3 (starting range id), the component
    ``dialect.query_sample_component``, else component 2 (specimen id), else the first non-empty
    one. Tests: the test code of each repeat of Q-5, ``ALL`` meaning every test (no list).
    ``request_info`` is Q-13 (request information status code, ``O`` for orders).
    """
    wanted = dialect.query_sample_component or 2
    sample_ids: list[str] = []
    for r in range(1, rec.repeat_count(3) + 1):
        parts = rec.components(3, r)
        chosen = parts[wanted - 1].strip() if wanted <= len(parts) else ""
        sample = chosen or first_text(parts)
        if sample is not None:
            sample_ids.append(sample)
    tests: list[str] = []
    for r in range(1, rec.repeat_count(5) + 1):
        code, _ = read_test_code(rec.components(5, r), dialect)
        if code is not None and code.upper() != "ALL":
            tests.append(code)
    sequence = _small_int(rec.field(2))
    return HostQuery(
        sequence=ordinal if sequence is None else sequence,
        sample_ids=tuple(sample_ids),
        tests=tuple(tests),
        request_info=rec.component(13, 1).strip() or None,
    )


def comment_text(rec: AstmRecord) -> str:
    """C-4 (comment text) as one text: components joined by a space, repeats by a line break,
    blanks left out (Pentra: ``Alarm_WBC^LMNE-^BASO+`` → ``Alarm_WBC LMNE- BASO+``)."""
    lines = (
        " ".join(part.strip() for part in rec.components(4, r) if part.strip())
        for r in range(1, rec.repeat_count(4) + 1)
    )
    return "\n".join(line for line in lines if line)
