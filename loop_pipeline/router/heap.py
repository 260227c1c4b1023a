"""Keeping Python's cyclic garbage collector from pausing requests.

A full collection walks every object the process tracks. The router's imports alone (FastAPI,
pydantic, polars, numpy) are about 90k objects, some 40 ms per full collection on a 2-core
machine, and a local champion (torch, transformers) adds several times that; every request in
flight waits it out (it was the router's p99 in ``loop bench router``). :func:`settle_heap`
collects once and moves what is alive into the permanent generation (``gc.freeze``), which later
collections skip. The router settles its heap when it has started, when a champion was swapped in
and when a retired one was closed; each time after ``gc.unfreeze``, so what a swap left behind is
collected rather than kept for good.

``gc.freeze`` is process-wide: ``RouterSettings.gc_freeze`` turns this off for processes that run
more than the router (tests).
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)


def settle_heap(reason: str) -> int:
    """Collect everything, then freeze what survived; the number of objects now frozen."""
    started = time.perf_counter()
    gc.unfreeze()
    collected = gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("heap settled (%s): %d unreachable objects collected, %d frozen, in %.0f ms",
             reason, collected, frozen, (time.perf_counter() - started) * 1000.0)
    return frozen
