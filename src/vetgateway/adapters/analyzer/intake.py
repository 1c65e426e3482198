"""The gateway side of every analyzer line: which device sent a message, and storing it.

For each complete message the line runner awaits ``handler(text, peer)``; the handler returns
only after the inbox committed the message, and the runner releases the analyzer's ACK after
that (RELIABILITY R02 for ASTM). A ``StorageError`` propagates, and the runner NAKs: the analyzer
sends the message again later.

Which device: a dedicated line (a serial port, a converter we dial) belongs to one configured
device. On the shared ASTM listener the H record's sender id (H-5) is all that tells analyzers
apart, so a message whose sender id no configured analyzer has is **stored, quarantined with a
reason and acknowledged** — never attributed to a device by guess; once the analyzer is added to
the config, ``vetgateway replay`` processes it. A dedicated line whose message names another
sender id than configured is stored for its device, with the mismatch noted in the message's
meta for the interface analyst.

Host queries (a Q record) are answered after the query is stored: ``answer_queries`` returns the
messages to send back over the same line (``analyzers/host_query.py``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime

from vetgateway.adapters.analyzer.runner import Delivery, MessageHandler
from vetgateway.adapters.astm.header import has_query, read_sender
from vetgateway.errors import StorageError
from vetgateway.store.devices import DeviceView, device_meta
from vetgateway.store.inbox import Inbox, MessageMeta
from vetgateway.store.models.base import utcnow

__all__ = ["ASTM_CHANNEL", "TEXT_CHANNEL", "AnalyzerIntake", "QueryAnswerer"]

log = logging.getLogger(__name__)

ASTM_CHANNEL = "astm"
TEXT_CHANNEL = "plaintext"
MESSAGE_TYPE = {ASTM_CHANNEL: "ASTM", TEXT_CHANNEL: "TEXT"}
# Seconds a message may wait for others to share its commit while the inbox is busy
# (``Inbox.receive_async``). The analyzer has waited a tenth of a second or more for its
# message to cross the line, and LIS1-A gives us 15 s to answer its last frame.
COMMIT_DELAY = 0.005
STORE_RETRY_FIRST = 0.5
STORE_RETRY_MAX = 30.0

# (message text, device or None) -> messages to send back over the line
QueryAnswerer = Callable[[bytes, DeviceView | None], Awaitable[tuple[bytes, ...]]]
# channel, configured device name (None: no device matched), quarantined -> None; for metrics
StoredObserver = Callable[[str, str | None, bool], None]


class AnalyzerIntake:
    """Builds the message handlers of analyzer lines; notes when each device was last heard."""

    def __init__(
        self,
        inbox: Inbox,
        devices: Iterable[DeviceView],
        *,
        answer_queries: QueryAnswerer | None = None,
        clock: Callable[[], datetime] = utcnow,
        observer: StoredObserver | None = None,
    ) -> None:
        self._inbox = inbox
        self._devices = list(devices)
        self._by_sender = {
            d.sender_id: d for d in self._devices if d.connection == "listener" and d.sender_id
        }
        self._answer_queries = answer_queries
        self._clock = clock
        self._observer = observer
        self._seen: dict[uuid.UUID, datetime] = {}
        self._seen_lock = threading.Lock()

    def take_seen(self) -> dict[uuid.UUID, datetime]:
        """Devices heard from since the last call, with the time of their latest message."""
        with self._seen_lock:
            seen, self._seen = self._seen, {}
        return seen

    def listener_handler(self) -> MessageHandler:
        """The handler for the shared ASTM listener: the device is found by sender id."""

        async def handle(text: bytes, peer: str) -> Delivery:
            sender = read_sender(text)
            device = self._by_sender.get(sender) if sender else None
            if device is None:
                why = (
                    f"unknown analyzer: sender id {sender!r} (H-5) is not configured; add it "
                    "to [[analyzers]] and replay this message"
                    if sender
                    else "unknown analyzer: the message names no sender id (H-5) and the "
                    "listener is shared; give the analyzer a dedicated line or a sender id"
                )
                log.warning(
                    "analyzer message from an unknown sender stored and quarantined",
                    extra={"peer": peer, "sender": sender},
                )
                return await self._store(text, ASTM_CHANNEL, peer, None, sender, quarantine=why)
            return await self._store(text, ASTM_CHANNEL, peer, device, sender)

        return handle

    def line_handler(self, device: DeviceView, channel: str = ASTM_CHANNEL) -> MessageHandler:
        """The handler for a line that belongs to ``device`` (serial, or a converter we dial).

        An ASTM analyzer whose message could not be stored is NAKed and sends it again, so a
        ``StorageError`` goes back to the runner. A plain-text analyzer takes no answer and never
        resends, so its handler keeps the message and retries the store with backoff (up to
        ``STORE_RETRY_MAX`` seconds apart) until the database is back; meanwhile the line is not
        read, and the analyzer's next print-out waits in the port's buffer.
        """

        async def handle(text: bytes, peer: str) -> Delivery:
            if channel == ASTM_CHANNEL:
                return await self._store(text, channel, peer, device, read_sender(text))
            delay = STORE_RETRY_FIRST
            while True:
                try:
                    return await self._store(text, channel, peer, device, None)
                except StorageError as exc:
                    log.warning(
                        "plain-text message not stored yet; retrying",
                        extra={"peer": peer, "error": str(exc), "retry_in": delay},
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, STORE_RETRY_MAX)

        return handle

    async def _store(
        self,
        text: bytes,
        channel: str,
        peer: str,
        device: DeviceView | None,
        sender: str | None,
        quarantine: str | None = None,
    ) -> Delivery:
        extra: dict[str, object] = {}
        if sender:
            extra["sender_id"] = sender
        if device is not None:
            extra |= device_meta(device, sender)
        meta = MessageMeta(
            sender=device.name if device is not None else sender,
            message_type=MESSAGE_TYPE[channel],
            quarantine_reason=quarantine,
            extra=extra,
        )
        receipt = await self._inbox.receive_async(
            text, channel, peer, meta, commit_delay=COMMIT_DELAY
        )
        if device is not None:
            with self._seen_lock:
                self._seen[device.id] = self._clock()
        if self._observer is not None:
            name = device.name if device is not None else None
            self._observer(channel, name, quarantine is not None)
        # DEBUG, as for HL7: the inbound_messages row is the record of every message and /metrics
        # counts them; a JSON line per message was a third of the delivery path's CPU.
        log.debug(
            "analyzer message stored",
            extra={"message_id": receipt.message_id, "peer": peer, "channel": channel},
        )
        if quarantine is None and self._answer_queries is not None and has_query(text):
            return Delivery(replies=await self._answer_queries(text, device))
        return Delivery()
