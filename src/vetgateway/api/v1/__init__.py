"""Version 1 of the JSON API, mounted at ``/api/v1``; routers per area are included here."""

from __future__ import annotations

from fastapi import APIRouter

from vetgateway.api.v1 import (
    alerts,
    devices,
    hl7,
    messages,
    oncall,
    orders,
    results,
    tokens,
    unmatched,
)

PREFIX = "/api/v1"


def build_router() -> APIRouter:
    """A fresh router each call, so each app gets its own routes (no import-time wiring)."""
    router = APIRouter(prefix=PREFIX)
    router.include_router(tokens.router)
    router.include_router(hl7.router)
    router.include_router(messages.router)
    router.include_router(orders.router)
    router.include_router(results.router)
    router.include_router(unmatched.router)
    router.include_router(unmatched.unmapped_router)
    router.include_router(alerts.router)
    router.include_router(oncall.router)
    router.include_router(devices.router)
    return router
