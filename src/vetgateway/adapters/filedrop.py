"""HL7 v2 batch files from watched drop folders: read when settled, archived only when durable.

A lab (or its interface engine) writes result files into a folder the gateway watches, by default
``<data_dir>/inbox/hl7/`` plus ``hl7_drop_dirs``. Each poll (``scan_once``) applies these rules:

- **Only finished files are read** (R24). Names starting with ``.`` or ending in ``.tmp``,
  ``.part`` or ``.partial`` are the sender's work in progress (write, then rename atomically) and
  are never touched. Any other file is read only once its size, mtime and inode were unchanged
  across two polls at least ``settle_seconds`` apart, and is skipped if it changed while read.
- **Every part is stored before the file moves.** ``batch.split_batch`` cuts the file into
  messages, each of which goes through ``Hl7Intake.receive`` (channel ``file``, peer the file's
  path relative to the data directory), and unusable parts (stray segments, junk), which are stored
  quarantined with the reason. Only when every part has a message id is the file moved to
  ``<archive>/<YYYY-MM-DD, UTC>/`` with a ``<name>.report.json`` beside it (per part: position,
  line, control id, ACK code, message id; and the envelope problems). A file with no message at
  all (empty, or nothing but junk, which is then stored quarantined) goes to the failed folder.
- **Storage failure leaves the file where it is**; it is retried on a later poll. Parts already
  stored are remembered (per file version) and not sent again; after a restart the inbox
  recognises identical resends (same sender, control id and bytes) and returns the original id.
- **No ACK files are written**: the sidecar report (``filedrop_archive``) is for people, not for
  the sender.

Polling, not inotify: it works on network shares, where change notification does not. The
blocking work runs in ``scan_once`` (call it from a thread); ``run`` is the asyncio loop around it,
with the clock and the sleep injectable so tests drive it deterministically.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from vetgateway.adapters.filedrop_archive import PartOutcome, move_with_report
from vetgateway.adapters.hl7.batch import BatchFile, BatchMessage, split_batch
from vetgateway.adapters.hl7.intake import Hl7Intake
from vetgateway.config import Settings
from vetgateway.errors import StorageError
from vetgateway.store.inbox import Inbox, MessageMeta
from vetgateway.store.models.base import utcnow

__all__ = [
    "CHANNEL",
    "FileDropWatcher",
    "FileOutcome",
    "PartOutcome",
    "ScanReport",
    "default_folders",
    "is_ignored",
]

log = logging.getLogger(__name__)

CHANNEL: Final = "file"
IGNORED_SUFFIXES: Final = (".tmp", ".part", ".partial")
_PEER_MAX: Final = 255  # inbound_messages.peer is VARCHAR(255)

_Fingerprint = tuple[int, int, int]  # size, mtime_ns, inode


def is_ignored(name: str) -> bool:
    """True for the sender's files in progress (see the module docstring)."""
    return name.startswith(".") or name.lower().endswith(IGNORED_SUFFIXES)


def default_folders(settings: Settings) -> tuple[Path, Path, Path]:
    """The default drop folder, the archive root and the failed folder under the data dir."""
    root = settings.data_dir
    return root / "inbox" / "hl7", root / "archive" / "hl7", root / "failed" / "hl7"


@dataclass(frozen=True, slots=True)
class FileOutcome:
    """One file taken in (``archived`` or ``failed``) or left for a retry (``retry``)."""

    source: Path
    status: str
    parts: tuple[PartOutcome, ...]
    batch: BatchFile
    destination: Path | None = None
    report_path: Path | None = None


@dataclass(slots=True)
class ScanReport:
    """What one poll did; tests assert on it, ``run`` ignores it."""

    archived: list[FileOutcome] = field(default_factory=list)
    failed: list[FileOutcome] = field(default_factory=list)
    retrying: list[FileOutcome] = field(default_factory=list)
    waiting: list[Path] = field(default_factory=list)  # seen, not settled yet
    ignored: list[Path] = field(default_factory=list)  # names of files in progress
    errors: list[Path] = field(default_factory=list)  # unreadable now, or our bug; left in place


@dataclass(frozen=True, slots=True)
class _Seen:
    fingerprint: _Fingerprint
    since: float


@dataclass(slots=True)
class _Progress:
    fingerprint: _Fingerprint
    stored: dict[int, PartOutcome] = field(default_factory=dict)


def _fingerprint(st: os.stat_result) -> _Fingerprint:
    return st.st_size, st.st_mtime_ns, st.st_ino


