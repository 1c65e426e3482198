"""The sans-I/O full station: a Receiver and a Sender on one line, wired in memory to peers."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vetgateway.adapters.analyzer.station import LineStation
from vetgateway.adapters.astm.e1381 import (
    NEED_DATA,
    DuplicateFrame,
    FrameRejected,
    LinkEstablished,
    LinkReleased,
    LinkUsageError,
    MessageAborted,
    MessageEnd,
    MessageReceived,
    Receiver,
    Role,
)
from vetgateway.adapters.astm.e1381_frames import build_frame, split_message
from vetgateway.adapters.astm.e1381_sender import (
    Contention,
    MessageSent,
    Sender,
    SendFailed,
)
from vetgateway.adapters.astm.station import (
    AstmStation,
    LinkAlarm,
    MessageUndeliverable,
    StationEvent,
)

ENQ, ACK, NAK, EOT = b"\x05", b"\x06", b"\x15", b"\x04"
RESULT = b"H|\\^&|||LAB^1\rP|1||PMS-42\rR|1|^^^GLU|5.4|mmol/L||N||F\rL|1|N\r"
ANSWER = b"H|\\^&|||LIS\rO|1|S1||^^^GLU\rL|1|N\r"
ANSWER_2 = b"H|\\^&|||LIS\rO|1|S2||^^^K\rL|1|N\r"


def drain(station: AstmStation) -> list[StationEvent]:
    events: list[StationEvent] = []
    while (event := station.next_event()) is not NEED_DATA:
        events.append(event)
    return events


def station(**kwargs: Any) -> AstmStation:
    return AstmStation(MessageEnd.TERMINATOR_RECORD, **kwargs)


def bad_frame(number: int) -> bytes:
    good = build_frame(number, b"R|1|^^^GLU|5.4\r", final=False)
    return good[:4] + b"#" + good[5:]  # one text byte changed: the checksum no longer fits


class Peer:
    """The analyzer: a Sender and a Receiver of its own, routed like the station routes."""

    def __init__(self) -> None:
        self.tx = Sender(Role.INSTRUMENT)
        self.rx = Receiver()
        self.received: list[bytes] = []
        self.tx_events: list[object] = []

    def feed(self, data: bytes, now: float) -> None:
        if self.tx.awaiting_reply:
            self.tx.receive_data(data, now)
            data = self.tx.take_unconsumed()
        if data:
            self.rx.receive_data(data, now)
        while (event := self.rx.next_event()) is not NEED_DATA:
            if isinstance(event, MessageReceived):
                self.received.append(event.text)
                self.rx.message_stored(now)
        while (tx_event := self.tx.next_event()) is not NEED_DATA:
            self.tx_events.append(tx_event)

    def output(self) -> bytes:
        return self.tx.data_to_send() + self.rx.data_to_send()


def run(gateway: AstmStation, peer: Peer, now: float, *, store: bool = True) -> list[object]:
    """Exchange bytes until both ends are quiet; the gateway stores every message."""
    events: list[object] = []
    while True:
        gateway.check_timeouts(now)
        peer.tx.check_timeouts(now)
        to_peer, to_gateway = gateway.data_to_send(), peer.output()
        if to_gateway:
            gateway.receive_data(to_gateway, now)
        for event in drain(gateway):
            events.append(event)
            if isinstance(event, MessageReceived) and store:
                gateway.message_stored(now)
        if to_peer:
            peer.feed(to_peer, now)
        if not to_peer and not to_gateway:
            return events


def test_implements_line_station() -> None:
    line: LineStation = station()
    assert line.next_event() is NEED_DATA


def test_receives_a_message_from_a_sender_peer() -> None:
    gateway, peer = station(), Peer()
    peer.tx.send_message(RESULT, 0.0)
    events = run(gateway, peer, 0.0)
    assert [type(e) for e in events] == [LinkEstablished, MessageReceived, LinkReleased]
    assert events[1] == MessageReceived(RESULT)
    assert peer.tx_events[-1] == MessageSent()
    assert gateway.idle


def test_queued_replies_wait_for_the_neutral_line_then_go_one_by_one() -> None:
    gateway, peer = station(), Peer()
    peer.tx.send_message(RESULT, 0.0)
    gateway.receive_data(peer.output(), 0.0)  # ENQ
    gateway.send_message(ANSWER, 0.0)
    gateway.send_message(ANSWER_2, 0.0)
    assert gateway.unsent_messages == 2
    assert gateway.data_to_send() == ACK  # the peer holds the line: no ENQ of ours
    peer.feed(ACK, 0.0)
    events: list[StationEvent] = []
    while MessageReceived(RESULT) not in events:  # frame by frame until the message is held
        gateway.receive_data(peer.output(), 0.0)
        gateway.check_timeouts(0.0)
        events += drain(gateway)
        peer.feed(gateway.data_to_send(), 0.0)
    assert peer.output() == b""  # the peer waits for the ACK of its last frame
    gateway.check_timeouts(1.0)
    assert gateway.data_to_send() == b""  # the message awaits its storage decision: no ENQ
    gateway.message_stored(1.0)
    assert gateway.data_to_send() == ACK
    gateway.check_timeouts(1.0)
    assert gateway.data_to_send() == b""  # the peer has not released the line yet
    peer.feed(ACK, 1.0)
    assert peer.output() == EOT
    gateway.receive_data(EOT, 1.0)
    gateway.check_timeouts(1.0)
    assert gateway.data_to_send() == ENQ  # neutral: our turn
    peer.feed(ENQ, 1.0)
    after = run(gateway, peer, 1.0)
    assert peer.received == [ANSWER, ANSWER_2]
    assert [e for e in after if isinstance(e, MessageSent)] == [MessageSent(), MessageSent()]
    assert gateway.unsent_messages == 0
    assert gateway.idle


def test_receiver_interrupt_asks_for_the_line_when_an_answer_waits() -> None:
    """Opt-in: the completing frame of a stored message is answered EOT, not ACK, while a reply
    of ours waits; the peer takes it as the ACK of that frame and yields (LIS1-A §6.3)."""
    gateway, peer = station(interrupt_to_reply=True), Peer()
    peer.tx.send_message(RESULT, 0.0)
    events: list[StationEvent] = []
    while MessageReceived(RESULT) not in events:
        gateway.receive_data(peer.output(), 0.0)
        events += drain(gateway)
        peer.feed(gateway.data_to_send(), 0.0)
    gateway.send_message(ANSWER, 0.0)
    gateway.message_stored(0.0)
    assert gateway.data_to_send() == EOT  # the receiver interrupt, in place of the ACK
    peer.feed(EOT, 0.0)
    assert peer.tx_events[-1] == MessageSent()  # EOT to its last frame counts as the ACK
    run(gateway, peer, 0.0)
    assert peer.received == [ANSWER]
    assert gateway.idle


def test_no_receiver_interrupt_unless_asked_for_or_without_an_answer() -> None:
    for gateway, answer in ((station(), True), (station(interrupt_to_reply=True), False)):
        peer = Peer()
        peer.tx.send_message(RESULT, 0.0)
        events: list[StationEvent] = []
        while MessageReceived(RESULT) not in events:
            gateway.receive_data(peer.output(), 0.0)
            events += drain(gateway)
            peer.feed(gateway.data_to_send(), 0.0)
        if answer:
            gateway.send_message(ANSWER, 0.0)
        gateway.message_stored(0.0)
        assert gateway.data_to_send() == ACK


def test_peer_enq_right_after_our_last_ack_is_answered_after_our_eot() -> None:
    gateway = station()
    gateway.send_message(ANSWER, 0.0)
    assert gateway.data_to_send() == ENQ
    for number in (1, 2, 3):
        gateway.receive_data(ACK, 0.0)
        assert gateway.data_to_send().startswith(b"\x02%d" % number)
    gateway.receive_data(ACK + ENQ, 0.0)  # the last ACK and the peer's bid in one read
    assert gateway.data_to_send() == EOT + ACK
    assert [type(e) for e in drain(gateway)] == [LinkEstablished, MessageSent, LinkEstablished]


def test_contention_station_yields_and_answers_next_enq() -> None:
    gateway, peer = station(), Peer()
    gateway.send_message(ANSWER, 0.0)
    peer.tx.send_message(RESULT, 0.0)
    ours, theirs = gateway.data_to_send(), peer.output()
    assert ours == theirs == ENQ  # both bid at once
    gateway.receive_data(theirs, 0.1)
    peer.feed(ours, 0.1)
    assert drain(gateway) == [Contention(won=False, retry_at=20.1)]
    assert gateway.data_to_send() == b""  # the crossing ENQ is not answered (LIS1-A §6.2)
    events = run(gateway, peer, 0.5)
    assert events == []  # the instrument waits 1 s
    events = run(gateway, peer, 1.1)
    assert MessageReceived(RESULT) in events
    assert peer.received == []  # our message waits for its back-off
    assert run(gateway, peer, 20.0) == []
    events = run(gateway, peer, 20.1)
    assert peer.received == [ANSWER]
    assert events[-1] == MessageSent()


def test_no_enq_while_the_peer_is_mid_transfer_even_after_backoff() -> None:
    gateway = station()
    gateway.send_message(ANSWER, 0.0)
    assert gateway.data_to_send() == ENQ
    gateway.receive_data(ENQ, 0.0)
    assert drain(gateway) == [Contention(won=False, retry_at=20.0)]
    gateway.receive_data(ENQ, 1.0)
    assert gateway.data_to_send() == ACK
    gateway.receive_data(build_frame(1, b"H|\\^&\r", final=True), 2.0)
    assert gateway.data_to_send() == ACK
    gateway.check_timeouts(25.0)
    assert gateway.data_to_send() == b""  # back-off passed, but the line is the peer's
    gateway.receive_data(EOT, 26.0)
    gateway.check_timeouts(26.0)
    assert gateway.data_to_send() == ENQ


def test_failed_send_is_retried_then_reported_and_the_next_goes() -> None:
    gateway = station(send_attempts=2, send_retry_delay=5.0)
    gateway.send_message(ANSWER, 0.0)
    gateway.send_message(ANSWER_2, 0.0)
    assert gateway.data_to_send() == ENQ
    gateway.receive_data(ACK + NAK * 6, 0.0)  # the first frame never accepted
    assert gateway.data_to_send().endswith(EOT)
    assert drain(gateway)[-1] == SendFailed("too_many_naks")
    gateway.check_timeouts(4.9)
    assert gateway.data_to_send() == b""  # the retry waits; the next message waits behind it
    gateway.check_timeouts(5.0)
    assert gateway.data_to_send() == ENQ
    gateway.receive_data(ACK + NAK * 6, 5.0)
    assert gateway.data_to_send().endswith(EOT)
    assert drain(gateway)[-2:] == [
        SendFailed("too_many_naks"),
        MessageUndeliverable("too_many_naks", attempts=2, size=len(ANSWER)),
    ]
    assert gateway.unsent_messages == 1
    gateway.check_timeouts(5.0)
    assert gateway.data_to_send() == ENQ  # the next message goes at once
    gateway.receive_data(ACK, 6.0)
    assert gateway.data_to_send() == build_frame(1, b"H|\\^&|||LIS\r", final=True)


def test_send_without_reply_times_out_and_is_reported_after_last_attempt() -> None:
    gateway = station(send_attempts=1)
    gateway.send_message(ANSWER, 0.0)
    assert gateway.data_to_send() == ENQ
    gateway.check_timeouts(15.0)
    assert gateway.data_to_send() == EOT
    assert drain(gateway) == [
        SendFailed("timeout"),
        MessageUndeliverable("timeout", attempts=1, size=len(ANSWER)),
    ]
    assert gateway.idle


def test_full_queue_reports_the_refused_message() -> None:
    gateway = station(max_queued=2)
    for _ in range(3):
        gateway.send_message(ANSWER, 0.0)
    assert drain(gateway) == [MessageUndeliverable("queue_full", attempts=0, size=len(ANSWER))]
    assert gateway.unsent_messages == 2


def test_unframeable_message_raises_at_the_caller() -> None:
    gateway = station()
    with pytest.raises(LinkUsageError):
        gateway.send_message(b"no carriage return", 0.0)
    with pytest.raises(LinkUsageError):
        gateway.message_stored(0.0)
    with pytest.raises(LinkUsageError):
        station(alarm_after=0)


def test_link_alarm_after_n_rejected_frames_once_then_reset_by_a_good_frame() -> None:
    gateway = station(alarm_after=3)
    gateway.receive_data(ENQ, 0.0)
    gateway.receive_data(bad_frame(1) * 5, 1.0)
    events = drain(gateway)
    assert [e for e in events if isinstance(e, LinkAlarm)] == [LinkAlarm(3, "bad_checksum")]
    assert events.index(LinkAlarm(3, "bad_checksum")) == 4  # right after the third rejection
    assert gateway.data_to_send() == ACK + NAK * 5
    gateway.receive_data(build_frame(1, b"H|\\^&\r", final=False), 2.0)  # accepted: reset
    gateway.receive_data(bad_frame(2) * 2 + build_frame(2, b"P|1\r", final=False), 3.0)
    gateway.receive_data(bad_frame(3) * 2, 4.0)
    assert not any(isinstance(e, LinkAlarm) for e in drain(gateway))  # never 3 in a row
    gateway.receive_data(bad_frame(3), 5.0)
    assert drain(gateway) == [FrameRejected("bad_checksum"), LinkAlarm(3, "bad_checksum")]


def test_short_receiver_timeout_discards_the_partial_message() -> None:
    gateway = station(receiver_timeout=2.0)
    gateway.receive_data(ENQ + build_frame(1, b"H|\\^&\r", final=True), 0.0)
    assert gateway.mid_message
    gateway.check_timeouts(1.9)
    assert drain(gateway) == [LinkEstablished()]
    gateway.check_timeouts(2.0)
    assert drain(gateway) == [MessageAborted("timeout", 6), LinkReleased(timed_out=True)]
    assert not gateway.mid_message
    assert gateway.idle


def test_end_frame_mode_delivers_each_end_frame() -> None:
    gateway = AstmStation(MessageEnd.END_FRAME)
    gateway.receive_data(ENQ + build_frame(1, b"H|\\^&\r", final=True), 0.0)
    assert drain(gateway) == [LinkEstablished(), MessageReceived(b"H|\\^&\r")]


# --- fuzz ---------------------------------------------------------------------------------

_STEP = st.one_of(
    st.binary(max_size=64).map(lambda b: ("data", b)),
    st.sampled_from([ENQ, ACK, NAK, EOT]).map(lambda b: ("data", b)),
    st.builds(build_frame, st.integers(0, 7), st.just(b"L|1\r"), final=st.booleans()).map(
        lambda b: ("data", b)
    ),
    st.just(("send", ANSWER)),
    st.floats(0, 40).map(lambda t: ("wait", t)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_STEP, max_size=40), st.sampled_from(list(Role)), st.booleans())
def test_station_never_raises_on_arbitrary_bytes_and_timing(
    steps: list[tuple[str, object]], role: Role, refuse: bool
) -> None:
    gateway = AstmStation(MessageEnd.TERMINATOR_RECORD, role, alarm_after=2)
    now = 0.0
    for kind, value in steps:
        if kind == "data":
            assert isinstance(value, bytes)
            gateway.receive_data(value, now)
        elif kind == "send":
            assert isinstance(value, bytes)
            gateway.send_message(value, now)
        else:
            assert isinstance(value, float)
            now += value
        gateway.check_timeouts(now)
        for event in drain(gateway):
            if isinstance(event, MessageReceived):
                (gateway.message_refused if refuse else gateway.message_stored)(now)
        gateway.data_to_send()
    assert gateway.unsent_messages <= 64


@settings(max_examples=300, deadline=None)
@given(st.binary())
def test_receive_data_never_raises(data: bytes) -> None:
    gateway = station()
    gateway.receive_data(data, 0.0)
    gateway.check_timeouts(0.0)
    drain(gateway)


# --- the one-step reply to a frame mid-message ------------------------------------------------

_RECORDS = [b"H|\\^&|||LAB^1", b"P|1||PMS-42", b"R|1|^^^GLU|5.4|mmol/L", b"C|1|" + b"x" * 300]


def _message_reads(
    records: list[bytes], packed: bool, end: bool, noise: list[int]
) -> list[tuple[str, object]]:
    """An analyzer's message as its reads: ENQ, each frame, EOT (``end``: with its L record),
    and a frame spoilt by line noise before each frame whose index is in ``noise``."""
    text = b"\r".join(records + ([b"L|1|N"] if end else [])) + b"\r"
    pieces = split_message(text, packed=packed)
    reads = [ENQ]
    for n, (piece, final) in enumerate(pieces):
        if n in noise:
            reads.append(bad_frame(n + 1))
        reads.append(build_frame(n + 1, piece, final=final))
    return [("data", read) for read in [*reads, EOT]]


_READS = st.one_of(
    st.builds(
        _message_reads,
        st.lists(st.sampled_from(_RECORDS), max_size=4),
        st.booleans(),
        st.booleans(),
        st.lists(st.integers(0, 5), max_size=4),
    ),
    _STEP.map(lambda step: [step]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_READS, max_size=12), st.sampled_from(list(MessageEnd)), st.booleans())
def test_a_frame_answered_in_one_step_leaves_the_station_as_the_full_path_does(
    reads: list[list[tuple[str, object]]], message_end: MessageEnd, refuse: bool
) -> None:
    """Every read goes to two stations: one always by ``receive_data`` + ``check_timeouts``,
    one by ``reply_at_once`` first. Same replies, same events, same state, read after read."""
    full, quick = (AstmStation(message_end, alarm_after=2) for _ in range(2))
    now = 0.0
    for kind, value in (step for steps in reads for step in steps):
        if kind == "wait":
            assert isinstance(value, float)
            now += value
            for gateway in (full, quick):
                gateway.check_timeouts(now)
        elif kind == "send":
            assert isinstance(value, bytes)
            for gateway in (full, quick):
                gateway.send_message(value, now)
        else:
            assert isinstance(value, bytes)
            full.receive_data(value, now)
            full.check_timeouts(now)
            reply = quick.reply_at_once(value, now)
            if reply is None:
                quick.receive_data(value, now)
                quick.check_timeouts(now)
            replies = {}
            for name, gateway in (("full", full), ("quick", quick)):
                events = drain(gateway)
                for event in events:
                    if isinstance(event, MessageReceived):
                        (gateway.message_refused if refuse else gateway.message_stored)(now)
                replies[name] = (events, gateway.data_to_send())
            assert replies["quick"] == (replies["full"][0], replies["full"][1][len(reply or b"") :])
            assert replies["full"][1].startswith(reply or b"")
        assert (quick.mid_message, quick.idle, quick.unsent_messages) == (
            full.mid_message, full.idle, full.unsent_messages
        )  # fmt: skip


def test_only_a_frame_mid_message_is_answered_in_one_step() -> None:
    gateway = station()
    first = build_frame(1, b"H|\\^&\r", final=True)
    assert gateway.reply_at_once(ENQ, 0.0) is None  # establishment: the full path
    gateway.receive_data(ENQ, 0.0)
    drain(gateway)
    assert gateway.data_to_send() == ACK
    assert gateway.reply_at_once(first, 1.0) == ACK
    assert gateway.mid_message
    assert drain(gateway) == []
    assert gateway.reply_at_once(first, 2.0) is None  # a repeat: DuplicateFrame, full path
    gateway.receive_data(first, 2.0)
    assert drain(gateway) == [DuplicateFrame(1)]
    assert gateway.data_to_send() == ACK
    last = build_frame(2, b"L|1|N\r", final=True)
    assert gateway.reply_at_once(last, 3.0) is None  # completes the message: held for storage
    gateway.receive_data(last, 3.0)
    assert drain(gateway) == [MessageReceived(b"H|\\^&\rL|1|N\r")]
    assert gateway.data_to_send() == b""


def test_a_frame_answered_in_one_step_ends_a_run_of_line_errors() -> None:
    gateway = station(alarm_after=2)
    gateway.receive_data(ENQ + bad_frame(1), 0.0)
    assert drain(gateway) == [LinkEstablished(), FrameRejected("bad_checksum")]
    assert gateway.data_to_send() == ACK + NAK
    assert gateway.reply_at_once(build_frame(1, b"H|\\^&\r", final=True), 1.0) == ACK
    gateway.receive_data(bad_frame(2), 2.0)  # one in a row again: no alarm
    assert drain(gateway) == [FrameRejected("bad_checksum")]
