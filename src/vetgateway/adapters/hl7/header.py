"""Read the MSH segment of a raw HL7 v2 message without parsing the rest (HL7 v2.5.1 §2.14.9).

The MLLP and HTTP adapters need just enough of a message to store it with its control id and to
acknowledge it: delimiters, the sender and receiver, message type, control id, processing id,
version, acknowledgement types and character set. ``read_header`` reads those, checks that the
whole message decodes in its character set, and raises ``HeaderError`` for anything else; no other
exception escapes it, whatever the bytes (see the hypothesis tests).

``HeaderError`` (defined in ``rejection``, re-exported here) carries what the ACK needs: the HL7
table 0357 error code, the ERR-2 location, a reason an interface analyst can act on, whether it
implies AE or AR (HL7 v2.5.1 §2.9.2.2: a message type, event, processing id or version the receiver
does not support → AR; a content error → AE), and the part of the header that could be read, so
the ACK can still swap the applications and echo MSH-10. When not even the delimiters could be
read, ``header`` is None.

Decisions: leading whitespace and a UTF-8 byte order mark before ``MSH`` are tolerated; segments
may end in CR, LF or CR LF; MSH-7 is read but not required (nothing here depends on it); bytes
invalid in the declared character set are a data type error (102, AE) located at their field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from vetgateway.adapters.hl7.charsets import codec_for, find_undecodable
from vetgateway.adapters.hl7.rejection import ErrorCode, ErrorDetail, HeaderError

__all__ = ["ErrorCode", "ErrorDetail", "HeaderError", "MshHeader", "read_header"]

ACK_CONDITIONS: Final = frozenset({"AL", "NE", "ER", "SU"})  # HL7 table 0155
_SEGMENT_END = re.compile(rb"[\r\n]")
_LEADING = b" \t\r\n"
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class MshHeader:
    """MSH fields as received (raw field strings, escapes not decoded), plus the codec used.

    ``encoding`` is the Python codec for MSH-18 (or the channel default when MSH-18 is empty);
    the ACK is encoded with it. The properties give stripped first components for comparisons.
    """

    field_separator: str
    encoding_characters: str
    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    timestamp: str = ""
    message_type: str = ""
    control_id: str = ""
    processing_id: str = ""
    version: str = ""
    accept_ack_type: str = ""
    application_ack_type: str = ""
    character_set: str = ""
    encoding: str = "utf-8"

    @property
    def component_separator(self) -> str:
        return self.encoding_characters[0]

    @property
    def repetition_separator(self) -> str:
        return self.encoding_characters[1]

    @property
    def escape_character(self) -> str:
        return self.encoding_characters[2]

    @property
    def subcomponent_separator(self) -> str:
        return self.encoding_characters[3]

    @property
    def truncation_character(self) -> str | None:
        """HL7 v2.7 §2.5.5.6: the optional fifth encoding character, normally ``#``."""
        return self.encoding_characters[4] if len(self.encoding_characters) > 4 else None

    def _component(self, value: str, index: int) -> str:
        parts = value.split(self.component_separator)
        return parts[index].strip() if index < len(parts) else ""

    @property
    def message_code(self) -> str:
        """MSH-9.1, e.g. ``ORU``."""
        return self._component(self.message_type, 0)

    @property
    def trigger_event(self) -> str:
        """MSH-9.2, e.g. ``R01``."""
        return self._component(self.message_type, 1)

    @property
    def message_structure(self) -> str:
        """MSH-9.3, e.g. ``ORU_R01`` (empty before v2.3.1)."""
        return self._component(self.message_type, 2)

    @property
    def processing_id_code(self) -> str:
        """MSH-11.1 (table 0103: D, P, T); MSH-11.2 is the processing mode."""
        return self._component(self.processing_id, 0)

    @property
    def version_id(self) -> str:
        """MSH-12.1, e.g. ``2.5.1``."""
        return self._component(self.version, 0)


def _preview(data: bytes) -> str:
    return data[:20].decode("ascii", "backslashreplace")


def _locate_msh(raw: bytes) -> bytes:
    """The MSH segment's bytes, or HeaderError(100) naming what was found instead."""
    body = raw[len(_BOM) :] if raw.startswith(_BOM) else raw
    body = body.lstrip(_LEADING)
    if body.startswith(b"MSH"):
        match = _SEGMENT_END.search(body)
        return body if match is None else body[: match.start()]
    if not body:
        reason = "the message is empty; an HL7 v2 message starts with an MSH segment"
    elif body[:3] in (b"FHS", b"BHS"):
        reason = (
            f"the message starts with {body[:3].decode()} (a batch); send one message per "
            "MLLP frame or HTTP request, or put batch files in the drop folder"
        )
    elif body[:6] in (b"M\x00S\x00H\x00", b"\xff\xfeM\x00") or body[:2] == b"\xfe\xff":
        reason = "the message looks UTF-16 encoded; send it as UTF-8 or 8859/1 and say so in MSH-18"
    else:
        reason = f"the message does not start with an MSH segment; it starts {_preview(body)!r}"
    raise HeaderError(reason, code=ErrorCode.SEGMENT_SEQUENCE_ERROR, segment="MSH", field=None)


def _is_delimiter(byte: int) -> bool:
    return 0x21 <= byte <= 0x7E and not chr(byte).isalnum()


