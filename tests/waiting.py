"""Waiting on a condition with a deadline: the only way tests here wait for another thread or
process. It polls, so it never decides a race by sleeping a guessed amount."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {what or condition}")
        # The poll interval, not a guess at how long the other side needs: the condition,
        # checked again at once, decides; the deadline only bounds a failing wait.
        time.sleep(0.002)
