"""``AstmDialect``: what one analyzer model does its own way within LIS2-A2 (ASTM E1394).

LIS2-A2 fixes the records and fields but leaves much to the manufacturer: which component of the
universal test id is the analyzer's code, where the sample number goes, how control runs are
marked, where (if anywhere) a veterinary analyzer puts the species. A dialect writes those choices
down once per analyzer model, so ``parse_astm`` stays one function and a new analyzer is
configuration, not code. The defaults read the common case; every field says which analyzers need
something else.

Field numbers are the standard's (the record type letter is field 1, so ``O-3`` is the specimen
id); component numbers are 1-based.
"""

from __future__ import annotations

from dataclasses import dataclass

from vetgateway.errors import ConfigError

__all__ = ["AstmDialect"]


@dataclass(frozen=True, slots=True)
class AstmDialect:
    """An analyzer model's quirks. Frozen and hashable, so it can key a cache.

    Test codes (R-3, O-5, Q-5, the universal test id ``id^name^type^local code^…``):

    - ``test_code_component``: which component is the analyzer's test code. None (auto): the
      fourth, the manufacturer's local code (``^^^GLU``, Horiba ``^^^WBC^804-5^1`` → ``WBC``), if
      it is not empty, else the first non-empty component (Sysmex ``^^^^WBC^1`` → ``WBC``).
    - ``test_code_suffix_components``: further components appended to the code, each non-empty
      one after a ``^``, for analyzers whose code alone is not unique (a GeneXpert sends the assay
      in component 4, the analyte in 7 and ``Ct``/``EndPt`` in 8: component 7 with suffix (8,)
      gives ``rpoB1^Ct``).

    Values:

    - ``decimal_comma``: numbers are written with a decimal comma (``7,41``; Euroimmun). A value
      with exactly one comma and no point is read as a number; ``value_text`` keeps the comma.

    Control runs (an order and its results become a ``QcRun``, never a patient report, when any
    one of these holds; compared case-insensitively):

    - ``qc_processing_ids``: H-12 processing ids meaning the whole message is quality control
      (LIS2-A2 defines ``Q``; Horiba Yumizen sends it).
    - ``qc_action_codes``: O-12 action codes meaning the order is a control (LIS2-A2 ``Q``: treat
      the specimen as a QC test specimen).
    - ``qc_specimen_markers``: text that, found anywhere in O-16 (specimen descriptor), marks a
      control (Horiba writes ``CTRL^^CTRL MEDIUM``).
    - ``qc_sample_prefixes``: sample ids starting with one of these are controls (for analyzers
      that mark controls only by a reserved sample number range, e.g. ``QC``). Empty by default:
      a prefix is site configuration, and a wrong one would hide patient results.
    - ``qc_lot_from_sample_id``: the specimen id of a control run is its lot number (Horiba
      Yumizen sends the control blood's lot, ``PX440N``, as the sample id).

    Identifiers:

    - ``sample_id_fields``: the O fields tried, in order, for the sample id (the report's
      accession): O-3 (specimen id, what the host assigned) then O-4 (instrument specimen id;
      Sysmex puts its sample number there, ``^^   27^M``). In each the first non-empty component
      counts.
    - ``patient_id_fields``: the P fields tried, in order, for the PMS patient id: P-3 (practice
      assigned), P-4 (laboratory assigned), P-5 (patient id no. 3; Sysmex's patient id). A
      15-digit number is taken as a microchip (ISO 11784/11785), not as the PMS id.
    - ``query_sample_component``: the component of Q-3 (starting range id) holding the specimen id.
      None (auto): component 2, as LIS2-A2 lays it out (``patient id^specimen id^…``), else the
      first non-empty one.

    Species: LIS2-A2 has no species field, and veterinary analyzers put it in different places.

    - ``species_field``, ``breed_field``: the P field (first component) holding the species or
      breed as text, when the analyzer's manual names one (e.g. 15 or 16, the "special fields").
      None by default: guessing would attach a value of another meaning as the species. A result
      named ``SPECIES``/``BREED`` (as in ``parse/oru.py``) is read whatever these say.
    """

    test_code_component: int | None = None
    test_code_suffix_components: tuple[int, ...] = ()
    decimal_comma: bool = False
    qc_processing_ids: frozenset[str] = frozenset({"Q"})
    qc_action_codes: frozenset[str] = frozenset({"Q"})
    qc_specimen_markers: frozenset[str] = frozenset({"CTRL", "CONTROL", "QC"})
    qc_sample_prefixes: tuple[str, ...] = ()
    qc_lot_from_sample_id: bool = False
    sample_id_fields: tuple[int, ...] = (3, 4)
    patient_id_fields: tuple[int, ...] = (3, 4, 5)
    query_sample_component: int | None = None
    species_field: int | None = None
    breed_field: int | None = None

    def __post_init__(self) -> None:
        numbers = {
            "test_code_component": (self.test_code_component,),
            "test_code_suffix_components": self.test_code_suffix_components,
            "sample_id_fields": self.sample_id_fields,
            "patient_id_fields": self.patient_id_fields,
            "query_sample_component": (self.query_sample_component,),
            "species_field": (self.species_field,),
            "breed_field": (self.breed_field,),
        }
        for name, values in numbers.items():
            for value in values:
                if value is not None and (isinstance(value, bool) or value < 1):
                    raise ConfigError(f"ASTM dialect: {name} must be 1 or more, not {value!r}")
        for name in ("qc_processing_ids", "qc_action_codes", "qc_specimen_markers"):
            words: frozenset[str] = getattr(self, name)
            if any(not w.strip() for w in words):
                raise ConfigError(f"ASTM dialect: {name} holds an empty text, which marks all")
            # compared upper case: stored so, once
            object.__setattr__(self, name, frozenset(w.strip().upper() for w in words))
        if any(not p.strip() for p in self.qc_sample_prefixes):
            raise ConfigError("ASTM dialect: qc_sample_prefixes holds an empty prefix")
        prefixes = tuple(p.strip().upper() for p in self.qc_sample_prefixes)
        object.__setattr__(self, "qc_sample_prefixes", prefixes)
