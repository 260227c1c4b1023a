"""The router's heap settling: frozen objects are skipped by collections, and what a champion swap
leaves behind is still collected at the next settle."""

from __future__ import annotations

import gc
import weakref

from loop_pipeline.router.heap import settle_heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_settling_freezes_the_live_heap_and_the_next_settle_collects_what_was_dropped():
    try:
        node = _Node()
        alive = weakref.ref(node)
        assert settle_heap("test") == gc.get_freeze_count() > 0
        del node
        gc.collect()
        assert alive() is not None  # frozen: an ordinary collection skips it (the point: no pause)
        settle_heap("test again")
        assert alive() is None  # unfrozen first, so the dropped cycle is collected
    finally:
        gc.unfreeze()  # the rest of this test process collects as usual
