"""What is wrong with an HL7 v2 message, and where, in the standard's terms: a report for people.

``validate_message(raw)`` never raises; it returns ``Problem``s, each a location and a sentence an
interface analyst can act on:

1. Our own parse (``parse_oru``): its ``ParseError``, if any, as the gateway would reject the
   message (e.g. ``OBX[2]-3``: an empty observation identifier).
2. The structure of the message against its declared version (MSH-12) and message structure
   (MSH-9), using hl7apy's tables for that version: required groups and segments that are missing
   (``ORU_R01.PATIENT_RESULT.ORDER_OBSERVATION.OBR``), segments that occur too often or where the
   structure has no place for them, and segments the version does not define. Locally defined Z
   segments are allowed anywhere and not checked.
3. The content of each segment hl7apy could place, with hl7apy's own validator: required fields
   that are empty (``OBX[2]-3``), repetitions beyond the maximum, and fields or components beyond
   what the segment or data type defines in that version. Table-value and length checks are not
   reported: hl7apy knows only the published tables, which labs legitimately extend (coding
   systems in table 0396, user-defined tables), so they would bury the real problems.
4. One rule of the gateway that the standard does not make: a result without a PID cannot be
   matched to an animal (ORU_R01 allows leaving out the PATIENT group).

Our parse error comes first, then segments undefined or out of place, then missing groups and
segments, then each segment's fields, in message order within each kind. A version hl7apy has no
tables for is one problem at MSH-12 and the structure is not checked.
This is not the hot path: hl7apy takes milliseconds per message and the first use of a version
loads its tables. hl7apy's Python warnings are silenced while it runs (``warnings`` filters are
process-wide, so call this from one thread at a time).
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from vetgateway.adapters.hl7.header import read_header
from vetgateway.errors import ParseError
from vetgateway.pipeline.parse.oru import parse_oru

__all__ = ["Problem", "format_problems", "validate_message"]

_BOM: Final = b"\xef\xbb\xbf"
_MISSING: Final = re.compile(r"Missing required child (\w+)\.(\w+)")
_TOO_MANY: Final = re.compile(r"Child limit exceeded (\w+)\.(\w+)")
_EXTRA: Final = re.compile(
    r"Invalid children detected for <(\w+) (\w+)(?: \((\w+)\))?(?: of type (\w+))?>: .*"
)
_DATATYPE: Final = re.compile(
    r"Datatype (\S+) is not correct for (\w+)\.(\w+) \(it must be (\S+)\)"
)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a message.

    ``location`` is a field (``PID[1]-3``, ``ORC[1]-12.15`` for a component), a segment
    (``XYZ[1]``), a place in the message structure (``ORU_R01.PATIENT_RESULT.PATIENT.PID``) or
    ``message``; ``message`` says what is wrong there and, where it helps, what HL7 expects.
    """

    location: str
    message: str


def format_problems(problems: Iterable[Problem]) -> str:
    """One ``LOCATION: message`` line per problem, for a terminal; empty when there are none."""
    return "\n".join(f"{p.location}: {p.message}" for p in problems)


