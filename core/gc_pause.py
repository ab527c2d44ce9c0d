"""Pausing Python's cyclic garbage collector around the bulk paths.

Receiving a batch of 5,000 entries allocates a few hundred thousand small
lists, tuples and dicts that hold no reference cycles and die when the
batch is done; reference counting frees them. Python's cyclic collector
does not know that: every 700 allocations it scans the young objects, and
because a batch's objects live for the whole batch, they are promoted and
rescanned in the old generations too, together with everything the
process holds. Measured on the push path (bench/bench_sync.py), that was
a fifth of the district's time. So the bulk paths run with the collector
paused and let it run as usual in between.

Pauses nest and may overlap across threads (``hemei serve`` applies in a
thread pool): the collector resumes when the last pause ends, and only if
it was running when the first began.
"""

from __future__ import annotations

import gc
import threading
from contextlib import contextmanager
from typing import Iterator

_lock = threading.Lock()
_depth = 0
_resume = False


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    global _depth, _resume
    with _lock:
        if _depth == 0:
            _resume = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _resume:
                gc.enable()
