"""Assembling the pipeline for a process: broker, actors, dispatcher and (maybe) a worker.

The same pieces serve three set-ups (issue 4, CONVENTIONS.md §3):

- ``vetgateway run`` with no broker URL: in-memory broker, dispatcher and worker in one process.
- ``vetgateway run`` with a broker URL: the gateway dispatches; it runs no worker.
- ``vetgateway worker``: a worker on the configured broker (any number of processes, on any
  machine); ``--sweep`` also runs a dispatcher, which is safe beside others on PostgreSQL.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import dramatiq
from dramatiq.brokers.stub import StubBroker

from vetgateway.config import Settings
from vetgateway.pipeline.actors import PipelineActors
from vetgateway.pipeline.broker import create_broker
from vetgateway.pipeline.dispatch import Dispatcher
from vetgateway.pipeline.process import MessageProcessor
from vetgateway.store import work_queue
from vetgateway.store.db import Database
from vetgateway.store.models.base import utcnow
from vetgateway.store.work_queue import Retry

__all__ = ["Pipeline", "retry_policy"]

log = logging.getLogger(__name__)


def retry_policy(settings: Settings) -> Retry:
    return Retry(
        lease=timedelta(seconds=settings.pipeline_lease_seconds),
        max_attempts=settings.pipeline_max_attempts,
        backoff=timedelta(seconds=settings.pipeline_backoff_seconds),
        backoff_max=timedelta(seconds=settings.pipeline_backoff_max_seconds),
    )


class Pipeline:
    """Start with ``start()``, stop with ``stop()``; ``nudge`` after new work is committed."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        dispatch: bool,
        work: bool,
        broker: dramatiq.Broker | None = None,
    ) -> None:
        self.settings = settings
        # Everything the pipeline writes is redone if lost, so its commits need not wait for
        # the disk (``Database.redoable``); the inbox keeps its own, fully durable, handle.
        db = db.redoable()
        self._db = db
        self.broker = broker if broker is not None else create_broker(settings.broker_url)
        retry = retry_policy(settings)
        zone = settings.zone
        if work:  # said once per process that parses: an hours-off result time starts here
            log.info(
                "times without an offset are read in the clinic's zone", extra={"zone": str(zone)}
            )
            for source in settings.hl7_sources:
                log.info(
                    "an HL7 source is read by its own rules",
                    extra={
                        "source": source.source,
                        "zone": source.timezone or str(zone),
                        "pms_id": source.pms_id,
                    },
                )
        self.processor = MessageProcessor(
            db,
            match_window=timedelta(days=settings.match_window_days),
            alert_merge=timedelta(minutes=settings.alert_merge_minutes),
            default_clinic=settings.default_clinic,
            zone=zone,
            profiles=settings.source_profiles,
        )
        self.actors = PipelineActors(
            self.broker, db, self.processor, retry, queue=settings.broker_queue
        )
        self.dispatcher = (
            Dispatcher(
                db,
                self.actors.send,
                retry,
                poll=settings.pipeline_poll_seconds,
                chunk=settings.pipeline_batch_size,
                linger=settings.pipeline_linger_seconds,
            )
            if dispatch
            else None
        )
        self.worker = (
            dramatiq.Worker(
                self.broker,
                queues={settings.broker_queue},
                worker_threads=settings.worker_threads,
                worker_timeout=100,
            )
            if work
            else None
        )

    def nudge(self, count: int = 0) -> None:
        if self.dispatcher is not None:
            self.dispatcher.nudge(count)

    def start(self) -> None:
        if isinstance(self.broker, StubBroker) and self.dispatcher is not None:
            with self._db.session() as session:
                released = work_queue.release_leases(session, now=utcnow())
            if released:
                log.info("re-dispatching %d messages leased before a restart", released)
        if self.worker is not None:
            self.worker.start()
        if self.dispatcher is not None:
            self.dispatcher.start()

    def stop(self) -> None:
        """Stop handing out work, let the worker finish what it holds, close the broker."""
        if self.dispatcher is not None:
            self.dispatcher.stop()
        if self.worker is not None:
            self.worker.stop()
        self.broker.close()
        self._db.dispose()
