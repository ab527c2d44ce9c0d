"""What the district benchmarks share: shipping a street's log to its district, and best-of-N timing."""

from __future__ import annotations

import time

from hemei.core.node import Node


def ship(street: Node, district: Node) -> None:
    """Give ``district`` the street's whole log through ``apply_batch``, as sync delivers it."""
    after = 0
    while (batch := street.read_batch(street.id, after, limit=2000)) is not None:
        district.apply_batch(batch)
        after = batch.entries[-1][0]


def best(fn, repeat: int) -> tuple[float, object]:
    """The fastest of ``repeat`` calls of ``fn`` (seconds), and its last result."""
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result
