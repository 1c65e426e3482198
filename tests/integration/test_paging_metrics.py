"""Paging metrics on ``GET /metrics`` (issue 5), on both back ends: the pager and the app share
one ``PagingMetrics`` as in the gateway; the rota is written through the on-call API.

Time to first page and to acknowledgement are measured from the alert's ``created_at``; the
pager runs on an injected clock, the acknowledgement endpoints on the wall clock, so alerts here
are raised "now" and the pager's clock starts there."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.api_support import TestClient, bearer, build_app, issue
from tests.integration.test_alerts import raise_at, seed_finding
from tests.integration.test_pager import TIMEOUT, Clock, Failing, Recording
from vetgateway.ack_links import make_token, signing_key
from vetgateway.adapters.notify import Channel
from vetgateway.pipeline.pager import Pager
from vetgateway.store.db import Database
from vetgateway.store.models import PageChannel, Role

API = "/api/v1"


def series(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample on ``/metrics``: ``{(name, sorted labels): value}``."""
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def make_rota(client: TestClient, admin: dict[str, str], now: datetime) -> None:
    """Jones (sms, then email) primary and Smith (email) backup at "main", around ``now``."""
    assert (
        client.post(
            f"{API}/clinics", json={"code": "main", "name": "Main"}, headers=admin
        ).status_code
        == 201
    )
    window = {
        "starts": (now - timedelta(days=1)).isoformat(),
        "ends": (now + timedelta(days=1)).isoformat(),
    }
    for name, level, contacts in (
        ("Dr Jones", "primary", [("sms", "+15550001"), ("email", "jones@example.org")]),
        ("Dr Smith", "backup", [("email", "smith@example.org")]),
    ):
        vet = client.post(
            f"{API}/veterinarians",
            json={"name": name, "contacts": [{"kind": k, "address": a} for k, a in contacts]},
            headers=admin,
        )
        assert vet.status_code == 201, vet.text
        entry = client.post(
            f"{API}/oncall",
            json={"clinic": "main", "veterinarian_id": vet.json()["id"], "level": level, **window},
            headers=admin,
        )
        assert entry.status_code == 201, entry.text


def pager_for(
    app: FastAPI, db: Database, clock: Clock, channels: dict[PageChannel, Channel]
) -> Pager:
    return Pager(
        db,
        channels,
        timeout=TIMEOUT,
        poll=0.01,
        link_maker=lambda alert_id, page_id: None,
        default_clinic="main",
        clock=clock,
        max_attempts=2,
        backoff=timedelta(seconds=30),
        metrics=app.state.paging_metrics,
    )


def test_first_page_and_acknowledgement_latencies(db: Database, tmp_path: Path) -> None:
    app = build_app(db, tmp_path)
    admin = bearer(issue(db, Role.ADMIN))
    vet = bearer(issue(db, Role.VETERINARIAN))
    raised = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    clock = Clock(raised)
    sms, email = Recording(PageChannel.SMS), Recording(PageChannel.EMAIL)
    pager = pager_for(app, db, clock, {PageChannel.SMS: sms, PageChannel.EMAIL: email})
    with TestClient(app) as client:
        make_rota(client, admin, raised)
        before = series(client)
        assert value(before, "vetgateway_alert_time_to_first_page_seconds_count") == 0
        assert value(before, "vetgateway_pages_sent_total", channel="sms") == 0

        alert_id, _ = raise_at(db, seed_finding(db), raised)
        clock.advance(timedelta(seconds=3))
        assert pager.run_due() == 2
        after_page = series(client)
        assert value(after_page, "vetgateway_alerts_opened_total", kind="critical_value") == 1
        assert value(after_page, "vetgateway_pages_sent_total", channel="sms") == 1
        assert value(after_page, "vetgateway_alert_time_to_first_page_seconds_count") == 1
        assert value(after_page, "vetgateway_alert_time_to_first_page_seconds_sum") == 3
        assert (
            value(after_page, "vetgateway_alert_time_to_first_page_seconds_bucket", le="2.5") == 0
        )
        assert (
            value(after_page, "vetgateway_alert_time_to_first_page_seconds_bucket", le="5.0") == 1
        )

        # the backup's page is not a first page; the alert is not opened again
        clock.advance(TIMEOUT)
        assert pager.run_due() == 2
        later = series(client)
        assert value(later, "vetgateway_pages_sent_total", channel="email") == 1
        assert value(later, "vetgateway_alert_time_to_first_page_seconds_count") == 1
        assert value(later, "vetgateway_alerts_opened_total", kind="critical_value") == 1

        acked = client.post(f"{API}/alerts/{alert_id}/acknowledge", json={}, headers=vet)
        assert acked.status_code == 200
        assert client.post(f"{API}/alerts/{alert_id}/acknowledge", json={}, headers=vet).json()[
            "already_acknowledged"
        ]
        after_ack = series(client)
        name = "vetgateway_alert_time_to_acknowledge_seconds"
        assert value(after_ack, f"{name}_count", via="api") == 1  # the repeat is not counted
        assert 600 <= value(after_ack, f"{name}_sum", via="api") < 3600
        assert value(after_ack, f"{name}_bucket", via="api", le="300.0") == 0
        assert value(after_ack, f"{name}_bucket", via="api", le="3600.0") == 1

        # the acknowledge link observes too, labelled "link"
        second, _ = raise_at(db, seed_finding(db, "9.0"), raised)
        pager.run_due()
        page_id = sms.sent[-1].page_id
        assert sms.sent[-1].alert_id == second
        key = signing_key(app.state.settings)
        token = make_token(key, second, page_id, datetime.now(UTC) + timedelta(hours=1))
        assert client.post(f"{API}/alerts/ack/{token}").status_code == 200
        assert client.post(f"{API}/alerts/ack/{token}").status_code == 200  # already
        by_link = series(client)
        assert value(by_link, f"{name}_count", via="link") == 1
        assert value(by_link, f"{name}_count", via="api") == 1
        assert value(by_link, "vetgateway_alert_time_to_first_page_seconds_count") == 2


