"""Prometheus metrics: a registry per app, HTTP request counts and latencies, ``GET /metrics``.

The registry is per app (``app.state.metrics``), not prometheus_client's global one, so two apps
in one process (tests, or a future admin listener) never share or double-register collectors.
Other components register their own collectors on it (``Counter(..., registry=registry)``).

Requests are labelled by route *template* (``/api/v1/tokens/{token_id}``), never the raw path, so
ids in URLs cannot blow up the number of series; requests that match no route share one label.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED_ROUTE = "<unmatched>"

router = APIRouter(tags=["health"])


class HttpMetrics:
    """The HTTP collectors, registered on the given registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("method", "route", "status")
        self.requests = Counter(
            "vetgateway_http_requests",
            "HTTP requests answered, by method, route template and status code.",
            labels,
            registry=registry,
        )
        self.latency = Histogram(
            "vetgateway_http_request_duration_seconds",
            "Time from request received to response finished, in seconds.",
            labels,
            registry=registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route, str(status)).observe(seconds)


@functools.lru_cache(maxsize=1024)
def _path_format(path: str) -> str:
    """``/tokens/{token_id:uuid}`` → ``/tokens/{token_id}``."""
    return compile_path(path)[1]


def route_template(scope: Scope) -> str:
    """The matched route's full path template, prefixes of included routers included.

    Since FastAPI stopped copying routes on ``include_router``, ``scope["route"]`` is the route as
    declared in its own router (``/whoami``); the full path (``/api/v1/whoami``) is only on the
    effective-route context FastAPI keeps in ``scope["fastapi"]``. That is not a public API, so
    it is read defensively, and tests/integration/test_api_metrics.py pins the result.
    """
    context: Any = scope.get("fastapi", {}).get("effective_route_context")
    path = getattr(context, "path", None)
    if not isinstance(path, str) or not path:
        path = getattr(scope.get("route"), "path", None)
    if not isinstance(path, str) or not path:
        return UNMATCHED_ROUTE
    return _path_format(path)


class MetricsMiddleware:
    """Pure ASGI middleware (no response buffering) that records every HTTP request.

    A request that raises before a response starts is counted as status 500, which is what the
    server error middleware outside this one will send.
    """

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            # The router records the matched route in the scope dict it shares with us.
            route = route_template(scope)
            self.metrics.observe(scope["method"], route, status, time.perf_counter() - started)


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics",
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
def metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