class FileDropWatcher:
    """Polls drop folders and takes in settled files. ``scan_once`` is blocking and not
    re-entrant: one thread at a time (``run`` guarantees it)."""

    def __init__(
        self,
        intake: Hl7Intake,
        inbox: Inbox,
        folders: Sequence[Path],
        *,
        archive_dir: Path,
        failed_dir: Path,
        peer_root: Path,
        create: Sequence[Path] = (),
        settle_seconds: float = 2.0,
        poll_seconds: float = 1.0,
        executor: Executor | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.folders = tuple(folders)
        self.archive_dir = archive_dir
        self.failed_dir = failed_dir
        self.settle_seconds = settle_seconds
        self.poll_seconds = poll_seconds
        self._intake = intake
        self._inbox = inbox
        self._peer_root = peer_root
        self._create = tuple(create)
        self._executor = executor
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._seen: dict[Path, _Seen] = {}
        self._progress: dict[Path, _Progress] = {}
        self._broken: dict[Path, _Fingerprint] = {}
        self._missing: set[Path] = set()
        self._stopping = threading.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, intake: Hl7Intake, inbox: Inbox, executor: Executor | None = None
    ) -> FileDropWatcher:
        inbox_dir, archive_dir, failed_dir = default_folders(settings)
        return cls(
            intake,
            inbox,
            (inbox_dir, *settings.hl7_drop_dirs),
            archive_dir=archive_dir,
            failed_dir=failed_dir,
            peer_root=settings.data_dir,
            create=(inbox_dir,),
            settle_seconds=settings.file_settle_seconds,
            poll_seconds=settings.file_poll_seconds,
            executor=executor,
        )

    # -- the asyncio side ---------------------------------------------------------------------

    def prepare(self) -> None:
        """Create the default drop folder (extra ones may be shares not mounted yet: not those)."""
        for folder in self._create:
            folder.mkdir(parents=True, exist_ok=True)

    async def run(self) -> None:
        """Poll until ``stop()``; each scan runs on the executor, one at a time."""
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            await loop.run_in_executor(self._executor, self.scan_once, self._clock())
            if self._stopping.is_set():
                break
            await self._sleep(self.poll_seconds)

    def start(self) -> asyncio.Task[None]:
        self.prepare()
        self._task = asyncio.create_task(self.run(), name="filedrop")
        return self._task

    def stop(self) -> None:
        """Ask a running scan to stop after the file it is on; the file is never half moved."""
        self._stopping.set()

    async def close(self) -> None:
        """Stop and wait for the loop. A scan still running in its thread finishes its file;
        whoever owns the executor waits for it when shutting that down."""
        self.stop()
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- one poll --------------------------------------------------------------------------------

    def scan_once(self, now: float) -> ScanReport:
        """Look at every folder once and take in each settled file, oldest first."""
        report = ScanReport()
        present: set[Path] = set()
        for folder in self.folders:
            candidates = self._list(folder, report)
            present.update(path for path, _ in candidates)
            for path, st in sorted(candidates, key=lambda c: (c[1].st_mtime_ns, c[0].name)):
                if self._stopping.is_set():
                    break
                if self._settled(path, st, now):
                    self._take(path, _fingerprint(st), report)
                else:
                    report.waiting.append(path)
        for gone in set(self._seen) - present:
            self._forget(gone)
        return report

    def _list(self, folder: Path, report: ScanReport) -> list[tuple[Path, os.stat_result]]:
        try:
            with os.scandir(folder) as listing:
                entries = list(listing)
        except FileNotFoundError:
            if folder not in self._missing:
                log.warning("hl7 drop folder does not exist", extra={"folder": str(folder)})
                self._missing.add(folder)
            return []
        except OSError as exc:
            log.warning(
                "hl7 drop folder unreadable", extra={"folder": str(folder), "error": str(exc)}
            )
            return []
        self._missing.discard(folder)
        found = []
        for entry in entries:
            if is_ignored(entry.name):
                report.ignored.append(Path(entry.path))
                continue
            try:
                if entry.is_file():
                    found.append((Path(entry.path), entry.stat()))
            except OSError:
                continue  # vanished between listing and stat: the sender renamed it away
        return found

    def _settled(self, path: Path, st: os.stat_result, now: float) -> bool:
        fingerprint = _fingerprint(st)
        seen = self._seen.get(path)
        if seen is None or seen.fingerprint != fingerprint:
            self._seen[path] = _Seen(fingerprint, now)
            return False
        return now - seen.since >= self.settle_seconds

    def _forget(self, path: Path) -> None:
        self._seen.pop(path, None)
        self._progress.pop(path, None)
        self._broken.pop(path, None)

    def _take(self, path: Path, fingerprint: _Fingerprint, report: ScanReport) -> None:
        if self._broken.get(path) == fingerprint:
            report.errors.append(path)
            return
        try:
            data = path.read_bytes()
            after = _fingerprint(path.stat())
        except FileNotFoundError:
            self._forget(path)
            return
        except OSError as exc:
            log.warning(
                "hl7 drop file unreadable; will retry",
                extra={"file_name": self._peer(path), "error": str(exc)},
            )
            report.errors.append(path)
            return
        if after != fingerprint or len(data) != fingerprint[0]:
            self._seen.pop(path, None)  # changed while read: it must settle again
            report.waiting.append(path)
            return
        try:
            outcome = self._ingest(path, data, fingerprint)
        except OSError as exc:  # archive or failed folder not writable, disk full
            log.error(
                "hl7 drop file stored but could not be moved; will retry",
                extra={"file_name": self._peer(path), "error": str(exc)},
            )
            report.errors.append(path)
            return
        except Exception:  # our bug, logged as such: keep the file, skip this version of it
            log.exception("hl7 drop file not processed", extra={"file_name": self._peer(path)})
            self._broken[path] = fingerprint
            report.errors.append(path)
            return
        {"archived": report.archived, "failed": report.failed, "retry": report.retrying}[
            outcome.status
        ].append(outcome)

    # -- one file --------------------------------------------------------------------------------

    def _ingest(self, path: Path, data: bytes, fingerprint: _Fingerprint) -> FileOutcome:
        peer = self._peer(path)
        batch = split_batch(data)
        progress = self._progress.get(path)
        if progress is None or progress.fingerprint != fingerprint:
            progress = self._progress[path] = _Progress(fingerprint)
            for problem in batch.problems:
                log.warning(
                    "hl7 drop file envelope problem",
                    extra={
                        "file_name": peer,
                        "problem": problem.kind.value,
                        "line": problem.line,
                        "batch": problem.batch,
                        "reason": problem.message,
                    },
                )
        parts: list[PartOutcome] = []
        for part in batch.parts:
            outcome = progress.stored.get(part.position) or self._store(part, peer)
            parts.append(outcome)
            if outcome.message_id is None:
                log.error(
                    "hl7 drop file left in place: storage failed; will retry",
                    extra={"file_name": peer, "position": part.position, "error": outcome.reason},
                )
                return FileOutcome(path, "retry", tuple(parts), batch)
            progress.stored[part.position] = outcome
        status = "archived" if batch.messages else "failed"
        now = self._wall_clock()
        folder = self.archive_dir / now.strftime("%Y-%m-%d") if batch.messages else self.failed_dir
        destination, report_path = move_with_report(
            path, folder, peer=peer, data=data, batch=batch, parts=parts, status=status, now=now
        )
        self._forget(path)
        log.info(
            "hl7 drop file archived" if status == "archived" else "hl7 drop file failed",
            extra={
                "file_name": peer,
                "destination": str(destination),
                "messages": len(batch.messages),
                "problems": len(batch.problems),
            },
        )
        return FileOutcome(path, status, tuple(parts), batch, destination, report_path)

    def _store(self, part: BatchMessage, peer: str) -> PartOutcome:
        def outcome(message_id: int | None, **details: Any) -> PartOutcome:
            return PartOutcome(
                part.position, part.line, part.offset, len(part.data), part.kind, message_id,
                **details,
            )  # fmt: skip

        if part.kind == "message":
            result = self._intake.receive(part.data, CHANNEL, peer)
            return outcome(
                result.message_id,
                control_id=result.control_id,
                ack_code=result.code,
                duplicate=result.duplicate,
                collision_with=result.collision_with,
                reason=result.reason,
            )
        where = {"position": part.position, "line": part.line, "offset": part.offset}
        meta = MessageMeta(quarantine_reason=part.reason, extra={"file": where})
        try:
            receipt = self._inbox.receive(part.data, CHANNEL, peer, meta)
        except StorageError as exc:
            return outcome(None, reason=str(exc))
        return outcome(receipt.message_id, duplicate=receipt.duplicate, reason=part.reason)

    def _peer(self, path: Path) -> str:
        """The file's path relative to the data directory (absolute outside it), at most 255."""
        try:
            name = path.relative_to(self._peer_root).as_posix()
        except ValueError:
            name = path.as_posix()
        return name if len(name) <= _PEER_MAX else "…" + name[-(_PEER_MAX - 1) :]
