"""The pager on both back ends, on an injected clock (no sleeping): primary at once, backup
after the timeout, retries and fallback contacts while escalation goes on, the rota file."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.integration.test_alerts import T0, load, raise_at, seed_finding
from tests.waiting import wait_until
from vetgateway.adapters.notify import Channel, Notification
from vetgateway.errors import DeliveryError
from vetgateway.pipeline.pager import Pager
from vetgateway.store import alerts as alert_store
from vetgateway.store.clinics import Refused, create_clinic
from vetgateway.store.db import Database
from vetgateway.store.models import (
    AcknowledgementVia,
    AlertState,
    AuditEntry,
    OnCallEntry,
    OnCallLevel,
    Page,
    PageChannel,
    PageStatus,
    Veterinarian,
)
from vetgateway.store.oncall import default_clinic_id, load_oncall_file, rota_at

TIMEOUT = timedelta(minutes=5)

ROTA = """
[[clinics]]
code = "main"
name = "Main Street"
timezone = "America/New_York"

[[veterinarians]]
key = "jones"
name = "Dr Jones"
licence_state = "NY"
licence_number = "1"
contacts = [
  { kind = "sms", address = "+15550001", priority = 0 },
  { kind = "email", address = "jones@example.org", priority = 1 },
]

[[veterinarians]]
key = "smith"
name = "Dr Smith"
contacts = [{ kind = "email", address = "smith@example.org", priority = 0 }]

[[on_call]]
clinic = "main"
veterinarian = "jones"
level = "primary"
starts = 2024-05-01T06:00:00
ends = 2024-05-01T18:00:00

