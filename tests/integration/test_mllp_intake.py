"""HL7 v2 over MLLP through real TCP sockets into a real inbox (SQLite and PostgreSQL).

Each RELIABILITY case that concerns MLLP intake has a test named after it. Crash safety (R01-R03)
is in test_crash_safety.py and test_database_down.py; HTTP (R17) and batch files (R24) in theirs.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.mllp_peer import MllpPeer, msa, segment
from tests.mllp_server import ServedMllp
from tests.waiting import wait_until
from vetgateway.adapters.hl7.intake import Hl7Policy
from vetgateway.adapters.mllp.framer import frame
from vetgateway.adapters.mllp.server import MllpLimits
from vetgateway.errors import StorageUnavailable
from vetgateway.store.db import Database
from vetgateway.store.inbox import Inbox
from vetgateway.store.models import InboundMessage, MessageStatus

FIXTURES = Path(__file__).parent.parent / "fixtures" / "hl7"
ANY_PROCESSING_ID = Hl7Policy(processing_ids=("P", "T", "D"))


def oru(control_id: str, *, msh_tail: str = "", sep: str = "|", enc: str = "^~\\&") -> bytes:
    """A small ORU^R01 written with the given field separator and encoding characters."""
    s, c = sep, enc[0]
    text = (
        f"MSH{s}{enc}{s}LAB{s}IDEXX{s}VETGATEWAY{s}CLINIC{s}20261126101500{s}{s}ORU^R01^ORU_R01"
        f"{s}{control_id}{s}P{s}2.5.1{msh_tail}\r"
        f"PID{s}1{s}{s}PMS123^^^CLINIC^PI{s}{s}Rex^^^^^^N\r"
        f"OBR{s}1{s}ACC1{s}{s}CHEM^Chemistry\r"
        f"OBX{s}1{s}NM{s}GLU^Glucose{s}{s}5.4{s}mmol/L{s}3.9-7.8{s}N{s}{s}{s}F\r"
    )
    msh, rest = text.split("\r", 1)
    return (
        msh.replace(enc, "\0").replace("^", c).replace("\0", enc) + "\r" + rest.replace("^", c)
    ).encode()


def rows(db: Database) -> list[InboundMessage]:
    with db.session(readonly=True) as s:
        return list(s.scalars(sa.select(InboundMessage).order_by(InboundMessage.id)))


@pytest.fixture
def mllp(db: Database):
    with ServedMllp(db, policy=ANY_PROCESSING_ID) as served:
        yield served


def connect(served: ServedMllp, timeout: float = 15.0) -> MllpPeer:
    return MllpPeer(served.host, served.port, timeout=timeout)


def probe_after(peer: MllpPeer, control_id: str = "PROBE") -> list[str]:
    """Answers come back in order: the probe's ACK arriving next proves nothing came before it."""
    peer.send(oru(control_id))
    return msa(peer.read_ack())


# Expected first answer for each fixture with P, T and D accepted. None: the sender asked for no
# accept acknowledgement (enhanced mode, MSH-15=NE), so the next answer is the probe's.
FIXTURE_ANSWERS = {
    "vetclinic_orm_o01_canine_three_tests.hl7": "AA",
    "vetclinic_oml_o21_feline_accession_utf8.hl7": "CA",
    "vetclinic_orm_o01_cancel_one_test.hl7": "AA",
    "elixirhl7_elr_oru_r01_sn_species_truncation.hl7": "AA",
    "nodehl7c_athena_oru_lf_nte_tq1.hl7": "CA",
    "nodehl7c_cerner_lead_mixed_cr_lf.hl7": "AA",
    "nodehl7c_nist_elr_lead_nm_H_text_range.hl7": "AA",
    "nodehl7c_nist_elr_stool_dup_obx_setid.hl7": "AA",
    "nodehl7c_realm_elr_animal_rabies_dog.hl7": None,
    "nodehl7c_realm_elr_hcv_sn_gt_multi_flag.hl7": None,
    "prs_ack_v04_ae_err.hl7": None,  # an ACK is refused (AR), but MSH-15=NE asks for silence
    "prs_batch_fhs_bhs_20_oru_cr.hl7": "AE",  # a batch is not one message: use the file drop
    "prs_batch_fhs_bhs_2_oru.hl7": "AE",
    "prs_oru_r01_hci_multi_obr_H_nte_escapes.hl7": "AA",
    "prs_oru_r01_newborn_screen_20_obr.hl7": "AA",
    "prs_oru_r01_newborn_screen_cah_quirks.hl7": "AA",
    "prs_oru_r01_nte_after_each_obx.hl7": None,
    "prs_two_oru_concatenated_no_batch.hl7": None,
    "pythonhl7_ack_a01_aa.mllp": "AR",  # already framed; an ACK is not accepted here
    "pythonhl7_bad_batch_bhs_without_msh.hl7": "AE",
    "pythonhl7_file_fhs_bhs_two_batches.hl7": "AE",
    "pythonhl7_oru_r01_ghh_lab_glucose.hl7": "AA",
}


