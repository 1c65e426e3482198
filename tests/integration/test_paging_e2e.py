"""Critical-value paging end to end: a real gateway process, a critical ORU over MLLP, the
primary paged by signed webhook (a real HTTP sink), the backup by email (a real SMTP server)
once the shortened timeout passes unacknowledged, then the acknowledge link (GET changes
nothing, POST acknowledges) stops the escalation. RELIABILITY R40."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.gateway_process import GatewayProcess, gateway_environment
from tests.http_sink import HttpSink
from tests.mllp_peer import MllpPeer, msa
from tests.oncall_file import CRITICAL_K, write_oncall
from tests.oru import vet_oru
from tests.smtp_sink import SmtpSink
from vetgateway.store.db import Database

SIGNING_KEY = "test-signing-key"


@pytest.fixture
def sinks() -> Iterator[tuple[HttpSink, SmtpSink]]:
    with HttpSink() as http, SmtpSink() as smtp:
        yield http, smtp


def test_r40_unacknowledged_critical_escalates_and_the_link_acknowledges(
    tmp_path: Path, sinks: tuple[HttpSink, SmtpSink]
) -> None:
    http, smtp = sinks
    oncall = write_oncall(tmp_path / "oncall.toml", http.url("/pager"), "tom@clinic.example")
    env = gateway_environment(
        tmp_path,
        oncall_file=str(oncall),
        signing_key=SIGNING_KEY,
        smtp_host=smtp.host,
        smtp_port=str(smtp.port),
        escalation_timeout_seconds="2",
        pager_poll_seconds="0.1",
        pipeline_linger_seconds="0",
    )
    gateway = GatewayProcess(env, tmp_path / "gateway.log").start()
    try:
        with MllpPeer(*gateway.mllp, timeout=15) as peer:
            ack = peer.exchange(
                vet_oru(
                    "CRIT-1", accession="K-1", species="Feline", patient="Tom", results=CRITICAL_K
                )
            )
        assert msa(ack)[1] == "AA"

        # The primary is paged at once, by signed webhook; the alert says whose value it is.
        [page] = http.wait_for(1, timeout=30)
        timestamp = page.headers["X-Vetgateway-Timestamp"]
        expected = hmac.new(
            SIGNING_KEY.encode(), timestamp.encode() + b"." + page.body, hashlib.sha256
        ).hexdigest()
        assert page.headers["X-Vetgateway-Signature"] == f"sha256={expected}"
        body = json.loads(page.body)
        assert "unmatched patient: Tom (feline)" in body["text"]
        assert body["level"] == 1
        link = body["acknowledge_url"]
        assert link.startswith(gateway.listening["http"])

        # Nobody acknowledges: after the (shortened) timeout the backup is paged by email.
        [mail] = smtp.wait_for(1, timeout=30)
        assert mail.rcpt_tos == ["tom@clinic.example"]
        text = mail.message.get_content()
        assert "Potassium" in text or "K" in text
        backup_link = re.search(r"Acknowledge: (\S+)", text)
        assert backup_link is not None

        # A link preview only GETs: that must not acknowledge.
        with urllib.request.urlopen(link, timeout=10) as response:
            assert b"<form" in response.read()
        db = Database(f"sqlite:///{tmp_path / 'vetgateway.db'}")
        try:

            def state() -> str:
                with db.session(readonly=True) as session:
                    return str(session.execute(sa.text("SELECT state FROM alerts")).scalar_one())

            assert state() == "open"
            request = urllib.request.Request(link, data=b"", method="POST")
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
            assert state() == "acknowledged"
            with db.session(readonly=True) as session:
                next_action = session.execute(
                    sa.text("SELECT next_action_at FROM alerts")
                ).scalar_one()
                pending = session.execute(
                    sa.text("SELECT count(*) FROM pages WHERE status = 'pending'")
                ).scalar_one()
            assert (next_action, pending) == (None, 0)  # nothing more will be sent
        finally:
            db.dispose()
        assert gateway.stop() == 0
    finally:
        gateway.ensure_dead()
