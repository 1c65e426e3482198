"""Alerts: the open list, one alert's timeline, and acknowledging (issue 5).

- ``GET /alerts?state=open``: newest first, with age, level and summary (veterinarian or
  technician; ``state=all`` for every state).
- ``GET /alerts/{id}``: the alert with its pages and a timeline built from the audit log
  (created, updates, escalations, fallbacks, acknowledgement).
- ``POST /alerts/{id}/acknowledge``: veterinarian; audited with the token as actor. Acknowledging
  an alert already acknowledged answers 200 with ``already_acknowledged``; 404 for an unknown one.
- ``GET /alerts/ack/{token}``: the link in a page. Shows an HTML page with a button and changes
  nothing — link previews and mail scanners only GET, and must not acknowledge.
- ``POST /alerts/ack/{token}``: the button. No bearer token: the signed link (``ack_links``) is
  the authority. Acknowledges as the paged veterinarian; a second use says "already
  acknowledged". Bad link 400, expired 410, both as HTML; an expired link still says whether
  its alert is open (and, if so, how to acknowledge it now) or who acknowledged it.
"""

from __future__ import annotations

import html
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from vetgateway.ack_links import AckLinkError, AckLinkExpired, signing_key, verify_token
from vetgateway.api.auth import Principal, require_role
from vetgateway.api.deps import get_database, get_paging_metrics, get_settings
from vetgateway.config import Settings
from vetgateway.paging_metrics import PagingMetrics
from vetgateway.store import alerts as alert_store
from vetgateway.store.db import Database
from vetgateway.store.models import (
    AcknowledgementVia,
    Alert,
    AlertKind,
    AlertState,
    Page,
    PageChannel,
    PageStatus,
    Role,
)
from vetgateway.store.models import Veterinarian as VeterinarianRow
from vetgateway.store.models.base import utcnow

router = APIRouter(prefix="/alerts", tags=["alerts"])

Reader = Annotated[Principal, Depends(require_role(Role.VETERINARIAN, Role.TECHNICIAN))]
Veterinarian = Annotated[Principal, Depends(require_role(Role.VETERINARIAN))]
Db = Annotated[Database, Depends(get_database)]
AppSettings = Annotated[Settings, Depends(get_settings)]
Metrics = Annotated[PagingMetrics, Depends(get_paging_metrics)]


class AlertItem(BaseModel):
    id: uuid.UUID
    kind: AlertKind
    state: AlertState
    level: int = Field(description="escalation level reached: 0 none yet, 1 primary, 2 backup…")
    summary: str
    created_at: datetime
    age_seconds: float
    next_action_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by_id: uuid.UUID | None


class PageItem(BaseModel):
    id: int
    veterinarian_id: uuid.UUID | None
    channel: PageChannel
    target: str
    level: int
    status: PageStatus
    attempts: int
    last_error: str | None
    sent_at: datetime | None
    created_at: datetime


class TimelineEvent(BaseModel):
    at: datetime
    action: str = Field(description="alert.created, alert.escalated, alert.acknowledged …")
    actor: str
    details: dict[str, Any]


class AlertDetail(AlertItem):
    pages: list[PageItem]
    timeline: list[TimelineEvent]


class Acknowledge(BaseModel):
    veterinarian_id: uuid.UUID | None = Field(default=None, description="who acknowledges")
    note: str | None = Field(default=None, max_length=2000)


class Acknowledged(BaseModel):
    id: uuid.UUID
    state: AlertState
    already_acknowledged: bool


def _item(alert: Alert, now: datetime) -> dict[str, Any]:
    return {
        "id": alert.id,
        "kind": alert.kind,
        "state": alert.state,
        "level": alert.level,
        "summary": alert.summary,
        "created_at": alert.created_at,
        "age_seconds": max(0.0, (now - alert.created_at).total_seconds()),
        "next_action_at": alert.next_action_at,
        "acknowledged_at": alert.acknowledged_at,
        "acknowledged_by_id": alert.acknowledged_by_id,
    }


