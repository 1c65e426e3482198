"""Split an HL7 v2 batch file into its messages, and say what is wrong with its envelope.

HL7 v2.5.1 §2.10.3 defines the batch protocol a file may follow::

    [FHS]                 file header      FHS-11 file control id
    { [BHS]               batch header     BHS-11 batch control id
      { [MSH ...] }       the messages
      [BTS] }             batch trailer    BTS-1 number of messages in the batch
    [FTS]                 file trailer     FTS-1 number of batches in the file

Senders also drop plain files of one or more messages with no envelope at all. ``split_batch``
takes the bytes of such a file and returns a ``BatchFile``: the messages, the parts that are not
part of any message (``UnusablePart``), the batches and the ``BatchProblem`` list. It does no I/O
and never raises, whatever the bytes (see the hypothesis tests): a malformed file is described by
its problems, so the caller can store every valid message individually and flag the rest (R24).

Rules, and what a caller may rely on:

- A segment ends at CR, LF or CR LF, mixed freely within a file. Only segments that start a
  line with ``MSH``, ``BHS``, ``BTS``, ``FHS`` or ``FTS`` (followed by a delimiter or the end of
  the line) are structural; every other line belongs to the message it follows. So an LF inside a
  CR-separated message's text field stays inside that message.
- A message is the exact slice of the file from its ``MSH`` to the end of its last non-blank
  segment, terminator included: never normalised, so it is stored verbatim. Blank lines between
  messages belong to no message.
- Nothing non-blank vanishes: every such byte is in a message, in an envelope segment, or in an
  ``UnusablePart`` (lines before the first message, between a BHS and its first MSH, after a BTS
  or FTS). Callers store unusable parts quarantined, with their ``reason``.
- A UTF-8 byte order mark at the very start of the file is skipped (Windows editors write one).
- BTS-1 and FTS-1 are checked when present: a count that disagrees with what the batch or file
  holds is a ``BatchProblem`` naming the batch and both counts. A BHS without its BTS, or an FHS
  without its FTS, is one too (a sign the file was cut short).

Line numbers are 1-based and count CR LF as one line break; offsets are 0-based byte offsets.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

__all__ = ["Batch", "BatchFile", "BatchMessage", "BatchProblem", "ProblemKind", "split_batch"]

_BOM: Final = b"\xef\xbb\xbf"
_TERMINATOR = re.compile(rb"\r\n|\r|\n")
_BLANK: Final = b" \t"
_STRUCTURAL: Final = frozenset({b"MSH", b"BHS", b"BTS", b"FHS", b"FTS"})


class ProblemKind(enum.Enum):
    COUNT_MISMATCH = "count_mismatch"  # BTS-1 or FTS-1 disagrees with the content
    BAD_COUNT = "bad_count"  # BTS-1 or FTS-1 is not a number
    UNUSABLE_PART = "unusable_part"  # lines that belong to no message
    MISSING_TRAILER = "missing_trailer"  # BHS without BTS, FHS without FTS
    MISPLACED_SEGMENT = "misplaced_segment"  # FHS after content, BTS/FTS out of place
    NO_MESSAGES = "no_messages"  # nothing in the file is an HL7 message


@dataclass(frozen=True, slots=True)
class BatchProblem:
    """One thing wrong with the file's envelope; ``message`` is written for a person."""

    kind: ProblemKind
    line: int
    message: str
    batch: int | None = None  # the batch's number in the file (1-based), when it concerns one


@dataclass(frozen=True, slots=True)
class BatchMessage:
    """One message (``kind="message"``, starts with MSH) or unusable part (``kind="unusable"``)."""

    data: bytes  # exactly the file's bytes[offset : offset + len(data)]
    offset: int
    line: int
    position: int  # 1-based order among all parts of the file (messages and unusable parts)
    batch: int | None  # the batch's number, or None outside any batch
    kind: str = "message"
    reason: str | None = None  # why an unusable part is unusable; None for messages


@dataclass(slots=True)
class Batch:
    """A BHS … BTS batch (``explicit``), or a run of messages outside one (not explicit)."""

    number: int
    line: int
    explicit: bool
    control_id: str | None = None  # BHS-11
    declared: int | None = None  # BTS-1
    messages: int = 0
    unusable: int = 0
    closed: bool = False


