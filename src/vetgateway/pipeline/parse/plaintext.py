"""Plain-text analyzer print-outs → ``AnalyzerMessage``, read by a per-model ``TextTemplate``.

An analyzer that prints instead of speaking ASTM (``adapters.plaintext``) sends what its printer
would show: a date, a sample id, then one ``code value unit`` group per result, laid out as the
model likes. There is no record structure to parse, so each model gets a template of regular
expressions, and ``parse_text`` turns a print into the same canonical model as an HL7 ORU or an
ASTM message: one ``Report`` (``OrderRef(accession=sample id)``, ``PatientRef(pms_id=…)``) with
one ``Observation`` per result, so mapping, matching and interpretation treat it no differently.
``sender`` is the template's ``model``, which is also the ``source`` of its code map
(``catalogue/data/mappings_*.toml``).

Template rules:

- The bytes are decoded with ``encoding`` (Latin-1 by default: every byte is a character, so
  decoding never fails; other encodings replace what they cannot read).
- Every regex is compiled with ``re.MULTILINE`` (``^`` and ``$`` match at line boundaries) and
  searched anywhere in the text, because some prints (the SPOTCHEM EL's) have no line breaks.
- ``sample_id``, ``patient_id``, ``timestamp`` and ``specimen`` take their value from the first
  capturing group of their first match; the value is stripped of surrounding blanks.
- ``result`` is applied with ``finditer``: each match is one observation, in order. Named groups:
  ``code`` and ``value`` required; ``unit``, ``flag``, ``low``, ``high`` optional.
- ``aliases`` rename printed codes (``("Na", "NA")``); ``code_text`` keeps the code as printed.

Value rules: the value text is kept as printed. When it reads as a number, optionally with a
comparator (``<0.5``, ``>8``; a decimal comma when ``decimal_comma``), ``value_type`` is ``NM``
with ``value_numeric`` and ``comparator`` set; otherwise ``ST`` (``----``, ``***``) and the
number is None. ``low``/``high`` become ``range_low``/``range_high`` and, when both were printed,
``reference_range`` is the text between them as printed. The timestamp is read with
``timestamp_format`` (``datetime.strptime``); a print has no time zone, so a naive time is taken
in ``clock_tz`` (the clinic's zone, ``VETGATEWAY_TIMEZONE``; UTC if none given) and stored as
``Report.observed_at``. A timestamp that matches the regex but is not a real date is left out,
with a report comment saying so, rather than rejecting results that are otherwise sound.

Errors: only ``ParseError`` (reason written for whoever configures the analyzer), and only when
no result matched or the sample id is missing (unless ``sample_id_optional``). Invalid templates
raise ``ConfigError`` when built.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from typing import Final

from vetgateway.errors import ConfigError, ParseError
from vetgateway.model import AnalyzerMessage, Comparator, Observation, OrderRef, PatientRef, Report
from vetgateway.pipeline.mapping import SOURCE_MAX_LENGTH
from vetgateway.pipeline.parse.values import parse_compared, parse_decimal

__all__ = ["SPOTCHEM_EL", "TextTemplate", "parse_text"]

_RESULT_GROUPS: Final = frozenset({"code", "value", "unit", "flag", "low", "high"})


def _compile(name: str, pattern: str, *, groups: frozenset[str] | None = None) -> re.Pattern[str]:
    try:
        regex = re.compile(pattern, re.MULTILINE)
    except re.error as exc:
        raise ConfigError(f"text template: {name} is not a valid regex: {exc}") from exc
    if groups is None and regex.groups < 1:
        raise ConfigError(f"text template: {name} needs a capturing group around the value")
    if groups is not None:
        names = set(regex.groupindex)
        if not {"code", "value"} <= names:
            raise ConfigError(f"text template: {name} needs the named groups 'code' and 'value'")
        unknown = sorted(names - groups)
        if unknown:
            raise ConfigError(
                f"text template: {name} has unknown group(s) {', '.join(unknown)};"
                f" allowed: {', '.join(sorted(groups))}"
            )
    return regex


@dataclass(frozen=True, slots=True)
class TextTemplate:
    """How one analyzer model prints its results (the rules are in the module docstring).

    ``model`` is the sender's name, also the ``source`` its code map is loaded under. Built once
    (from code or configuration): every regex is compiled and checked here, and a mistake raises
    ``ConfigError`` naming the setting.
    """

    model: str
    sample_id: str
    result: str
    patient_id: str | None = None
    timestamp: str | None = None
    timestamp_format: str | None = None
    specimen: str | None = None
    sample_id_optional: bool = False
    decimal_comma: bool = False
    aliases: tuple[tuple[str, str], ...] = ()
    encoding: str = "latin-1"
    _regexes: dict[str, re.Pattern[str]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        if not self.model.strip() or len(self.model) > SOURCE_MAX_LENGTH:
            raise ConfigError(
                f"text template: model must name the analyzer in 1-{SOURCE_MAX_LENGTH} characters"
            )
        if (self.timestamp is None) != (self.timestamp_format is None):
            raise ConfigError("text template: timestamp and timestamp_format go together")
        try:
            codecs.lookup(self.encoding)
        except LookupError as exc:
            raise ConfigError(f"text template: unknown encoding {self.encoding!r}") from exc
        regexes = self._regexes
        regexes["result"] = _compile("result", self.result, groups=_RESULT_GROUPS)
        for name in ("sample_id", "patient_id", "timestamp", "specimen"):
            pattern = getattr(self, name)
            if pattern is not None:
                regexes[name] = _compile(name, pattern)

    def regex(self, name: str) -> re.Pattern[str] | None:
        """The compiled regex of a setting (``result``, ``sample_id`` …), None when not set."""
        return self._regexes.get(name)


SPOTCHEM_EL: Final = TextTemplate(
    model="ARKRAY_SPOTCHEM_EL",
    timestamp=r"(\d{2}/\d{2}/\d{2}\s+\d{1,2}:\d{2})",
    timestamp_format="%y/%m/%d %H:%M",
    sample_id=r"ID#\s*(\S+)",
    specimen=r"\[([^\]\r\n]*)\]",
    result=r"(?<![A-Za-z])(?P<code>Na|K|Cl)\s+(?P<value>\S+)\s+(?P<unit>mmol/L)",
)
"""The Arkray SPOTCHEM EL (SE-1520) electrolyte print-out: ``YY/MM/DD HH:MM ID# <sample>
[<sample type>]`` then ``Na``, ``K`` and ``Cl`` each with a value and ``mmol/L``, fixed-width
with runs of spaces and no line breaks, between STX and ETX (``SPOTCHEM_EL_FRAMING``). Layout
learned from the sample print-out in the senaite.astm test data (``spotchem_el.txt``). The date
is read year first, as that print-out shows; an analyzer set to another date order needs its own
template (``dataclasses.replace(SPOTCHEM_EL, timestamp_format=…)``). The sample type (blood
plasma, serum, urine …) goes into a report comment."""


def _value(text: str, decimal_comma: bool) -> tuple[Comparator | None, Decimal] | None:
    return parse_compared(text.replace(",", ".") if decimal_comma else text)


def _number(text: str | None, decimal_comma: bool) -> Decimal | None:
    if not text:
        return None
    return parse_decimal(text.strip().replace(",", ".") if decimal_comma else text.strip())


def _first(template: TextTemplate, name: str, text: str) -> str | None:
    """The stripped first group of the first match of setting ``name``; None when absent."""
    regex = template.regex(name)
    m = regex.search(text) if regex is not None else None
    value = (m.group(1) or "").strip() if m is not None else ""
    return value or None


def _observation(
    m: re.Match[str], set_id: int, template: TextTemplate, aliases: dict[str, str]
) -> Observation:
    groups = m.groupdict()
    printed = (groups["code"] or "").strip()
    value_text = (groups["value"] or "").strip()
    compared = _value(value_text, template.decimal_comma)
    low_text, high_text = groups.get("low"), groups.get("high")
    reference_range = None
    if low_text and high_text:
        start = min(m.start("low"), m.start("high"))
        reference_range = m.string[start : max(m.end("low"), m.end("high"))].strip() or None
    flag = (groups.get("flag") or "").strip()
    return Observation(
        set_id=set_id,
        sub_id=None,
        value_type="ST" if compared is None else "NM",
        code=aliases.get(printed, printed),
        code_text=printed,
        coding_system=None,
        value_text=value_text,
        value_numeric=None if compared is None else compared[1],
        comparator=None if compared is None else compared[0],
        unit=(groups.get("unit") or "").strip() or None,
        reference_range=reference_range,
        range_low=_number(low_text, template.decimal_comma),
        range_high=_number(high_text, template.decimal_comma),
        abnormal_flags=(flag,) if flag else (),
    )


def _timestamp(
    template: TextTemplate, text: str, clock_tz: tzinfo
) -> tuple[datetime | None, str | None]:
    """(observed at, comment): the comment says why a printed time was not used."""
    printed = _first(template, "timestamp", text)
    if printed is None or template.timestamp_format is None:
        return None, None
    try:
        stamp = datetime.strptime(" ".join(printed.split()), template.timestamp_format)
    except ValueError:
        return None, f"printed time {printed!r} does not read as {template.timestamp_format}"
    return (stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=clock_tz)), None


def parse_text(raw: bytes, template: TextTemplate, *, clock_tz: tzinfo = UTC) -> AnalyzerMessage:
    """Read one print-out (``MessageReceived.text``) with ``template``.

    Pure. Raises ``ParseError`` (``location`` is the model) when no result line matched or, unless
    the template allows it, the sample id is missing: a print without them cannot be filed, and
    the stored message goes to quarantine with that reason. Never raises anything else.
    """
    text = raw.decode(template.encoding, errors="replace")
    result_re = template.regex("result")
    assert result_re is not None  # compiled in TextTemplate.__post_init__
    aliases = dict(template.aliases)
    observations = tuple(
        _observation(m, n, template, aliases)
        for n, m in enumerate(result_re.finditer(text), start=1)
    )
    if not observations:
        raise ParseError(
            f"no result found: the text matches no result line of the {template.model} template",
            location=template.model,
        )
    sample_id = _first(template, "sample_id", text)
    if sample_id is None and not template.sample_id_optional:
        raise ParseError(
            "no sample id found: the print-out has no sample id where the"
            f" {template.model} template expects one (was it entered on the analyzer?)",
            location=template.model,
        )
    observed_at, time_comment = _timestamp(template, text, clock_tz)
    specimen = _first(template, "specimen", text)
    comments = tuple(
        c for c in (f"specimen: {specimen}" if specimen else None, time_comment) if c is not None
    )
    report = Report(
        order=OrderRef(accession=sample_id),
        patient=PatientRef(pms_id=_first(template, "patient_id", text)),
        service_code=None,
        service_text=None,
        status=None,
        status_code=None,
        observed_at=observed_at,
        reported_at=None,
        observations=observations,
        comments=comments,
    )
    return AnalyzerMessage(sender=template.model, reports=(report,))
