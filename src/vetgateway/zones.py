"""Time zones named in settings: one check, so every setting that names a zone refuses a bad
name with the same advice."""

from __future__ import annotations

from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator

__all__ = ["ZoneName", "zone_named"]


def zone_named(name: str) -> ZoneInfo:
    """The IANA zone ``name``; ValueError, saying what to write instead, when it is not one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{name!r} is not a time zone name; use an IANA name such as America/Chicago or"
            " Europe/Berlin, or leave it empty for this host's zone"
        ) from None


def _empty_or_zone(name: str) -> str:
    if name:
        zone_named(name)
    return name


# A setting naming a time zone: an IANA name, or empty for a default the setting says.
ZoneName = Annotated[str, AfterValidator(_empty_or_zone)]
