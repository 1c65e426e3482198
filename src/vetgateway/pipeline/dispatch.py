"""The dispatcher: the relay from the queue of record (the database) to the broker.

It is the transactional outbox's relay and the sweeper in one loop (RELIABILITY R05, R06): every
``received`` message that is due — new, failed and backed off, or leased to a worker that never
finished — is claimed in the database and its id sent to the broker. It wakes when the inbox
commits (``nudge``) and at least every ``poll`` seconds, so new messages go out at once and lost
ones within a lease.

If the broker does not take an id, the claim is released (due again, attempt not counted) and
the dispatcher waits a poll before trying again: a broker outage delays results but loses
nothing, and the senders were ACKed long before, on the database commit alone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime

from vetgateway.errors import BrokerUnavailable, StorageError
from vetgateway.store import work_queue
from vetgateway.store.db import Database
from vetgateway.store.models.base import utcnow

__all__ = ["Dispatcher"]

log = logging.getLogger(__name__)


class Dispatcher:
    """Claims due messages and hands their ids to ``send`` in chunks. Runs in its own thread.

    ``linger`` is how long it lets new work gather after a nudge, ``chunk`` the most ids per
    broker message: under load a worker gets whole batches, when quiet a single id at once.
    """

    def __init__(
        self,
        db: Database,
        send: Callable[[Sequence[int]], None],
        retry: work_queue.Retry,
        *,
        poll: float = 1.0,
        batch: int = 500,
        chunk: int = 50,
        linger: float = 0.02,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._send = send
        self._retry = retry
        self._poll = poll
        self._batch = batch
        self._chunk = chunk
        self._linger = linger
        self._clock = clock
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.dispatched = 0
        self.exhausted = 0

    def nudge(self, _count: int = 0) -> None:
        """New work was committed: look now rather than at the next poll (inbox ``on_commit``)."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dispatcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            # Let a burst gather for a moment, so workers get batches rather than single ids.
            self._stopping.wait(self._linger)
            try:
                self.dispatch_due()
            except StorageError as exc:
                log.warning("dispatcher: database unavailable: %s", exc)
            except Exception:  # our bug: logged, and the loop keeps the pipeline alive
                log.exception("dispatcher failed")
            self._wake.wait(self._poll)

    def dispatch_due(self) -> int:
        """Claim and send everything due now; returns how many ids went to the broker."""
        sent = 0
        while not self._stopping.is_set():
            with self._db.session() as session:
                claim = work_queue.claim_due(
                    session, now=self._clock(), limit=self._batch, retry=self._retry
                )
            self.exhausted += len(claim.exhausted)
            for message_id in claim.exhausted:
                log.error(
                    "message quarantined: attempts exhausted", extra={"message_id": message_id}
                )
            ids = claim.dispatch
            for start in range(0, len(ids), self._chunk):
                try:
                    self._send(ids[start : start + self._chunk])
                except BrokerUnavailable as exc:  # release; try again at the next poll
                    log.warning("dispatcher: %s", exc)
                    with self._db.session() as session:
                        work_queue.release(session, ids[start:])
                    self.dispatched += start
                    return sent + start
            sent += len(ids)
            self.dispatched += len(ids)
            if len(claim.dispatch) + len(claim.exhausted) < self._batch:
                break
        return sent
