"""Stored inbound messages: list, inspect, replay (issue 3 §6). Admins and technicians.

- ``GET /messages``: newest first, filtered, keyset-paginated by id (``before_id`` = the
  ``next_before_id`` of the previous page). No raw bytes in the list.
- ``GET /messages/{id}``: the row, its raw text for reading (decoded with the character set of
  its MSH-18, else UTF-8, undecodable bytes replaced), the exact bytes as base64, and
  a timeline: received, then every audit entry about it.
- ``POST /messages/{id}/replay``: back into the pipeline's queue (``store.messages`` says what
  that means and which statuses may be replayed); 404 for an unknown id, 409 when the message is
  not replayable, with the reason. Nothing is ever deleted or altered in the raw bytes.
"""

from __future__ import annotations

import base64
import codecs
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field

from vetgateway.adapters.hl7.header import HeaderError, read_header
from vetgateway.api.auth import Principal, require_role
from vetgateway.api.deps import get_database, get_settings
from vetgateway.config import Settings
from vetgateway.store import messages as message_store
from vetgateway.store.db import Database
from vetgateway.store.models import InboundMessage, MessageStatus, Role

router = APIRouter(prefix="/messages", tags=["messages"])

Staff = Annotated[Principal, Depends(require_role(Role.TECHNICIAN))]
Db = Annotated[Database, Depends(get_database)]
AppSettings = Annotated[Settings, Depends(get_settings)]

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


class MessageSummary(BaseModel):
    """A stored message without its bytes."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    channel: str
    peer: str
    received_at: datetime
    control_id: str | None
    sender: str | None = Field(description="sending application|facility (MSH-3|MSH-4)")
    message_type: str | None
    status: MessageStatus
    error: str | None
    attempts: int
    size: int = Field(description="bytes")
    sha256: str


class MessagePage(BaseModel):
    items: list[MessageSummary]
    next_before_id: int | None = Field(
        description="pass as before_id for the next (older) page; null on the last page"
    )


class TimelineEvent(BaseModel):
    at: datetime
    event: str
    actor: str
    details: dict[str, Any]


class MessageDetail(MessageSummary):
    next_attempt_at: datetime | None
    processed_at: datetime | None
    duplicate_of_id: int | None
    meta: dict[str, Any]
    charset: str = Field(description="the codec raw_text was decoded with")
    raw_text: str = Field(description="for display; undecodable bytes shown as U+FFFD")
    raw_base64: str = Field(description="the exact bytes received")
    timeline: list[TimelineEvent]


class ReplayOutcome(BaseModel):
    id: int
    status: MessageStatus
    previous_status: MessageStatus
    previous_error: str | None


@router.get("", summary="Stored messages, newest first")
def list_messages(
    _staff: Staff,
    db: Db,
    status_: Annotated[MessageStatus | None, Query(alias="status")] = None,
    control_id: Annotated[str | None, Query(description="MSH-10")] = None,
    channel: Annotated[str | None, Query(description="mllp, http, file …")] = None,
    since: Annotated[
        datetime | None, Query(description="received at or after (ISO 8601; no zone = UTC)")
    ] = None,
    before_id: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> MessagePage:
    with db.session(readonly=True) as session:
        rows = message_store.find_messages(
            session,
            status=status_,
            control_id=control_id,
            channel=channel,
            since=_aware(since),
            before_id=before_id,
            limit=limit + 1,  # one more tells whether there is a next page
        )
        items = [MessageSummary.model_validate(row) for row in rows[:limit]]
    more = len(rows) > limit
    return MessagePage(items=items, next_before_id=items[-1].id if more else None)


@router.get(
    "/{message_id}",
    summary="One stored message: raw text, bytes, status and timeline",
    responses={404: {"description": "no such message"}},
)
def get_message(message_id: int, _staff: Staff, db: Db, settings: AppSettings) -> MessageDetail:
    with db.session(readonly=True) as session:
        message = message_store.get_message(session, message_id)
        if message is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such message")
        history = message_store.message_history(session, message_id)
        timeline = [_received_event(message)] + [
            TimelineEvent(at=e.occurred_at, event=e.action, actor=e.actor, details=e.details)
            for e in history
        ]
        charset = _display_charset(message, settings.hl7_default_encoding)
        return MessageDetail(
            **MessageSummary.model_validate(message).model_dump(),
            next_attempt_at=message.next_attempt_at,
            processed_at=message.processed_at,
            duplicate_of_id=message.duplicate_of_id,
            meta=dict(message.meta),
            charset=charset,
            raw_text=message.raw.decode(charset, errors="replace"),
            raw_base64=base64.b64encode(message.raw).decode("ascii"),
            timeline=timeline,
        )


@router.post(
    "/{message_id}/replay",
    summary="Send a stored message through the pipeline again",
    responses={
        404: {"description": "no such message"},
        409: {"description": "not replayable (already queued, or a duplicate row)"},
    },
)
def replay_message(message_id: int, staff: Staff, db: Db) -> ReplayOutcome:
    with db.session() as session:
        replay = message_store.replay_message(session, message_id, actor=staff.actor)
        if replay is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such message")
        if replay.refused is not None:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=replay.refused)
    return ReplayOutcome(
        id=replay.message_id,
        status=MessageStatus.RECEIVED,
        previous_status=replay.previous_status,
        previous_error=replay.previous_error,
    )


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _display_charset(message: InboundMessage, default: str) -> str:
    """The codec intake read from MSH-18 (kept in ``meta``). A message refused at intake has no
    such note, so its MSH is read again (as far as it can be); anything else gets ``default``,
    the HL7 channels' default character set."""
    charset = message.meta.get("charset")
    if not isinstance(charset, str):
        try:
            charset = read_header(message.raw, default_encoding=default).encoding
        except HeaderError as error:
            charset = error.header.encoding if error.header is not None else default
    for name in (charset, default):
        try:
            return codecs.lookup(name).name
        except LookupError:
            continue
    return "utf-8"


def _received_event(message: InboundMessage) -> TimelineEvent:
    return TimelineEvent(
        at=message.received_at,
        event="message.received",
        actor=message.peer,
        details={"channel": message.channel, "size": message.size, "sha256": message.sha256},
    )
