"""Build HL7 v2 acknowledgements (HL7 v2.5.1 §2.9 processing rules, §2.14.8 MSA, §2.14.5 ERR).

The ACK answers in the sender's own terms (§2.9.2.2, issue 3 §2): its MSH swaps the sending and
receiving application and facility, keeps the encoding characters, MSH-11 and MSH-12, echoes MSH-18
and is encoded in that character set; MSA-2 echoes the message's MSH-10. Texts are escaped with
the message's delimiters (§2.7: ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\``, v2.7 ``\\P\\`` for the truncation
character, ``\\Xhh\\`` for control characters), so an ACK never holds 0x0B or 0x1C and can always
be framed. Errors go into ERR-2/3/4/8 from v2.5 on, into ERR-1 (ELD) before it.

Acknowledgement modes (§2.9.1, §2.9.3, R22): original mode when MSH-15 and MSH-16 are both empty,
enhanced mode otherwise. This gateway acknowledges after the durable commit (issue 3 §2), so the
original-mode AA/AE/AR is sent at commit time, like an enhanced-mode accept ACK.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Final, Literal

from vetgateway.adapters.hl7.charsets import codec_for
from vetgateway.adapters.hl7.header import MshHeader
from vetgateway.adapters.hl7.rejection import ErrorCode, ErrorDetail, HeaderError

__all__ = [
    "STORAGE_UNAVAILABLE",
    "AckCode",
    "build_ack",
    "build_minimal_ack",
    "decide_ack_mode",
    "error_ack",
    "escape",
    "is_enhanced_mode",
]

AckCode = Literal["AA", "AE", "AR", "CA", "CE", "CR"]
_ACK_CODES: Final = frozenset({"AA", "AE", "AR", "CA", "CE", "CR"})
_CONTROL: Final = {c: f"\\X{c:02X}\\" for c in (*range(0x20), 0x7F)}

STORAGE_UNAVAILABLE: Final = ErrorDetail(
    ErrorCode.APPLICATION_INTERNAL_ERROR,
    "the gateway's storage is unavailable; the message was not stored, retry later",
    segment=None,
)

MINIMAL_VERSION: Final = "2.5.1"
MINIMAL_ENCODING_CHARACTERS: Final = "^~\\&"


def escape(text: str, header: MshHeader) -> str:
    """Escape ``text`` for a field of a message with ``header``'s delimiters (HL7 v2.5.1 §2.7.1)."""
    return text.translate(
        _escape_table(
            header.field_separator, header.encoding_characters, header.truncation_character
        )
    )


@functools.lru_cache(maxsize=64)
def _escape_table(field_separator: str, encoding: str, truncation: str | None) -> dict[int, str]:
    """The translation table for one set of delimiters (a sender uses the same set every time)."""
    component, repetition, escape_character, subcomponent = tuple(encoding[:4])
    table = dict(_CONTROL)
    table[ord(escape_character)] = "\\E\\"
    table[ord(field_separator)] = "\\F\\"
    table[ord(component)] = "\\S\\"
    table[ord(repetition)] = "\\R\\"
    table[ord(subcomponent)] = "\\T\\"
    if truncation is not None:
        table[ord(truncation)] = "\\P\\"  # HL7 v2.7 §2.7.1
    return {k: v.replace("\\", escape_character) for k, v in table.items()}


def _echo(raw_field: str) -> str:
    """A field copied from the message: already escaped, but never with raw control characters."""
    return raw_field.translate(_CONTROL)


def _version_tuple(version_id: str) -> tuple[int, ...]:
    parts = []
    for part in version_id.split("."):
        if not (part.isascii() and part.isdigit()):  # "¹".isdigit() is True
            return (99,)  # unknown shapes are treated as current versions
        parts.append(int(part))
    return tuple(parts) or (99,)


def _timestamp(now: datetime) -> str:
    """HL7 TS/DTM with seconds, and the UTC offset when ``now`` is aware (§2.A.74)."""
    # Formatted by hand: strftime was a visible share of the MLLP path's CPU (py-spy).
    stamp = (
        f"{now.year:04d}{now.month:02d}{now.day:02d}{now.hour:02d}{now.minute:02d}{now.second:02d}"
    )
    offset = now.utcoffset()
    if offset is None:
        return stamp
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, minutes = divmod(abs(minutes), 60)
    return f"{stamp}{sign}{hours:02d}{minutes:02d}"


def _segment(fields: list[str], sep: str) -> str:
    while len(fields) > 2 and not fields[-1]:
        fields.pop()
    return sep.join(fields)