def fixture_files() -> list[Path]:
    return sorted(p for p in FIXTURES.glob("*/*") if p.suffix in (".hl7", ".mllp"))


def test_every_fixture_has_an_expected_answer() -> None:
    assert sorted(p.name for p in fixture_files()) == sorted(FIXTURE_ANSWERS)


@pytest.mark.parametrize("path", fixture_files(), ids=lambda p: p.stem)
def test_fixture_over_tcp(mllp: ServedMllp, path: Path) -> None:
    raw = path.read_bytes()
    payload = raw[1:-2] if raw.startswith(b"\x0b") else raw
    expected = FIXTURE_ANSWERS[path.name]
    with connect(mllp) as peer:
        peer.send_raw(raw if raw.startswith(b"\x0b") else frame(raw))
        answer = probe_after(peer)
        if expected is not None:
            assert answer[1] == expected, answer
            control_id = rows(mllp.db)[0].control_id
            if control_id:
                assert answer[2] == control_id  # MSA-2 echoes MSH-10
            answer = msa(peer.read_ack())
        assert answer[1:3] == ["AA", "PROBE"]
    stored = rows(mllp.db)
    assert stored[0].raw == payload  # the bytes, verbatim
    refused = expected in ("AE", "AR") or path.name == "prs_ack_v04_ae_err.hl7"
    assert stored[0].status is (MessageStatus.QUARANTINED if refused else MessageStatus.RECEIVED)
    assert bool(stored[0].error) == refused


def test_ack_swaps_applications_and_keeps_version_and_delimiters(mllp: ServedMllp) -> None:
    message = oru("C1", sep="$", enc="%*!@")
    with connect(mllp) as peer:
        ack = peer.exchange(message)
    assert ack.startswith(b"MSH$%*!@$VETGATEWAY$CLINIC$LAB$IDEXX$")
    fields = ack.split(b"\r")[0].split(b"$")
    assert fields[8] == b"ACK%R01%ACK"
    assert fields[11] == b"2.5.1"
    assert msa(ack)[1:3] == ["AA", "C1"]


def test_pipelined_messages_are_answered_in_order(mllp: ServedMllp) -> None:
    ids = [f"PIPE{n}" for n in range(20)]
    with connect(mllp) as peer:
        peer.send_raw(b"".join(frame(oru(i)) for i in ids))
        answers = [msa(peer.read_ack())[2] for _ in ids]
    assert answers == ids
    assert [r.control_id for r in rows(mllp.db)] == ids


def test_many_concurrent_connections(mllp: ServedMllp) -> None:
    acked: list[str] = []

    def sender(n: int) -> None:
        with connect(mllp) as peer:
            for i in range(10):
                answer = msa(peer.exchange(oru(f"S{n}-{i}")))
                assert answer[1] == "AA"
                acked.append(answer[2])

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(acked) == 120
    assert sorted(r.control_id for r in rows(mllp.db)) == sorted(acked)


# -- RELIABILITY cases ------------------------------------------------------------------------


def test_r07_duplicate_control_id_identical_bytes(mllp: ServedMllp) -> None:
    with connect(mllp) as peer:
        first = peer.exchange(oru("DUP1"))
    with connect(mllp) as peer:
        again = peer.exchange(oru("DUP1"))
    assert again == first  # the original ACK, byte for byte
    assert len(rows(mllp.db)) == 1


def test_r08_same_control_id_different_content(mllp: ServedMllp) -> None:
    with connect(mllp) as peer:
        assert msa(peer.exchange(oru("COL1")))[1] == "AA"
        changed = oru("COL1").replace(b"5.4", b"9.9")
        assert msa(peer.exchange(changed))[1] == "AA"
    first, second = rows(mllp.db)
    assert second.raw == changed
    assert second.status is MessageStatus.QUARANTINED
    assert f"message {first.id}" in (second.error or "")
    assert first.status is MessageStatus.RECEIVED


