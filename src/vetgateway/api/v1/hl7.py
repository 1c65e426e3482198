"""``POST /api/v1/hl7``: one HL7 v2 message over HTTP, answered with its ACK (issue 3 §4, R17).

The same ``Hl7Intake`` as MLLP stores the message first and builds the answer after the commit, so
the rules of ``adapters/hl7/intake.py`` hold here too: every message is stored (a refused one
quarantined with the reason its ACK carries), an identical resend gets identical ACK bytes and no
second row, and storage failure is never answered with AA. HTTP adds only the envelope:

======================================  ======  ==============================================
outcome                                 status  body
======================================  ======  ==============================================
stored, AA or CA                        200     the ACK
stored, sender asked for no ACK (NE)    204     none
refused: AE, AR, CE, CR                 400     the ACK (or none if MSH-15/16 asked for none);
                                                the reason also in ``X-Vetgateway-Reason``
storage failed                          503     the AR/CR ACK, ``Retry-After``
body over ``mllp_max_message_size``     413     the AR ACK; its first 4 KiB (at most the limit)
                                                kept, quarantined
content type not an HL7 one             415     JSON ``detail``, nothing stored
no or bad token / wrong role            401/403 JSON ``detail``, nothing stored
======================================  ======  ==============================================

The body is stored byte for byte: a ``charset`` parameter on the content type is ignored, MSH-18
decides how the message is decoded. The body is read as a stream and reading stops at the size
limit, whatever ``Content-Length`` claims. The ACK is sent as ``application/hl7-v2`` with the
character set it is encoded in.

``Idempotency-Key`` is not supported (the header is ignored): an HL7 message is already
idempotent by its sender, control id and bytes, and a key honoured across concurrent requests
needs a uniquely keyed table, which the schema does not have.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
from concurrent.futures import Executor
from typing import Annotated, Final

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.responses import JSONResponse

from vetgateway.adapters.hl7.header import HeaderError, read_header
from vetgateway.adapters.hl7.intake import Hl7Intake, IntakeResult
from vetgateway.api.auth import Principal, require_role
from vetgateway.api.deps import get_hl7_intake, get_intake_pool, get_settings
from vetgateway.config import Settings
from vetgateway.store.models import Role

log = logging.getLogger(__name__)

CHANNEL: Final = "http"
ACCEPTED_MEDIA_TYPES: Final = ("application/hl7-v2", "x-application/hl7-v2+er7", "text/plain")
ACK_MEDIA_TYPE: Final = "application/hl7-v2"
REASON_HEADER: Final = "X-Vetgateway-Reason"
MESSAGE_ID_HEADER: Final = "X-Vetgateway-Message-Id"
RETRY_AFTER_SECONDS: Final = "5"
EVIDENCE_BYTES: Final = 4096  # kept of an oversized body, as MLLP keeps (framer.HEAD_BYTES)
_REASON_MAX: Final = 1000
_IANA_NAMES: Final = {
    "utf-8": "UTF-8",
    "ascii": "US-ASCII",
    "cp1252": "windows-1252",
    "gb18030": "GB18030",
    "euc_kr": "EUC-KR",
    "big5": "Big5",
}

router = APIRouter()

Device = Annotated[Principal, Depends(require_role(Role.DEVICE))]
Intake = Annotated[Hl7Intake, Depends(get_hl7_intake)]
Pool = Annotated[Executor, Depends(get_intake_pool)]
AppSettings = Annotated[Settings, Depends(get_settings)]

_HL7_BODY = {
    "required": True,
    "content": {
        media_type: {"schema": {"type": "string", "format": "binary"}}
        for media_type in ACCEPTED_MEDIA_TYPES
    },
}


def _ack_doc(description: str) -> dict[str, object]:
    return {"description": description, "content": {ACK_MEDIA_TYPE: {}}}


@router.post(
    "/hl7",
    tags=["hl7"],
    response_class=Response,
    summary="Receive one HL7 v2 message; the response is its acknowledgement",
    openapi_extra={"requestBody": _HL7_BODY},
    responses={
        200: _ack_doc("stored; the ACK (AA or CA)"),
        204: {"description": "stored; the sender asked for no acknowledgement"},
        400: _ack_doc("stored but refused (quarantined); the ACK (AE/AR/CE/CR) says why"),
        413: _ack_doc("larger than the size limit; refused with AR, its start kept as evidence"),
        415: {"description": "not an HL7 v2 content type; nothing stored"},
        503: _ack_doc("not stored (storage unavailable); retry after Retry-After seconds"),
    },
)
async def receive_hl7(
    request: Request, principal: Device, intake: Intake, pool: Pool, settings: AppSettings
) -> Response:
    media_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media_type not in ACCEPTED_MEDIA_TYPES:
        shown = media_type or "none"
        return _refused_envelope(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"content type {shown} is not accepted; send one HL7 v2 message as "
            + ", ".join(ACCEPTED_MEDIA_TYPES),
        )
    limit = settings.mllp_max_message_size
    body, complete = await _read_capped(request, limit)
    peer = f"{request.client.host if request.client else 'unknown'} token:{principal.name}"[:255]
    loop = asyncio.get_running_loop()
    if not complete:
        log.warning("hl7 over http too large", extra={"peer": peer, "limit": limit})
        result = await loop.run_in_executor(
            pool, intake.refuse_oversized, body[: min(EVIDENCE_BYTES, limit)], limit, CHANNEL, peer
        )
        reason = f"message larger than {limit} bytes refused"
        return _ack_response(status.HTTP_413_CONTENT_TOO_LARGE, result, intake, reason)
    result = await loop.run_in_executor(pool, intake.receive, body, CHANNEL, peer)
    if result.message_id is None:
        return _ack_response(status.HTTP_503_SERVICE_UNAVAILABLE, result, intake, result.reason)
    if result.accepted:
        code = status.HTTP_200_OK if result.ack is not None else status.HTTP_204_NO_CONTENT
        return _ack_response(code, result, intake, None)
    return _ack_response(status.HTTP_400_BAD_REQUEST, result, intake, result.reason)


async def _read_capped(request: Request, limit: int) -> tuple[bytes, bool]:
    """The body, and whether it fit in ``limit`` bytes; reading stops as soon as it does not."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return bytes(body), False
    return bytes(body), True


