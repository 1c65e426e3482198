"""Start-up objects are moved out of the collector's way, once start-up is over."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from vetgateway.heap import settle_after_startup


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfrozen")
def test_what_survives_start_up_is_frozen_and_garbage_is_collected_first() -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self  # a cycle: only the cyclic collector can free it

    kept = Node()
    garbage = Node()
    del garbage
    gc.unfreeze()
    settle_after_startup()
    assert gc.get_freeze_count() > 0
    frozen_before = gc.get_freeze_count()
    # The cycle was collected before the freeze (not frozen for ever) ...
    assert not any(type(o) is Node for o in gc.get_objects())
    # ... the survivor left the generations the collector walks ...
    assert all(o is not kept for o in gc.get_objects())
    # ... and what is made after start-up is collected as before.
    after = Node()
    assert any(o is after for o in gc.get_objects())
    assert gc.get_freeze_count() == frozen_before