def test_r10_reset_after_frame_before_ack(mllp: ServedMllp) -> None:
    peer = connect(mllp)
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    peer.send(oru("RST1"))
    peer.close()  # linger 0: RST instead of FIN, before reading the ACK
    wait_until(lambda: len(rows(mllp.db)) == 1, what="the message stored despite the reset")
    with connect(mllp) as again:
        answer = msa(again.exchange(oru("RST1")))
    assert answer[1:3] == ["AA", "RST1"]
    assert len(rows(mllp.db)) == 1


def test_r11_truncated_frame_then_close(mllp: ServedMllp) -> None:
    with connect(mllp) as peer:
        peer.send_raw(b"\x0b" + oru("TRUNC1")[:60])
        peer.sock.shutdown(socket.SHUT_WR)
        assert peer.closed_by_gateway()
    with connect(mllp) as peer:  # the listener is fine, and nothing of the partial was stored
        assert msa(peer.exchange(oru("AFTER")))[1] == "AA"
    assert [r.control_id for r in rows(mllp.db)] == ["AFTER"]


def test_r12_slowloris_frame_timeout(db: Database) -> None:
    limits = MllpLimits(frame_timeout=0.5)
    with ServedMllp(db, limits=limits) as served:
        slow = MllpPeer(served.host, served.port)
        slow.send_raw(b"\x0b" + oru("SLOW1")[:30])  # then nothing more
        with connect(served) as healthy:  # the listener answers others meanwhile
            assert msa(healthy.exchange(oru("FAST1")))[1] == "AA"
        assert slow.closed_by_gateway()
        slow.close()
        assert [r.control_id for r in rows(db)] == ["FAST1"]
        assert [i[0] for i in served.incidents] == ["frame_timeout"]


def test_r12_trickling_bytes_do_not_extend_the_frame_deadline(db: Database) -> None:
    with ServedMllp(db, limits=MllpLimits(frame_timeout=0.6)) as served:
        with connect(served) as slow:
            slow.send_raw(b"\x0b")
            closed = threading.Event()

            def trickle() -> None:
                for byte in oru("TRICKLE"):
                    try:
                        slow.send_raw(bytes([byte]))
                    except OSError:
                        closed.set()
                        return
                    if closed.wait(0.05):
                        return

            t = threading.Thread(target=trickle)
            t.start()
            assert slow.closed_by_gateway()
            closed.set()
            t.join(timeout=30)
        assert rows(db) == []


def test_r12_per_peer_connection_cap(db: Database) -> None:
    with ServedMllp(db, limits=MllpLimits(max_connections_per_peer=2)) as served:
        first, second = connect(served), connect(served)
        assert msa(first.exchange(oru("CAP1")))[1] == "AA"
        assert msa(second.exchange(oru("CAP2")))[1] == "AA"
        with connect(served) as third:
            assert third.closed_by_gateway()
        assert [i[0] for i in served.incidents] == ["connection_refused"]
        first.close()
        second.close()


def test_r13_oversized_message_is_refused_and_the_connection_closed(db: Database) -> None:
    with ServedMllp(db, limits=MllpLimits(max_message_size=4096)) as served:
        big = oru("BIG1") + b"OBX|2|ED|PDF^Report||" + b"A" * 10_000 + b"\r"
        with connect(served) as peer:
            peer.send(big)
            answer = msa(peer.read_ack())
            assert peer.closed_by_gateway()
        assert answer[1] == "AR"
        assert answer[2] == "BIG1"
        assert "larger than 4096 bytes" in answer[3]
        (row,) = rows(db)
        assert row.status is MessageStatus.QUARANTINED
        assert big.startswith(row.raw)  # its first bytes kept as evidence
        assert "larger than 4096 bytes" in (row.error or "")
        assert [i[0] for i in served.incidents] == ["message_too_large"]


