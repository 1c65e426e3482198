"""``/metrics`` (per-app Prometheus registry) and ``/openapi.json`` (routes, schemas, bearer)."""

from __future__ import annotations

import uuid
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.api_support import TestClient, bearer, build_app, issue
from vetgateway.store.db import Database
from vetgateway.store.models import Role


def samples(text: str, name: str) -> dict[tuple[str, str, str], float]:
    """``{(method, route, status): value}`` for one sample name in an exposition."""
    found: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                labels = sample.labels
                found[(labels["method"], labels["route"], labels["status"])] = sample.value
    return found


def test_request_counter_and_latency_by_route_template(db: Database, tmp_path: Path) -> None:
    admin = issue(db, Role.ADMIN)
    with TestClient(build_app(db, tmp_path)) as client:
        for _ in range(3):
            client.get("/healthz")
        client.get("/api/v1/whoami")
        client.delete(f"/api/v1/tokens/{uuid.uuid4()}", headers=bearer(admin))
        client.delete(f"/api/v1/tokens/{uuid.uuid4()}", headers=bearer(admin))
        client.get("/no/such/path")
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    counts = samples(response.text, "vetgateway_http_requests_total")
    assert counts[("GET", "/healthz", "200")] == 3
    assert counts[("GET", "/api/v1/whoami", "401")] == 1
    assert counts[("DELETE", "/api/v1/tokens/{token_id}", "404")] == 2
    assert counts[("GET", "<unmatched>", "404")] == 1
    assert not any("/api/v1/tokens/" in route and "{" not in route for _, route, _ in counts)
    latency = samples(response.text, "vetgateway_http_request_duration_seconds_count")
    assert latency[("GET", "/healthz", "200")] == 3


def test_each_app_has_its_own_registry_open_to_other_components(
    db: Database, tmp_path: Path
) -> None:
    first = build_app(db, tmp_path)
    second = build_app(db, tmp_path)
    assert isinstance(first.state.metrics, CollectorRegistry)
    assert first.state.metrics is not second.state.metrics
    accepted = Counter(
        "vetgateway_inbox_accepted",
        "Messages made durable.",
        ["channel"],
        registry=first.state.metrics,
    )
    accepted.labels("mllp").inc(2)
    with TestClient(first) as one, TestClient(second) as two:
        one.get("/healthz")
        text_one = one.get("/metrics").text
        text_two = two.get("/metrics").text
    assert 'vetgateway_inbox_accepted_total{channel="mllp"} 2.0' in text_one
    assert "vetgateway_inbox_accepted" not in text_two
    assert ("GET", "/healthz", "200") not in samples(text_two, "vetgateway_http_requests_total")


def test_a_shared_registry_can_be_passed_in(db: Database, tmp_path: Path) -> None:
    registry = CollectorRegistry()
    app = build_app(db, tmp_path, metrics_registry=registry)
    assert app.state.metrics is registry


def test_openapi_lists_routes_models_and_the_bearer_scheme(db: Database, tmp_path: Path) -> None:
    with TestClient(build_app(db, tmp_path)) as client:
        spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in ("/healthz", "/readyz", "/metrics", "/api/v1/whoami", "/api/v1/tokens"):
        assert path in paths, path
    assert set(paths["/api/v1/tokens"]) == {"get", "post"}
    assert set(paths["/api/v1/tokens/{token_id}"]) == {"delete"}

    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerAuth"]["type"] == "http"
    assert schemes["bearerAuth"]["scheme"] == "bearer"
    for path, method in [
        ("/api/v1/whoami", "get"),
        ("/api/v1/tokens", "get"),
        ("/api/v1/tokens", "post"),
        ("/api/v1/tokens/{token_id}", "delete"),
    ]:
        assert paths[path][method]["security"] == [{"bearerAuth": []}], (path, method)
    assert "security" not in paths["/healthz"]["get"]

    schemas = spec["components"]["schemas"]
    assert "token_hash" not in schemas["TokenInfo"]["properties"]
    assert "token" in schemas["TokenIssued"]["properties"]
    assert set(schemas["WhoAmI"]["properties"]) == {"name", "role"}
    assert "503" in paths["/readyz"]["get"]["responses"]
    created = paths["/api/v1/tokens"]["post"]["responses"]["201"]
    assert created["content"]["application/json"]["schema"]["$ref"].endswith("/TokenIssued")