def _ack_response(
    status_code: int, result: IntakeResult, intake: Hl7Intake, reason: str | None
) -> Response:
    headers: dict[str, str] = {}
    if result.message_id is not None:
        headers[MESSAGE_ID_HEADER] = str(result.message_id)
    else:
        headers["Retry-After"] = RETRY_AFTER_SECONDS
    if reason:
        headers[REASON_HEADER] = _header_text(reason)
    if result.ack is None or status_code == status.HTTP_204_NO_CONTENT:
        return Response(status_code=status_code, headers=headers)
    charset = _charset(result.ack, intake.policy.default_encoding)
    media_type = f"{ACK_MEDIA_TYPE}; charset={charset}" if charset else ACK_MEDIA_TYPE
    return Response(result.ack, status_code=status_code, headers=headers, media_type=media_type)


def _refused_envelope(status_code: int, reason: str) -> JSONResponse:
    return JSONResponse(
        {"detail": reason}, status_code=status_code, headers={REASON_HEADER: _header_text(reason)}
    )


def _charset(ack: bytes, default_encoding: str) -> str | None:
    """The IANA name of the character set the ACK is encoded in (its MSH-18, else the default)."""
    try:
        codec = codecs.lookup(read_header(ack, default_encoding=default_encoding).encoding).name
    except (HeaderError, LookupError):
        return None
    if codec.startswith("iso8859-"):
        return "ISO-8859-" + codec.removeprefix("iso8859-")
    return _IANA_NAMES.get(codec, codec)


def _header_text(text: str) -> str:
    """One line of printable ASCII (HTTP field values), escaped rather than dropped, bounded."""
    flat = " ".join(text.split())
    return flat.encode("ascii", "backslashreplace").decode("ascii")[:_REASON_MAX]
