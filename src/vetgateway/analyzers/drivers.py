"""The driver registry: an analyzer model → its line framing, its parser dialect and its code map.

A device row names its driver (``devices.driver``, from ``[[analyzers]] driver = …``). The line
runner asks the driver for a fresh line station per connection (``station()``), and the pipeline
asks it to parse a stored message (``parse(raw)``) and for the code map's source key
(``source``), so an analyzer model's quirks live in one entry here instead of in if-statements
across the adapters and the pipeline.

Shipped drivers:

- ``generic_astm``: LIS1-A link, LIS2-A2 records, the manufacturer's code in the fourth component
  of the universal test id (or the first non-empty one). Codes map through the code map whose
  source is the analyzer's sender id (H-5), upper case, as HL7 senders' do.
- ``horiba_yumizen_h500``: Horiba Yumizen H500 haematology (also sold for veterinary use), whose
  test ids read ``^^^WBC^804-5^1`` (code, LOINC, dilution) and whose QC runs carry processing id
  ``Q``; code map ``mappings_horiba_yumizen_h500.toml``.
- ``sysmex_xn_v``: Sysmex XN-V (the veterinary XN series), test ids ``^^^^WBC^1``; code map
  ``mappings_sysmex_xn_v.toml``.
- ``arkray_spotchem_el``: Arkray SPOTCHEM EL electrolytes, a plain-text print-out between STX
  and ETX, no acknowledgement; code map ``mappings_arkray_spotchem_el.toml``.

The code lists come from those analyzers' LIS output as published in sample transmissions (see
each mapping file's description); the vendor manuals' full lists should be checked on site.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, tzinfo

from vetgateway.adapters.analyzer.station import LineStation
from vetgateway.adapters.astm.e1381 import MessageEnd
from vetgateway.adapters.astm.station import AstmStation
from vetgateway.adapters.plaintext.framer import SPOTCHEM_EL_FRAMING, PlainTextFramer, TextFraming
from vetgateway.errors import ConfigError
from vetgateway.model import AnalyzerMessage
from vetgateway.pipeline.parse.astm import AstmDialect, parse_astm
from vetgateway.pipeline.parse.plaintext import SPOTCHEM_EL, TextTemplate, parse_text
from vetgateway.store.models import DeviceProtocol

__all__ = ["DRIVERS", "Driver", "driver_named"]


@dataclass(frozen=True, slots=True)
class Driver:
    """One analyzer model. Exactly one of ``dialect`` (ASTM) and ``template`` (plain text)."""

    name: str
    description: str
    model: str  # the device row's model: manufacturer and model as a person would write them
    source: str | None = None  # the code map's source key; None: the sender id (H-5)
    message_end: MessageEnd = MessageEnd.TERMINATOR_RECORD
    # Ask the analyzer for the line when a host-query answer waits (LIS1-A receiver interrupt);
    # only for models known to honour it.
    interrupt_to_reply: bool = False
    dialect: AstmDialect | None = None
    framing: TextFraming | None = None
    template: TextTemplate | None = None

    @property
    def protocol(self) -> DeviceProtocol:
        return DeviceProtocol.ASTM if self.dialect is not None else DeviceProtocol.PLAIN_TEXT

    def station(self) -> LineStation:
        """A fresh line station for one connection or port opening."""
        if self.framing is not None:
            return PlainTextFramer(self.framing)
        return AstmStation(self.message_end, interrupt_to_reply=self.interrupt_to_reply)

    def parse(self, raw: bytes, *, zone: tzinfo = UTC) -> AnalyzerMessage:
        """The stored message in canonical form, its clock read in ``zone``; raises
        ``ParseError``."""
        if self.template is not None:
            return parse_text(raw, self.template, clock_tz=zone)
        return parse_astm(raw, self.dialect or AstmDialect(), zone=zone)


def _registry(*drivers: Driver) -> dict[str, Driver]:
    return {d.name: d for d in drivers}


DRIVERS: dict[str, Driver] = _registry(
    Driver(
        name="generic_astm",
        description="any LIS1-A/LIS2-A2 analyzer; codes mapped by its sender id",
        model="ASTM analyzer (generic)",
        dialect=AstmDialect(),
    ),
    Driver(
        name="horiba_yumizen_h500",
        description="Horiba Yumizen H500 haematology (ASTM)",
        model="Horiba Yumizen H500",
        source="HORIBA_YUMIZEN_H500",
        dialect=AstmDialect(qc_lot_from_sample_id=True),
    ),
    Driver(
        name="sysmex_xn_v",
        description="Sysmex XN-V veterinary haematology (ASTM)",
        model="Sysmex XN-V",
        source="SYSMEX_XN_V",
        dialect=AstmDialect(),
    ),
    Driver(
        name="arkray_spotchem_el",
        description="Arkray SPOTCHEM EL electrolytes (plain-text print-out)",
        model="Arkray SPOTCHEM EL",
        source="ARKRAY_SPOTCHEM_EL",
        framing=SPOTCHEM_EL_FRAMING,
        template=SPOTCHEM_EL,
    ),
)


def driver_named(name: str | None, *, error: Callable[[str], Exception] = ConfigError) -> Driver:
    """The driver called ``name`` (None: ``generic_astm``); unknown names raise ``error``."""
    found = DRIVERS.get(name or "generic_astm")
    if found is None:
        known = ", ".join(sorted(DRIVERS))
        raise error(f"unknown analyzer driver {name!r}; known drivers: {known}")
    return found
