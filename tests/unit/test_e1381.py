"""The sans-I/O LIS1-A (ASTM E1381) link: frames, receiver, sender, wired pairs, fuzz."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vetgateway.adapters.astm.e1381 import (
    HELD_BUFFER_LIMIT,
    NEED_DATA,
    DuplicateFrame,
    FrameAccepted,
    FrameRejected,
    LinkEstablished,
    LinkRefused,
    LinkReleased,
    LinkUsageError,
    MessageAborted,
    MessageEnd,
    MessageReceived,
    Receiver,
    ReceiverEvent,
    Role,
)
from vetgateway.adapters.astm.e1381_frames import (
    FrameBad,
    FrameDropped,
    FrameOk,
    build_frame,
    checksum,
    parse_frame,
    split_message,
    whole_good_frame,
)
from vetgateway.adapters.astm.e1381_sender import (
    Contention,
    EstablishmentRefused,
    FrameRetransmitted,
    MessageSent,
    Sender,
    SenderEvent,
    SendFailed,
    SendInterrupted,
)

ENQ, ACK, NAK, EOT = b"\x05", b"\x06", b"\x15", b"\x04"
H = b"H|\\^&|||LAB^1|||||||P|1"
P = b"P|1||PMS-42"
R = b"R|1|^^^GLU|5.4|mmol/L||N||F"
L = b"L|1|N"
LONG_COMMENT = b"C|1|I|" + bytes(range(0x20, 0x7F)) * 6 + b"|G"  # 576 bytes > 247: ETB frames
MESSAGE = b"\r".join([H, P, R, LONG_COMMENT, L]) + b"\r"


def ref_frame(number: int, text: bytes, *, final: bool) -> bytes:
    """A frame built independently of the code under test: sum(FN..ETX/ETB) % 256 as %02X."""
    body = bytes([0x30 + number % 8]) + text + (b"\x03" if final else b"\x17")
    return b"\x02" + body + f"{sum(body) % 256:02X}".encode() + b"\r\n"


def drain_rx(rx: Receiver) -> list[ReceiverEvent]:
    events: list[ReceiverEvent] = []
    while (event := rx.next_event()) is not NEED_DATA:
        events.append(event)
    return events


def drain_tx(tx: Sender) -> list[SenderEvent]:
    events: list[SenderEvent] = []
    while (event := tx.next_event()) is not NEED_DATA:
        events.append(event)
    return events


def received(events: list[ReceiverEvent]) -> list[bytes]:
    return [e.text for e in events if isinstance(e, MessageReceived)]


class Wire:
    """An in-memory line: sender bytes (through ``tamper``) to the receiver and replies back."""

    def __init__(
        self,
        tx: Sender,
        rx: Receiver,
        *,
        tamper: Callable[[bytes], bytes] = lambda b: b,
        store: bool = True,
    ) -> None:
        self.tx, self.rx, self.tamper, self.store = tx, rx, tamper, store
        self.tx_events: list[SenderEvent] = []
        self.rx_events: list[ReceiverEvent] = []
        self.sent: list[bytes] = []  # every write of the sender, untampered

    def run(self, now: float) -> None:
        while True:
            out = self.tx.data_to_send()
            if out:
                self.sent.append(out)
                self.rx.receive_data(self.tamper(out), now)
            for event in drain_rx(self.rx):
                self.rx_events.append(event)
                if isinstance(event, MessageReceived) and self.store:
                    self.rx.message_stored(now)
            reply = self.rx.data_to_send()
            if reply:
                self.tx.receive_data(reply, now)
            self.tx_events += drain_tx(self.tx)
            if not out and not reply:
                return


# --- frames -------------------------------------------------------------------------------


def test_checksum_known_vectors() -> None:
    assert checksum(b"1A\x03") == b"75"  # 0x31 + 0x41 + 0x03 = 0x75
    assert checksum(b"0" + b"z" * 247 + b"\x17") == b"FD"  # (48 + 247*122 + 23) % 256 = 253
    body = b"1" + H + b"\r\x03"
    assert checksum(body) == f"{sum(body) % 256:02X}".encode()


@pytest.mark.parametrize(("number", "final"), [(1, True), (7, False), (8, True), (0, False)])
def test_build_frame_matches_reference(number: int, final: bool) -> None:
    assert build_frame(number, H + b"\r", final=final) == ref_frame(number, H + b"\r", final=final)


def test_build_frame_rejects_misuse() -> None:
    with pytest.raises(LinkUsageError):
        build_frame(1, b"x" * 248, final=True)
    with pytest.raises(LinkUsageError):
        build_frame(1, b"a\nb", final=True)


def test_split_message_one_record_per_block() -> None:
    pieces = split_message(MESSAGE)
    assert b"".join(text for text, _ in pieces) == MESSAGE
    assert all(len(text) <= 247 for text, _ in pieces)
    assert [final for _, final in pieces] == [True, True, True, False, False, True, True]
    for bad in (b"", b"H|1", b"H|\x05\r"):
        with pytest.raises(LinkUsageError):
            split_message(bad)


def test_split_message_packed_fills_frames_across_records() -> None:
    pieces = split_message(MESSAGE, packed=True)
    assert b"".join(text for text, _ in pieces) == MESSAGE
    assert [len(text) for text, _ in pieces[:-1]] == [247] * (len(pieces) - 1)
    assert [final for _, final in pieces] == [False] * (len(pieces) - 1) + [True]
    assert len(pieces) < len(split_message(MESSAGE))


def test_packed_sender_message_is_received_whole() -> None:
    wire = Wire(Sender(packed=True), Receiver())
    wire.tx.send_message(MESSAGE, 0.0)
    wire.run(0.0)
    assert received(wire.rx_events) == [MESSAGE]
    assert wire.tx_events[-1] == MessageSent()


def test_parse_frame_outcomes() -> None:
    good = ref_frame(3, b"R|1\r", final=False)
    assert parse_frame(good + b"junk") == (FrameOk(3, b"R|1\r", False), len(good))
    for cut in range(1, len(good)):
        assert parse_frame(good[:cut]) is None
    lower = good[:-4] + good[-4:-2].lower() + b"\r\n"
    assert parse_frame(lower) == (FrameOk(3, b"R|1\r", False), len(good))
    bad_sum = good[:-4] + (b"00" if good[-4:-2] != b"00" else b"01") + b"\r\n"
    assert parse_frame(bad_sum) == (FrameBad("bad_checksum"), len(good))
    assert parse_frame(b"\x021abc\n") == (FrameBad("no_terminator"), 6)
    assert parse_frame(b"\x021abc\x03A\n") == (FrameBad("bad_trailer"), 8)
    assert parse_frame(b"\x021ab\x02") == (FrameDropped(), 4)
    assert parse_frame(b"\x021ab\x04") == (FrameDropped(), 4)
    body = b"9x\x03"
    nine = b"\x02" + body + f"{sum(body) % 256:02X}".encode() + b"\r\n"
    assert parse_frame(nine) == (FrameBad("bad_frame_number"), len(nine))
    restricted = ref_frame(1, b"a\x10b", final=True)
    assert parse_frame(restricted) == (FrameBad("restricted_character"), len(restricted))
    too_long = b"\x021" + b"x" * 248
    assert parse_frame(too_long) == (FrameBad("text_too_long"), 250)
    assert parse_frame(too_long[:-1]) is None


# --- full exchanges -----------------------------------------------------------------------


def test_full_exchange_multi_record_with_etb_frames() -> None:
    wire = Wire(Sender(), Receiver())
    wire.tx.send_message(MESSAGE, 0.0)
    wire.run(0.0)
    assert received(wire.rx_events) == [MESSAGE]
    assert [type(e) for e in wire.rx_events] == [LinkEstablished, MessageReceived, LinkReleased]
    assert wire.tx_events == [LinkEstablished(), MessageSent()]
    assert wire.sent[0] == ENQ
    assert wire.sent[-1] == EOT
    expected = [ref_frame(i + 1, t, final=f) for i, (t, f) in enumerate(split_message(MESSAGE))]
    assert wire.sent[1:-1] == expected
    assert any(frame.endswith(b"\x17" + frame[-4:]) for frame in expected)  # an ETB frame
    assert MessageReceived(MESSAGE).records == [H, P, R, LONG_COMMENT, L]
    assert wire.rx.idle
    assert not wire.tx.busy


def test_byte_by_byte_delivery() -> None:
    tx, rx = Sender(), Receiver()
    tx.send_message(MESSAGE, 0.0)
    events: list[ReceiverEvent] = []
    while data := tx.data_to_send():
        for i in range(len(data)):
            rx.receive_data(data[i : i + 1], 0.0)
            for event in drain_rx(rx):
                events.append(event)
                if isinstance(event, MessageReceived):
                    rx.message_stored(0.0)
        tx.receive_data(rx.data_to_send(), 0.0)
    assert received(events) == [MESSAGE]
    assert drain_tx(tx)[-1] == MessageSent()


def test_frame_numbers_cycle_over_eight() -> None:
    records = [H] + [b"R|%d|^^^T%d|%d" % (i, i, i) for i in range(1, 11)] + [L]
    message = b"\r".join(records) + b"\r"
    wire = Wire(Sender(), Receiver())
    wire.tx.send_message(message, 0.0)
    wire.run(0.0)
    numbers = [frame[1] - 0x30 for frame in wire.sent[1:-1]]
    assert numbers == [1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4]
    assert received(wire.rx_events) == [message]


def test_bad_checksum_is_nakked_then_retransmission_accepted() -> None:
    corrupted: list[bytes] = []

    def corrupt_second_frame_once(data: bytes) -> bytes:
        if data[:2] == b"\x022" and not corrupted:
            corrupted.append(data)
            return data[:3] + b"#" + data[4:]  # one text byte changed: checksum no longer fits
        return data

    wire = Wire(Sender(), Receiver(), tamper=corrupt_second_frame_once)
    wire.tx.send_message(MESSAGE, 0.0)
    wire.run(0.0)
    assert FrameRejected("bad_checksum") in wire.rx_events
    assert FrameRetransmitted(2, 1) in wire.tx_events
    assert received(wire.rx_events) == [MESSAGE]
    assert wire.tx_events[-1] == MessageSent()


def test_six_failures_abort_and_nothing_is_stored() -> None:
    def corrupt_frame_two(data: bytes) -> bytes:
        return data[:3] + b"#" + data[4:] if data[:2] == b"\x022" else data

    wire = Wire(Sender(), Receiver(), tamper=corrupt_frame_two)
    wire.tx.send_message(MESSAGE, 0.0)
    wire.run(0.0)
    assert sum(1 for chunk in wire.sent if chunk[:2] == b"\x022") == 6
    assert [e for e in wire.tx_events if isinstance(e, FrameRetransmitted)] == [
        FrameRetransmitted(2, n) for n in range(1, 6)
    ]
    assert wire.tx_events[-1] == SendFailed("too_many_naks")
    assert wire.sent[-1] == EOT
    assert received(wire.rx_events) == []
    assert MessageAborted("interrupted", len(H) + 1) in wire.rx_events
    assert wire.rx_events[-1] == LinkReleased()
    assert wire.rx.idle
    assert not wire.tx.busy


# --- receiver -----------------------------------------------------------------------------


def start(rx: Receiver, now: float = 0.0) -> None:
    rx.receive_data(ENQ, now)
    assert rx.data_to_send() == ACK
    assert drain_rx(rx) == [LinkEstablished()]


def test_repeated_frame_is_acknowledged_and_discarded() -> None:
    rx = Receiver()
    start(rx)
    first = ref_frame(1, H + b"\r", final=True)
    rx.receive_data(first, 1.0)
    rx.receive_data(first, 2.0)
    assert rx.data_to_send() == ACK + ACK
    assert drain_rx(rx) == [DuplicateFrame(1)]
    rx.receive_data(ref_frame(2, L + b"\r", final=True), 3.0)
    assert drain_rx(rx) == [MessageReceived(H + b"\r" + L + b"\r")]
    rx.message_stored(3.0)
    assert rx.data_to_send() == ACK


def test_unexpected_frame_number_is_nakked() -> None:
    rx = Receiver()
    start(rx)
    rx.receive_data(ref_frame(3, H + b"\r", final=True), 1.0)
    assert rx.data_to_send() == NAK
    assert drain_rx(rx) == [FrameRejected("unexpected_frame_number")]


def test_garbage_between_frames_is_ignored() -> None:
    rx = Receiver()
    rx.receive_data(b"\x00\xffline noise\r\n" + ref_frame(1, b"x\r", final=True), 0.0)
    assert rx.data_to_send() == b""
    assert drain_rx(rx) == []
    start(rx)
    rx.receive_data(b"\x00\x06\x15\r\n", 1.0)
    rx.receive_data(ref_frame(1, H + b"\r", final=True) + b"\xfe\xfe\x05", 1.0)
    rx.receive_data(b"\x00" + ref_frame(2, L + b"\r", final=True), 2.0)
    assert drain_rx(rx) == [MessageReceived(H + b"\r" + L + b"\r")]
    rx.message_stored(2.0)
    assert rx.data_to_send() == ACK + ACK


def test_eot_mid_message_discards_partial() -> None:
    rx = Receiver()
    start(rx)
    rx.receive_data(ref_frame(1, b"C|1|I|" + b"x" * 241, final=False), 1.0)
    rx.receive_data(EOT, 2.0)
    assert rx.data_to_send() == ACK
    assert drain_rx(rx) == [MessageAborted("interrupted", 247), LinkReleased()]
    assert rx.idle


def test_receiver_timeout_returns_to_neutral() -> None:
    rx = Receiver()
    start(rx, 0.0)
    rx.receive_data(ref_frame(1, H + b"\r", final=True), 5.0)
    rx.receive_data(b"noise", 20.0)  # noise does not restart the timer
    rx.check_timeouts(34.9)
    assert drain_rx(rx) == []
    rx.check_timeouts(35.0)
    assert drain_rx(rx) == [MessageAborted("timeout", len(H) + 1), LinkReleased(timed_out=True)]
    rx.receive_data(ref_frame(2, L + b"\r", final=True), 36.0)
    assert rx.data_to_send() == ACK  # the ACK of frame 1 only; the late frame is ignored
    start(rx, 37.0)


def test_busy_receiver_refuses_link() -> None:
    busy = True
    rx = Receiver(accept_link=lambda: not busy)
    rx.receive_data(ENQ, 0.0)
    assert rx.data_to_send() == NAK
    assert drain_rx(rx) == [LinkRefused()]
    busy = False
    start(rx)


def test_defective_frames_are_nakked() -> None:
    rx = Receiver()
    start(rx)
    rx.receive_data(b"\x021abc\n", 1.0)
    rx.receive_data(b"\x021" + b"y" * 300 + b"\x03" + b"00\r\n", 1.0)
    rx.receive_data(ref_frame(1, b"a\x13b\r", final=True), 1.0)
    assert rx.data_to_send() == NAK * 3
    assert drain_rx(rx) == [
        FrameRejected("no_terminator"),
        FrameRejected("text_too_long"),
        FrameRejected("restricted_character"),
    ]


def test_durability_no_ack_before_message_stored() -> None:
    rx = Receiver()
    start(rx)
    rx.receive_data(ref_frame(1, H + b"\r", final=True), 1.0)
    assert rx.data_to_send() == ACK
    rx.receive_data(ref_frame(2, L + b"\r", final=True), 2.0)
    assert drain_rx(rx) == [MessageReceived(H + b"\r" + L + b"\r")]
    assert rx.data_to_send() == b""  # the completing frame waits for the commit
    assert rx.awaiting_storage
    rx.check_timeouts(100.0)  # the receiver timer does not run while the caller stores
    rx.receive_data(EOT, 3.0)  # buffered, not processed, until the decision
    assert drain_rx(rx) == []
    rx.message_stored(4.0)
    assert rx.data_to_send() == ACK
    assert drain_rx(rx) == [LinkReleased()]
    with pytest.raises(LinkUsageError):
        rx.message_stored(5.0)


def test_refused_message_is_nakked_and_offered_again() -> None:
    rx = Receiver()
    start(rx)
    final = ref_frame(1, H + b"\r" + L + b"\r", final=True)
    rx.receive_data(final, 1.0)
    assert drain_rx(rx) == [MessageReceived(H + b"\r" + L + b"\r")]
    rx.message_refused(1.5)
    assert rx.data_to_send() == NAK
    rx.receive_data(final, 2.0)  # the sender retransmits the same frame
    assert drain_rx(rx) == [MessageReceived(H + b"\r" + L + b"\r")]
    rx.message_stored(2.5)
    assert rx.data_to_send() == ACK


def test_held_buffer_is_bounded() -> None:
    rx = Receiver()
    start(rx)
    rx.receive_data(ref_frame(1, L + b"\r", final=True), 1.0)
    rx.receive_data(b"\x00" * (HELD_BUFFER_LIMIT * 4), 1.0)
    assert len(rx._buf) <= HELD_BUFFER_LIMIT


def test_report_frames_adds_frame_accepted_and_nothing_else() -> None:
    plain, reporting = Receiver(), Receiver(report_frames=True)
    stream = [
        ENQ,
        ref_frame(1, H + b"\r", final=True),
        ref_frame(1, H + b"\r", final=True),
        _bad(2, b"x", True),
        ref_frame(2, L + b"\r", final=True),
    ]
    events = feed_and_store(reporting, stream)
    assert [e for e in events if isinstance(e, FrameAccepted)] == [FrameAccepted(1)]
    assert [e for e in events if not isinstance(e, FrameAccepted)] == feed_and_store(plain, stream)


def test_in_message_while_a_message_is_partly_received_or_awaiting_storage() -> None:
    rx = Receiver()
    assert not rx.in_message
    start(rx)
    assert not rx.in_message
    rx.receive_data(ref_frame(1, H + b"\r", final=True), 1.0)
    assert rx.in_message
    rx.receive_data(ref_frame(2, L + b"\r", final=True), 2.0)
    assert rx.awaiting_storage
    assert rx.in_message
    rx.message_stored(2.0)
    assert not rx.in_message
    rx.receive_data(ref_frame(3, H + b"\r", final=True) + EOT, 3.0)
    assert not rx.in_message  # discarded by EOT


def test_end_frame_mode_delivers_each_end_frame() -> None:
    wire = Wire(Sender(), Receiver(message_end=MessageEnd.END_FRAME))
    wire.tx.send_message(MESSAGE, 0.0)
    wire.run(0.0)
    assert received(wire.rx_events) == [
        H + b"\r",
        P + b"\r",
        R + b"\r",
        LONG_COMMENT + b"\r",
        L + b"\r",
    ]


# --- sender -------------------------------------------------------------------------------


def test_enq_nak_retries_after_ten_seconds() -> None:
    tx = Sender()
    tx.send_message(MESSAGE, 0.0)
    assert tx.data_to_send() == ENQ
    tx.receive_data(NAK, 1.0)
    assert drain_tx(tx) == [EstablishmentRefused(11.0)]
    tx.check_timeouts(10.9)
    assert tx.data_to_send() == b""
    tx.check_timeouts(11.0)
    assert tx.data_to_send() == ENQ


@pytest.mark.parametrize(
    ("role", "won", "delay"), [(Role.COMPUTER, False, 20.0), (Role.INSTRUMENT, True, 1.0)]
)
def test_enq_contention(role: Role, won: bool, delay: float) -> None:
    tx = Sender(role)
    tx.send_message(MESSAGE, 0.0)
    assert tx.data_to_send() == ENQ
    tx.receive_data(ENQ + b"\x02after", 0.5)
    assert drain_tx(tx) == [Contention(won, 0.5 + delay)]
    assert not tx.awaiting_reply
    assert tx.busy
    assert tx.take_unconsumed() == b"\x02after"  # for the driver's Receiver
    tx.check_timeouts(0.5 + delay - 0.01)
    assert tx.data_to_send() == b""
    tx.check_timeouts(0.5 + delay)
    assert tx.data_to_send() == ENQ


def test_contention_between_two_stations_instrument_wins() -> None:
    instrument = Sender(Role.INSTRUMENT)
    computer_tx, computer_rx = Sender(Role.COMPUTER), Receiver()
    instrument.send_message(MESSAGE, 0.0)
    computer_tx.send_message(H + b"\r" + L + b"\r", 0.0)
    to_computer, to_instrument = instrument.data_to_send(), computer_tx.data_to_send()
    computer_tx.receive_data(to_computer, 0.1)
    instrument.receive_data(to_instrument, 0.1)
    assert drain_tx(computer_tx) == [Contention(False, 20.1)]
    assert drain_tx(instrument) == [Contention(True, 1.1)]
    computer_rx.receive_data(computer_tx.take_unconsumed(), 0.1)
    assert computer_rx.data_to_send() == b""  # the contending ENQ is not answered
    instrument.check_timeouts(1.1)
    rx_events: list[ReceiverEvent] = []
    while data := instrument.data_to_send():
        # The driver's routing: the computer's Sender is not awaiting a reply, so its Receiver.
        assert not computer_tx.awaiting_reply
        computer_rx.receive_data(data, 1.1)
        for event in drain_rx(computer_rx):
            rx_events.append(event)
            if isinstance(event, MessageReceived):
                computer_rx.message_stored(1.1)
        instrument.receive_data(computer_rx.data_to_send(), 1.1)
    assert received(rx_events) == [MESSAGE]
    assert drain_tx(instrument)[-1] == MessageSent()


def test_frame_reply_timeout_aborts() -> None:
    tx = Sender()
    tx.send_message(MESSAGE, 0.0)
    tx.receive_data(ACK, 1.0)
    assert tx.data_to_send() == ENQ + ref_frame(1, H + b"\r", final=True)
    tx.check_timeouts(15.9)
    assert tx.data_to_send() == b""
    tx.check_timeouts(16.0)
    assert tx.data_to_send() == EOT
    assert drain_tx(tx) == [LinkEstablished(), SendFailed("timeout")]
    assert not tx.busy


def test_any_other_reply_to_a_frame_is_a_nak_condition() -> None:
    tx = Sender()
    tx.send_message(MESSAGE, 0.0)
    tx.receive_data(ACK, 1.0)
    frame = ref_frame(1, H + b"\r", final=True)
    assert tx.data_to_send() == ENQ + frame
    tx.receive_data(b"\xff", 2.0)  # garbled on the line: not trusted as an ACK
    assert tx.data_to_send() == frame
    assert drain_tx(tx) == [LinkEstablished(), FrameRetransmitted(1, 1)]
    tx.receive_data(ACK, 3.0)
    assert tx.data_to_send()[:2] == b"\x022"  # the next frame: the retransmit was accepted
    assert drain_tx(tx) == []


def test_enq_reply_timeout_aborts() -> None:
    tx = Sender()
    tx.send_message(MESSAGE, 0.0)
    tx.receive_data(b"\xff\x00", 3.0)  # noise is not a reply
    tx.check_timeouts(15.0)
    assert tx.data_to_send() == ENQ + EOT
    assert drain_tx(tx) == [SendFailed("timeout")]


def test_receiver_interrupt_mid_message_restarts_later() -> None:
    tx, rx = Sender(), Receiver()
    tx.send_message(MESSAGE, 0.0)
    rx.receive_data(tx.data_to_send(), 0.0)
    tx.receive_data(rx.data_to_send(), 0.0)  # ACK to ENQ: frame 1 goes
    rx.receive_data(tx.data_to_send(), 0.0)
    assert rx.data_to_send() == ACK
    tx.receive_data(EOT, 1.0)  # the receiver asks to stop instead of ACKing frame 1
    assert tx.data_to_send() == EOT
    assert drain_tx(tx) == [LinkEstablished(), SendInterrupted(16.0)]
    rx.receive_data(EOT, 1.0)
    assert MessageAborted("interrupted", len(H) + 1) in drain_rx(rx)
    wire = Wire(tx, rx)
    tx.check_timeouts(15.9)
    wire.run(15.9)
    assert wire.sent == []
    tx.check_timeouts(16.0)
    wire.run(16.0)
    assert received(wire.rx_events) == [MESSAGE]
    assert wire.tx_events[-1] == MessageSent()


def test_receiver_interrupt_on_last_frame_counts_as_ack() -> None:
    tx = Sender()
    tx.send_message(H + b"\r" + L + b"\r", 0.0)
    tx.receive_data(ACK + ACK, 0.0)  # ENQ and frame 1 acknowledged
    tx.receive_data(EOT, 0.0)  # EOT instead of ACK to the last frame: delivered
    assert tx.data_to_send() == (
        ENQ + ref_frame(1, H + b"\r", final=True) + ref_frame(2, L + b"\r", final=True) + EOT
    )
    assert drain_tx(tx) == [LinkEstablished(), MessageSent()]


def test_sender_misuse_raises_usage_error() -> None:
    tx = Sender()
    with pytest.raises(LinkUsageError):
        tx.send_message(b"no carriage return", 0.0)
    tx.send_message(MESSAGE, 0.0)
    with pytest.raises(LinkUsageError):
        tx.send_message(MESSAGE, 0.0)
    with pytest.raises(LinkUsageError):
        Sender(max_failures=0)


# --- fuzz ---------------------------------------------------------------------------------


def feed_and_store(rx: Receiver, chunks: list[bytes]) -> list[ReceiverEvent]:
    events: list[ReceiverEvent] = []
    for i, chunk in enumerate(chunks):
        rx.receive_data(chunk, float(i))
        rx.check_timeouts(float(i))
        for event in drain_rx(rx):
            events.append(event)
            if isinstance(event, MessageReceived):
                rx.message_stored(float(i))
        assert set(rx.data_to_send()) <= {0x06, 0x15}
    return events


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_receiver_never_raises_on_arbitrary_bytes(chunks: list[bytes]) -> None:
    feed_and_store(Receiver(), [ENQ, *chunks])
    feed_and_store(Receiver(message_end=MessageEnd.END_FRAME), [ENQ, *chunks])


_TEXT = st.binary(max_size=40).map(lambda b: bytes(c for c in b if c >= 0x20 and c != ord("B")))


def _good(number: int, text: bytes, final: bool) -> bytes:
    return ref_frame(number, text + b"\r", final=final)


def _bad(number: int, text: bytes, final: bool) -> bytes:
    frame = ref_frame(number, b"BAD" + text + b"\r", final=final)
    wrong = (int(frame[-4:-2], 16) + 1) % 256
    return frame[:-4] + f"{wrong:02X}".encode() + b"\r\n"


_TOKEN = st.one_of(
    st.just(ENQ),
    st.just(EOT),
    st.binary(max_size=8),
    st.builds(_good, st.integers(0, 7), _TEXT, st.booleans()),
    st.builds(_bad, st.integers(0, 7), _TEXT, st.booleans()),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_TOKEN, max_size=40), st.sampled_from(list(MessageEnd)))
def test_no_message_holds_a_frame_with_a_bad_checksum(
    tokens: list[bytes], message_end: MessageEnd
) -> None:
    events = feed_and_store(Receiver(message_end=message_end), tokens)
    assert all(b"BAD" not in text for text in received(events))


# --- the whole-frame fast path ---------------------------------------------------------------


def _summed(data: bytes) -> bytes:
    """``data`` with its checksum made right for whatever lies between STX and C1."""
    body = data[1:-4]
    return data[:-4] + f"{sum(body) % 256:02X}".encode() + data[-2:]


def _variants(frame: bytes) -> list[bytes]:
    """A frame and its near misses: cut, extended, lower-case checksum, and one byte changed,
    each change also with the checksum made right for it (a well-summed bad frame)."""
    lower = frame[:-4] + frame[-4:-2].lower() + frame[-2:]
    out = [frame, lower, frame[:-1], frame[1:], frame + b"\x02", b"x" + frame]
    for at in range(len(frame)):
        for byte in (0x00, 0x02, 0x03, 0x04, 0x0A, 0x10, 0x17, 0x2F, 0x38, frame[at] ^ 0x01):
            changed = frame[:at] + bytes((byte,)) + frame[at + 1 :]
            out += [changed, _summed(changed)]
    return out


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 7), _TEXT, st.booleans())
def test_whole_good_frame_decides_as_parse_frame_does(
    number: int, text: bytes, final: bool
) -> None:
    frame = ref_frame(number, text + b"\r", final=final)
    assert whole_good_frame(frame) == FrameOk(number, text + b"\r", final)
    for data in _variants(frame):
        fast = whole_good_frame(data)
        if fast is not None:  # only ever what parse_frame says of the whole read
            assert parse_frame(data) == (fast, len(data))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_whole_good_frame_accepts_no_bytes_parse_frame_would_not(data: bytes) -> None:
    fast = whole_good_frame(data)
    assert fast is None or parse_frame(data) == (fast, len(data))


def _feed(chunks: list[bytes], message_end: MessageEnd) -> tuple[list[ReceiverEvent], bytes]:
    rx, events, replies = Receiver(message_end=message_end, report_frames=True), [], b""
    for chunk in chunks:
        rx.receive_data(chunk, 0.0)
        for event in drain_rx(rx):
            events.append(event)
            if isinstance(event, MessageReceived):
                rx.message_stored(0.0)
        replies += rx.data_to_send()
    return events, replies


@settings(max_examples=300, deadline=None)
@given(st.lists(_TOKEN, max_size=40), st.sampled_from(list(MessageEnd)))
def test_a_line_reads_the_same_in_whole_frames_and_byte_by_byte(
    tokens: list[bytes], message_end: MessageEnd
) -> None:
    """Whole-frame reads take the fast path, single bytes the parser: same events, same replies."""
    one_by_one = [bytes((b,)) for b in b"".join(tokens)]
    assert _feed(tokens, message_end) == _feed(one_by_one, message_end)
