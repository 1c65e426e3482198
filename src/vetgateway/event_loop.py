"""Which event loop the gateway's listeners run on, and running a coroutine on it.

``auto`` (the default) is uvloop where it is installed (every platform but Windows, see
pyproject.toml) and asyncio's own loop otherwise. uvloop keeps the loop's bookkeeping in C: on 2
cores, 32 ASTM analyzers at 115,200 baud cost about a third less CPU on it (bench/astm.py), and
the per-message path of MLLP is the same shape. ``asyncio`` is the fallback an operator can pick
(``VETGATEWAY_EVENT_LOOP=asyncio``) to rule the loop out while troubleshooting; ``uvloop`` makes
its absence a start-up error instead of a silent fallback.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from vetgateway.errors import ConfigError

__all__ = ["EventLoopChoice", "loop_factory", "loop_name", "run"]

EventLoopChoice = Literal["auto", "asyncio", "uvloop"]
T = TypeVar("T")


def _uvloop_installed() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def loop_name(choice: EventLoopChoice) -> str:
    """The loop ``choice`` resolves to here: "uvloop" or "asyncio"."""
    if choice == "uvloop" and not _uvloop_installed():
        raise ConfigError("VETGATEWAY_EVENT_LOOP=uvloop, but uvloop is not installed here")
    if choice == "auto":
        return "uvloop" if _uvloop_installed() else "asyncio"
    return choice


def loop_factory(choice: EventLoopChoice) -> Callable[[], asyncio.AbstractEventLoop]:
    """A factory for ``asyncio.Runner`` making the loop ``choice`` resolves to."""
    if loop_name(choice) == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(main: Coroutine[Any, Any, T], choice: EventLoopChoice = "auto") -> T:
    """``asyncio.run(main)`` on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)
