"""HL7 batch files from the drop folder, on SQLite and PostgreSQL, with real files (R24, R02, R19).

The watcher is driven by calling ``scan_once(now)`` with a chosen clock value, so "the file has not
settled yet" is decided by the test, never by a sleep. The last test runs the real ``vetgateway
run`` process and waits, with a deadline, for the file to reach the archive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.gateway_process import GatewayProcess, gateway_environment
from tests.waiting import wait_until
from vetgateway.adapters.filedrop import FileDropWatcher, ScanReport
from vetgateway.adapters.hl7.batch import ProblemKind
from vetgateway.adapters.hl7.intake import Hl7Intake, Hl7Policy
from vetgateway.errors import StorageUnavailable
from vetgateway.store.db import Database
from vetgateway.store.inbox import Inbox, MessageMeta, Receipt
from vetgateway.store.models import InboundMessage, MessageStatus

FIXTURES = Path(__file__).parent.parent / "fixtures" / "hl7"
BATCH_20 = FIXTURES / "prs" / "prs_batch_fhs_bhs_20_oru_cr.hl7"
GLUCOSE = FIXTURES / "pythonhl7" / "pythonhl7_oru_r01_ghh_lab_glucose.hl7"
BAD_BATCH = FIXTURES / "pythonhl7" / "pythonhl7_bad_batch_bhs_without_msh.hl7"
TODAY = datetime(2026, 3, 4, 23, 59, tzinfo=UTC)
SETTLE = 2.0
# The fixtures' processing ids vary (P, T, D); accept them all so the tests are about files.
POLICY = Hl7Policy(processing_ids=("P", "T", "D"))


class Drop:
    """A data directory with its drop folder, and a watcher over it on a given inbox."""

    def __init__(self, root: Path, inbox: Inbox, extra: tuple[Path, ...] = ()) -> None:
        self.data = root / "data"
        self.inbox_dir = self.data / "inbox" / "hl7"
        self.archive = self.data / "archive" / "hl7" / "2026-03-04"
        self.failed = self.data / "failed" / "hl7"
        self.watcher = FileDropWatcher(
            Hl7Intake(inbox, POLICY),
            inbox,
            (self.inbox_dir, *extra),
            archive_dir=self.data / "archive" / "hl7",
            failed_dir=self.failed,
            peer_root=self.data,
            create=(self.inbox_dir,),
            settle_seconds=SETTLE,
            wall_clock=lambda: TODAY,
        )
        self.watcher.prepare()

    def put(self, name: str, data: bytes) -> Path:
        path = self.inbox_dir / name
        path.write_bytes(data)
        return path

    def settle(self, start: float = 0.0) -> ScanReport:
        """Two scans ``SETTLE`` apart: the second takes in every file unchanged in between."""
        first = self.watcher.scan_once(start)
        assert not first.archived
        assert not first.failed
        return self.watcher.scan_once(start + SETTLE)

    def report(self, name: str, folder: Path | None = None) -> dict[str, Any]:
        path = (folder or self.archive) / f"{name}.report.json"
        result: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return result


def rows(db: Database) -> list[InboundMessage]:
    with db.session(readonly=True) as s:
        return list(s.scalars(sa.select(InboundMessage).order_by(InboundMessage.id)))


def message_slices(data: bytes) -> list[bytes]:
    """The messages of a CR-separated file, cut independently of the code under test."""
    cuts = [i for i in range(len(data)) if data.startswith(b"MSH|", i) and data[i - 1 : i] == b"\r"]
    end = data.index(b"BTS|")
    return [data[a:b] for a, b in zip(cuts, [*cuts[1:], end], strict=True)]


def test_a_single_message_file_is_stored_verbatim_and_archived_with_a_report(
    db: Database, tmp_path: Path
) -> None:
    drop = Drop(tmp_path, Inbox(db))
    data = GLUCOSE.read_bytes()
    source = drop.put("glucose.hl7", data)
    first = drop.watcher.scan_once(0.0)
    assert first.waiting == [source]
    assert rows(db) == []
    report = drop.watcher.scan_once(SETTLE)
    [outcome] = report.archived
    assert outcome.destination == drop.archive / "glucose.hl7"
    assert not source.exists()
    assert (drop.archive / "glucose.hl7").read_bytes() == data
    [row] = rows(db)
    assert (row.raw, row.channel, row.peer) == (data, "file", "inbox/hl7/glucose.hl7")
    assert (row.control_id, row.status) == ("CNTRL-3456", MessageStatus.RECEIVED)
    sidecar = drop.report("glucose.hl7")
    assert sidecar["status"] == "archived"
    assert sidecar["file"] == "inbox/hl7/glucose.hl7"
    assert sidecar["problems"] == []
    assert [
        (m["position"], m["control_id"], m["ack_code"], m["message_id"])
        for m in sidecar["messages"]
    ] == [(1, "CNTRL-3456", "AA", row.id)]


def test_r24_a_batch_of_twenty_is_stored_as_twenty_slices_of_the_file(
    db: Database, tmp_path: Path
) -> None:
    drop = Drop(tmp_path, Inbox(db))
    data = BATCH_20.read_bytes()
    drop.put("batch.hl7", data)
    [outcome] = drop.settle().archived
    stored = rows(db)
    assert [r.raw for r in stored] == message_slices(data)
    assert len(stored) == 20
    assert {r.peer for r in stored} == {"inbox/hl7/batch.hl7"}
    sidecar = drop.report("batch.hl7")
    assert [m["ack_code"] for m in sidecar["messages"]] == [
        "CA"
    ] * 20  # MSH-15/16 are NE: enhanced mode
    assert [m["message_id"] for m in sidecar["messages"]] == [r.id for r in stored]
    assert [m["control_id"] for m in sidecar["messages"]] == [r.control_id for r in stored]
    assert sidecar["batches"][0]["declared_messages"] == 20
    assert sidecar["problems"] == []
    assert outcome.report_path == drop.archive / "batch.hl7.report.json"


def test_r24_batch_with_wrong_bts_count_stores_every_message_and_flags_the_batch(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    drop = Drop(tmp_path, Inbox(db))
    data = BATCH_20.read_bytes().replace(b"BTS|20", b"BTS|21")
    drop.put("short.hl7", data)
    drop.settle()
    assert len(rows(db)) == 20
    assert all(r.status is MessageStatus.RECEIVED for r in rows(db))
    sidecar = drop.report("short.hl7")
    assert sidecar["status"] == "archived"
    [problem] = sidecar["problems"]
    assert problem["kind"] == ProblemKind.COUNT_MISMATCH.value
    assert problem["batch"] == 1
    assert "BTS-1 says 21 messages, the batch holds 20 messages" in problem["message"]
    flagged = [r for r in caplog.records if r.getMessage() == "hl7 drop file envelope problem"]
    assert [getattr(r, "file_name", None) for r in flagged] == ["inbox/hl7/short.hl7"]


def test_r24_a_file_still_growing_between_scans_is_not_read(db: Database, tmp_path: Path) -> None:
    drop = Drop(tmp_path, Inbox(db))
    data = BATCH_20.read_bytes()
    path = drop.put("growing.hl7", data[:30_000])
    assert drop.watcher.scan_once(0.0).waiting == [path]
    with path.open("ab") as fh:
        fh.write(data[30_000:50_000])
    assert drop.watcher.scan_once(SETTLE).waiting == [path]  # grew: the settle time restarts
    with path.open("ab") as fh:
        fh.write(data[50_000:])
    assert drop.watcher.scan_once(2 * SETTLE).waiting == [path]
    assert drop.watcher.scan_once(3 * SETTLE - 0.1).waiting == [path]  # not settled long enough
    assert rows(db) == []
    assert path.exists()
    [outcome] = drop.watcher.scan_once(3 * SETTLE).archived
    assert len(rows(db)) == 20
    assert outcome.batch.problems == []


def test_r24_a_file_rewritten_with_the_same_size_is_not_read(db: Database, tmp_path: Path) -> None:
    drop = Drop(tmp_path, Inbox(db))
    path = drop.put("same.hl7", GLUCOSE.read_bytes())
    drop.watcher.scan_once(0.0)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert drop.watcher.scan_once(SETTLE).waiting == [path]
    assert rows(db) == []
    assert len(drop.watcher.scan_once(2 * SETTLE).archived) == 1


@pytest.mark.parametrize("name", ["lab.hl7.part", "lab.hl7.tmp", "lab.partial", ".lab.hl7"])
def test_r24_files_in_progress_are_ignored_until_renamed(
    db: Database, tmp_path: Path, name: str
) -> None:
    drop = Drop(tmp_path, Inbox(db))
    path = drop.put(name, GLUCOSE.read_bytes())
    for now in (0.0, 10.0, 20.0):
        report = drop.watcher.scan_once(now)
        assert report.ignored == [path]
        assert report.waiting == []
    assert rows(db) == []
    assert path.exists()
    path.rename(drop.inbox_dir / "lab.hl7")
    [outcome] = drop.settle(30.0).archived
    assert outcome.source == drop.inbox_dir / "lab.hl7"
    assert len(rows(db)) == 1


def test_r02_storage_failure_leaves_the_file_and_a_retry_archives_it_once(
    db: Database, tmp_path: Path
) -> None:
    unreachable = Database("postgresql+psycopg://vetgateway@127.0.0.1:1/vetgateway")
    try:
        drop = Drop(tmp_path, Inbox(unreachable))
        path = drop.put("batch.hl7", BATCH_20.read_bytes())
        report = drop.settle()
        [outcome] = report.retrying
        assert outcome.parts[-1].message_id is None
        assert report.archived == []
        assert path.exists()
        assert not (drop.data / "archive" / "hl7").exists()
        again = drop.watcher.scan_once(2 * SETTLE)  # still down: still there
        assert len(again.retrying) == 1
        assert path.exists()
    finally:
        unreachable.dispose()
    retry = Drop(tmp_path, Inbox(db))
    assert len(retry.settle(10.0).archived) == 1
    assert not path.exists()
    assert len(rows(db)) == 20


class FailingInbox(Inbox):
    """The real inbox, until ``allowed`` messages were stored; then the database is "down"."""

    def __init__(self, db: Database, allowed: int) -> None:
        super().__init__(db)
        self.allowed = allowed
        self.calls = 0

    def receive(
        self, raw: bytes, channel: str, peer: str, meta: MessageMeta | None = None
    ) -> Receipt:
        self.calls += 1
        if self.allowed <= 0:
            raise StorageUnavailable("database unavailable (injected)")
        self.allowed -= 1
        return super().receive(raw, channel, peer, meta)


def test_r02_failure_mid_file_then_retry_stores_each_message_once(
    db: Database, tmp_path: Path
) -> None:
    inbox = FailingInbox(db, allowed=7)
    drop = Drop(tmp_path, inbox)
    path = drop.put("batch.hl7", BATCH_20.read_bytes())
    [outcome] = drop.settle().retrying
    assert [p.message_id is not None for p in outcome.parts] == [True] * 7 + [False]
    assert len(rows(db)) == 7
    assert path.exists()
    inbox.allowed = 100
    inbox.calls = 0
    [done] = drop.watcher.scan_once(3 * SETTLE).archived
    assert inbox.calls == 13  # the 7 stored before are not sent again
    assert [p.message_id for p in done.parts[:7]] == [p.message_id for p in outcome.parts[:7]]
    assert len(rows(db)) == 20


def test_r01_after_a_restart_the_inbox_recognises_what_was_stored(
    db: Database, tmp_path: Path
) -> None:
    drop = Drop(tmp_path, FailingInbox(db, allowed=7))
    path = drop.put("batch.hl7", BATCH_20.read_bytes())
    [outcome] = drop.settle().retrying
    first_ids = [p.message_id for p in outcome.parts[:7]]
    restarted = Drop(tmp_path, Inbox(db))  # a new process: nothing remembered
    [done] = restarted.settle(10.0).archived
    assert not path.exists()
    assert len(rows(db)) == 20
    assert [p.message_id for p in done.parts[:7]] == first_ids
    assert [p.duplicate for p in done.parts] == [True] * 7 + [False] * 13
    assert [m["duplicate"] for m in restarted.report("batch.hl7")["messages"]][:8] == [True] * 7 + [
        False
    ]


def test_r19_latin1_file_under_msh18_8859_1_is_stored_verbatim(
    db: Database, tmp_path: Path
) -> None:
    drop = Drop(tmp_path, Inbox(db))
    data = (
        b"MSH|^~\\&|LABO|VETLAB|VG|CLINIQUE|20260304||ORU^R01|L1|P|2.5.1|||||FRA|8859/1\r\n"
        b"PID|1||42||M\xe9dor^Chien\r\nOBX|1|NM|GLU^Glyc\xe9mie||5.5|mmol/L\r\n"
    )
    drop.put("latin1.hl7", data)
    drop.settle()
    [row] = rows(db)
    assert row.raw == data
    assert row.status is MessageStatus.RECEIVED
    assert drop.report("latin1.hl7")["messages"][0]["ack_code"] == "AA"


def test_bad_batch_stray_segments_are_stored_quarantined_and_the_file_fails(
    db: Database, tmp_path: Path
) -> None:
    drop = Drop(tmp_path, Inbox(db))
    data = BAD_BATCH.read_bytes()
    drop.put("bad.hl7", data)
    [outcome] = drop.settle().failed
    assert outcome.destination == drop.failed / "bad.hl7"
    [row] = rows(db)
    assert row.status is MessageStatus.QUARANTINED
    assert row.raw == data[data.index(b"EVN|") : data.index(b"BTS|")]
    assert row.error is not None
    assert "belong to no HL7 message" in row.error
    assert row.peer == "inbox/hl7/bad.hl7"
    sidecar = drop.report("bad.hl7", drop.failed)
    assert [p["kind"] for p in sidecar["problems"]] == [
        "unusable_part",
        "count_mismatch",
        "no_messages",
    ]
    assert sidecar["messages"][0]["kind"] == "unusable"
    assert sidecar["messages"][0]["message_id"] == row.id


def test_stray_segments_beside_good_messages_are_quarantined_and_the_file_archived(
    db: Database, tmp_path: Path
) -> None:
    drop = Drop(tmp_path, Inbox(db))
    good = GLUCOSE.read_bytes()
    data = b"BHS|^~\\&\rEVN|A04\rPID|1\r" + good + b"BTS|1\r"
    drop.put("mixed.hl7", data)
    drop.settle()
    stored = rows(db)
    assert [(r.raw, r.status) for r in stored] == [
        (b"EVN|A04\rPID|1\r", MessageStatus.QUARANTINED),
        (good, MessageStatus.RECEIVED),
    ]
    sidecar = drop.report("mixed.hl7")
    assert [(m["kind"], m["ack_code"]) for m in sidecar["messages"]] == [
        ("unusable", None),
        ("message", "AA"),
    ]


def test_an_empty_file_goes_to_the_failed_folder(db: Database, tmp_path: Path) -> None:
    drop = Drop(tmp_path, Inbox(db))
    drop.put("empty.hl7", b"")
    [outcome] = drop.settle().failed
    assert outcome.destination == drop.failed / "empty.hl7"
    assert rows(db) == []
    assert drop.report("empty.hl7", drop.failed)["problems"][0]["kind"] == "no_messages"


def test_a_resent_file_is_archived_under_a_new_name_and_not_stored_twice(
    db: Database, tmp_path: Path
) -> None:
    drop = Drop(tmp_path, Inbox(db))
    data = GLUCOSE.read_bytes()
    drop.put("results.hl7", data)
    drop.settle()
    drop.put("results.hl7", data)
    [outcome] = drop.settle(10.0).archived
    assert outcome.destination == drop.archive / "results-2.hl7"
    assert len(rows(db)) == 1
    assert drop.report("results-2.hl7")["messages"][0]["duplicate"] is True
    assert (drop.archive / "results.hl7").exists()


def test_extra_drop_folders_are_watched_and_named_by_their_path(
    db: Database, tmp_path: Path
) -> None:
    extra = tmp_path / "share" / "idexx"
    extra.mkdir(parents=True)
    drop = Drop(tmp_path, Inbox(db), extra=(extra, tmp_path / "not-mounted"))
    (extra / "idexx.hl7").write_bytes(GLUCOSE.read_bytes())
    [outcome] = drop.settle().archived
    assert outcome.destination == drop.archive / "idexx.hl7"
    assert [r.peer for r in rows(db)] == [(extra / "idexx.hl7").as_posix()]


def test_run_polls_with_the_injected_clock_and_sleep(db: Database, tmp_path: Path) -> None:
    inbox = Inbox(db)
    drop = Drop(tmp_path, inbox)
    drop.put("glucose.hl7", GLUCOSE.read_bytes())
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds
        if (drop.archive / "glucose.hl7").exists():
            drop.watcher.stop()

    watcher = FileDropWatcher(
        Hl7Intake(inbox, POLICY),
        inbox,
        (drop.inbox_dir,),
        archive_dir=drop.data / "archive" / "hl7",
        failed_dir=drop.failed,
        peer_root=drop.data,
        settle_seconds=1.5,
        poll_seconds=1.0,
        clock=lambda: now[0],
        wall_clock=lambda: TODAY,
        sleep=sleep,
    )
    drop.watcher = watcher
    try:
        asyncio.run(asyncio.wait_for(watcher.run(), timeout=30))
    finally:
        inbox.close()  # its kept connection goes back to the pool, not to the garbage collector
    # seen at 0, still settling at 1, taken in at 2; the sleep after that one stops the loop
    assert slept == [1.0, 1.0, 1.0]
    assert len(rows(db)) == 1


def test_the_gateway_takes_in_a_renamed_file_and_archives_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = gateway_environment(data_dir, file_settle_seconds="0.05", file_poll_seconds="0.05")
    gateway = GatewayProcess(env, tmp_path / "gateway.log").start()
    try:
        inbox_dir = data_dir / "inbox" / "hl7"
        assert gateway.listening["files"] == inbox_dir.absolute().as_uri()
        data = BATCH_20.read_bytes()
        temporary = inbox_dir / "pdi.hl7.part"
        temporary.write_bytes(data)
        temporary.rename(inbox_dir / "pdi.hl7")
        archive = data_dir / "archive" / "hl7"
        wait_until(
            lambda: list(archive.glob("*/pdi.hl7")),
            timeout=30,
            what=f"pdi.hl7 archived; gateway log: {gateway.log_tail()}",
        )
        [archived] = archive.glob("*/pdi.hl7")
        assert archived.read_bytes() == data
        report = json.loads(archived.with_name("pdi.hl7.report.json").read_text())
        assert [m["ack_code"] for m in report["messages"]] == [
            "CA"
        ] * 20  # MSH-15/16 are NE: enhanced mode
        assert not (inbox_dir / "pdi.hl7").exists()
        assert gateway.stop() == 0
    finally:
        gateway.ensure_dead()
    with contextlib.closing(sqlite3.connect(data_dir / "vetgateway.db")) as conn:
        stored = conn.execute(
            "SELECT raw, channel, peer, status FROM inbound_messages ORDER BY id"
        ).fetchall()
    assert [bytes(r[0]) for r in stored] == message_slices(data)
    assert {(r[1], r[2]) for r in stored} == {("file", "inbox/hl7/pdi.hl7")}
    # Stored for the pipeline, which may already have taken them on (no orders: unmatched).
    assert {r[3] for r in stored} <= {"received", "unmatched"}
