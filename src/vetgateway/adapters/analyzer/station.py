"""What the runner needs from a line protocol: the ``LineStation`` interface.

An analyzer line carries either ASTM E1381 (``adapters.astm``) or plain text
(``adapters.plaintext``). Both are sans-I/O: bytes and the monotonic time go in, events and bytes
to write come out. The runner (``adapters.analyzer.runner``) drives either one over a serial port or
a TCP connection, and for every ``MessageReceived`` it stores the message (``inbox``) and only
then calls ``message_stored`` — which, for E1381, releases the ACK of the completing frame.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from vetgateway.adapters.astm.e1381 import MessageReceived, NeedData

__all__ = ["LineStation", "MessageReceived", "QuickReplies"]


class LineStation(Protocol):
    """One end of an analyzer line, without I/O. ``next_event`` yields ``MessageReceived`` for
    each complete message (other events are for logs and metrics) and ``NEED_DATA`` when empty."""

    def receive_data(self, data: bytes, now: float) -> None: ...

    def next_event(self) -> object | NeedData: ...

    def data_to_send(self) -> bytes: ...

    def check_timeouts(self, now: float) -> None: ...

    def message_stored(self, now: float) -> None: ...

    def message_refused(self, now: float) -> None: ...

    def send_message(self, text: bytes, now: float) -> None:
        """Queue a message to the analyzer (a host-query answer). A one-way line (plain text)
        raises ``LinkUsageError``."""
        ...


@runtime_checkable
class QuickReplies(Protocol):
    """What a station may offer for its commonest read: ``reply_at_once(data, now)`` returns
    the reply when ``data`` needs nothing but one (an ASTM frame in the middle of a message:
    its ACK), having done all ``receive_data`` and ``check_timeouts`` would; ``None``, having
    changed nothing, for anything else, which then goes through ``receive_data``."""

    def reply_at_once(self, data: bytes, now: float) -> bytes | None: ...
