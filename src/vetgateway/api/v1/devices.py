"""Analyzers as the gateway knows them, for the practice's IT person (issue 6 §4).

``GET /devices``: every active analyzer from the config with its model, driver, line, sender id,
quiet limit, when it was last heard from, and the open silence alert if it is quiet now. Staff
(technicians and up) may read it; the config file, not the API, says which analyzers exist.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from vetgateway.api.auth import Principal, require_role
from vetgateway.api.deps import get_database
from vetgateway.store.db import Database
from vetgateway.store.device_alerts import open_silence_alerts
from vetgateway.store.devices import active_devices
from vetgateway.store.models import Role

router = APIRouter(prefix="/devices", tags=["devices"])

Staff = Annotated[Principal, Depends(require_role(Role.TECHNICIAN))]
Db = Annotated[Database, Depends(get_database)]


class DeviceOut(BaseModel):
    id: uuid.UUID
    name: str
    model: str | None
    driver: str | None
    connection: str = Field(description="listener, tcp_client or serial")
    sender_id: str | None = Field(description="the H-record sender id (H-5) it is known by")
    quiet_limit_seconds: int | None
    last_seen_at: datetime | None
    silence_alert_id: uuid.UUID | None = Field(
        description="the open operational alert while the analyzer is silent, else null"
    )


class DeviceList(BaseModel):
    items: list[DeviceOut]


@router.get("", response_model=DeviceList)
def list_devices(_who: Staff, db: Db) -> DeviceList:
    with db.session(readonly=True) as session:
        devices = active_devices(session)
        silent = open_silence_alerts(session)
        return DeviceList(
            items=[
                DeviceOut(
                    id=d.id,
                    name=d.name,
                    model=d.model,
                    driver=d.driver,
                    connection=d.connection,
                    sender_id=d.sender_id,
                    quiet_limit_seconds=d.quiet_limit_seconds,
                    last_seen_at=d.last_seen_at,
                    silence_alert_id=silent.get(d.id),
                )
                for d in devices
            ]
        )