@router.get("", summary="Alerts, newest first (open ones by default)")
def list_alerts(
    _reader: Reader,
    db: Db,
    state: Literal["open", "acknowledged", "resolved", "all"] = "open",
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[AlertItem]:
    now = utcnow()
    wanted = None if state == "all" else AlertState(state)
    with db.session(readonly=True) as session:
        alerts = alert_store.list_alerts(session, state=wanted, limit=limit)
        return [AlertItem(**_item(a, now)) for a in alerts]


@router.get("/{alert_id}", summary="One alert with its pages and timeline")
def get_alert(alert_id: uuid.UUID, _reader: Reader, db: Db) -> AlertDetail:
    now = utcnow()
    with db.session(readonly=True) as session:
        found = alert_store.get_alert_with_timeline(session, alert_id)
        if found is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no alert {alert_id}")
        return AlertDetail(
            **_item(found.alert, now),
            pages=[PageItem.model_validate(p, from_attributes=True) for p in found.pages],
            timeline=[
                TimelineEvent(at=e.occurred_at, action=e.action, actor=e.actor, details=e.details)
                for e in found.events
            ],
        )


@router.post("/{alert_id}/acknowledge", summary="Acknowledge an alert: escalation stops")
def acknowledge(
    alert_id: uuid.UUID, body: Acknowledge, vet: Veterinarian, db: Db, metrics: Metrics
) -> Acknowledged:
    now = utcnow()
    with db.session() as session:
        outcome = alert_store.acknowledge(
            session,
            alert_id,
            veterinarian_id=body.veterinarian_id,
            actor=vet.actor,
            via=AcknowledgementVia.API,
            note=body.note if body.note is not None else f"by {vet.name}",
            now=now,
        )
        raised_at = _raised_at(session, alert_id, outcome)
    if not outcome.found or outcome.state is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no alert {alert_id}")
    if raised_at is not None:
        metrics.acknowledged(AcknowledgementVia.API.value, raised_at=raised_at, at=now)
    return Acknowledged(id=alert_id, state=outcome.state, already_acknowledged=outcome.already)


def _raised_at(
    session: Session, alert_id: uuid.UUID, outcome: alert_store.AckOutcome
) -> datetime | None:
    """When the alert just acknowledged was raised (None if this call acknowledged nothing);
    the latency is observed by the caller once the transaction has committed."""
    if not outcome.found or outcome.already:
        return None
    alert = session.get(Alert, alert_id)
    return None if alert is None else alert.created_at


def _html(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        '<meta name=robots content="noindex">'
        f"<title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(page, status_code=status_code, headers={"Cache-Control": "no-store"})


def _link_error(exc: AckLinkError, db: Database) -> HTMLResponse:
    if not isinstance(exc, AckLinkExpired):
        return _html("Link not usable", f"<p>{html.escape(str(exc))}</p>", 400)
    return _html("Link expired", _expired_link_text(db, exc.alert_id), status.HTTP_410_GONE)


def _expired_link_text(db: Database, alert_id: uuid.UUID) -> str:
    """What the holder of an expired link needs to know: is the alert still waiting for
    somebody? (A vet opening yesterday's page must not be left guessing.)"""
    with db.session(readonly=True) as session:
        alert = session.get(Alert, alert_id)
        if alert is None:
            return "<p>This acknowledge link has expired, and its alert no longer exists.</p>"
        summary = f"<p>{html.escape(alert.summary)}</p>"
        if alert.state is AlertState.OPEN:
            return (
                f"{summary}<p>This acknowledge link has expired, but the alert is <strong>still"
                " open</strong> and escalating. Acknowledge it with the link in the latest page"
                f" for it, or with a veterinarian's API token: POST /api/v1/alerts/{alert_id}"
                "/acknowledge.</p>"
            )
        vet = (
            session.get(VeterinarianRow, alert.acknowledged_by_id)
            if alert.acknowledged_by_id is not None
            else None
        )
        done = alert.state.value
        if vet is not None:
            done += f" by {vet.name}"
        if alert.acknowledged_at is not None:
            done += f" at {alert.acknowledged_at:%Y-%m-%d %H:%M} UTC"
        return (
            f"{summary}<p>This acknowledge link has expired; the alert was {html.escape(done)}.</p>"
        )


def _verify(settings: Settings, token: str) -> tuple[uuid.UUID, int]:
    return verify_token(signing_key(settings), token, utcnow())


@router.get("/ack/{token}", response_class=HTMLResponse, summary="Acknowledge link: confirm page")
def ack_link_form(token: str, db: Db, settings: AppSettings) -> HTMLResponse:
    try:
        alert_id, page_id = _verify(settings, token)
    except AckLinkError as exc:
        return _link_error(exc, db)
    with db.session(readonly=True) as session:
        alert = session.get(Alert, alert_id)
        page = session.get(Page, page_id)
        if alert is None or page is None or page.alert_id != alert_id:
            return _html("Alert not found", "<p>This alert no longer exists.</p>", 404)
        summary, state = alert.summary, alert.state
    text = f"<p>{html.escape(summary)}</p>"
    if state is not AlertState.OPEN:
        return _html("Already acknowledged", f"{text}<p>This alert was already {state.value}.</p>")
    form = (
        f'<form method="post" action="{html.escape(token)}">'
        '<button type="submit">Acknowledge</button></form>'
    )
    return _html("Acknowledge critical alert", text + form)


@router.post("/ack/{token}", response_class=HTMLResponse, summary="Acknowledge link: acknowledge")
def ack_link_submit(token: str, db: Db, settings: AppSettings, metrics: Metrics) -> HTMLResponse:
    try:
        alert_id, page_id = _verify(settings, token)
    except AckLinkError as exc:
        return _link_error(exc, db)
    now = utcnow()
    with db.session() as session:
        page = session.get(Page, page_id)
        if page is None or page.alert_id != alert_id:
            return _html("Alert not found", "<p>This alert no longer exists.</p>", 404)
        outcome = alert_store.acknowledge(
            session,
            alert_id,
            veterinarian_id=page.veterinarian_id,
            actor=f"ack_link:page:{page_id}",
            via=AcknowledgementVia.LINK,
            note=None,
            now=now,
        )
        raised_at = _raised_at(session, alert_id, outcome)
    if raised_at is not None:
        metrics.acknowledged(AcknowledgementVia.LINK.value, raised_at=raised_at, at=now)
    if not outcome.found:
        return _html("Alert not found", "<p>This alert no longer exists.</p>", 404)
    if outcome.already:
        return _html("Already acknowledged", "<p>This alert was already acknowledged.</p>")
    return _html("Acknowledged", "<p>Thank you. Escalation has stopped.</p>")