def test_r13_ten_megabyte_oru_with_pdf_under_the_cap_is_accepted(mllp: ServedMllp) -> None:
    pdf = b"JVBERi0xLjQK" * (10 * 1024 * 1024 // 12)
    big = oru("PDF1") + b"OBX|2|ED|PDF^Report||^application^pdf^Base64^" + pdf + b"\r"
    with connect(mllp, timeout=60) as peer:
        assert msa(peer.exchange(big))[1:3] == ["AA", "PDF1"]
    (row,) = rows(mllp.db)
    assert row.raw == big
    assert row.size > 10 * 1024 * 1024


def test_r14_framing_variants(mllp: ServedMllp) -> None:
    one, two, three = oru("F1"), oru("F2"), oru("F3")
    with connect(mllp) as peer:
        peer.send_raw(frame(one) + frame(two))  # two messages in one segment
        split = b"\x00\r\n" + frame(three)  # NUL and junk between frames
        for i in range(0, len(split), 7):  # one message over many reads
            peer.send_raw(split[i : i + 7])
        answers = [msa(peer.read_ack())[1:3] for _ in range(3)]
    assert answers == [["AA", "F1"], ["AA", "F2"], ["AA", "F3"]]
    assert [r.raw for r in rows(mllp.db)] == [one, two, three]


@pytest.mark.parametrize(
    "junk",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(40)),  # a TLS ClientHello
        b"GET / HTTP/1.1\r\nHost: gateway\r\n\r\n",
        bytes(range(256)) * 4,
    ],
    ids=["tls-client-hello", "http-get", "random-bytes"],
)
def test_r15_non_mllp_input(mllp: ServedMllp, junk: bytes) -> None:
    with connect(mllp, timeout=5) as peer:
        peer.send_raw(junk.replace(b"\x0b", b"").replace(b"\x1c", b""))
        peer.sock.shutdown(socket.SHUT_WR)
        assert peer.closed_by_gateway()
    with connect(mllp) as peer:
        assert msa(peer.exchange(oru("STILL-UP")))[1] == "AA"
    assert [r.control_id for r in rows(mllp.db)] == ["STILL-UP"]


def test_r18_unusual_encoding_characters_and_truncation_character(mllp: ServedMllp) -> None:
    with connect(mllp) as peer:
        unusual = msa(peer.exchange(oru("ENC1", sep="$", enc="%*!@")))
        truncation = msa(peer.exchange(oru("ENC2", enc="^~\\&#")))
    assert unusual[1:3] == ["AA", "ENC1"]
    assert truncation[1:3] == ["AA", "ENC2"]


def test_r19_latin1_under_msh18_is_stored_verbatim_and_acked_in_latin1(
    mllp: ServedMllp,
) -> None:
    message = oru("LAT1", msh_tail="||||||8859/1").replace(b"Rex", "Rexé".encode("latin-1"))
    with connect(mllp) as peer:
        ack = peer.exchange(message)
    assert msa(ack)[1] == "AA"
    assert rows(mllp.db)[0].raw == message


def test_r19_non_utf8_bytes_under_utf8_msh18(mllp: ServedMllp) -> None:
    message = oru("BADUTF", msh_tail="||||||UNICODE UTF-8").replace(b"Rex", b"Rex\xe9\xff")
    with connect(mllp) as peer:
        answer = msa(peer.exchange(message))
    assert answer[1] == "AE"
    (row,) = rows(mllp.db)
    assert row.raw == message
    assert row.status is MessageStatus.QUARANTINED
    assert "PID" in (row.error or "")


@pytest.mark.parametrize(
    ("message", "code", "err"),
    [
        (oru("T1").replace(b"|ORU^R01^ORU_R01|", b"|ADT^A01^ADT_A01|"), "AR", "200"),
        (oru("T2").replace(b"|ORU^R01^ORU_R01|", b"|ORU^R99^ORU_R01|"), "AR", "201"),
        (oru("T3").replace(b"|T3|P|", b"|T3|T|"), "AR", "202"),
        (oru("T4").replace(b"|2.5.1", b"|3.0"), "AR", "203"),
    ],
    ids=["message-type", "event", "processing-id-T-on-P-port", "version"],
)
def test_r20_unsupported_type_event_processing_id_or_version(
    db: Database, message: bytes, code: str, err: str
) -> None:
    with ServedMllp(db) as served, connect(served) as peer:
        ack = peer.exchange(message)
    assert msa(ack)[1] == code
    err_segment = segment(ack, "ERR")
    assert err_segment is not None
    assert err_segment[3].startswith(err)
    (row,) = rows(db)
    assert row.status is MessageStatus.QUARANTINED
    assert f"HL7 error {err}" in (row.error or "")