[[on_call]]
clinic = "main"
veterinarian = "smith"
level = "backup"
starts = 2024-05-01T06:00:00
ends = 2024-05-01T18:00:00
"""


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


class Recording:
    def __init__(self, kind: PageChannel) -> None:
        self.kind = kind
        self.sent: list[Notification] = []

    def deliver(self, notification: Notification) -> None:
        self.sent.append(notification)


class Failing:
    def __init__(self, kind: PageChannel) -> None:
        self.kind = kind
        self.calls = 0

    def deliver(self, notification: Notification) -> None:
        self.calls += 1
        raise DeliveryError(f"{self.kind.value} gateway said 503")


@pytest.fixture
def rota_file(tmp_path: Path) -> Path:
    path = tmp_path / "oncall.toml"
    path.write_text(ROTA)
    return path


def load_rota(db: Database, path: Path) -> None:
    with db.session() as s:
        load_oncall_file(s, path)


def make_pager(db: Database, clock: Clock, channels: dict[PageChannel, Channel]) -> Pager:
    return Pager(
        db,
        channels,
        timeout=TIMEOUT,
        poll=0.01,
        link_maker=lambda alert_id, page_id: f"https://gw/ack/{alert_id}/{page_id}",
        default_clinic="main",
        clock=clock,
        max_attempts=2,
        backoff=timedelta(seconds=30),
    )


def pages(db: Database) -> list[Page]:
    with db.session(readonly=True) as s:
        return list(s.scalars(sa.select(Page).order_by(Page.id)))


def test_oncall_file_is_idempotent_and_local_times(db: Database, rota_file: Path) -> None:
    load_rota(db, rota_file)
    load_rota(db, rota_file)
    with db.session(readonly=True) as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Veterinarian)) == 2
        entries = list(s.scalars(sa.select(OnCallEntry)))
        assert len(entries) == 2
        # 06:00 in New York (EDT, UTC-4) is 10:00 UTC
        assert {e.starts_at for e in entries} == {T0.replace(hour=10)}
        clinic = default_clinic_id(s, "main")
        assert clinic is not None
        rota = rota_at(s, clinic, T0)
        [primary] = rota[OnCallLevel.PRIMARY]
        assert [c.address for c in primary.contacts] == ["+15550001", "jones@example.org"]
        assert len(rota[OnCallLevel.BACKUP]) == 1
        assert rota[OnCallLevel.LEAD] == []
        assert rota_at(s, clinic, T0.replace(hour=23)) == {level: [] for level in OnCallLevel}


def test_primary_at_once_backup_after_timeout(db: Database, rota_file: Path) -> None:
    load_rota(db, rota_file)
    clock = Clock(T0)
    sms, email = Recording(PageChannel.SMS), Recording(PageChannel.EMAIL)
    pager = make_pager(db, clock, {PageChannel.SMS: sms, PageChannel.EMAIL: email})
    alert_id, _ = raise_at(db, seed_finding(db), T0)

    assert pager.run_due() == 2  # one page created, one delivered
    assert [n.target for n in sms.sent] == ["+15550001"]
    note = sms.sent[0]
    assert note.level == 1
    assert note.acknowledge_url == f"https://gw/ack/{alert_id}/{note.page_id}"
    assert "Rex (canine), Smith" in note.body
    assert load(db, alert_id).level == 1

    clock.advance(TIMEOUT - timedelta(seconds=1))
    assert pager.run_due() == 0
    clock.advance(timedelta(seconds=1))
    assert pager.run_due() == 2
    assert [n.target for n in email.sent] == ["smith@example.org"]
    assert load(db, alert_id).level == 2
    assert [p.status for p in pages(db)] == [PageStatus.SENT, PageStatus.SENT]

    # no lead on call: backup is paged again each timeout until acknowledged
    clock.advance(TIMEOUT)
    pager.run_due()
    assert [n.target for n in email.sent] == ["smith@example.org"] * 2
    with db.session() as s:
        alert_store.acknowledge(
            s,
            alert_id,
            veterinarian_id=None,
            actor="test",
            via=AcknowledgementVia.API,
            note=None,
            now=clock(),
        )
    clock.advance(TIMEOUT * 3)
    assert pager.run_due() == 0
    with db.session(readonly=True) as s:
        escalations = s.scalars(
            sa.select(AuditEntry.action).where(AuditEntry.action == "alert.escalated")
        ).all()
        assert len(escalations) == 3


def test_failing_channel_retried_then_fallback_while_escalating(
    db: Database, rota_file: Path
) -> None:
    load_rota(db, rota_file)
    clock = Clock(T0)
    sms, email = Failing(PageChannel.SMS), Recording(PageChannel.EMAIL)
    pager = make_pager(db, clock, {PageChannel.SMS: sms, PageChannel.EMAIL: email})
    alert_id, _ = raise_at(db, seed_finding(db), T0)

    pager.run_due()
    assert sms.calls == 1
    [page] = pages(db)
    assert (page.status, page.attempts) == (PageStatus.PENDING, 1)
    assert page.last_error == "sms gateway said 503"
    assert page.next_attempt_at == T0 + timedelta(seconds=30)

    clock.advance(timedelta(seconds=30))  # second and last attempt, then the email contact
    pager.run_due()
    assert sms.calls == 2
    first, fallback = pages(db)
    assert first.status is PageStatus.FAILED
    assert (fallback.channel, fallback.target, fallback.level) == (
        PageChannel.EMAIL,
        "jones@example.org",
        1,
    )
    pager.run_due()
    assert [n.target for n in email.sent] == ["jones@example.org"]

    # the failures did not hold escalation back: backup is paged at the timeout
    clock.advance(TIMEOUT)
    pager.run_due()
    assert [n.target for n in email.sent] == ["jones@example.org", "smith@example.org"]
    assert load(db, alert_id).level == 2


def test_crash_after_claim_is_sent_after_the_lease(db: Database, rota_file: Path) -> None:
    load_rota(db, rota_file)
    clock = Clock(T0)
    sms = Recording(PageChannel.SMS)
    pager = make_pager(db, clock, {PageChannel.SMS: sms})
    raise_at(db, seed_finding(db), T0)
    pager.escalate_due()
    with db.session() as s:  # as if a pager had claimed the page and died before sending
        s.execute(sa.update(Page).values(attempts=1, next_attempt_at=T0 + timedelta(seconds=30)))
    assert pager.deliver_due() == 0
    clock.advance(timedelta(seconds=30))
    assert pager.deliver_due() == 1
    assert len(sms.sent) == 1
    assert pages(db)[0].status is PageStatus.SENT


def test_background_thread_pages(db: Database, rota_file: Path) -> None:
    load_rota(db, rota_file)
    sms = Recording(PageChannel.SMS)
    pager = make_pager(db, Clock(T0), {PageChannel.SMS: sms})
    alert_id, _ = raise_at(db, seed_finding(db), T0)
    pager.start()
    try:
        wait_until(lambda: len(sms.sent) == 1, what="primary paged")
    finally:
        pager.stop()
    assert load(db, alert_id).state is AlertState.OPEN


def test_nobody_on_call_is_audited_and_retried(db: Database) -> None:
    clock = Clock(T0)
    pager = make_pager(db, clock, {PageChannel.SMS: Recording(PageChannel.SMS)})
    alert_id, _ = raise_at(db, seed_finding(db), T0)
    assert pager.run_due() == 0
    alert = load(db, alert_id)
    assert (alert.level, alert.next_action_at) == (0, T0 + TIMEOUT)
    with db.session(readonly=True) as s:
        assert (
            "alert.unstaffed"
            in s.scalars(
                sa.select(AuditEntry.action).where(AuditEntry.entity_id == str(alert_id))
            ).all()
        )


def test_a_clinic_with_nobody_on_call_falls_back_to_the_default_clinics_rota(
    db: Database, rota_file: Path
) -> None:
    """A critical value for a clinic that is closed (no rota entry now) must still reach
    someone: the default clinic's on-call veterinarian is paged."""
    load_rota(db, rota_file)
    with db.session() as s:
        closed = create_clinic(s, code="branch", name="Branch", timezone="UTC", actor="test")
        assert not isinstance(closed, Refused)
    clock = Clock(T0)
    sms = Recording(PageChannel.SMS)
    pager = make_pager(db, clock, {PageChannel.SMS: sms})
    finding = dataclasses.replace(seed_finding(db), clinic_id=closed.id)
    alert_id, _ = raise_at(db, finding, T0)
    assert pager.run_due() == 2
    assert [n.target for n in sms.sent] == ["+15550001"]  # main's primary
    assert load(db, alert_id).clinic_id == closed.id  # the alert still names its clinic
