"""How an installation describes its analyzers and its IT contact (the ``[[analyzers]]`` and
``[[it_contacts]]`` tables of the TOML config, or JSON lists in the environment).

One entry is one device row (``store.devices.sync_devices`` keeps the table in step at start-up):

.. code-block:: toml

    [[analyzers]]
    name = "Chemistry bench"
    driver = "generic_astm"           # see analyzers.drivers.DRIVERS
    connection = "listener"           # dials in to port 5001; told apart by its H-record sender id
    sender_id = "CHEM1"
    quiet_minutes = 120               # silence watch: alert IT after two quiet opening hours
    timezone = "America/Denver"       # its clock's zone, when not the gateway's

    [[analyzers]]
    name = "Haematology"
    driver = "horiba_yumizen_h500"
    connection = "serial"
    serial_port = "/dev/ttyUSB0"
    baudrate = 9600

    [[analyzers]]
    name = "Blood gas"
    connection = "tcp_client"         # a converter that waits to be dialled
    host = "192.0.2.40"
    port = 4001

A device on a dedicated line (serial, or a converter we dial) is known by its line, so its sender
id is only checked, never needed; on the shared listener the sender id is the only way to tell
analyzers apart, so an unknown one is stored and flagged, never guessed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vetgateway.zones import ZoneName

__all__ = ["AnalyzerConfig", "ContactConfig"]


class AnalyzerConfig(BaseModel):
    """One analyzer and its line."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    driver: str = "generic_astm"
    connection: Literal["listener", "tcp_client", "serial"] = "listener"
    sender_id: str | None = Field(default=None, max_length=200)
    clinic: str | None = None
    # tcp_client: the converter's address
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    # serial: the port and its line settings (the analyzer's LIS menu shows them)
    serial_port: str | None = None
    baudrate: int = Field(default=9600, ge=50, le=4_000_000)
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["N", "E", "O", "M", "S"] = "N"
    stopbits: float = Field(default=1, description="1, 1.5 or 2")
    xonxoff: bool = False
    rtscts: bool = False
    # silence watch: alert when nothing came for this long during opening hours (None: never)
    quiet_minutes: float | None = Field(default=None, gt=0)
    # The zone its clock is set to (an IANA name); empty: the gateway's (VETGATEWAY_TIMEZONE).
    # An analyzer prints local times without an offset, so one in another clinic's zone than
    # the gateway's is read hours off unless this says where it stands.
    timezone: ZoneName = ""

    @model_validator(mode="after")
    def _stopbits(self) -> AnalyzerConfig:
        if self.stopbits not in (1, 1.5, 2):
            raise ValueError(f"analyzer {self.name!r}: stopbits is 1, 1.5 or 2")
        return self

    @model_validator(mode="after")
    def _line_complete(self) -> AnalyzerConfig:
        if self.connection == "listener" and not self.sender_id:
            raise ValueError(
                f"analyzer {self.name!r}: a listener analyzer needs its sender_id (H-5), "
                "the only way to tell analyzers on one listener apart"
            )
        if self.connection == "tcp_client" and (not self.host or self.port is None):
            raise ValueError(f"analyzer {self.name!r}: tcp_client needs host and port")
        if self.connection == "serial" and not self.serial_port:
            raise ValueError(f"analyzer {self.name!r}: serial needs serial_port")
        return self


class ContactConfig(BaseModel):
    """Where operational alerts (an analyzer gone silent) go: the practice's IT contact."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["email", "sms", "webhook"]
    address: str = Field(min_length=1, max_length=500)
