"""Liveness and readiness (CONVENTIONS.md §3): ``GET /healthz`` and ``GET /readyz``.

``/healthz`` answers 200 whenever the process can serve HTTP at all; it checks nothing else, so an
orchestrator restarts the process only when it is truly wedged. ``/readyz`` answers 200 only when
every readiness check passes (by default: the database answers ``SELECT 1`` and the broker accepts
a connection), else 503 with each check's outcome, so a load balancer stops sending traffic while
a dependency is down. The checks block, so they run concurrently in worker threads, never on the
event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Literal

import anyio
import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from vetgateway.errors import VetgatewayError

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], None]
"""Returns when the dependency is usable; raises (a VetgatewayError, by contract) otherwise."""

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class CheckResult(BaseModel):
    ok: bool
    error: str | None = None


class Readiness(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, CheckResult]
    failed: list[str]


@router.get("/healthz", summary="Liveness: the process serves HTTP")
async def healthz() -> Health:
    return Health()


def _run_check(name: str, check: ReadinessCheck) -> CheckResult:
    try:
        check()
    except VetgatewayError as exc:
        return CheckResult(ok=False, error=str(exc))
    except Exception as exc:  # a probe reports any failure as "not ready"; the log has the bug
        log.exception("readiness check raised unexpectedly", extra={"check": name})
        return CheckResult(ok=False, error=f"{type(exc).__name__}: {exc}")
    return CheckResult(ok=True)


async def run_checks(checks: Mapping[str, ReadinessCheck]) -> Readiness:
    """Run every check concurrently, each in a worker thread, and collect the outcomes."""
    results: dict[str, CheckResult] = {}

    async def run(name: str, check: ReadinessCheck) -> None:
        results[name] = await anyio.to_thread.run_sync(_run_check, name, check)

    async with anyio.create_task_group() as group:
        for name, check in checks.items():
            group.start_soon(run, name, check)
    failed = sorted(name for name, result in results.items() if not result.ok)
    return Readiness(
        status="unavailable" if failed else "ok",
        checks={name: results[name] for name in checks},
        failed=failed,
    )


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness: the database and the broker are reachable",
    responses={503: {"model": Readiness, "description": "a dependency is unavailable"}},
)
async def readyz(request: Request) -> JSONResponse:
    checks: Mapping[str, ReadinessCheck] = request.app.state.readiness_checks
    report = await run_checks(checks)
    if report.failed:
        errors = {name: report.checks[name].error for name in report.failed}
        log.warning("not ready", extra={"failed": report.failed, "errors": errors})
    return JSONResponse(report.model_dump(), status_code=200 if not report.failed else 503)
