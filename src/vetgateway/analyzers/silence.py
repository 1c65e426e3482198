"""The silence watch: an analyzer that has sent nothing for its quiet limit of *opening* time
raises one operational alert to the IT contact, and the alert clears itself when it sends again.

An unplugged cable or a serial-to-TCP converter without power looks like no results at all, and
nobody notices until a vet asks where the morning's bloods went. Each round (every
``silence_check_seconds``) the watch:

1. writes the arrival times the intake noted since the last round to ``devices.last_seen_at``;
2. for each active device with a quiet limit, measures the opening time since it was last heard
   (or since it was configured, if never) with ``analyzers.hours.open_time_between``;
3. opens an alert (with pages to the IT contacts) for a device past its limit that has none, and
   resolves the alert of a device heard from since.

``is_silent`` is the pure decision; ``SilenceWatch.run_once`` the round, one transaction.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from vetgateway.analyzers.config import ContactConfig
from vetgateway.analyzers.hours import OpeningHours, open_time_between
from vetgateway.errors import StorageError
from vetgateway.store.db import Database
from vetgateway.store.device_alerts import clear_silence, open_silence_alerts, raise_silence
from vetgateway.store.devices import DeviceView, active_devices, record_last_seen
from vetgateway.store.models.base import utcnow

__all__ = ["SilenceWatch", "is_silent"]

log = logging.getLogger(__name__)


def is_silent(device: DeviceView, hours: OpeningHours, now: datetime) -> bool:
    """True when the device's quiet limit of opening time has passed since it was last heard."""
    if device.quiet_limit_seconds is None:
        return False
    since = device.last_seen_at or device.created_at
    limit = timedelta(seconds=device.quiet_limit_seconds)
    return open_time_between(hours, since, now) >= limit


class SilenceWatch:
    """Runs the rounds; ``take_seen`` is the intake's ``AnalyzerIntake.take_seen``."""

    def __init__(
        self,
        db: Database,
        take_seen: Callable[[], dict[uuid.UUID, datetime]],
        hours: OpeningHours,
        contacts: Sequence[ContactConfig],
        *,
        interval: float = 30.0,
        clock: Callable[[], datetime] = utcnow,
        on_alert: Callable[[], None] | None = None,
    ) -> None:
        self._db = db
        self._take_seen = take_seen
        self._hours = hours
        self._contacts = tuple(contacts)
        self._interval = interval
        self._clock = clock
        self.on_alert = on_alert
        self._carry: dict[uuid.UUID, datetime] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> tuple[int, int]:
        """One round; returns (alerts raised, alerts cleared)."""
        seen = self._take_seen()
        for device_id, at in self._carry.items():  # not written last round (database down)
            if device_id not in seen or seen[device_id] < at:
                seen[device_id] = at
        self._carry = {}
        now = self._clock()
        raised = cleared = 0
        try:
            with self._db.session() as session:
                record_last_seen(session, seen)
                session.flush()
                open_alerts = open_silence_alerts(session)
                devices = active_devices(session)
                for device_id in open_alerts.keys() - {d.id for d in devices}:
                    # Removed from the config while silent: nobody will hear from it again.
                    clear_silence(session, open_alerts[device_id], now=now)
                    cleared += 1
                for device in devices:
                    alert_id = open_alerts.get(device.id)
                    silent = is_silent(device, self._hours, now)
                    if silent and alert_id is None:
                        raise_silence(
                            session,
                            device_id=device.id,
                            clinic_id=device.clinic_id,
                            summary=_summary(device),
                            contacts=self._contacts,
                            now=now,
                        )
                        raised += 1
                        log.warning("analyzer silent", extra={"device": device.name})
                    elif not silent and alert_id is not None:
                        clear_silence(session, alert_id, now=now)
                        cleared += 1
                        log.info("analyzer heard again", extra={"device": device.name})
        except StorageError:
            self._carry = seen
            raise
        if raised and self.on_alert is not None:
            self.on_alert()
        return raised, cleared

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="silence-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the rounds, then write the arrivals noted since the last one."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        seen = self._take_seen()
        for device_id, at in self._carry.items():
            if device_id not in seen or seen[device_id] < at:
                seen[device_id] = at
        if seen:
            try:
                with self._db.session() as session:
                    record_last_seen(session, seen)
            except StorageError as exc:
                log.warning("last-seen times not written", extra={"error": str(exc)})

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.run_once()
            except StorageError as exc:
                log.warning("silence watch round failed", extra={"error": str(exc)})
            except Exception:  # our bug: keep watching, the next round may work
                log.exception("silence watch round failed")


def _summary(device: DeviceView) -> str:
    minutes = (device.quiet_limit_seconds or 0) // 60
    last = device.last_seen_at.isoformat(timespec="minutes") if device.last_seen_at else "never"
    return (
        f"Analyzer {device.name!r} has sent nothing for {minutes} min of opening time "
        f"(last message: {last}). Check its cable, converter power and LIS settings."
    )
