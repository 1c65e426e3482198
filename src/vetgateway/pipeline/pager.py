"""The pager: escalates due alerts into ``pages`` rows, and delivers pending pages.

Two steps per round (``run_due``), each its own short transaction, so escalation never waits for
a slow channel:

1. **Escalate.** Claim open alerts with ``next_action_at <= now`` (PostgreSQL: ``FOR UPDATE SKIP
   LOCKED``, so several pagers may run), plan with ``escalation.next_actions`` on the rota of the
   alert's clinic (else, or when nobody is on call there now, ``default_clinic``), insert one
   ``pending`` page per planned page, move ``level`` / ``next_action_at`` on, audit
   ``alert.escalated``; commit.
2. **Deliver.** Claim pending pages whose ``next_attempt_at`` has passed, count the attempt and
   push ``next_attempt_at`` out by the retry delay — a lease: if this process dies, the page is
   due again when it runs out. Commit; then call the channel *outside* any transaction, then
   record the outcome: ``sent`` with ``sent_at``, or the error with a retry after
   ``backoff * 2**(attempts-1)``. After ``max_attempts`` the page is ``failed`` and the
   veterinarian's next contact (``escalation.fallback_contact``) gets a new pending page at the
   same level (audited ``page.fallback``), as long as the alert is still open.

All state is in the database, so delivery is at-least-once: a crash after a channel accepted a
page but before ``sent`` was committed sends that page again after the lease. A page whose alert
was acknowledged meanwhile is cancelled by ``store.alerts.acknowledge`` and not sent.

With ``metrics`` (``PagingMetrics``) the pager counts alerts at their first escalation round,
pages sent, failed attempts and pages given up by channel, and observes the time from an alert's
``created_at`` to its first sent page (after that page's ``sent`` is committed).

Notifications carry the alert's summary (which includes ``patient_label``: pages may show it);
logs here carry ids only.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from vetgateway.adapters.notify import Channel, Notification
from vetgateway.errors import DeliveryError, StorageError
from vetgateway.paging_metrics import PagingMetrics
from vetgateway.pipeline.escalation import AlertSnapshot, Contact, fallback_contact, next_actions
from vetgateway.store.alerts import ENTITY
from vetgateway.store.audit import audit
from vetgateway.store.db import Database
from vetgateway.store.models import (
    Alert,
    AlertState,
    AuditEntry,
    Page,
    PageChannel,
    PageStatus,
    VeterinarianContact,
)
from vetgateway.store.models.base import utcnow
from vetgateway.store.oncall import default_clinic_id, rota_at

__all__ = ["Pager"]

log = logging.getLogger(__name__)

LinkMakerFn = Callable[[uuid.UUID, int], "str | None"]


@dataclass(frozen=True, slots=True)
class _Claimed:
    notification: Notification
    veterinarian_id: uuid.UUID | None
    attempts: int


class Pager:
    """Escalation and delivery over the database (see the module doc for what is guaranteed).

    ``channels`` maps each page channel to what delivers it; a page on a channel with no entry
    fails like a delivery error (and falls back). ``timeout`` is the escalation timeout per
    level, ``poll`` the seconds between rounds of the background thread. ``clock`` gives the
    current UTC time (tests pass a fake one). ``metrics``, when given, is observed as the module
    doc says.
    """

    def __init__(
        self,
        db: Database,
        channels: Mapping[PageChannel, Channel],
        *,
        timeout: timedelta,
        poll: float,
        link_maker: LinkMakerFn,
        default_clinic: str | None,
        clock: Callable[[], datetime] = utcnow,
        max_attempts: int = 3,
        backoff: timedelta = timedelta(seconds=30),
        batch: int = 50,
        metrics: PagingMetrics | None = None,
    ) -> None:
        self._db = db
        self._channels = dict(channels)
        self._timeout = timeout
        self._poll = poll
        self._link_maker = link_maker
        self._default_clinic = default_clinic
        self._clock = clock
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._batch = batch
        self._metrics = metrics
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    # -- the background thread ------------------------------------------------------------------

    def nudge(self) -> None:
        """An alert was just raised in this process: look now rather than at the next poll."""
        self._wake.set()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="pager", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.run_due()
            except StorageError as exc:
                log.warning("pager round failed; retrying", extra={"error": str(exc)})
            except Exception:  # a dead pager thread would silence every page
                log.exception("pager round failed with an unexpected error")
            self._wake.wait(self._poll)

    # -- one round ------------------------------------------------------------------------------

    def run_due(self) -> int:
        """One round: escalate due alerts, then deliver due pages. Returns pages created plus
        delivery attempts made (0: nothing was due)."""
        return self.escalate_due() + self.deliver_due()

    def escalate_due(self) -> int:
        """Step 1; returns the number of pages created."""
        now = self._clock()
        created = 0
        with self._db.session() as session:
            query = (
                sa.select(Alert)
                .where(
                    Alert.state == AlertState.OPEN,
                    Alert.deleted_at.is_(None),
                    Alert.next_action_at <= now,
                )
                .order_by(Alert.next_action_at, Alert.id)
                .limit(self._batch)
            )
            if self._db.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            alerts = session.scalars(query).all()
            default_id = None
            if alerts and self._default_clinic:
                default_id = default_clinic_id(session, self._default_clinic)
            for alert in alerts:
                created += self._escalate(session, alert, default_id, now)
        return created

    def _escalate(
        self, session: Session, alert: Alert, default_id: uuid.UUID | None, now: datetime
    ) -> int:
        clinic_id = alert.clinic_id or default_id
        rota = rota_at(session, clinic_id, now) if clinic_id is not None else {}
        if default_id is not None and clinic_id != default_id and not any(rota.values()):
            # Nobody on call at the alert's own clinic right now (closed, or no rota yet): a
            # critical value must still reach someone, so the default clinic's rota is paged.
            clinic_id = default_id
            rota = rota_at(session, default_id, now)
        snapshot = AlertSnapshot(alert.level, alert.state, alert.next_action_at)
        plan = next_actions(
            snapshot, rota, now=now, timeout=self._timeout, channels=self._channels.keys()
        )
        if not plan.due:
            return 0
        previous = alert.level
        if self._metrics is not None and previous == 0 and not self._seen_unstaffed(session, alert):
            self._metrics.alert_opened(alert.kind.value)
        alert.level = plan.new_level
        alert.next_action_at = plan.next_action_at
        pages = [
            Page(
                alert_id=alert.id,
                veterinarian_id=p.veterinarian_id,
                channel=p.channel,
                target=p.target,
                level=p.level,
                status=PageStatus.PENDING,
                attempts=0,
                next_attempt_at=now,
            )
            for p in plan.pages
        ]
        session.add_all(pages)
        session.flush()
        if plan.unstaffed:
            log.warning(
                "nobody on call to page", extra={"alert_id": str(alert.id), "clinic_id": clinic_id}
            )
        audit(
            session,
            actor="pager",
            action="alert.unstaffed" if plan.unstaffed else "alert.escalated",
            entity_type=ENTITY,
            entity_id=str(alert.id),
            details={
                "from_level": previous,
                "level": plan.new_level,
                "pages": [p.id for p in pages],
                "next_action_at": None
                if plan.next_action_at is None
                else plan.next_action_at.isoformat(),
            },
        )
        log.info(
            "alert escalated",
            extra={"alert_id": str(alert.id), "level": plan.new_level, "pages": len(pages)},
        )
        return len(pages)

    @staticmethod
    def _seen_unstaffed(session: Session, alert: Alert) -> bool:
        """Whether an earlier round found nobody on call for ``alert`` (its level stayed 0)."""
        found = session.scalar(
            sa.select(AuditEntry.id)
            .where(
                AuditEntry.entity_type == ENTITY,
                AuditEntry.entity_id == str(alert.id),
                AuditEntry.action == "alert.unstaffed",
            )
            .limit(1)
        )
        return found is not None

    def deliver_due(self) -> int:
        """Step 2; returns the number of delivery attempts made."""
        claimed = self._claim_pages()
        for item in claimed:
            self._deliver(item)
        return len(claimed)

    def _retry_delay(self, attempts: int) -> timedelta:
        delay: timedelta = self._backoff * (1 << max(0, min(attempts - 1, 20)))
        return delay

    def _claim_pages(self) -> list[_Claimed]:
        now = self._clock()
        claimed: list[_Claimed] = []
        with self._db.session() as session:
            query = (
                sa.select(Page, Alert.summary)
                .join(Alert, Alert.id == Page.alert_id)
                .where(
                    Page.status == PageStatus.PENDING,
                    sa.or_(Page.next_attempt_at.is_(None), Page.next_attempt_at <= now),
                )
                .order_by(Page.id)
                .limit(self._batch)
            )
            if self._db.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True, of=Page)
            for page, summary in session.execute(query).all():
                if page.attempts >= self._max_attempts:
                    # A process died holding this page's lease on its last attempt.
                    self._give_up(session, page, page.last_error or "delivery outcome unknown")
                    continue
                page.attempts += 1
                page.next_attempt_at = now + self._retry_delay(page.attempts)
                url = self._link_maker(page.alert_id, page.id)
                claimed.append(
                    _Claimed(
                        Notification(
                            alert_id=page.alert_id,
                            page_id=page.id,
                            level=page.level,
                            channel=page.channel,
                            target=page.target,
                            subject=summary[:150],
                            body=_body(summary, page.level, url),
                            acknowledge_url=url,
                        ),
                        page.veterinarian_id,
                        page.attempts,
                    )
                )
        return claimed

    def _deliver(self, item: _Claimed) -> None:
        note = item.notification
        channel = self._channels.get(note.channel)
        error: str | None = None
        try:
            if channel is None:
                raise DeliveryError(f"no {note.channel.value} channel is configured")
            channel.deliver(note)
        except DeliveryError as exc:
            error = str(exc) or type(exc).__name__
        now = self._clock()
        if error is None:
            sent, first_for = self._record_sent(note.page_id, now)
            if sent and self._metrics is not None:
                self._metrics.page_sent(note.channel.value, first_for=first_for, at=now)
            return
        if self._metrics is not None:
            self._metrics.delivery_failed(note.channel.value)
        with self._db.session() as session:
            page = session.get(Page, note.page_id, with_for_update=self._db.dialect == "postgresql")
            if page is None:
                return
            log.warning(
                "page delivery failed",
                extra={"page_id": page.id, "attempt": item.attempts, "error": error},
            )
            if page.status is not PageStatus.PENDING:
                return  # cancelled by an acknowledgement meanwhile
            page.last_error = error
            if page.attempts >= self._max_attempts:
                self._give_up(session, page, error)
            else:
                page.next_attempt_at = now + self._retry_delay(page.attempts)

    def _record_sent(self, page_id: int, now: datetime) -> tuple[bool, datetime | None]:
        """Mark the page sent. Returns whether it existed and, when it is its alert's first
        sent page and metrics are kept, the alert's ``created_at``."""
        with self._db.session() as session:
            page = session.get(Page, page_id, with_for_update=self._db.dialect == "postgresql")
            if page is None:
                return False, None
            page.status = PageStatus.SENT
            page.sent_at = now
            page.last_error = None
            page.next_attempt_at = None
            log.info("page sent", extra={"page_id": page.id, "alert_id": str(page.alert_id)})
            if self._metrics is None:
                return True, None
            earlier = session.scalar(
                sa.select(Page.id)
                .where(
                    Page.alert_id == page.alert_id,
                    Page.id != page.id,
                    Page.sent_at.is_not(None),
                )
                .limit(1)
            )
            if earlier is not None:
                return True, None
            raised = sa.select(Alert.created_at).where(Alert.id == page.alert_id)
            return True, session.scalar(raised)

    def _give_up(self, session: Session, page: Page, error: str) -> None:
        """Mark ``page`` failed and page the same veterinarian's next contact, if any."""
        now = self._clock()
        page.status = PageStatus.FAILED
        page.last_error = error
        page.next_attempt_at = None
        if self._metrics is not None:
            self._metrics.page_given_up(page.channel.value)
        state = session.scalar(sa.select(Alert.state).where(Alert.id == page.alert_id))
        fallback = None
        if state is AlertState.OPEN and page.veterinarian_id is not None:
            contacts = [
                Contact(c.kind, c.address, c.priority)
                for c in session.scalars(
                    sa.select(VeterinarianContact)
                    .where(VeterinarianContact.veterinarian_id == page.veterinarian_id)
                    .order_by(VeterinarianContact.priority, VeterinarianContact.id)
                )
            ]
            fallback = fallback_contact(
                contacts,
                failed_channel=page.channel,
                failed_target=page.target,
                channels=self._channels.keys(),
            )
        new_page = None
        if fallback is not None:
            new_page = Page(
                alert_id=page.alert_id,
                veterinarian_id=page.veterinarian_id,
                channel=fallback[0],
                target=fallback[1],
                level=page.level,
                status=PageStatus.PENDING,
                attempts=0,
                next_attempt_at=now,
            )
            session.add(new_page)
            session.flush()
        audit(
            session,
            actor="pager",
            action="page.fallback" if new_page is not None else "page.failed",
            entity_type=ENTITY,
            entity_id=str(page.alert_id),
            details={
                "page_id": page.id,
                "channel": page.channel.value,
                "attempts": page.attempts,
                "error": error,
                "fallback_page_id": None if new_page is None else new_page.id,
                "fallback_channel": None if fallback is None else fallback[0].value,
            },
        )


def _body(summary: str, level: int, url: str | None) -> str:
    who = {1: "primary", 2: "backup", 3: "lead"}.get(level, f"level {level}")
    text = f"{summary}\n\nYou are paged as the {who} on call. Please acknowledge"
    return f"{text}: {url}" if url else f"{text} with POST /api/v1/alerts/{{id}}/acknowledge."
