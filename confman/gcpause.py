"""No full garbage collection while a hub loads its documents (`full_collections_paused`).

A hub's start-up allocates every loaded document at once, and all of it stays alive.
CPython's cyclic collector runs a full (oldest-generation) collection whenever the
objects that survived into that generation since the last one pass a quarter of it, and
each such collection walks the whole heap: the application's objects and every document
loaded so far, none of which it can free. At 100,000 documents one such collection took
about a third of start-up (benchmark S1: a single full collection at 100,000, none at
10,000, which made start-up grow faster than the data).

While paused, the young generations are still collected (short-lived cycles go as
before); the oldest one is not, until the last overlapping start-up ends. The
collector's own rule then runs one full collection at its next opportunity, as it
would have at some point anyway; what start-up no longer does is walk the heap over
and over while it grows. An explicit `gc.collect()` is never affected.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

__all__ = ["full_collections_paused"]

# The oldest generation's threshold while paused: it counts young-generation
# collections, so this is never reached.
_PAUSED = 1 << 30

_lock = threading.Lock()
_depth = 0
_saved = 0


@contextlib.contextmanager
def full_collections_paused() -> Iterator[None]:
    """Within the block (and any overlapping one, on any thread or task), the cyclic
    collector runs no automatic full collection; the previous threshold is restored when
    the last block ends, unless someone else changed it meanwhile."""
    global _depth, _saved
    with _lock:
        if _depth == 0:
            young, middle, _saved = gc.get_threshold()
            gc.set_threshold(young, middle, _PAUSED)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                young, middle, oldest = gc.get_threshold()
                if oldest == _PAUSED:
                    gc.set_threshold(young, middle, _saved)