def _delimiters(msh: bytes) -> tuple[str, str]:
    """MSH-1 and MSH-2, validated (HL7 v2.5.1 §2.5.4, v2.7 §2.5.5 for the truncation char)."""
    if len(msh) < 4:
        raise HeaderError(
            "MSH ends before MSH-1 (the field separator, normally '|')",
            code=ErrorCode.REQUIRED_FIELD_MISSING,
            field=1,
        )
    sep = msh[3]
    if not _is_delimiter(sep):
        raise HeaderError(
            f"MSH-1 (field separator) is {chr(sep)!r}; it must be a printable non-alphanumeric "
            "character right after 'MSH', normally '|'",
            code=ErrorCode.DATA_TYPE_ERROR,
            field=1,
        )
    enc = msh[4:].split(bytes([sep]), 1)[0]
    problem = None
    if not enc:
        problem = "is empty"
    elif len(enc) not in (4, 5):
        problem = f"has {len(enc)} characters"
    elif not all(_is_delimiter(b) for b in enc) or len(set(enc)) != len(enc):
        problem = "must be distinct printable non-alphanumeric characters"
    if problem is not None:
        hint = ""
        if sep != ord("|") and b"|" in msh:
            hint = (
                f"; MSH-1 is {chr(sep)!r} but the segment looks '|'-delimited: the field "
                "separator must be the character right after 'MSH'"
            )
        raise HeaderError(
            f"MSH-2 (encoding characters, normally '^~\\&') {problem}: "
            f"{enc[:8].decode('ascii', 'backslashreplace')!r}{hint}",
            code=ErrorCode.DATA_TYPE_ERROR if enc else ErrorCode.REQUIRED_FIELD_MISSING,
            field=2,
        )
    return chr(sep), enc.decode("ascii")


def _build(fields: list[str], sep: str, enc: str, charset: str, codec: str) -> MshHeader:
    def get(n: int) -> str:  # MSH-n; fields[0] is "MSH" and MSH-1 is the separator itself
        return fields[n - 1] if n - 1 < len(fields) else ""

    return MshHeader(
        field_separator=sep,
        encoding_characters=enc,
        sending_application=get(3),
        sending_facility=get(4),
        receiving_application=get(5),
        receiving_facility=get(6),
        timestamp=get(7),
        message_type=get(9),
        control_id=get(10),
        processing_id=get(11),
        version=get(12),
        accept_ack_type=get(15),
        application_ack_type=get(16),
        character_set=charset,
        encoding=codec,
    )


def _check_required(h: MshHeader) -> None:
    required = (
        (9, "message type, e.g. ORU^R01^ORU_R01", h.message_code),
        (10, "message control ID", h.control_id.strip()),
        (11, "processing ID, e.g. P", h.processing_id_code),
        (12, "version ID, e.g. 2.5.1", h.version_id),
    )
    for number, what, value in required:
        if not value:
            raise HeaderError(
                f"MSH-{number} ({what}) is empty; it is required",
                code=ErrorCode.REQUIRED_FIELD_MISSING,
                field=number,
                component=1 if number == 9 and h.message_type.strip() else None,
                header=h,
            )
    for number, value in ((15, h.accept_ack_type), (16, h.application_ack_type)):
        if value.strip() and value.strip().upper() not in ACK_CONDITIONS:
            raise HeaderError(
                f"MSH-{number} is {value.strip()!r}; HL7 table 0155 allows AL, NE, ER, SU or empty",
                code=ErrorCode.TABLE_VALUE_NOT_FOUND,
                field=number,
                header=h,
            )


def read_header(raw: bytes, *, default_encoding: str = "utf-8") -> MshHeader:
    """Read and check the MSH of ``raw``; raise ``HeaderError`` if the message is unusable.

    ``default_encoding`` (a Python codec name, the channel's setting) applies when MSH-18 is empty.
    The whole message must decode in the resulting character set, so later stages can rely on it.
    """
    msh = _locate_msh(raw)
    sep, enc = _delimiters(msh)
    byte_fields = msh.split(sep.encode("ascii"))
    msh18 = byte_fields[17].decode("ascii", "replace") if len(byte_fields) > 17 else ""
    charset = msh18.split(enc[1])[0].strip()
    codec = codec_for(charset) if charset else default_encoding
    if codec is None:
        fields = msh.decode(default_encoding, "replace").split(sep)
        raise HeaderError(
            f"MSH-18 character set {charset!r} is not supported; use UNICODE UTF-8, 8859/1 "
            "(Latin-1), 8859/15 or ASCII (HL7 table 0211)",
            code=ErrorCode.TABLE_VALUE_NOT_FOUND,
            field=18,
            header=_build(fields, sep, enc, msh18, default_encoding),
        )
    bad = find_undecodable(raw, codec, sep.encode("ascii"))
    fields = msh.decode(codec, "replace").split(sep)
    header = _build(fields, sep, enc, msh18, codec)
    if bad is not None:
        declared = f"MSH-18 is {charset!r}" if charset else f"MSH-18 is empty, so {codec} applies"
        raise HeaderError(
            f"byte 0x{bad.byte:02X} at offset {bad.offset} ({bad.segment}-{bad.field}) is not "
            f"valid {codec}; {declared}. Declare the character set actually used in MSH-18 "
            "(e.g. 8859/1 for Latin-1)",
            code=ErrorCode.DATA_TYPE_ERROR,
            segment=bad.segment,
            sequence=bad.sequence,
            field=bad.field,
            header=header,
        )
    _check_required(header)
    return header