def test_failures_by_channel_and_unstaffed_alert_opened_once(db: Database, tmp_path: Path) -> None:
    app = build_app(db, tmp_path)
    admin = bearer(issue(db, Role.ADMIN))
    now = datetime.now(UTC).replace(microsecond=0)
    clock = Clock(now)
    sms, email = Failing(PageChannel.SMS), Recording(PageChannel.EMAIL)
    pager = pager_for(app, db, clock, {PageChannel.SMS: sms, PageChannel.EMAIL: email})
    with TestClient(app) as client:
        # nobody on call yet: the alert stays at level 0 over two rounds, opened once
        assert (
            client.post(
                f"{API}/clinics", json={"code": "main", "name": "Main"}, headers=admin
            ).status_code
            == 201
        )
        raise_at(db, seed_finding(db), now)
        pager.run_due()
        clock.advance(TIMEOUT)
        pager.run_due()
        assert value(series(client), "vetgateway_alerts_opened_total", kind="critical_value") == 1

        vet = client.post(
            f"{API}/veterinarians",
            json={
                "name": "Dr Jones",
                "contacts": [
                    {"kind": "sms", "address": "+15550001"},
                    {"kind": "email", "address": "jones@example.org"},
                ],
            },
            headers=admin,
        ).json()
        window = {
            "starts": (now - timedelta(days=1)).isoformat(),
            "ends": (now + timedelta(days=1)).isoformat(),
        }
        assert (
            client.post(
                f"{API}/oncall",
                json={"clinic": "main", "veterinarian_id": vet["id"], "level": "primary", **window},
                headers=admin,
            ).status_code
            == 201
        )

        clock.advance(TIMEOUT)
        pager.run_due()  # sms attempt 1 fails
        clock.advance(timedelta(seconds=30))
        pager.run_due()  # sms attempt 2 fails: given up, email fallback created
        pager.run_due()  # email sent
        found = series(client)
        assert value(found, "vetgateway_page_delivery_errors_total", channel="sms") == 2
        assert value(found, "vetgateway_pages_failed_total", channel="sms") == 1
        assert value(found, "vetgateway_pages_sent_total", channel="email") == 1
        assert value(found, "vetgateway_pages_sent_total", channel="sms") == 0
        assert value(found, "vetgateway_alert_time_to_first_page_seconds_count") == 1
        assert (
            value(found, "vetgateway_alert_time_to_first_page_seconds_sum")
            == (2 * TIMEOUT + timedelta(seconds=30)).total_seconds()
        )
        assert value(found, "vetgateway_alerts_opened_total", kind="critical_value") == 1
