"""What a refused HL7 v2 message carries back to its sender: code, location, reason, AE or AR.

HL7 v2.5.1 §2.14.5 (ERR) and table 0357 give the codes; §2.9.2.2 and table 0008 say which imply a
reject (AR/CR: the receiver does not support the message type, event, processing id or version, or
failed for reasons unrelated to the content) and which an error (AE/CE: the content is wrong).
``HeaderError`` is raised by ``header.read_header`` and ``policy.check_supported``; ``ErrorDetail``
alone describes an ERR segment for failures that are not the message's fault (storage down).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from vetgateway.errors import ParseError

if TYPE_CHECKING:
    from vetgateway.adapters.hl7.header import MshHeader

__all__ = ["ErrorCode", "ErrorDetail", "HeaderError"]


class ErrorCode(enum.IntEnum):
    """HL7 table 0357, message error condition codes (HL7 v2.5.1 §2.14.5.3)."""

    SEGMENT_SEQUENCE_ERROR = 100
    REQUIRED_FIELD_MISSING = 101
    DATA_TYPE_ERROR = 102
    TABLE_VALUE_NOT_FOUND = 103
    UNSUPPORTED_MESSAGE_TYPE = 200
    UNSUPPORTED_EVENT_CODE = 201
    UNSUPPORTED_PROCESSING_ID = 202
    UNSUPPORTED_VERSION_ID = 203
    UNKNOWN_KEY_IDENTIFIER = 204
    DUPLICATE_KEY_IDENTIFIER = 205
    APPLICATION_RECORD_LOCKED = 206
    APPLICATION_INTERNAL_ERROR = 207

    @property
    def text(self) -> str:
        """The table's description, used as ERR-3.2."""
        return self.name.replace("_", " ").capitalize()

    @property
    def rejects(self) -> bool:
        """True when the code implies AR/CR (unsupported, or unrelated to content) not AE/CE."""
        return self in _REJECTING


_REJECTING: Final = frozenset(
    {
        ErrorCode.UNSUPPORTED_MESSAGE_TYPE,
        ErrorCode.UNSUPPORTED_EVENT_CODE,
        ErrorCode.UNSUPPORTED_PROCESSING_ID,
        ErrorCode.UNSUPPORTED_VERSION_ID,
        ErrorCode.APPLICATION_RECORD_LOCKED,
        ErrorCode.APPLICATION_INTERNAL_ERROR,
    }
)


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    """One ERR segment's worth: code, reason and location (ERR-2: segment^sequence^field^1^comp).

    ``segment=None`` means no location (e.g. storage unavailable, code 207).
    """

    code: ErrorCode
    reason: str
    segment: str | None = "MSH"
    sequence: int = 1
    field: int | None = None
    component: int | None = None

    @property
    def location_parts(self) -> tuple[str, ...]:
        """ERR-2 components; join them with the message's component separator."""
        if self.segment is None:
            return ()
        parts = [self.segment, str(self.sequence)]
        if self.field is not None:
            parts.append(str(self.field))
            if self.component is not None:
                parts += ["1", str(self.component)]
        return tuple(parts)

    @property
    def location(self) -> str:
        """The location written with the default component separator, e.g. ``MSH^1^10``."""
        return "^".join(self.location_parts)

    @property
    def ack_code(self) -> Literal["AE", "AR"]:
        """Original-mode code this error implies (HL7 v2.5.1 §2.9.2.2, table 0008)."""
        return "AR" if self.code.rejects else "AE"

    @property
    def commit_code(self) -> Literal["CE", "CR"]:
        """Enhanced-mode accept-acknowledgement code this error implies (§2.9.3)."""
        return "CR" if self.code.rejects else "CE"


class HeaderError(ParseError):
    """The message header is unusable or unsupported; everything the NAK needs is attached.

    ``detail`` holds the code and location, ``header`` what could be read (None when not even the
    delimiters could), ``ack_code``/``commit_code`` the AE/AR or CE/CR it implies.
    """

    def __init__(
        self,
        reason: str,
        *,
        code: ErrorCode,
        field: int | None = None,
        component: int | None = None,
        segment: str | None = "MSH",
        sequence: int = 1,
        header: MshHeader | None = None,
    ) -> None:
        detail = ErrorDetail(code, reason, segment, sequence, field, component)
        super().__init__(reason, location=detail.location or None)
        self.detail = detail
        self.code = code
        self.header = header

    @property
    def ack_code(self) -> Literal["AE", "AR"]:
        return self.detail.ack_code

    @property
    def commit_code(self) -> Literal["CE", "CR"]:
        return self.detail.commit_code
