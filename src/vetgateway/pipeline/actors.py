"""The pipeline's Dramatiq actor, bound to a broker by a factory (nothing at import time).

There is one actor, ``process_messages(ids)``: the whole per-message pipeline is one transaction
(CONVENTIONS.md §1), so an actor per stage would only add broker round trips and intermediate
states to recover. It carries a small batch of ids (the dispatcher groups what is due at once), so
a busy pipeline shares commits and queries between messages. The actor is thin: it calls
``MessageProcessor.process_batch``; if the batch fails it takes the ids one by one, so one bad
message cannot hold back the others, and writes each failure onto its message row for the
dispatcher to retry with backoff (``store/work_queue.py``).

Dramatiq's own retries are off (``max_retries=0``): the database decides what is retried and when,
so a message retried by Dramatiq and re-dispatched by the sweeper can never race itself into two
schedules. A redelivery (RabbitMQ unacked after a worker died, Redis heartbeat) is harmless: the
processor finds the rows finished and does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime

import dramatiq
import pika.exceptions
import redis.exceptions
from dramatiq.errors import BrokerError

from vetgateway.errors import BrokerUnavailable, StorageError
from vetgateway.pipeline.process import MessageProcessor
from vetgateway.store import work_queue
from vetgateway.store.db import Database
from vetgateway.store.models.base import utcnow

__all__ = ["PipelineActors"]

log = logging.getLogger(__name__)

# What the broker clients raise when the broker is away (dramatiq wraps most, not all).
_BROKER_ERRORS = (BrokerError, pika.exceptions.AMQPError, redis.exceptions.RedisError, OSError)


class PipelineActors:
    """The actors of one broker. ``send(id)`` enqueues; workers run ``process``."""

    def __init__(
        self,
        broker: dramatiq.Broker,
        db: Database,
        processor: MessageProcessor,
        retry: work_queue.Retry,
        *,
        queue: str,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._processor = processor
        self._retry = retry
        self._clock = clock
        declare = dramatiq.actor(
            broker=broker, actor_name="process_messages", queue_name=queue, max_retries=0
        )
        self.process_messages: dramatiq.Actor[[list[int]], None] = declare(self._process)

    def send(self, message_ids: Sequence[int]) -> None:
        """Enqueue one batch; a broker that does not take it raises ``BrokerUnavailable``."""
        try:
            self.process_messages.send(list(message_ids))
        except _BROKER_ERRORS as exc:
            raise BrokerUnavailable(f"the broker did not take a batch: {exc}") from exc

    def _process(self, message_ids: list[int]) -> None:
        if len(message_ids) > 1:
            try:
                self._processor.process_batch(message_ids)
                return
            except Exception:  # retried one by one below; a bug shows here with its traceback
                log.exception("pipeline batch failed; retrying its messages one by one")
        for message_id in message_ids:
            try:
                self._processor.process_batch([message_id])
            except Exception as exc:  # recorded on the row for the dispatcher's backoff
                log.exception("pipeline attempt failed", extra={"message_id": message_id})
                self._record_failure(message_id, f"{type(exc).__name__}: {exc}")

    def _record_failure(self, message_id: int, error: str) -> None:
        try:
            with self._db.session() as session:
                work_queue.record_failure(
                    session, message_id, error=error, now=self._clock(), retry=self._retry
                )
        except StorageError:
            # The database is down too: the lease runs out and the dispatcher hands the message
            # out again; nothing is lost, only this error text.
            log.warning("could not record the failure", extra={"message_id": message_id})