@dataclass(slots=True)
class BatchFile:
    """What ``split_batch`` found; ``parts`` holds messages and unusable parts in file order."""

    parts: list[BatchMessage] = field(default_factory=list)
    batches: list[Batch] = field(default_factory=list)
    problems: list[BatchProblem] = field(default_factory=list)
    file_control_id: str | None = None  # FHS-11 of the first file header
    envelope: list[tuple[int, bytes]] = field(default_factory=list)  # (offset, segment + end)

    @property
    def messages(self) -> list[BatchMessage]:
        return [p for p in self.parts if p.kind == "message"]

    @property
    def unusable(self) -> list[BatchMessage]:
        return [p for p in self.parts if p.kind == "unusable"]


@dataclass(frozen=True, slots=True)
class _Line:
    start: int
    end: int  # end of content, before the terminator
    stop: int  # after the terminator
    number: int


def _lines(data: bytes, start: int) -> Iterator[_Line]:
    number = 1
    position = start
    for match in _TERMINATOR.finditer(data, start):
        yield _Line(position, match.start(), match.end(), number)
        position = match.end()
        number += 1
    if position < len(data):
        yield _Line(position, len(data), len(data), number)


def _segment_id(content: bytes) -> bytes | None:
    """``MSH``, ``BHS``… when the line starts one of the structural segments, else None."""
    head = content[:3]
    if head not in _STRUCTURAL:
        return None
    if len(content) == 3:
        return head
    fourth = content[3]
    return head if 0x21 <= fourth <= 0x7E and not chr(fourth).isalnum() else None


def _field(content: bytes, number: int) -> str | None:
    """Field ``number`` of an envelope segment (FHS-n/BHS-n as MSH: n-1 after the split; BTS-n,
    FTS-n: n after the split), stripped, or None when absent or empty."""
    if len(content) < 4:
        return None
    fields = content.split(content[3:4])
    header = content[:3] in (b"FHS", b"BHS")
    index = number - 1 if header else number
    if index >= len(fields):
        return None
    component = fields[1][:1] if header and len(fields) > 1 and fields[1] else b"^"
    value = fields[index].split(component)[0].strip().decode("ascii", "backslashreplace")
    return value or None


def _plural(count: int, noun: str) -> str:
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {noun}es" if noun.endswith("ch") else f"{count} {noun}s"


