"""The gateway side of analyzer lines: which device a message is stored for, what an unknown
sender gets, host queries, and a plain-text line outliving a database outage. The inbox here is a
recorder with the real ``receive_async`` signature; the real one is exercised end to end in
``tests/integration/test_astm_gateway.py``."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from vetgateway.adapters.analyzer import intake as intake_module
from vetgateway.adapters.analyzer.intake import ASTM_CHANNEL, TEXT_CHANNEL, AnalyzerIntake
from vetgateway.errors import StorageUnavailable
from vetgateway.store.devices import DeviceView
from vetgateway.store.inbox import MessageId, MessageMeta, Receipt

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
CBC = b"H|\\^&|||ABX^Pentra|||||||P|1\rP|1\rO|1|S1||^^^CBC\rR|1|^^^WBC|7.5\rL|1|N\r"
QUERY = b"H|\\^&|||ABX|||||||P|1\rQ|1|^S1||^^^ALL||||||||O\rL|1|N\r"


def _device(name: str, sender: str | None, connection: str = "listener") -> DeviceView:
    return DeviceView(uuid.uuid4(), name, "generic_astm", sender, connection, None, None, None, NOW)


class RecordingInbox:
    def __init__(self, failures: int = 0) -> None:
        self.stored: list[tuple[bytes, str, str, MessageMeta]] = []
        self.failures = failures
        self.delays: list[float] = []  # what each message offered to wait for a shared commit

    async def receive_async(
        self,
        raw: bytes,
        channel: str,
        peer: str,
        meta: MessageMeta | None = None,
        *,
        commit_delay: float = 0.0,
    ) -> Receipt:
        self.delays.append(commit_delay)
        if self.failures:
            self.failures -= 1
            raise StorageUnavailable("database down")
        assert meta is not None
        self.stored.append((raw, channel, peer, meta))
        return Receipt(MessageId(len(self.stored)), NOW)


def _intake(
    inbox: RecordingInbox, *devices: DeviceView, answers: list[bytes] | None = None
) -> AnalyzerIntake:
    async def answer(text: bytes, device: DeviceView | None) -> tuple[bytes, ...]:
        assert answers is not None
        answers.append(text)
        return (b"ANSWER\r",)

    return AnalyzerIntake(
        inbox,  # type: ignore[arg-type]
        devices,
        answer_queries=answer if answers is not None else None,
        clock=lambda: NOW,
    )


def test_listener_stores_a_known_sender_for_its_device_and_notes_it_seen() -> None:
    inbox, device = RecordingInbox(), _device("Haematology", "ABX")
    intake = _intake(inbox, device, _device("Chemistry", "CHEM"))
    asyncio.run(intake.listener_handler()(CBC, "10.0.0.5:4001"))
    [(raw, channel, peer, meta)] = inbox.stored
    assert (raw, channel, peer) == (CBC, ASTM_CHANNEL, "10.0.0.5:4001")
    assert meta.sender == "Haematology"
    assert meta.message_type == "ASTM"
    assert meta.quarantine_reason is None
    assert meta.extra["device_id"] == str(device.id)
    assert meta.extra["driver"] == "generic_astm"
    assert intake.take_seen() == {device.id: NOW}
    assert intake.take_seen() == {}
    # An analyzer has waited longer than this for its message to cross the line: it may share
    # a commit with other analyzers' messages while the inbox is busy.
    assert inbox.delays == [intake_module.COMMIT_DELAY]
    assert 0 < intake_module.COMMIT_DELAY <= 0.05


def test_listener_stores_an_unknown_sender_quarantined_with_a_reason() -> None:
    inbox = RecordingInbox()
    intake = _intake(inbox, _device("Chemistry", "CHEM"))
    asyncio.run(intake.listener_handler()(CBC, "peer"))
    [(_raw, _channel, _peer, meta)] = inbox.stored
    assert meta.quarantine_reason is not None
    assert "'ABX'" in meta.quarantine_reason
    assert "[[analyzers]]" in meta.quarantine_reason
    assert "device_id" not in meta.extra
    assert intake.take_seen() == {}


def test_listener_refuses_to_guess_without_a_sender_id() -> None:
    inbox = RecordingInbox()
    intake = _intake(inbox, _device("Chemistry", "CHEM"))
    asyncio.run(intake.listener_handler()(b"H|\\^&\rL|1\r", "peer"))
    assert "names no sender id" in (inbox.stored[0][3].quarantine_reason or "")


def test_a_dedicated_line_stores_for_its_device_and_notes_a_sender_mismatch() -> None:
    inbox, device = RecordingInbox(), _device("Bench", "XYZ", "serial")
    asyncio.run(_intake(inbox, device).line_handler(device)(CBC, "serial:/dev/ttyUSB0"))
    meta = inbox.stored[0][3]
    assert meta.sender == "Bench"
    assert meta.quarantine_reason is None
    assert meta.extra["sender_mismatch"] == "configured 'XYZ', sent 'ABX'"


def test_an_astm_line_lets_a_storage_error_through_so_the_frame_is_naked() -> None:
    device = _device("Bench", None, "serial")
    handler = _intake(RecordingInbox(failures=1), device).line_handler(device)
    with pytest.raises(StorageUnavailable):
        asyncio.run(handler(CBC, "peer"))


def test_a_plain_text_line_retries_the_store_until_the_database_is_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(intake_module, "STORE_RETRY_FIRST", 0.001)
    inbox, device = RecordingInbox(failures=3), _device("Lytes", None, "serial")
    asyncio.run(_intake(inbox, device).line_handler(device, TEXT_CHANNEL)(b"Na 140", "peer"))
    [(raw, channel, _peer, meta)] = inbox.stored
    assert (raw, channel, meta.message_type) == (b"Na 140", TEXT_CHANNEL, "TEXT")
    assert inbox.failures == 0


def test_a_query_is_answered_after_it_is_stored_and_results_are_not() -> None:
    inbox, answers = RecordingInbox(), []
    intake = _intake(inbox, _device("Haematology", "ABX"), answers=answers)
    delivery = asyncio.run(intake.listener_handler()(QUERY, "peer"))
    assert delivery.replies == (b"ANSWER\r",)
    assert answers == [QUERY]
    assert len(inbox.stored) == 1
    assert asyncio.run(intake.listener_handler()(CBC, "peer")).replies == ()
    assert answers == [QUERY]


def test_an_unknown_senders_query_is_not_answered() -> None:
    answers: list[bytes] = []
    intake = _intake(RecordingInbox(), _device("Chemistry", "CHEM"), answers=answers)
    assert asyncio.run(intake.listener_handler()(QUERY, "peer")).replies == ()
    assert answers == []
