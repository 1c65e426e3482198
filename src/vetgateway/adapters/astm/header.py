"""What the intake reads of an LIS2-A2 message before storing it: the H record's sender id, and
whether the message holds a host query. Nothing else is parsed here (``pipeline/parse/astm.py``
does that after the commit); these never raise, whatever the bytes.

The H record names its own delimiters in its first five characters (``H|\\^&``: field, repeat,
component, escape; LIS2-A2 §7); the sender name or id is field 5, whose first component is the id.
"""

from __future__ import annotations

import re

__all__ = ["has_query", "read_sender"]


def _first_record(text: bytes) -> bytes:
    return re.split(rb"[\r\n]", text.lstrip(b"\r\n"), maxsplit=1)[0]


def read_sender(text: bytes) -> str | None:
    """H-5's first component, stripped; None when there is no H record or no sender."""
    header = _first_record(text)
    if len(header) < 5 or header[:1] not in (b"H", b"h"):
        return None
    field, component = header[1:2], header[3:4]
    fields = header.split(field)
    if len(fields) < 5:
        return None
    sender = fields[4].split(component)[0].strip()
    return sender.decode("latin-1") or None


def has_query(text: bytes) -> bool:
    """True when some record is a request-information record (Q, LIS2-A2 §12)."""
    header = _first_record(text)
    field = header[1:2] if len(header) > 1 and header[:1] in (b"H", b"h") else b"|"
    return any(
        record[:1] in (b"Q", b"q") and record[1:2] == field
        for record in re.split(rb"[\r\n]+", text)
    )
