"""The event loop ``vetgateway run`` picks, and running a coroutine on it."""

from __future__ import annotations

import asyncio

import pytest

from vetgateway import event_loop
from vetgateway.errors import ConfigError


async def _running_loop_module() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__


def test_auto_runs_on_uvloop_where_it_is_installed() -> None:
    pytest.importorskip("uvloop", reason="uvloop is not built for this platform")
    assert event_loop.loop_name("auto") == "uvloop"
    assert event_loop.run(_running_loop_module()).startswith("uvloop")


def test_asyncio_can_be_chosen_to_rule_the_loop_out() -> None:
    assert event_loop.loop_name("asyncio") == "asyncio"
    assert event_loop.run(_running_loop_module(), "asyncio").startswith("asyncio")


def test_without_uvloop_auto_falls_back_and_an_explicit_choice_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(event_loop, "_uvloop_installed", lambda: False)
    assert event_loop.loop_name("auto") == "asyncio"
    assert event_loop.run(_running_loop_module()).startswith("asyncio")
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        event_loop.loop_name("uvloop")


def test_run_returns_the_result_and_closes_its_loop() -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    async def main() -> int:
        loops.append(asyncio.get_running_loop())
        return 42

    assert event_loop.run(main()) == 42
    assert loops[0].is_closed()