def validate_message(raw: bytes) -> list[Problem]:
    """Everything found wrong with ``raw`` (see the module docstring); ``[]`` when nothing is."""
    problems: list[Problem] = []
    try:
        parse_oru(raw)
    except ParseError as exc:
        problems.append(Problem(exc.location or "message", exc.reason))
    try:
        header = read_header(raw)
    except ParseError:
        return problems  # no readable MSH: the parse error above says why; hl7apy cannot start
    version = header.version_id
    body = raw[len(_BOM) :] if raw.startswith(_BOM) else raw
    text = body.lstrip(b" \t\r\n").decode(header.encoding, "replace")
    lines = [x for x in text.replace("\r\n", "\r").replace("\n", "\r").split("\r") if x.strip()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = _Hl7apyCheck(lines, header.field_separator, version).run()
    for problem in found:
        if problem not in problems:
            problems.append(problem)
    return problems


class _Hl7apyCheck:
    """One message through hl7apy: place its segments in groups, then check the structure and each
    segment. Problems accumulate in ``problems``, in message order as far as possible."""

    def __init__(self, lines: list[str], separator: str, version: str) -> None:
        self.version = version
        self.separator = separator
        counts: dict[str, int] = {}
        # (name, sequence) and text of every segment, numbered as in the whole message.
        self.segments: list[tuple[str, int, str]] = []
        for line in lines:
            name = line[:3]
            counts[name] = counts.get(name, 0) + 1
            self.segments.append((name, counts[name], line))
        self.problems: list[Problem] = []

    def run(self) -> list[Problem]:
        try:
            self._run()
        except Exception as exc:  # noqa: BLE001 — hl7apy failing on odd input is a finding too
            self.problems.append(
                Problem("message", f"hl7apy could not read the message: {_describe(exc)}")
            )
        return self.problems

    def _run(self) -> None:
        from hl7apy import SUPPORTED_LIBRARIES, load_reference
        from hl7apy.exceptions import ChildNotFound

        if self.version not in SUPPORTED_LIBRARIES:
            known = ", ".join(sorted(SUPPORTED_LIBRARIES, key=_version_key))
            self.problems.append(
                Problem(
                    "MSH[1]-12",
                    f"version {self.version!r} cannot be checked against the standard: hl7apy has "
                    f"tables for {known}",
                )
            )
            return
        known_segments: list[tuple[str, int, str]] = []
        for name, sequence, line in self.segments:
            if name.startswith("Z"):
                continue  # locally defined: there is no table to check it against
            try:
                load_reference(name, "Segment", self.version)
            except ChildNotFound:
                self.problems.append(
                    Problem(
                        f"{name}[{sequence}]",
                        f"segment {name!r} is not defined in HL7 v{self.version}",
                    )
                )
                continue
            known_segments.append((name, sequence, line))
        if not known_segments or known_segments[0][0] != "MSH":
            return
        message = self._parse(known_segments)
        structure = message.name or ""
        try:
            load_reference(structure, "Message", self.version)
        except ChildNotFound:
            self.problems.append(
                Problem(
                    "MSH[1]-9",
                    f"HL7 v{self.version} defines no message structure "
                    f"{repr(structure) if structure else 'for this MSH-9'}; the segments cannot "
                    "be checked against one",
                )
            )
            return
        # hl7apy drops a segment it finds no place for, and may close the groups around it, so
        # the rest is checked once more without those segments: what remains is not a cascade.
        pairs = self._align(known_segments, list(_placed(message)), structure)
        if len(pairs) < len(known_segments):
            kept = [segment for _, segment in pairs]
            if not kept or kept[0][0] != "MSH":
                return
            message = self._parse(kept)
            pairs = self._align(kept, list(_placed(message)), structure)
        self._groups(message, structure, structure)
        if structure.startswith("ORU") and not any(s[0] == "PID" for _, s in pairs):
            paths = _segment_paths(message.reference, structure, structure)
            self.problems.append(
                Problem(
                    paths.get("PID", structure),
                    f"no PID segment: {structure} allows results without a patient, but the "
                    "gateway cannot match them to an animal",
                )
            )
        for element, (name, sequence, _) in pairs:
            self._segment(element, f"{name}[{sequence}]")

    def _parse(self, segments: list[tuple[str, int, str]]) -> Any:
        from hl7apy.consts import VALIDATION_LEVEL
        from hl7apy.parser import parse_message

        text = "\r".join(self._hl7apy_line(line) for _, _, line in segments) + "\r"
        return parse_message(text, validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=True)

    def _hl7apy_line(self, line: str) -> str:
        """hl7apy reads a fifth encoding character (v2.7 truncation) only from v2.7 on."""
        if not line.startswith("MSH") or _version_key(self.version) >= (2, 7):
            return line
        fields = line.split(self.separator)
        if len(fields) > 1:
            fields[1] = fields[1][:4]
        return self.separator.join(fields)

    def _groups(self, group: Any, structure: str, path: str) -> None:
        """What the structure requires of ``group`` and the groups in it: cardinality (HL7's
        "[ ]" optional, "{ }" repeating) and choices ("< | >")."""
        kind, children_refs = group.reference[0], group.reference[1]
        present = [c.name for c in group.children]
        if kind == "choice":
            if not any(ref[0] in present for ref in children_refs):
                names = ", ".join(_short(ref[0], structure) for ref in children_refs)
                self.problems.append(
                    Problem(
                        path,
                        f"one of {names} is required here ({structure}, HL7 v{self.version})",
                    )
                )
        else:
            for child_name, _, (low, high), child_kind in children_refs:
                count = present.count(child_name)
                child_path = f"{path}.{_short(child_name, structure)}"
                what = "group" if child_kind == "GRP" else "segment"
                if count < low:
                    self.problems.append(
                        Problem(
                            child_path,
                            f"required {what} {_short(child_name, structure)} is missing "
                            f"({structure}, HL7 v{self.version})",
                        )
                    )
                elif high != -1 and count > high:
                    self.problems.append(
                        Problem(
                            child_path,
                            f"the {what} occurs {count} times; {structure} allows {high} here "
                            f"(HL7 v{self.version})",
                        )
                    )
        for child in group.children:
            if child.classname != "Segment":
                self._groups(child, structure, f"{path}.{_short(child.name, structure)}")

    def _align(
        self, segments: list[tuple[str, int, str]], placed: list[Any], structure: str
    ) -> list[tuple[Any, tuple[str, int, str]]]:
        """Each of ``segments`` that hl7apy placed, with its element (hl7apy keeps their order);
        a problem for each of the others, which it dropped."""
        pairs: list[tuple[Any, tuple[str, int, str]]] = []
        previous = "MSH[1]"
        for segment in segments:
            name, sequence, _ = segment
            where = f"{name}[{sequence}]"
            if len(pairs) < len(placed) and placed[len(pairs)].name == name:
                pairs.append((placed[len(pairs)], segment))
            else:
                self.problems.append(
                    Problem(
                        where,
                        f"segment {name} has no place here in {structure} "
                        f"(HL7 v{self.version}); it follows {previous}",
                    )
                )
            previous = where
        return pairs

    def _segment(self, seg: Any, where: str) -> None:
        """hl7apy's validator on one segment, its errors located within it."""
        from hl7apy.exceptions import ValidationError
        from hl7apy.validation import Validator

        with tempfile.TemporaryDirectory() as folder:
            report = Path(folder) / "report.txt"
            with contextlib.suppress(ValidationError):  # raised for the first; all are reported
                Validator.validate(seg, report_file=str(report))
            lines = report.read_text(errors="replace").splitlines() if report.exists() else []
        for line in lines:
            if line.startswith("Error: "):
                self.problems.append(self._explain(line[len("Error: ") :], seg, where))

    def _explain(self, error: str, seg: Any, where: str) -> Problem:
        """hl7apy's error sentence in HL7 terms, at the field or component it is about."""
        version = f"HL7 v{self.version}"
        if m := _MISSING.fullmatch(error):
            location, label = self._locate(seg.name, m.group(1), m.group(2), where)
            return Problem(location, f"{label} is required in {version} but empty")
        if m := _TOO_MANY.fullmatch(error):
            location, label = self._locate(seg.name, m.group(1), m.group(2), where)
            return Problem(location, f"{label} repeats more often than {version} allows")
        if m := _EXTRA.fullmatch(error):
            kind, name, long_name, datatype = m.groups()
            if kind == "Segment":
                defined = len(seg.reference[1])
                return Problem(
                    where, f"{seg.name} has more fields than the {defined} {version} defines"
                )
            if kind == "Field":
                location, label = self._locate(seg.name, seg.name, name, where)
                return Problem(
                    location, f"{label} has more components than {datatype} has in {version}"
                )
            named = f"component {name} ({(long_name or '').replace('_', ' ').lower()})"
            return Problem(
                where, f"{named} has more subcomponents than {datatype} has in {version}"
            )
        if m := _DATATYPE.fullmatch(error):
            location, label = self._locate(seg.name, m.group(2), m.group(3), where)
            return Problem(
                location, f"{label} holds separators, but is a single value in {version}"
            )
        return Problem(where, error)

    def _locate(self, segment: str, parent: str, child: str, where: str) -> tuple[str, str]:
        """An hl7apy element as (location, label): ``OBX``, ``OBX_3`` → (``OBX[2]-3``,
        ``OBX-3 (observation identifier, CE)``); ``ORC_12``, ``XCN_15`` → (``ORC[1]-12.15``,
        ``ORC-12.15``); anything deeper → the segment and hl7apy's names."""
        prefix = f"{segment}_"
        if parent == segment and child.startswith(prefix) and child[len(prefix) :].isdigit():
            field = child[len(prefix) :]
            return f"{where}-{field}", f"{segment}-{field}{self._field_name(child)}"
        if parent.startswith(prefix) and parent[len(prefix) :].isdigit():
            field = parent[len(prefix) :]
            component = child.rpartition("_")[2]
            if component.isdigit():
                return f"{where}-{field}.{component}", f"{segment}-{field}.{component}"
        return where, f"{parent}.{child}"

    def _field_name(self, field: str) -> str:
        """`` (observation identifier, CE)`` for ``OBX_3``: the standard's name and data type."""
        from hl7apy import load_reference
        from hl7apy.exceptions import ChildNotFound

        try:
            ref = load_reference(field, "Field", self.version)
        except ChildNotFound:
            return ""
        named = str(ref[3]).replace("_", " ").lower()
        return f" ({named}, {ref[2]})" if ref[2] else f" ({named})"


def _placed(group: Any) -> Iterator[Any]:
    """The segments hl7apy placed in ``group`` and the groups in it, in message order."""
    for child in group.children:
        if child.classname == "Segment":
            yield child
        else:
            yield from _placed(child)


def _segment_paths(reference: Any, structure: str, path: str) -> dict[str, str]:
    """Where each segment first appears in a message structure: ``PID`` → ``ORU_R01.….PID``."""
    paths: dict[str, str] = {}
    for child_name, child_ref, _, kind in reference[1]:
        child_path = f"{path}.{_short(child_name, structure)}"
        if kind == "GRP":
            for name, found in _segment_paths(child_ref, structure, child_path).items():
                paths.setdefault(name, found)
        else:
            paths.setdefault(child_name, child_path)
    return paths


def _short(name: str, structure: str) -> str:
    """``ORU_R01_ORDER_OBSERVATION`` → ``ORDER_OBSERVATION`` (the standard's group name)."""
    prefix = f"{structure}_"
    return name[len(prefix) :] if name.startswith(prefix) else name


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else 0 for part in version.split("."))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
