"""Sans-I/O framer for analyzers that print plain text over RS-232 instead of speaking ASTM.

Older in-house analyzers (an Arkray SPOTCHEM EL electrolyte analyzer, for one) send the same
print-out their built-in printer makes: no frames, no checksums, no handshake. All there is to
find a message's end is how the print looks, so the end is configured per model
(``TextFraming``) and ``PlainTextFramer`` implements ``LineStation`` so the analyzer runner
drives it exactly like the E1381 receiver: bytes and the monotonic time go in, events come out.

Rules, in the order they apply:

1. **Start.** With a ``start`` marker (e.g. STX), every byte before it is discarded, and the
   marker itself is not part of the message. Without one, a message begins at the first byte that
   is not CR, LF, space, tab or NUL, so the line ends between print-outs are not a message.
2. **End.** Every configured rule ends a message, and the first to complete wins (a terminator
   or start marker completes at its last byte, and wins a tie with a line end inside it):
   ``terminator`` (e.g. ETX, ``ETX LF``, form feed; not part of the message), ``pattern`` (a
   regex searched in the message text so far each time a line ends, at every CR and every LF; the
   message ends with that line end), or ``idle_gap`` (no byte for that many seconds, measured on
   the driver's clock by ``check_timeouts`` or the next ``receive_data``). The message is
   delivered as ``MessageReceived(text)``, the text verbatim between start and end.
3. **Restart.** A start marker inside a message means the analyzer began a new print-out: the
   partial one is dropped as ``MessageDiscarded("restarted")``, so two prints are never merged.
4. **Size.** A message longer than ``max_size`` bytes is dropped as
   ``MessageDiscarded("too_large")``; the framer then discards input until it can find the next
   message's start again: the start marker; else the terminator; else an idle gap; with none of
   those (pattern only) the next byte starts a message. The buffer therefore never holds more
   than ``max_size`` bytes (plus all but one byte of a terminator) however the peer misbehaves.
5. A message with nothing but CR, LF, space, tab or NUL in it (``STX ETX``) is dropped as
   ``MessageDiscarded("blank")``.

Each decision depends only on the bytes up to where it is made, so any split of the same
stream into reads gives the same messages (the idle gap aside, which is about time).

**No acknowledgement, no resend.** A plain-text line has no way to answer the analyzer or ask for
a print again. ``message_stored`` is therefore a no-op, and ``message_refused`` (the driver could
not store the message) can only emit ``MessageNotStored``: the runner's caller must keep that
message somewhere else (a spool file, the log of the failed write) or it is lost.
``send_message`` raises ``LinkUsageError``: the line is one-way.

Cost: the terminator and line ends are found with one scan of each byte; the pattern is searched
over the whole message so far at each line end, so it costs about the number of lines times the
message size. That is small for a print-out; ``max_size`` bounds it for a misbehaving line.
"""

from __future__ import annotations

import enum
import math
import re
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import Final, Literal

from vetgateway.adapters.astm.e1381 import NEED_DATA, MessageReceived, NeedData
from vetgateway.adapters.astm.e1381_frames import LinkUsageError
from vetgateway.errors import ConfigError

__all__ = [
    "DEFAULT_MAX_SIZE",
    "NEED_DATA",
    "SPOTCHEM_EL_FRAMING",
    "MessageDiscarded",
    "MessageNotStored",
    "MessageReceived",
    "NeedData",
    "PlainTextEvent",
    "PlainTextFramer",
    "TextFraming",
]

DEFAULT_MAX_SIZE: Final = 64 * 1024
"""A print-out is a few hundred bytes to a few kilobytes (a histogram drawn in characters)."""

_BLANK: Final = b"\r\n \t\x00"
_NOWHERE: Final = sys.maxsize  # the position of a marker not found
_LINE_END: Final = re.compile(rb"[\r\n]")


@dataclass(frozen=True, slots=True)
class TextFraming:
    """How one analyzer model's print-outs begin and end (the rules are in the module docstring).

    ``pattern`` is a ``str`` regex compiled over bytes: each character stands for the byte of
    the same code (Latin-1), so ``"\\x03"`` is ETX and non-ASCII text in a pattern must be
    Latin-1. It is compiled with ``re.MULTILINE``, so ``^`` and ``$`` match at line boundaries.
    Invalid settings raise ``ConfigError`` naming the setting, since these come from the
    operator's configuration, not from the peer.
    """

    start: bytes | None = None
    terminator: bytes | None = None
    pattern: str | None = None
    idle_gap: float | None = None
    max_size: int = DEFAULT_MAX_SIZE
    regex: re.Pattern[bytes] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if self.terminator is None and self.pattern is None and self.idle_gap is None:
            raise ConfigError(
                "plain-text framing needs at least one end rule: terminator, pattern or idle_gap"
            )
        if self.start is not None and not self.start:
            raise ConfigError("plain-text framing: start marker must not be empty (or omit it)")
        if self.terminator is not None and not self.terminator:
            raise ConfigError("plain-text framing: terminator must not be empty (or omit it)")
        if self.idle_gap is not None and not (math.isfinite(self.idle_gap) and self.idle_gap > 0):
            raise ConfigError("plain-text framing: idle_gap must be a positive number of seconds")
        if self.max_size < 1:
            raise ConfigError("plain-text framing: max_size must be at least 1 byte")
        if self.pattern is not None:
            try:
                regex = re.compile(self.pattern.encode("latin-1"), re.MULTILINE)
            except (UnicodeEncodeError, re.error) as exc:
                raise ConfigError(f"plain-text framing: pattern is not usable: {exc}") from exc
            object.__setattr__(self, "regex", regex)