class _Splitter:
    """One pass over the lines; the state is the open message, part, batch and file envelope."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.result = BatchFile()
        self.batch: Batch | None = None
        self.file_open_line: int | None = None  # FHS line while its FTS has not come
        self.file_batches = 0  # batches since the last FHS
        self.seen_content = False
        # The open run of lines: start offset, end offset, first line, kind, where it was found
        self.run: tuple[int, int, int, str, str] | None = None
        self.after = "before the first message"  # where stray lines are, for their reason

    def split(self) -> BatchFile:
        start = len(_BOM) if self.data.startswith(_BOM) else 0
        last = 1
        for line in _lines(self.data, start):
            last = line.number
            content = self.data[line.start : line.end]
            if not content.strip(_BLANK):
                continue
            segment = _segment_id(content)
            if segment is None:
                self._extend(line)
            else:
                self._structural(segment, content, line)
        self._close_run()
        self._end_of_file(last)
        if not self.result.messages:
            self._problem(ProblemKind.NO_MESSAGES, 1, "the file holds no HL7 message (no MSH)")
        return self.result

    def _problem(
        self, kind: ProblemKind, line: int, message: str, batch: int | None = None
    ) -> None:
        self.result.problems.append(BatchProblem(kind, line, message, batch))

    def _extend(self, line: _Line) -> None:
        if self.run is None:
            self.run = (line.start, line.stop, line.number, "unusable", self.after)
        else:
            self.run = (self.run[0], line.stop, *self.run[2:])

    def _open_batch_if_none(self, line_number: int) -> None:
        if self.batch is None:
            self.batch = Batch(len(self.result.batches) + 1, line_number, explicit=False)
            self.result.batches.append(self.batch)
            self.file_batches += 1
        self.seen_content = True

    def _close_run(self) -> None:
        if self.run is None:
            return
        start, stop, line, kind, where = self.run
        self.run = None
        batch = self.batch
        number = None if batch is None else batch.number
        position = len(self.result.parts) + 1
        data = self.data[start:stop]
        if kind == "message":
            assert batch is not None  # an MSH always opens a batch
            batch.messages += 1
            self.result.parts.append(BatchMessage(data, start, line, position, number))
            return
        if batch is not None:
            batch.unusable += 1
        segments = _plural(sum(1 for _ in _lines(data, 0)), "line")
        reason = (
            f"{segments} from line {line} of the file, {where}, belong to no HL7 message"
            " (a message starts with an MSH segment); stored as received, not processed"
        )
        self.result.parts.append(
            BatchMessage(data, start, line, position, number, kind="unusable", reason=reason)
        )
        self._problem(ProblemKind.UNUSABLE_PART, line, reason, number)

    def _structural(self, segment: bytes, content: bytes, line: _Line) -> None:
        self._close_run()
        if segment == b"MSH":
            self._open_batch_if_none(line.number)
            self.run = (line.start, line.stop, line.number, "message", "")
            self.after = "after a message"
            return
        self.result.envelope.append((line.start, self.data[line.start : line.stop]))
        if segment == b"FHS":
            self._file_header(content, line.number)
        elif segment == b"BHS":
            self._batch_header(content, line.number)
        elif segment == b"BTS":
            self._batch_trailer(content, line.number)
        else:
            self._file_trailer(content, line.number)

    def _file_header(self, content: bytes, line: int) -> None:
        self._end_of_file(line)
        if self.seen_content:
            self._problem(
                ProblemKind.MISPLACED_SEGMENT,
                line,
                f"FHS at line {line} comes after content; a file header must come first",
            )
        if self.result.file_control_id is None:
            self.result.file_control_id = _field(content, 11)
        self.file_open_line = line
        self.file_batches = 0
        self.after = f"after the FHS at line {line}"

    def _batch_header(self, content: bytes, line: int) -> None:
        self._end_batch(line)
        self.batch = Batch(
            len(self.result.batches) + 1, line, explicit=True, control_id=_field(content, 11)
        )
        self.result.batches.append(self.batch)
        self.file_batches += 1
        self.seen_content = True
        self.after = f"between the BHS of {self._name(self.batch)} and its first MSH"

    def _batch_trailer(self, content: bytes, line: int) -> None:
        batch = self.batch
        if batch is None:
            self._problem(
                ProblemKind.MISPLACED_SEGMENT, line, f"BTS at line {line} closes no batch"
            )
            return
        declared = self._count(content, line, "BTS-1", batch.number)
        batch.declared = declared
        batch.closed = True
        self.batch = None
        self.after = f"after the BTS at line {line}"
        if declared is not None and declared != batch.messages:
            stray = f" and {_plural(batch.unusable, 'unusable part')}" if batch.unusable else ""
            self._problem(
                ProblemKind.COUNT_MISMATCH,
                line,
                f"{self._name(batch)}: BTS-1 says {_plural(declared, 'message')}, the batch holds "
                f"{_plural(batch.messages, 'message')}{stray}; the messages found are processed",
                batch.number,
            )

    def _file_trailer(self, content: bytes, line: int) -> None:
        self._end_batch(line)
        declared = self._count(content, line, "FTS-1", None)
        if declared is not None and declared != self.file_batches:
            self._problem(
                ProblemKind.COUNT_MISMATCH,
                line,
                f"FTS-1 at line {line} says {_plural(declared, 'batch')}, the file holds "
                f"{_plural(self.file_batches, 'batch')}",
            )
        self.file_open_line = None
        self.file_batches = 0
        self.after = f"after the FTS at line {line}"

    def _count(self, content: bytes, line: int, name: str, batch: int | None) -> int | None:
        value = _field(content, 1)
        if value is None:
            return None
        if value.isascii() and value.isdigit():
            return int(value)
        self._problem(
            ProblemKind.BAD_COUNT, line, f"{name} at line {line} is {value!r}, not a count", batch
        )
        return None

    def _end_batch(self, line: int) -> None:
        """A BHS, FTS, FHS or the end of the file ends the open batch."""
        batch = self.batch
        self.batch = None
        if batch is not None and batch.explicit and not batch.closed:
            self._problem(
                ProblemKind.MISSING_TRAILER,
                line,
                f"{self._name(batch)} has no BTS trailer before line {line}; the file may have"
                f" been cut short ({_plural(batch.messages, 'message')} found)",
                batch.number,
            )

    def _end_of_file(self, line: int) -> None:
        self._end_batch(line)
        if self.file_open_line is not None:
            self._problem(
                ProblemKind.MISSING_TRAILER,
                line,
                f"the FHS at line {self.file_open_line} has no FTS trailer; the file may have"
                " been cut short",
            )
            self.file_open_line = None

    @staticmethod
    def _name(batch: Batch) -> str:
        if not batch.explicit:
            return f"batch {batch.number} (no BHS; its first message is at line {batch.line})"
        control = f" {batch.control_id!r}" if batch.control_id else ""
        return f"batch {batch.number}{control} (BHS at line {batch.line})"


def split_batch(data: bytes) -> BatchFile:
    """Split the bytes of a file into messages and unusable parts; never raises (see above)."""
    return _Splitter(bytes(data)).split()