def build_ack(
    header: MshHeader,
    code: AckCode,
    *,
    error: HeaderError | ErrorDetail | None = None,
    text: str | None = None,
    control_id: str,
    now: datetime,
) -> bytes:
    """The ACK for the message whose MSH is ``header``, encoded in its character set.

    ``control_id`` is the ACK's own MSH-10. MSH-11 and MSH-12 are echoed; when the message left
    them empty (it is then being refused) the ACK says P and 2.5.1, since an ACK must carry them.
    MSH-18's first repetition is echoed when it names the character set the ACK is encoded in
    (an unsupported MSH-18 is answered in the channel default, without MSH-18). MSA-3 is
    ``text``, else the error's reason (the only place an old receiver shows it). ``error`` adds
    an ERR segment: severity E, or W with AA/CA.
    """
    if code not in _ACK_CODES:
        raise ValueError(f"not an HL7 table 0008 acknowledgement code: {code!r}")
    detail = error.detail if isinstance(error, HeaderError) else error
    sep, comp = header.field_separator, header.component_separator
    sub = header.subcomponent_separator
    version = _version_tuple(header.version_id)
    msg_type = ["ACK"]
    if header.trigger_event:
        msg_type.append(_echo(header.trigger_event))
        if version >= (2, 3, 1):  # MSH-9.3 message structure exists from v2.3.1
            msg_type.append("ACK")
    msh = [
        "MSH",
        header.encoding_characters,
        _echo(header.receiving_application),
        _echo(header.receiving_facility),
        _echo(header.sending_application),
        _echo(header.sending_facility),
        _timestamp(now),
        "",
        comp.join(msg_type),
        escape(control_id, header),
        _echo(header.processing_id) if header.processing_id_code else "P",
        _echo(header.version) if header.version_id else MINIMAL_VERSION,
    ]
    charset = " ".join(header.character_set.split(header.repetition_separator)[0].split())
    if charset and codec_for(charset) == header.encoding:
        msh += ["", "", "", "", "", _echo(charset)]
    msa3 = text if text is not None else (detail.reason if detail is not None else "")
    segments = [
        _segment(msh, sep),
        _segment(["MSA", code, _echo(header.control_id), escape(msa3, header)], sep),
    ]
    if detail is not None:
        segments.append(_err_segment(header, detail, code, version, sep, comp, sub))
    message = "\r".join(segments) + "\r"
    # "replace" only matters for text the codec cannot carry (a reason under ASCII, a header read
    # with replacement characters): the ACK must still go out.
    return message.encode(header.encoding or "utf-8", errors="replace")


def _err_segment(
    header: MshHeader,
    detail: ErrorDetail,
    code: AckCode,
    version: tuple[int, ...],
    sep: str,
    comp: str,
    sub: str,
) -> str:
    coded = [str(int(detail.code)), escape(detail.code.text, header), "HL70357"]
    location = [escape(p, header) for p in detail.location_parts]
    if version < (2, 5):  # ERR-1 ELD: segment^sequence^field^code&text&system (v2.4 §2.16.5.1)
        eld = [*[*location, "", "", ""][:3], sub.join(coded)]
        return _segment(["ERR", comp.join(eld)], sep)
    severity = "W" if code in ("AA", "CA") else "E"  # HL7 table 0516
    fields = ["ERR", "", comp.join(location), comp.join(coded), severity, "", "", ""]
    fields.append(escape(detail.reason, header))  # ERR-8 user message
    return _segment(fields, sep)


def build_minimal_ack(
    code: Literal["AE", "AR", "CE", "CR"],
    *,
    error: HeaderError | ErrorDetail,
    control_id: str,
    now: datetime,
    encoding: str = "utf-8",
) -> bytes:
    """The ACK for a message whose MSH could not be read at all (no MSH, bad MSH-1 or MSH-2).

    Nothing of the sender's is known, so it uses v2.5.1, ``|^~\\&``, processing id P, empty
    applications and facilities, MSH-9 ``ACK`` and an empty MSA-2; ``encoding`` should be the
    channel's default character set.
    """
    header = MshHeader(
        field_separator="|",
        encoding_characters=MINIMAL_ENCODING_CHARACTERS,
        processing_id="P",
        version=MINIMAL_VERSION,
        encoding=encoding,
    )
    return build_ack(header, code, error=error, control_id=control_id, now=now)


def is_enhanced_mode(header: MshHeader) -> bool:
    """HL7 v2.5.1 §2.9.1: enhanced mode as soon as MSH-15 or MSH-16 is valued."""
    return bool(header.accept_ack_type.strip() or header.application_ack_type.strip())


def _wanted(condition: str, success: bool) -> bool:
    """HL7 table 0155: AL always, NE never, ER on error/reject only, SU on success only."""
    return {"AL": True, "NE": False, "ER": not success, "SU": success}.get(condition, True)


def decide_ack_mode(header: MshHeader, *, success: bool = True) -> tuple[bool, bool]:
    """``(commit_ack, application_ack)``: which ACKs the sender wants for this outcome.

    ``commit_ack``: send an ACK once the message is durably stored (AA/AE/AR in original mode,
    CA/CE/CR in enhanced mode). ``application_ack``: the sender also wants an application ACK
    after processing (enhanced mode, MSH-16). Original mode is ``(True, False)``: its one ACK is
    sent at commit. In enhanced mode an empty MSH-15 is read as AL (an unneeded accept ACK is
    harmless; a missing one makes the sender retransmit) and an empty MSH-16 as NE.
    """
    if not is_enhanced_mode(header):
        return True, False
    accept = header.accept_ack_type.strip().upper() or "AL"
    application = header.application_ack_type.strip().upper() or "NE"
    return _wanted(accept, success), _wanted(application, success)


def error_ack(error: HeaderError, *, control_id: str, now: datetime) -> bytes | None:
    """The ACK to send at once for a message ``read_header``/``check_supported`` refused.

    AE/AR in original mode; in enhanced mode CE/CR if MSH-15 wants an accept ACK on errors, else
    AE/AR if MSH-16 wants an application ACK on errors, else None (the sender asked for none).
    Without a readable header, the minimal ACK of ``build_minimal_ack``.
    """
    header = error.header
    if header is None:
        return build_minimal_ack(error.ack_code, error=error, control_id=control_id, now=now)
    code: AckCode = error.ack_code
    if is_enhanced_mode(header):
        commit, application = decide_ack_mode(header, success=False)
        if commit:
            code = error.commit_code
        elif not application:
            return None
    return build_ack(header, code, error=error, control_id=control_id, now=now)
