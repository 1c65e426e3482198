"""Faults the analyzer simulator injects, planned as pure data and applied by a pure byte tap.

Each fault reproduces a line fault a gateway must survive (RELIABILITY.md R25, R26, R30, R32):

- ``bad-checksum``: one frame goes out once with a wrong checksum. The receiver NAKs it and the
  Sender retransmits it intact (LIS1-A §6.5.1, defective frames).
- ``always-bad-checksum``: every transmission of the message's last frame has a wrong checksum.
  After the sixth NAK the Sender gives up with EOT (LIS1-A §6.5.1), so the message must not be
  stored. The last frame is chosen because a receiver waiting for the terminator record has then
  seen everything but the end, the hardest case for "store nothing". This failure is *expected*.
- ``lost-ack``: the Sender is told NAK instead of one frame's ACK, as if the ACK had been lost
  or garbled on the line, so it sends the same frame, same number, again. The receiver must ACK
  and discard the repeat, not store it twice (LIS1-A §6.3, frame number; R26).
- ``drop-mid-message``: the connection is closed once half of the message's frames are
  acknowledged; the driver reconnects and sends the whole message again (R30: the receiver
  discards the partial message).
- ``garbage``: noise bytes before each frame, while the receiver is in the transfer state and
  must ignore everything outside a frame (LIS1-A §6.3; R32). The noise never holds a link
  control character, which would be a different fault.

A ``FaultSpec`` says which messages get a fault: every one, the Nth (counted from 1 over the whole
run, repeats included), or each with a probability. ``plan_faults`` turns specs into one
``MessageFaults`` per message with a seeded generator, so a ``--seed`` replays the same faults.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

from vetgateway.adapters.astm.e1381_frames import ACK, ENQ, NAK, RESTRICTED, STX, checksum
from vetgateway.errors import VetgatewayError

__all__ = ["FaultKind", "FaultSpec", "FaultSpecError", "FaultTap", "MessageFaults", "plan_faults"]

_NOISE_BYTES: Final = bytes(b for b in range(256) if b not in RESTRICTED)
_NOISE_MAX: Final = 16


class FaultSpecError(VetgatewayError):
    """A ``--fault`` value could not be read; the message says what is accepted."""


class FaultKind(enum.Enum):
    """The faults the simulator can inject (the module docstring says what each exercises)."""

    BAD_CHECKSUM = "bad-checksum"
    ALWAYS_BAD_CHECKSUM = "always-bad-checksum"
    LOST_ACK = "lost-ack"
    DROP_MID_MESSAGE = "drop-mid-message"
    GARBAGE = "garbage"


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """Which messages get ``kind``: ``messages`` (numbers from 1), else each with
    ``probability``, else every message."""

    kind: FaultKind
    messages: frozenset[int] = frozenset()
    probability: float | None = None

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        """``KIND`` (every message), ``KIND@N[,N…]`` (the Nth messages) or ``KIND~P`` (each
        message with probability P, 0 < P <= 1)."""
        kind_text, sep, rest = _partition(text)
        try:
            kind = FaultKind(kind_text)
        except ValueError:
            known = ", ".join(k.value for k in FaultKind)
            raise FaultSpecError(f"unknown fault {kind_text!r}; known: {known}") from None
        if not sep:
            return cls(kind)
        if sep == "@":
            try:
                numbers = frozenset(int(n) for n in rest.split(","))
            except ValueError:
                raise FaultSpecError(f"{text!r}: after @ come message numbers, e.g. @2,5") from None
            if not numbers or min(numbers) < 1:
                raise FaultSpecError(f"{text!r}: messages are numbered from 1")
            return cls(kind, messages=numbers)
        try:
            probability = float(rest)
        except ValueError:
            probability = -1.0
        if not 0.0 < probability <= 1.0:
            raise FaultSpecError(f"{text!r}: after ~ comes a probability, 0 < P <= 1")
        return cls(kind, probability=probability)

    def applies(self, number: int, rng: random.Random) -> bool:
        """Whether message ``number`` gets the fault; draws from ``rng`` only for a probability,
        so adding a numbered fault does not change which messages a random one hits."""
        if self.messages:
            return number in self.messages
        if self.probability is not None:
            return rng.random() < self.probability
        return True


def _partition(text: str) -> tuple[str, str, str]:
    for sep in ("@", "~"):
        if sep in text:
            return text.partition(sep)
    return text, "", ""


@dataclass(frozen=True, slots=True)
class MessageFaults:
    """The faults of one message; frame positions count from 0 within the message."""

    corrupt_frame: int | None = None
    always_corrupt_frame: int | None = None
    garble_ack_frame: int | None = None
    drop_after: int | None = None  # frames acknowledged before the connection is closed
    noise: tuple[bytes, ...] = ()  # written before frame i, for each i

    @property
    def kinds(self) -> frozenset[FaultKind]:
        """The kinds planned for this message (for the report)."""
        present = {
            FaultKind.BAD_CHECKSUM: self.corrupt_frame is not None,
            FaultKind.ALWAYS_BAD_CHECKSUM: self.always_corrupt_frame is not None,
            FaultKind.LOST_ACK: self.garble_ack_frame is not None,
            FaultKind.DROP_MID_MESSAGE: self.drop_after is not None,
            FaultKind.GARBAGE: bool(self.noise),
        }
        return frozenset(kind for kind, there in present.items() if there)

    @property
    def failure_expected(self) -> bool:
        """True when the message is meant not to be delivered (``always-bad-checksum``)."""
        return self.always_corrupt_frame is not None


def plan_faults(
    specs: Sequence[FaultSpec], frame_counts: Sequence[int], seed: int | None
) -> list[MessageFaults]:
    """One ``MessageFaults`` per message, ``frame_counts[i]`` being the frames of message i + 1
    (``len(split_message(text))``). The same specs, counts and seed give the same plan."""
    rng = random.Random(seed)  # noqa: S311 - test traffic, not security: reproducible by seed
    plan: list[MessageFaults] = []
    for number, frames in enumerate(frame_counts, start=1):
        faults = MessageFaults()
        for spec in specs:
            if spec.applies(number, rng):
                faults = _add(faults, spec.kind, frames, rng)
        plan.append(faults)
    return plan


def _add(faults: MessageFaults, kind: FaultKind, frames: int, rng: random.Random) -> MessageFaults:
    if kind is FaultKind.BAD_CHECKSUM:
        return replace(faults, corrupt_frame=rng.randrange(frames))
    if kind is FaultKind.ALWAYS_BAD_CHECKSUM:
        return replace(faults, always_corrupt_frame=frames - 1)
    if kind is FaultKind.LOST_ACK:
        return replace(faults, garble_ack_frame=rng.randrange(frames))
    if kind is FaultKind.DROP_MID_MESSAGE:
        return replace(faults, drop_after=frames // 2)
    noise = tuple(
        bytes(rng.choice(_NOISE_BYTES) for _ in range(rng.randint(1, _NOISE_MAX)))
        for _ in range(frames)
    )
    return replace(faults, noise=noise)


def _corrupt(frame: bytes) -> bytes:
    """The frame with a checksum that is valid hex but wrong (``parse_frame``: bad_checksum)."""
    body = frame[1:-4]
    value = int(checksum(body), 16) ^ 0x5A
    return frame[:-4] + f"{value:02X}".encode() + frame[-2:]


@dataclass(slots=True)
class FaultTap:
    """Applies one message's ``MessageFaults`` between its ``Sender`` and the line.

    ``outgoing`` gets each unit the Sender writes (ENQ, one frame, EOT) and returns the bytes to
    put on the line, or ``None`` to drop the connection instead; ``incoming`` gets each reply
    byte meant for the Sender and returns the byte the Sender is told. One tap serves every
    attempt of the message: one-shot faults fire once, ``always-bad-checksum`` on every attempt.
    """

    faults: MessageFaults
    corrupted: int = 0
    garbled: int = 0
    noise_bytes: int = 0
    dropped: bool = False
    _index: int = -1
    _last_frame: bytes | None = None
    _first_transmission: bool = False
    _awaiting_frame_reply: bool = False
    _corrupted_once: bool = False

    def outgoing(self, unit: bytes) -> bytes | None:
        """Tamper with one unit the Sender wrote; ``None`` means: close the connection now."""
        if unit[:1] == bytes((ENQ,)):
            self._index, self._last_frame = -1, None  # a new transfer starts at frame 1
            self._awaiting_frame_reply = False
            return unit
        if unit[:1] != bytes((STX,)):
            self._awaiting_frame_reply = False
            return unit
        self._first_transmission = unit != self._last_frame
        if self._first_transmission:
            self._index += 1
            self._last_frame = unit
        self._awaiting_frame_reply = True
        faults, index = self.faults, self._index
        if not self.dropped and index == faults.drop_after and self._first_transmission:
            self.dropped = True
            return None
        once = index == faults.corrupt_frame and not self._corrupted_once
        self._corrupted_once |= once
        if once or index == faults.always_corrupt_frame:
            self.corrupted += 1
            unit = _corrupt(unit)
        if self._first_transmission and index < len(faults.noise):
            self.noise_bytes += len(faults.noise[index])
            unit = faults.noise[index] + unit
        return unit

    def incoming(self, byte: int) -> int:
        """The reply byte the Sender is told: an ACK to the ``lost-ack`` frame becomes NAK once."""
        if (
            byte == ACK
            and self._awaiting_frame_reply
            and self._index == self.faults.garble_ack_frame
            and not self.garbled
        ):
            self.garbled += 1
            return NAK
        return byte
