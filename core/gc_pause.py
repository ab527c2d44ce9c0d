"""Pausing Python's cyclic garbage collector around the bulk paths.

Receiving a batch of 5,000 entries allocates a few hundred thousand small
lists, tuples and dicts that hold no reference cycles and die when the
batch is done; reference counting frees them. Python's cyclic collector
does not know that: every 700 allocations it scans the young objects, and
because a batch's objects live for the whole batch, they are promoted and
rescanned in the old generations too, together with everything the
process holds. Measured on a district applying a street's pushed batches,
that was 10–20% of the time. So the bulk paths (receiving, rebuilding,
encoding for sync) run with the collector paused and let it run as usual
in between.

Pauses nest and may overlap across threads (``hemei serve`` applies in a
thread pool): the collector resumes when the last pause ends, and only if
it was running when the first began. Overlapping pauses from many streets
syncing at once could keep it off for as long as the rush lasts, so a pause
that ends after the collector has been off for :data:`MAX_OFF_S` runs a
collection then, whatever the other threads are doing.
"""

from __future__ import annotations

import gc
import threading
import time
from contextlib import contextmanager
from typing import Iterator

#: Longest the collector stays off, in seconds, while pauses overlap.
MAX_OFF_S = 5.0

_lock = threading.Lock()
_depth = 0
_resume = False
_off_since = 0.0


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    global _depth, _resume, _off_since
    with _lock:
        if _depth == 0:
            _resume = gc.isenabled()
            gc.disable()
            _off_since = time.monotonic()
        _depth += 1
    try:
        yield
    finally:
        collect = False
        with _lock:
            _depth -= 1
            if _depth == 0:
                if _resume:
                    gc.enable()
            elif _resume and time.monotonic() - _off_since > MAX_OFF_S:
                _off_since, collect = time.monotonic(), True
        if collect:
            gc.collect()
