"""HL7 v2 intake, shared by every HL7 channel (MLLP, HTTP, batch files): store, then answer.

``Hl7Intake.receive`` takes the bytes of one message and returns what to answer. It reads only the
MSH (``header.read_header``) and the channel's policy (``policy.check_supported``); the content is
parsed later, by the pipeline. The rules (HL7 v2.5.1 §2.9, RELIABILITY R01-R08, R18-R22):

- Every message is stored, good or bad: a refused one as *quarantined* with the reason the NAK
  carries, so the interface analyst and our staff see the same words, and it can be replayed.
- The answer is built only after ``Inbox.receive`` returned, i.e. after the commit. If storage
  fails, the answer is AR/CR with code 207 "retry later" — never AA.
- Original mode (MSH-15/16 empty): AA, AE (content error) or AR (unsupported type, event,
  processing id or version). Enhanced mode: CA/CE/CR as MSH-15 asks, and nothing when it says NE.
- A resend of a stored message gets the very same ACK bytes: the ACK's control id and time derive
  from the original row (``VG<id>``, its ``received_at``), so nothing needs storing to replay it.
- A control-id collision (same sender and MSH-10, other bytes) is stored, held for review and
  acknowledged: the lab delivered it, and a resend would not make it any less a collision.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from vetgateway.adapters.hl7.ack import (
    STORAGE_UNAVAILABLE,
    AckCode,
    build_ack,
    build_minimal_ack,
    decide_ack_mode,
    error_ack,
    is_enhanced_mode,
)
from vetgateway.adapters.hl7.header import MshHeader, read_header
from vetgateway.adapters.hl7.policy import DEFAULT_VERSIONS, check_supported
from vetgateway.adapters.hl7.rejection import ErrorCode, HeaderError
from vetgateway.config import Settings
from vetgateway.errors import StorageError
from vetgateway.store.inbox import Inbox, MessageMeta, Receipt
from vetgateway.store.models.base import utcnow

log = logging.getLogger(__name__)

_FIRST_SEGMENT = re.compile(rb"[\r\n]")


@dataclass(frozen=True)
class Hl7Policy:
    """What a channel accepts. Types are ``TYPE^EVENT`` or a bare ``TYPE`` for every event."""

    accepted_types: tuple[str, ...] = ("ORU^R01", "ORM^O01", "OML^O21")
    accepted_versions: tuple[str, ...] = DEFAULT_VERSIONS
    processing_ids: tuple[str, ...] = ("P",)
    default_encoding: str = "utf-8"

    @classmethod
    def from_settings(cls, settings: Settings) -> Hl7Policy:
        return cls(
            accepted_types=settings.hl7_accepted_types,
            processing_ids=settings.hl7_processing_ids,
            default_encoding=settings.hl7_default_encoding,
        )


@dataclass(frozen=True)
class IntakeResult:
    """The answer for one message, and what happened to it."""

    ack: bytes | None  # None: the sender asked for no acknowledgement (enhanced mode, NE)
    code: AckCode
    message_id: int | None  # None only when storage failed
    duplicate: bool = False
    collision_with: int | None = None
    reason: str | None = None  # why it was refused or not stored
    control_id: str | None = field(default=None, repr=False)

    @property
    def accepted(self) -> bool:
        return self.code in ("AA", "CA")


def ack_control_id(message_id: int) -> str:
    """The ACK's own MSH-10: stable per stored message, so a resend gets identical bytes."""
    return f"VG{message_id}"


def sender_key(header: MshHeader) -> str:
    """Sending application and facility (MSH-3, MSH-4): with MSH-10, what makes a resend."""
    return f"{header.sending_application}|{header.sending_facility}"


@dataclass(frozen=True)
class _Plan:
    """What reading the header decided, before anything is stored."""

    meta: MessageMeta
    header: MshHeader | None
    error: HeaderError | None = None


