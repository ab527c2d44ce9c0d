"""How slow a request may be before it is given up, on either end of a link.

A request has ``request_base_s()`` seconds (60 unless ``HEMEI_REQUEST_SECONDS``
says otherwise), and 1 s more for every ``MIN_RATE`` bytes (1 KiB) it has moved. A
fixed deadline would cut an honest large push on a slow line; a timeout per
read (httpx's), or none (uvicorn waits for a request's headers and body for
ever), lets a peer that sends a byte a second, or a PC switched off
mid-upload, hold the request, its memory and its socket for good.

Used by the child's link to its parent (sync/transport.py) and by the served
API for the requests it receives (core/api.py, and the HTTP protocol of
``hemei serve``).
"""

from __future__ import annotations

import os

from .errors import NodeStateError

REQUEST_SECONDS_ENV = "HEMEI_REQUEST_SECONDS"
DEFAULT_REQUEST_BASE_S = 60.0
#: Bytes a second a request must average after its base time: 8 kbit/s. Low on purpose: a message
#: cut for being slow is built the same at the next try, so a line slower than this never syncs, while
#: a byte a second is still cut after the base time. (At 8 KiB/s, review found, a 32 kbit/s line was
#: stuck for good on any message over about 470 kB.) The price: an answer flooded up to its cap and then
#: dripped may last the base time plus a second per KiB of it (32 MiB: about nine hours), bounded.
MIN_RATE = 1024


def request_base_s() -> float:
    """Seconds every request has before its bytes earn it more (``HEMEI_REQUEST_SECONDS``)."""
    value = os.environ.get(REQUEST_SECONDS_ENV)
    if value is None:
        return DEFAULT_REQUEST_BASE_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 1 <= seconds <= 24 * 3600:  # below a second, a served node would close every connection at once
        raise NodeStateError(f"{REQUEST_SECONDS_ENV} must be a number of seconds from 1 to 86400 "
                             f"(60 unless set), not {value!r}")
    return seconds


def seconds_left(elapsed_s: float, moved: int, base_s: float, min_rate: float = MIN_RATE) -> float:
    """What is left of a request's time after ``elapsed_s`` seconds in which it moved ``moved`` bytes."""
    return base_s + moved / min_rate - elapsed_s


def too_slow(elapsed_s: float, moved: int, base_s: float, min_rate: float = MIN_RATE) -> str:
    return (f"{moved:,} bytes in {elapsed_s:.0f} s, where a request has {base_s:g} s, and 1 s more for every "
            f"{min_rate / 1024:g} KiB it moves")
