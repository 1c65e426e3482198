"""What a sender's HL7 does not say about itself, told per source by the operator.

Two things HL7 v2 leaves to local agreement decide whether a result reaches the right animal at
the right time:

- **Which identifier is the clinic's.** PID-3 may carry the practice-management (PMS) number,
  the lab's own accession-patient number, a microchip, or several of them. By default the PMS
  id is the first of type PI or PT, else the first MR (``parse/oru.py``). A lab that echoes the
  clinic's number with no type code, or marks it by assigning authority, is configured so;
  guessing instead (taking any bare number) would file one animal's results under another's
  number wherever the two numbering schemes overlap.
- **Whose clock a time without an offset is read on.** HL7 says the sender's local time; a
  reference lab in another time zone than the clinic sends times that are hours off unless its
  zone is known. So does an analyzer (which never sends an offset) in another clinic's zone
  than the gateway's.

A rule *replaces* the default rather than adding to it: a source configured to put the PMS id
under an authority gives none when a message lacks it, so the report is matched by microchip or
accession, or waits in the unmatched queue, instead of taking the lab's own number for ours.

Pure data and lookups; ``config.Hl7SourceConfig`` and ``AnalyzerConfig.timezone`` are where
operators write them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Final, Literal

from vetgateway.model import Identifier
from vetgateway.pipeline.mapping import source_key

__all__ = [
    "DEFAULT_PROFILE",
    "NO_PROFILES",
    "PmsIdFrom",
    "PmsIdRule",
    "SourceProfile",
    "SourceProfiles",
]

# type_code: PI or PT, else MR; untyped: an identifier with no type code; authority: one whose
# assigning authority is the rule's.
PmsIdFrom = Literal["type_code", "untyped", "authority"]

_PREFERRED_TYPES: Final = ("PI", "PT")
_RECORD_TYPE: Final = "MR"


@dataclass(frozen=True, slots=True)
class PmsIdRule:
    """Which PID-2/3/4 identifier is the clinic's PMS patient id (module docstring)."""

    taken_from: PmsIdFrom = "type_code"
    # For ``authority``: compared without regard to case with the identifier's assigning
    # authority, its namespace id or else its universal id (CX-4).
    authority: str = ""

    def __post_init__(self) -> None:
        if (self.taken_from == "authority") != bool(self.authority.strip()):
            raise ValueError("an authority is named exactly when the PMS id is taken by authority")

    def pick(self, identifiers: Sequence[Identifier]) -> str | None:
        """The PMS id among ``identifiers`` (in message order), or None."""
        if self.taken_from == "untyped":
            return next((i.value for i in identifiers if i.type_code is None), None)
        if self.taken_from == "authority":
            wanted = self.authority.strip().casefold()
            return next(
                (i.value for i in identifiers if (i.authority or "").casefold() == wanted), None
            )
        for types in (_PREFERRED_TYPES, (_RECORD_TYPE,)):
            for identifier in identifiers:
                if identifier.type_code in types:
                    return identifier.value
        return None


@dataclass(frozen=True, slots=True)
class SourceProfile:
    """How to read one source's messages where HL7 leaves it to local agreement."""

    zone: tzinfo | None = None  # None: the gateway's (``Settings.zone``)
    pms_id: PmsIdRule = field(default_factory=PmsIdRule)


DEFAULT_PROFILE: Final = SourceProfile()


@dataclass(frozen=True, slots=True)
class SourceProfiles:
    """HL7 profiles by source, the key code maps use too (``mapping.source_key``: MSH-4's
    namespace id, else MSH-3's, upper case); a source without one is read by
    ``DEFAULT_PROFILE``. And the zones of analyzers whose clocks are not on the gateway's, by
    the device name their stored messages carry (``store.devices.device_meta``)."""

    by_source: Mapping[str, SourceProfile] = field(default_factory=dict)
    analyzer_zones: Mapping[str, tzinfo] = field(default_factory=dict)

    def for_sender(self, sending_facility: str, sending_application: str) -> SourceProfile:
        if not self.by_source:
            return DEFAULT_PROFILE
        key = source_key(sending_facility, sending_application)
        return self.by_source.get(key, DEFAULT_PROFILE)

    def analyzer_zone(self, device: object) -> tzinfo | None:
        """The zone of the analyzer named ``device``, or None: the gateway's."""
        return self.analyzer_zones.get(device) if isinstance(device, str) else None


NO_PROFILES: Final = SourceProfiles()
