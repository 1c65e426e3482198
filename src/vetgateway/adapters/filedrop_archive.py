"""Where a drop file goes once every part of it is stored, and the report written beside it.

``move_with_report`` writes ``<name>.report.json`` (atomically, write then rename) and then moves
the file next to it, under a name not yet taken in that folder: ``results.hl7``, then
``results-2.hl7``… since labs reuse file names. The report is for people (the clinic's staff, the
lab's interface analyst); it is not sent back to the lab. Moving happens last, so a crash in
between leaves the file in the drop folder, where it is read again and its messages are
recognised as resends.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from vetgateway.adapters.hl7.batch import BatchFile

__all__ = ["REPORT_SUFFIX", "PartOutcome", "move_with_report"]

REPORT_SUFFIX: Final = ".report.json"


@dataclass(frozen=True, slots=True)
class PartOutcome:
    """What happened to one part of a file; ``message_id`` None means it is not stored yet."""

    position: int
    line: int
    offset: int
    size: int
    kind: str  # "message" or "unusable"
    message_id: int | None
    control_id: str | None = None
    ack_code: str | None = None  # None for unusable parts (stored quarantined, no ACK)
    duplicate: bool = False
    collision_with: int | None = None
    reason: str | None = None


def move_with_report(
    path: Path,
    folder: Path,
    *,
    peer: str,
    data: bytes,
    batch: BatchFile,
    parts: list[PartOutcome],
    status: str,
    now: datetime,
) -> tuple[Path, Path]:
    """Write the report, then move ``path`` into ``folder``; return both new paths."""
    folder.mkdir(parents=True, exist_ok=True)
    destination = _free_name(folder, path.name)
    report_path = destination.with_name(destination.name + REPORT_SUFFIX)
    report = _report(peer, destination, data, batch, parts, status, now)
    _write_atomically(report_path, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    _move_file(path, destination)
    return destination, report_path


def _report(
    peer: str,
    destination: Path,
    data: bytes,
    batch: BatchFile,
    parts: list[PartOutcome],
    status: str,
    now: datetime,
) -> dict[str, Any]:
    return {
        "file": peer,
        "status": status,
        "moved_to": str(destination),
        "processed_at": now.isoformat(),
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "file_control_id": batch.file_control_id,
        "batches": [
            {
                "number": b.number,
                "line": b.line,
                "has_bhs": b.explicit,
                "control_id": b.control_id,
                "declared_messages": b.declared,
                "messages": b.messages,
                "unusable_parts": b.unusable,
            }
            for b in batch.batches
        ],
        "problems": [
            {"kind": p.kind.value, "line": p.line, "batch": p.batch, "message": p.message}
            for p in batch.problems
        ],
        "messages": [
            {
                "position": p.position,
                "line": p.line,
                "offset": p.offset,
                "size": p.size,
                "kind": p.kind,
                "control_id": p.control_id,
                "ack_code": p.ack_code,
                "message_id": p.message_id,
                "duplicate": p.duplicate,
                "collision_with": p.collision_with,
                "reason": p.reason,
            }
            for p in parts
        ],
    }


def _free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or ``stem-2.ext``, ``stem-3.ext``… when a file or its report is there."""
    candidate = folder / name
    stem, suffix = Path(name).stem, Path(name).suffix
    n = 1
    while candidate.exists() or candidate.with_name(candidate.name + REPORT_SUFFIX).exists():
        n += 1
        candidate = folder / f"{stem}-{n}{suffix}"
    return candidate


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _move_file(source: Path, destination: Path) -> None:
    """Rename, or copy and delete when the drop folder is on another file system (a share)."""
    try:
        os.rename(source, destination)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        temporary = destination.with_name(f".{destination.name}.tmp")
        shutil.copy2(source, temporary)
        os.replace(temporary, destination)
        source.unlink()
