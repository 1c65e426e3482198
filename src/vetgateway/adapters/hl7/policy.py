"""Which messages a channel accepts: message type and event, version, processing id.

HL7 v2.5.1 §2.9.2.2 (original mode) and §2.9.3 (enhanced mode): the receiver checks MSH-9, MSH-12
and MSH-11, and rejects what it does not support with AR (CR in enhanced mode), not AE: the message
may be perfectly valid, it is just not for this receiver. Codes from HL7 table 0357: 200
unsupported message type, 201 unsupported event code, 202 unsupported processing id, 203
unsupported version id (R20). They run in the standard's order (type and event, version,
processing id); the first failure is raised.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from vetgateway.adapters.hl7.header import MshHeader
from vetgateway.adapters.hl7.rejection import ErrorCode, HeaderError

__all__ = ["DEFAULT_PROCESSING_IDS", "DEFAULT_VERSIONS", "check_supported"]

DEFAULT_VERSIONS: Final = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8")
DEFAULT_PROCESSING_IDS: Final = ("P",)


def _listing(values: Collection[str]) -> str:
    return ", ".join(sorted(values))


def check_supported(
    header: MshHeader,
    *,
    accepted_types: Collection[str],
    accepted_versions: Collection[str] = DEFAULT_VERSIONS,
    processing_ids: Collection[str] = DEFAULT_PROCESSING_IDS,
) -> None:
    """Raise ``HeaderError`` (code 200-203, implying AR/CR) unless the channel takes this message.

    ``accepted_types`` holds ``"CODE^EVENT"`` entries (``"ORU^R01"``), or a bare ``"CODE"`` for
    every event of that code; they are compared case-insensitively, with ``^`` as written here
    whatever the message's component separator. A production port takes processing id P only; a
    test port is configured with ``("T",)`` or ``("D", "T")`` (HL7 table 0103, R20).
    """
    code, event = header.message_code.upper(), header.trigger_event.upper()
    accepted = {t.strip().upper() for t in accepted_types}
    codes = {t.split("^", 1)[0] for t in accepted}
    if code not in codes:
        raise HeaderError(
            f"message type {code!r} (MSH-9) is not accepted on this channel; "
            f"accepted: {_listing(accepted)}",
            code=ErrorCode.UNSUPPORTED_MESSAGE_TYPE,
            field=9,
            component=1,
            header=header,
        )
    if code not in accepted and f"{code}^{event}" not in accepted:
        raise HeaderError(
            f"event {event or '(empty)'!r} of message type {code} (MSH-9.2) is not accepted on "
            f"this channel; accepted: {_listing(accepted)}",
            code=ErrorCode.UNSUPPORTED_EVENT_CODE,
            field=9,
            component=2,
            header=header,
        )
    if header.version_id not in accepted_versions:
        raise HeaderError(
            f"HL7 version {header.version_id!r} (MSH-12) is not supported; "
            f"supported: {', '.join(accepted_versions)}",
            code=ErrorCode.UNSUPPORTED_VERSION_ID,
            field=12,
            header=header,
        )
    pid = header.processing_id_code.upper()
    if pid not in {p.upper() for p in processing_ids}:
        meaning = {"P": "production", "T": "training/test", "D": "debugging"}.get(pid, "unknown")
        raise HeaderError(
            f"processing ID {pid!r} ({meaning}, MSH-11) is not accepted on this port, which "
            f"takes {_listing(processing_ids)}; send test messages to the test port",
            code=ErrorCode.UNSUPPORTED_PROCESSING_ID,
            field=11,
            header=header,
        )