SPOTCHEM_EL_FRAMING: Final = TextFraming(start=b"\x02", terminator=b"\x03")
"""A SPOTCHEM EL print-out is sent between STX and ETX (an LF follows, dropped before the next
STX). Layout as in the sample print-out of the senaite.astm test data (``spotchem_el.txt``)."""


@dataclass(frozen=True, slots=True)
class MessageDiscarded:
    """A partial or unusable message was dropped; only its size is kept (it may name a patient).

    ``reason``: ``too_large`` (over ``max_size``; ``discarded`` counts the bytes dropped when the
    limit was hit, more may be dropped until the framer finds a start again), ``restarted`` (a
    start marker arrived before the end) or ``blank`` (nothing but white space).
    """

    reason: Literal["too_large", "restarted", "blank"]
    discarded: int


@dataclass(frozen=True, slots=True)
class MessageNotStored:
    """``message_refused`` was called: the message could not be stored and, unlike ASTM, the
    analyzer cannot be asked to send it again. Whoever called must keep it elsewhere."""


PlainTextEvent = MessageReceived | MessageDiscarded | MessageNotStored


class _State(enum.Enum):
    AWAIT_START = "await_start"  # start marker configured: bytes are junk until it
    MESSAGE = "message"  # collecting one message
    DISCARD = "discard"  # after an oversized message, until the terminator or an idle gap