@pytest.mark.parametrize(
    ("message", "located"),
    [
        (oru("X").replace(b"|X|P|", b"||P|"), "MSH^1^10"),
        (oru("X").replace(b"MSH|", b"MSH^", 1), None),
        (b"", None),
        (b"PID|1||P1\r", None),
    ],
    ids=["missing-msh10", "wrong-field-separator", "empty-frame", "no-msh"],
)
def test_r21_required_field_missing_or_malformed(
    mllp: ServedMllp, message: bytes, located: str | None
) -> None:
    with connect(mllp) as peer:
        ack = peer.exchange(message)
    answer = msa(ack)
    assert answer[1] == "AE"
    assert answer[3]  # a reason a person can act on
    if located is not None:
        err_segment = segment(ack, "ERR")
        assert err_segment is not None
        assert err_segment[2] == located
    (row,) = rows(mllp.db)
    assert row.raw == message
    assert row.status is MessageStatus.QUARANTINED
    assert row.error


@pytest.mark.parametrize(
    ("msh15", "msh16", "expected"),
    [("AL", "NE", "CA"), ("NE", "AL", None), ("AL", "AL", "CA"), ("NE", "NE", None)],
)
def test_r22_enhanced_mode(mllp: ServedMllp, msh15: str, msh16: str, expected: str | None) -> None:
    with connect(mllp) as peer:
        peer.send(oru("ENH1", msh_tail=f"|||{msh15}|{msh16}"))
        if expected is not None:
            assert msa(peer.read_ack())[1:3] == [expected, "ENH1"]
        # No application ACK follows (that comes from the pipeline); the next answer is the probe's.
        assert probe_after(peer)[1:3] == ["AA", "PROBE"]
    assert rows(mllp.db)[0].control_id == "ENH1"


# -- R02 / R04: faults between the socket read and the commit ---------------------------------


class FaultyInbox(Inbox):
    """An inbox that fails at a chosen point of the write, the way a real failure would."""

    def __init__(self, db: Database, fault: str) -> None:
        super().__init__(db)
        self.fault = fault

    def _commit(self, rows):
        if self.fault == "before-insert":
            raise StorageUnavailable("database unavailable: connection refused")

        def work(connection):
            receipts = self._insert(connection, rows)
            if self.fault == "bug-after-insert":
                raise RuntimeError("a bug of ours, after the INSERT and before the COMMIT")
            if self.fault == "commit-lost":
                raise connection_error(connection)
            return receipts

        return self._db.write(work)


def connection_error(connection) -> Exception:
    """The driver's own OperationalError, as a lost connection at COMMIT raises it."""
    module = type(connection).__module__.split(".")[0]
    if module == "sqlite3":
        import sqlite3

        return sqlite3.OperationalError("disk I/O error")
    import psycopg

    return psycopg.OperationalError("server closed the connection unexpectedly")


@pytest.mark.parametrize("fault", ["before-insert", "bug-after-insert", "commit-lost"])
def test_r02_fault_between_read_and_commit_never_gets_aa(db: Database, fault: str) -> None:
    with ServedMllp(db, inbox=FaultyInbox(db, fault)) as served, connect(served) as peer:
        peer.send(oru("FAULT1"))
        ack = peer.read_ack()
    assert rows(db) == []  # nothing half-stored either
    assert msa(ack)[1] == "AR"
    err_segment = segment(ack, "ERR")
    assert err_segment is not None
    assert err_segment[3].startswith("207")  # application internal error: retry later


def test_r04_disk_full_answers_ar_207_and_stores_nothing(tmp_path: Path) -> None:
    """SQLite's real SQLITE_FULL path: the database may not grow past a page limit."""
    from vetgateway.store import migrate

    db = Database(f"sqlite:///{tmp_path / 'full.db'}")
    migrate.upgrade(db)

    @sa.event.listens_for(db.engine, "connect")
    def _small_disk(dbapi_connection, _record) -> None:
        pages = dbapi_connection.execute("PRAGMA page_count").fetchone()[0]
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages}")  # not one page more

    db.engine.dispose()
    with ServedMllp(db) as served, connect(served) as peer:
        # big enough to need new pages, not just the free space in the existing ones
        ack = peer.exchange(oru("FULL1") + b"NTE|1||" + b"x" * 50_000 + b"\r")
    db.dispose()
    assert msa(ack)[1] == "AR"
    err_segment = segment(ack, "ERR")
    assert err_segment is not None
    assert err_segment[3].startswith("207")
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'full.db'}")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM inbound_messages")).scalar() == 0
    engine.dispose()