class Hl7Intake:
    """Stores HL7 v2 messages and builds their acknowledgements.

    ``receive`` blocks until the message is durable (for threads: files, HTTP's pool);
    ``receive_async`` is the same for asyncio listeners. Both are plan → store → answer, the
    plan and the answer being pure functions of the bytes and the receipt.
    """

    def __init__(
        self,
        inbox: Inbox,
        policy: Hl7Policy | None = None,
        *,
        observer: Callable[[str, IntakeResult], None] | None = None,
    ) -> None:
        self._inbox = inbox
        self.policy = policy or Hl7Policy()
        self._observer = observer

    def receive(self, raw: bytes, channel: str, peer: str) -> IntakeResult:
        """Store one message and return the answer for its sender."""
        plan = self._plan(raw)
        try:
            receipt = self._inbox.receive(raw, channel, peer, plan.meta)
        except StorageError as exc:
            return self._finish(channel, self._unavailable(plan.header, exc))
        return self._finish(channel, self._answer(plan, receipt, channel))

    async def receive_async(self, raw: bytes, channel: str, peer: str) -> IntakeResult:
        """``receive`` without blocking the event loop."""
        plan = self._plan(raw)
        try:
            receipt = await self._inbox.receive_async(raw, channel, peer, plan.meta)
        except StorageError as exc:
            return self._finish(channel, self._unavailable(plan.header, exc))
        return self._finish(channel, self._answer(plan, receipt, channel))

    def refuse_oversized(self, head: bytes, limit: int, channel: str, peer: str) -> IntakeResult:
        """A message over the size limit: keep its first bytes as evidence and answer AR/CR."""
        reason = (
            f"message larger than {limit} bytes refused; only its first {len(head)} bytes were"
            " kept. Ask the gateway's administrator to raise the limit or send it in parts"
        )
        first_segment = _FIRST_SEGMENT.split(head, maxsplit=1)[0]
        try:
            header: MshHeader | None = read_header(
                first_segment, default_encoding=self.policy.default_encoding
            )
        except HeaderError:
            header = None
        error = HeaderError(reason, code=ErrorCode.APPLICATION_INTERNAL_ERROR, header=header)
        plan = self._refusal_plan(error)
        try:
            receipt = self._inbox.receive(head, channel, peer, plan.meta)
        except StorageError as exc:
            return self._finish(channel, self._unavailable(header, exc))
        return self._finish(channel, self._answer(plan, receipt, channel))

    def _plan(self, raw: bytes) -> _Plan:
        try:
            header = read_header(raw, default_encoding=self.policy.default_encoding)
            check_supported(
                header,
                accepted_types=self.policy.accepted_types,
                accepted_versions=self.policy.accepted_versions,
                processing_ids=self.policy.processing_ids,
            )
        except HeaderError as error:
            return self._refusal_plan(error)
        meta = MessageMeta(
            control_id=header.control_id,
            sender=sender_key(header),
            message_type=header.message_type,
            extra={"version": header.version_id, "charset": header.encoding},
        )
        return _Plan(meta, header)

    @staticmethod
    def _refusal_plan(error: HeaderError) -> _Plan:
        header = error.header
        reason = f"HL7 error {int(error.code)} at {error.location or 'message'}: {error.reason}"
        meta = MessageMeta(
            control_id=header.control_id or None if header else None,
            sender=sender_key(header) if header else None,
            message_type=header.message_type or None if header else None,
            quarantine_reason=reason,
        )
        return _Plan(meta, header, error)

    def _answer(self, plan: _Plan, receipt: Receipt, channel: str) -> IntakeResult:
        if plan.error is not None:
            return self._refused(plan, plan.error, receipt, channel)
        header = plan.header
        assert header is not None
        if receipt.collision_with is not None:
            log.warning(
                "hl7 control id collision held for review",
                extra={
                    "message_id": receipt.message_id,
                    "collision_with": receipt.collision_with,
                    "control_id": header.control_id,
                    "channel": channel,
                },
            )
        commit_wanted, _application_wanted = decide_ack_mode(header)
        code: AckCode = "CA" if is_enhanced_mode(header) else "AA"
        ack = self._ack(header, code, receipt) if commit_wanted else None
        self._log(receipt, channel, header.control_id, code)
        return IntakeResult(
            ack,
            code,
            receipt.message_id,
            receipt.duplicate,
            receipt.collision_with,
            control_id=header.control_id,
        )

    @staticmethod
    def _refused(plan: _Plan, error: HeaderError, receipt: Receipt, channel: str) -> IntakeResult:
        header = plan.header
        reason = plan.meta.quarantine_reason
        ack = error_ack(
            error, control_id=ack_control_id(receipt.message_id), now=receipt.received_at
        )
        code: AckCode = error.ack_code  # what error_ack chose, for logs and HTTP status
        enhanced = header is not None and is_enhanced_mode(header)
        if enhanced and header is not None and decide_ack_mode(header, success=False)[0]:
            code = error.commit_code
        log.warning(
            "hl7 message refused and quarantined",
            extra={
                "message_id": receipt.message_id,
                "channel": channel,
                "code": code,
                "reason": reason,
            },
        )
        return IntakeResult(
            ack,
            code,
            receipt.message_id,
            receipt.duplicate,
            reason=reason,
            control_id=header.control_id if header else None,
        )

    def _finish(self, channel: str, result: IntakeResult) -> IntakeResult:
        if self._observer is not None:
            self._observer(channel, result)
        return result

    def _unavailable(self, header: MshHeader | None, exc: StorageError) -> IntakeResult:
        """Storage failed: AR/CR 207, so the sender keeps the message and retries (R03)."""
        log.error("hl7 message not stored; answering AR", extra={"error": str(exc)})
        now = utcnow()
        code: AckCode = "CR" if header is not None and is_enhanced_mode(header) else "AR"
        control_id = f"VGX{now.strftime('%Y%m%d%H%M%S%f')}"
        if header is None:
            ack = build_minimal_ack("AR", error=STORAGE_UNAVAILABLE, control_id=control_id, now=now)
        else:
            ack = build_ack(header, code, error=STORAGE_UNAVAILABLE, control_id=control_id, now=now)
        return IntakeResult(ack, code, None, reason=STORAGE_UNAVAILABLE.reason)

    @staticmethod
    def _ack(header: MshHeader, code: AckCode, receipt: Receipt) -> bytes:
        return build_ack(
            header, code, control_id=ack_control_id(receipt.message_id), now=receipt.received_at
        )

    @staticmethod
    def _log(receipt: Receipt, channel: str, control_id: str, code: str) -> None:
        # DEBUG: the inbound_messages row is the record of every receipt and /metrics counts
        # them; a JSON line per accepted message cost a tenth of the MLLP path's CPU.
        log.debug(
            "hl7 message resent; original acknowledgement replayed"
            if receipt.duplicate
            else "hl7 message stored",
            extra={
                "message_id": receipt.message_id,
                "channel": channel,
                "control_id": control_id,
                "code": code,
            },
        )
