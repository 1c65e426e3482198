"""The FastAPI application factory: every app is built from explicit settings and a database.

Nothing is created at import time. What the factory builds is kept on ``app.state``, where
dependencies (``api/deps.py``) and later components find it:

- ``app.state.settings``: the validated ``Settings``;
- ``app.state.db``: the ``Database`` (sessions come only from ``db.session()``);
- ``app.state.metrics``: this app's Prometheus ``CollectorRegistry``; register further collectors
  on it (inbox accepts, pages sent …) and they appear on ``GET /metrics``;
- ``app.state.paging_metrics``: the ``PagingMetrics`` the acknowledgement endpoints observe;
- ``app.state.readiness_checks``: name → check, run by ``GET /readyz``;
- ``app.state.hl7_intake``: the ``Hl7Intake`` behind ``POST /api/v1/hl7``;
- ``app.state.intake_pool``: the executor its blocking store calls run on.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry

from vetgateway import __version__
from vetgateway.adapters.hl7.intake import Hl7Intake, Hl7Policy
from vetgateway.api import health, metrics, v1
from vetgateway.api.health import ReadinessCheck
from vetgateway.api.metrics import HttpMetrics, MetricsMiddleware
from vetgateway.config import Settings
from vetgateway.errors import StorageError, StorageUnavailable
from vetgateway.paging_metrics import PagingMetrics
from vetgateway.pipeline.broker_health import check_broker
from vetgateway.store.db import Database
from vetgateway.store.inbox import Inbox

log = logging.getLogger(__name__)


def default_readiness_checks(settings: Settings, db: Database) -> dict[str, ReadinessCheck]:
    """The database answers ``SELECT 1``; the configured broker accepts a connection."""
    return {
        "database": db.ping,
        "broker": functools.partial(check_broker, settings.broker_url),
    }


async def _storage_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable", extra={"path": request.url.path, "error": str(exc)})
    return JSONResponse(
        {"detail": "the database is unavailable; retry later"},
        status_code=503,
        headers={"Retry-After": "5"},
    )


async def _storage_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("database refused a write", extra={"path": request.url.path, "error": str(exc)})
    return JSONResponse({"detail": "the database refused the change"}, status_code=500)


def create_app(
    settings: Settings,
    db: Database,
    *,
    readiness_checks: Mapping[str, ReadinessCheck] | None = None,
    metrics_registry: CollectorRegistry | None = None,
    paging_metrics: PagingMetrics | None = None,
    hl7_intake: Hl7Intake | None = None,
    intake_pool: Executor | None = None,
) -> FastAPI:
    """Build the HTTP app.

    ``readiness_checks`` are added to the defaults (database, broker) and replace a default of the
    same name. ``metrics_registry`` lets the caller share one registry between the app and other
    components; by default the app gets a fresh one. ``paging_metrics`` must be registered on that
    same registry (the gateway shares one with its pager); by default one is built on it.

    ``hl7_intake`` and ``intake_pool`` let the gateway share its inbox (one group commit for MLLP,
    HTTP and files) and its thread pool with the app. Without them the app builds its own inbox
    on ``db`` and its own pool, and shuts that pool down when it stops; a pool passed in belongs
    to the caller.
    """
    owned_pool: ThreadPoolExecutor | None = None
    if intake_pool is None:
        owned_pool = ThreadPoolExecutor(settings.intake_threads, thread_name_prefix="http-intake")
        intake_pool = owned_pool
    owned_inbox: Inbox | None = None
    if hl7_intake is None:
        owned_inbox = Inbox(
            db, max_batch=settings.inbox_max_batch, commit_slots=settings.inbox_commit_slots
        )
        hl7_intake = Hl7Intake(owned_inbox, Hl7Policy.from_settings(settings))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if owned_pool is not None:
                owned_pool.shutdown(wait=True)
            if owned_inbox is not None:
                owned_inbox.close()

    app = FastAPI(
        title="vetgateway",
        version=__version__,
        summary="Lab and device integration gateway for veterinary clinics",
        lifespan=lifespan,
    )

    registry = metrics_registry if metrics_registry is not None else CollectorRegistry()
    app.state.settings = settings
    app.state.db = db
    app.state.metrics = registry
    app.state.paging_metrics = (
        paging_metrics if paging_metrics is not None else PagingMetrics(registry)
    )
    app.state.hl7_intake = hl7_intake
    app.state.intake_pool = intake_pool
    app.state.readiness_checks = {
        **default_readiness_checks(settings, db),
        **(readiness_checks or {}),
    }
    app.add_middleware(MetricsMiddleware, metrics=HttpMetrics(registry))
    app.add_exception_handler(StorageUnavailable, _storage_unavailable)
    app.add_exception_handler(StorageError, _storage_error)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(v1.build_router())
    return app
