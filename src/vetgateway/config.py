"""Settings, validated once at start-up and then passed to whoever needs them.

Sources, highest precedence first: keyword arguments (tests), ``VETGATEWAY_*`` environment
variables, the TOML file named by ``VETGATEWAY_CONFIG``, then the defaults below, which are the
embedded single-box set-up (SQLite under ``var/``, in-process worker, listeners on loopback).
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from vetgateway.analyzers.config import AnalyzerConfig, ContactConfig
from vetgateway.errors import ConfigError
from vetgateway.event_loop import EventLoopChoice
from vetgateway.pipeline.mapping import source_key
from vetgateway.pipeline.parse.sources import PmsIdFrom, PmsIdRule, SourceProfile, SourceProfiles
from vetgateway.zones import ZoneName, zone_named

ENV_PREFIX = "VETGATEWAY_"

Port = int


class _TomlFileSource(PydanticBaseSettingsSource):
    """Reads the TOML file named by ``VETGATEWAY_CONFIG``; unknown keys are refused (typos)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        if path is None:
            return
        try:
            with path.open("rb") as fh:
                self._data = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"VETGATEWAY_CONFIG: file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"VETGATEWAY_CONFIG: {path} is not valid TOML: {exc}") from exc

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


_LOCALTIME = Path("/etc/localtime")


def host_zone() -> tzinfo:
    """This host's time zone, as the clinic's clock shows it: ``TZ`` when it names a zone, else
    the zone ``/etc/localtime`` links to (or holds), else UTC (Windows without ``TZ``: set
    ``VETGATEWAY_TIMEZONE``). A fixed offset (``datetime.now().astimezone()``) would not do:
    it is wrong for half the year where daylight saving applies."""
    name = os.environ.get("TZ", "").removeprefix(":")
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass  # a POSIX rule ("CET-1CEST") or a stray value: fall through
    try:
        target = str(_LOCALTIME.resolve())
        if "/zoneinfo/" in target:
            return ZoneInfo(target.rsplit("/zoneinfo/", 1)[1])
        with _LOCALTIME.open("rb") as data:
            return ZoneInfo.from_file(data, key="localtime")
    except (OSError, ZoneInfoNotFoundError, ValueError):
        return UTC