class PlainTextFramer:
    """Cuts one plain-text analyzer line into messages; implements ``LineStation``.

    Drain ``next_event`` until ``NEED_DATA`` after each ``receive_data``/``check_timeouts``.
    ``next_event`` never raises, whatever bytes arrived.
    """

    def __init__(self, framing: TextFraming) -> None:
        self.framing = framing
        self._start = framing.start
        self._term = framing.terminator
        self._regex = framing.regex
        # The largest the buffer may get while still possibly holding an acceptable message:
        # max_size bytes of text plus all but the last byte of a terminator split across reads.
        self._limit = framing.max_size + (len(self._term) - 1 if self._term else 0)
        self._buf = bytearray()
        self._events: deque[PlainTextEvent] = deque()
        self._last_byte_at: float | None = None
        self._state = _State.MESSAGE
        self._begun = False  # MESSAGE: the message has started (blank bytes before it skipped)
        self._scanned = 0  # MESSAGE: bytes searched for the terminator and the start marker
        self._lines_checked = 0  # MESSAGE: bytes searched for line ends
        self._reset()

    @property
    def buffered(self) -> int:
        """Bytes held (for tests and metrics); at most ``max_size + len(terminator) - 1``."""
        return len(self._buf)

    def receive_data(self, data: bytes, now: float) -> None:
        """Add bytes read from the line at monotonic time ``now``. An idle gap that elapsed
        before them ends the message in progress first, however seldom the driver ticks."""
        self.check_timeouts(now)
        if data:
            self._last_byte_at = now
            self._buf += data
            self._pump()

    def next_event(self) -> PlainTextEvent | NeedData:
        """Return the next event, or ``NEED_DATA``. Never raises."""
        return self._events.popleft() if self._events else NEED_DATA

    def data_to_send(self) -> bytes:
        """Always empty: nothing is ever written to a plain-text analyzer."""
        return b""

    def check_timeouts(self, now: float) -> None:
        """Apply the idle gap (rule 2): no byte for ``idle_gap`` seconds ends the message."""
        gap = self.framing.idle_gap
        if gap is None or self._last_byte_at is None or now - self._last_byte_at < gap:
            return
        self._last_byte_at = None
        if self._state is _State.MESSAGE and self._begun:
            text = bytes(self._buf)
            self._buf.clear()
            self._deliver(text)
        else:  # a partial start marker or terminator, or bytes of a dropped message
            self._buf.clear()
            self._reset()

    def message_stored(self, now: float) -> None:
        """Nothing to do: the analyzer expects no acknowledgement."""

    def message_refused(self, now: float) -> None:
        """Report that the last message was not stored; it cannot be asked for again."""
        self._events.append(MessageNotStored())

    def send_message(self, text: bytes, now: float) -> None:
        """Always raises ``LinkUsageError``: a plain-text analyzer line is one-way."""
        raise LinkUsageError("a plain-text analyzer line is one-way: nothing can be sent to it")

    def _reset(self) -> None:
        """Wait for the next message: its start marker, or (without one) its first byte."""
        self._state = _State.AWAIT_START if self._start else _State.MESSAGE
        self._begun = False
        self._scanned = 0
        self._lines_checked = 0

    def _open(self) -> None:
        """A start marker was consumed: the message begins with the next byte."""
        self._state = _State.MESSAGE
        self._begun = True
        self._scanned = 0
        self._lines_checked = 0

    def _pump(self) -> None:
        while self._buf:
            if self._state is _State.AWAIT_START:
                if not self._seek(self._start):
                    return
                self._open()
            elif self._state is _State.DISCARD:
                if not self._seek(self._term):
                    return
                self._reset()
            elif not self._scan_message():
                return

    def _seek(self, marker: bytes | None) -> bool:
        """Drop bytes up to and including ``marker``; False (keeping a possible partial marker)
        when it is not there yet. Without a marker everything is dropped (an idle gap ends it)."""
        buf = self._buf
        at = buf.find(marker) if marker else -1
        if at < 0:
            keep = len(marker) - 1 if marker else 0
            del buf[: max(0, len(buf) - keep)]
            return False
        del buf[: at + len(marker or b"")]
        return True

    def _scan_message(self) -> bool:
        """Look for the end of the message in progress; True when one was handled.

        Candidates are compared by where they *complete* (the last byte of a terminator or start
        marker, the line end itself), each decided from the bytes up to there only: that is what
        makes the result independent of how the stream was split into reads. A terminator wins a
        tie with a start marker. Nothing completing beyond ``max_size`` (plus a terminator)
        counts: the message is too large by then.
        """
        buf = self._buf
        if not self._begun:
            skip = len(buf) - len(buf.lstrip(_BLANK))
            del buf[:skip]
            if not buf:
                return False
            self._begun = True
        window = min(len(buf), self._limit + 1)
        term_at = self._find(self._term, window)
        restart_at = self._find(self._start, window)
        self._scanned = window
        term_end = term_at + len(self._term or b"") if term_at >= 0 else _NOWHERE
        restart_end = restart_at + len(self._start or b"") if restart_at >= 0 else _NOWHERE
        line_end = self._pattern_end(min(term_end, restart_end) - 1, self.framing.max_size)
        if line_end >= 0:
            text = bytes(buf[:line_end])
            del buf[:line_end]
            self._deliver(text)
        elif term_end <= restart_end and term_at >= 0:
            text = bytes(buf[:term_at])
            del buf[:term_end]
            self._deliver(text)
        elif restart_at >= 0:
            if restart_at:
                self._events.append(MessageDiscarded("restarted", restart_at))
            del buf[:restart_end]
            self._open()
        elif len(buf) > self._limit:
            self._overflow(window)
        else:
            return False
        return True

    def _find(self, marker: bytes | None, window: int) -> int:
        if not marker:
            return -1
        return self._buf.find(marker, max(0, self._scanned - len(marker) + 1), window)

    def _pattern_end(self, before: int, max_size: int) -> int:
        """Where the message ends (just after the line end) at the first CR or LF before
        ``before`` at which the pattern matches the text so far, or -1. Each line end is tried
        once; only the bytes up to it are searched."""
        if self._regex is None:
            return -1
        buf = self._buf
        bound = min(before, max_size, len(buf))
        pos = self._lines_checked
        while pos < bound and (line_end := _LINE_END.search(buf, pos, bound)) is not None:
            pos = line_end.end()
            if self._regex.search(buf, 0, pos) is not None:
                return pos
        self._lines_checked = max(self._lines_checked, bound)
        return -1

    def _overflow(self, window: int) -> None:
        """Rule 4: drop the message; keep only what may be the start of a marker to resync on."""
        resync = self._start or self._term
        keep = len(resync) - 1 if resync else 0
        self._events.append(MessageDiscarded("too_large", window - keep))
        del self._buf[: window - keep]
        if self._start is None and (self._term is not None or self.framing.idle_gap is not None):
            self._state = _State.DISCARD
        else:
            self._reset()

    def _deliver(self, text: bytes) -> None:
        if text.strip(_BLANK):
            self._events.append(MessageReceived(text))
        else:
            self._events.append(MessageDiscarded("blank", len(text)))
        self._reset()