class Hl7SourceConfig(BaseModel):
    """How one HL7 sender's messages are read where HL7 leaves it to local agreement
    (``pipeline/parse/sources.py``). In the TOML file::

        [[hl7_sources]]
        source = "IDEXX"               # MSH-4's namespace id, else MSH-3's (as code maps name it)
        timezone = "America/New_York"  # its times without an offset; empty: the gateway's
        pms_id = "authority"           # type_code (default), untyped or authority
        pms_id_authority = "SMITHVET"  # for authority: the assigning authority (CX-4) of ours
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(min_length=1, max_length=64)
    timezone: ZoneName = ""
    pms_id: PmsIdFrom = "type_code"
    pms_id_authority: str = Field(default="", max_length=227)

    @field_validator("source")
    @classmethod
    def _as_maps_name_it(cls, value: str) -> str:
        key = source_key(value, "")
        if not key or key != value.strip().upper():
            raise ValueError(
                f"source {value!r}: one name as MSH-4's (or MSH-3's) first component sends it,"
                " such as IDEXX"
            )
        return key

    @model_validator(mode="after")
    def _authority_named(self) -> Hl7SourceConfig:
        if (self.pms_id == "authority") != bool(self.pms_id_authority.strip()):
            raise ValueError(
                f"source {self.source!r}: pms_id_authority is set exactly when pms_id is"
                ' "authority"'
            )
        return self

    def profile(self) -> SourceProfile:
        return SourceProfile(
            zone=zone_named(self.timezone) if self.timezone else None,
            pms_id=PmsIdRule(self.pms_id, self.pms_id_authority.strip()),
        )


class Settings(BaseSettings):
    """Everything the gateway needs to start. See CONVENTIONS.md §3 for the outside contract."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    config: Path | None = Field(default=None, description="TOML file with further settings")
    data_dir: Path = Field(default=Path("var"), description="where embedded data lives")
    database_url: str = Field(default="", description="empty = SQLite under data_dir")
    broker_url: str = Field(default="", description="empty = in-process worker")
    bind: str = "127.0.0.1"
    http_port: Port = Field(default=8080, ge=0, le=65535)
    mllp_port: Port = Field(default=2575, ge=0, le=65535)
    astm_port: Port = Field(default=5001, ge=0, le=65535)
    dicom_port: Port = Field(default=11112, ge=0, le=65535)
    log_level: str = "INFO"
    # The clinic's time zone (an IANA name: "America/Chicago"); empty: this host's. Times that
    # carry no offset (analyzers' clocks always, HL7 often) are read in it; see ``zone``.
    timezone: ZoneName = ""
    # auto: uvloop where installed, else asyncio's loop (see event_loop.py)
    event_loop: EventLoopChoice = "auto"
    # HL7 v2 over MLLP (see adapters/mllp/server.py for what each limit guards against)
    mllp_max_message_size: int = Field(default=16 * 1024 * 1024, ge=1024)
    mllp_frame_timeout: float = Field(default=30.0, gt=0)
    mllp_idle_timeout: float = Field(default=600.0, gt=0)
    mllp_max_connections: int = Field(default=512, ge=1)
    mllp_max_connections_per_peer: int = Field(default=64, ge=1)
    mllp_tls_cert: Path | None = None
    mllp_tls_key: Path | None = None
    mllp_tls_client_ca: Path | None = Field(default=None, description="set: mutual TLS")
    # What HL7 channels accept; anything else is answered AR and quarantined.
    hl7_accepted_types: tuple[str, ...] = ("ORU^R01", "ORM^O01", "OML^O21")
    hl7_processing_ids: tuple[str, ...] = ("P",)
    hl7_default_encoding: str = "utf-8"
    # HL7 batch files (adapters/filedrop.py): <data_dir>/inbox/hl7/ is always watched, these too.
    hl7_drop_dirs: tuple[Path, ...] = Field(default=(), description='JSON list in the env: ["/a"]')
    file_settle_seconds: float = Field(default=2.0, ge=0, description="unchanged this long: read")
    file_poll_seconds: float = Field(default=1.0, gt=0)
    intake_threads: int = Field(default=64, ge=1, le=1024)
    db_pool_size: int = Field(default=10, ge=1, le=200)
    inbox_max_batch: int = Field(default=256, ge=1, le=10_000)
    # None: 2 on PostgreSQL, 1 on SQLite (store/inbox.py says why)
    inbox_commit_slots: int | None = Field(default=None, ge=1, le=16)
    # The pipeline (pipeline/dispatch.py, pipeline/process.py): the database is the queue of
    # record; a message handed to the broker is not handed out again for ``lease`` seconds, a
    # failed attempt waits ``backoff * 2**(attempt-1)`` (at most ``backoff_max``), and after
    # ``max_attempts`` the message is quarantined with its last error.
    pipeline_lease_seconds: float = Field(default=60.0, gt=0)
    pipeline_max_attempts: int = Field(default=5, ge=1, le=100)
    pipeline_backoff_seconds: float = Field(default=5.0, gt=0)
    pipeline_backoff_max_seconds: float = Field(default=900.0, gt=0)
    pipeline_poll_seconds: float = Field(default=1.0, gt=0)
    pipeline_batch_size: int = Field(default=50, ge=1, le=1000, description="ids per actor call")
    # How long new work gathers before it is dispatched, and threads per worker. Measured on 2
    # cores (bench/mllp.py, bench/pipeline.py): batches of a fifth of a second and one thread keep
    # the in-process pipeline from starving the ACKs, and process more per second, not fewer.
    pipeline_linger_seconds: float = Field(default=0.2, ge=0, le=5)
    worker_threads: int = Field(default=1, ge=1, le=64)
    # The broker queue pipeline ids travel on; give each installation sharing a broker its own.
    broker_queue: str = Field(default="vetgateway.pipeline", pattern=r"^[A-Za-z0-9_.\-]{1,200}$")
    # Critical-value alerts and paging (issue 5). A critical result for the same patient and test
    # within ``alert_merge_minutes`` updates the open alert instead of opening another.
    alert_merge_minutes: float = Field(default=60.0, gt=0)
    escalation_timeout_seconds: float = Field(default=300.0, gt=0, description="per level")
    pager_poll_seconds: float = Field(default=0.25, gt=0)
    # Alerts without a clinic (most reports today) use this clinic's rota (clinics.code).
    default_clinic: str = "main"
    # On-call rota and veterinarians' contacts as TOML, loaded at start (see store/oncall.py).
    oncall_file: Path | None = None
    # Public base URL of the HTTP API, for acknowledge links in pages; empty = http://BIND:PORT.
    public_url: str = ""
    # HMAC key for acknowledge links and webhook signatures; empty = generated under data_dir.
    signing_key: str = Field(default="", repr=False)
    ack_link_ttl_hours: float = Field(default=24.0, gt=0)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    smtp_host: str = ""
    smtp_port: Port = Field(default=25, ge=0, le=65535)
    smtp_username: str = ""
    smtp_password: str = Field(default="", repr=False)
    smtp_from: str = "vetgateway@localhost"
    smtp_timeout_seconds: float = Field(default=10.0, gt=0)
    # SMS through an HTTP gateway: a POST to ``sms_url`` with ``sms_body_template`` filled in
    # ({to}, {text} JSON-escaped), header ``Authorization: sms_authorization`` when set.
    sms_url: str = ""
    sms_body_template: str = '{{"to": "{to}", "text": "{text}"}}'
    sms_authorization: str = Field(default="", repr=False)
    # In-house analyzers (analyzers/config.py): their lines, drivers and quiet limits; where an
    # analyzer gone silent is reported; and when the silence watch counts (analyzers/hours.py:
    # "mon-fri 08:00-18:00, sat 09:00-12:00" in the clinic's time zone; empty = always).
    analyzers: tuple[AnalyzerConfig, ...] = ()
    it_contacts: tuple[ContactConfig, ...] = ()
    opening_hours: str = ""
    opening_hours_timezone: ZoneName = ""  # empty: ``timezone``
    silence_check_seconds: float = Field(default=30.0, gt=0)
    # Matching by patient identifiers only considers orders placed this many days before a report.
    match_window_days: int = Field(default=30, ge=1, le=3650)
    # HL7 senders read other than by default: their time zone, which identifier is the PMS id.
    hl7_sources: tuple[Hl7SourceConfig, ...] = ()

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if value and not value.startswith(("sqlite", "postgresql")):
            raise ValueError("must be sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB")
        return value

    @field_validator("broker_url")
    @classmethod
    def _known_broker(cls, value: str) -> str:
        if value and not value.startswith(("amqp://", "amqps://", "redis://", "rediss://")):
            raise ValueError("must be empty (in-process), amqp://… (RabbitMQ) or redis://… (Redis)")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return level

    @model_validator(mode="after")
    def _analyzers_distinct(self) -> Settings:
        names = [a.name for a in self.analyzers]
        if len(set(names)) != len(names):
            raise ValueError(f"{ENV_PREFIX}ANALYZERS: two analyzers share a name")
        senders = [a.sender_id for a in self.analyzers if a.connection == "listener"]
        if len(set(senders)) != len(senders):
            raise ValueError(f"{ENV_PREFIX}ANALYZERS: two listener analyzers share a sender_id")
        lines = [
            a.serial_port if a.connection == "serial" else f"{a.host}:{a.port}"
            for a in self.analyzers
            if a.connection != "listener"
        ]
        if len(set(lines)) != len(lines):
            raise ValueError(
                f"{ENV_PREFIX}ANALYZERS: two analyzers on one serial port or converter address; "
                "analyzers sharing a converter go on the listener, told apart by sender_id"
            )
        return self

    @model_validator(mode="after")
    def _hl7_sources_distinct(self) -> Settings:
        sources = [s.source for s in self.hl7_sources]
        if len(set(sources)) != len(sources):
            raise ValueError(f"{ENV_PREFIX}HL7_SOURCES: two entries name the same source")
        return self

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.mllp_tls_cert is None) != (self.mllp_tls_key is None):
            raise ValueError(f"{ENV_PREFIX}MLLP_TLS_CERT and {ENV_PREFIX}MLLP_TLS_KEY go together")
        if self.mllp_tls_client_ca is not None and self.mllp_tls_cert is None:
            raise ValueError(f"{ENV_PREFIX}MLLP_TLS_CLIENT_CA needs a certificate and key too")
        return self

    @property
    def effective_database_url(self) -> str:
        """The database to use: the configured one, else SQLite in the data directory."""
        return self.database_url or f"sqlite:///{self.data_dir / 'vetgateway.db'}"

    @property
    def zone(self) -> tzinfo:
        """The clinic's time zone: ``timezone``, else this host's (``host_zone``)."""
        return zone_named(self.timezone) if self.timezone else host_zone()

    @property
    def source_profiles(self) -> SourceProfiles:
        """``hl7_sources`` and the analyzers' own zones, as the parsers take them."""
        return SourceProfiles(
            {s.source: s.profile() for s in self.hl7_sources},
            {a.name: zone_named(a.timezone) for a in self.analyzers if a.timezone},
        )

    @property
    def opening_hours_zone(self) -> tzinfo:
        return zone_named(self.opening_hours_timezone) if self.opening_hours_timezone else self.zone

    @property
    def is_embedded_database(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = os.environ.get(f"{ENV_PREFIX}CONFIG")
        toml = _TomlFileSource(settings_cls, Path(path) if path else None)
        return (init_settings, env_settings, toml)


def load_settings(**overrides: Any) -> Settings:
    """Build and validate the settings, or raise ConfigError with one line naming the setting."""
    try:
        return Settings(**overrides)
    except SettingsError as exc:  # e.g. a JSON list setting in the environment that is not JSON
        found = re.search(r'field "(\w+)"', str(exc))
        name = f"{ENV_PREFIX}{found.group(1).upper()}" if found else "a setting"
        raise ConfigError(
            f"{name}: not valid JSON (list settings in the environment are JSON)"
        ) from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        if not first["loc"]:  # a rule across settings; its message names them
            raise ConfigError(message) from exc
        name = ".".join(str(part) for part in first["loc"])
        value = first.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        raise ConfigError(f"{ENV_PREFIX}{name.upper()}: {message}{shown}") from exc
