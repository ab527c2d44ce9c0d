"""Hybrid logical clock.

An HLC value is one integer: ``wall_ms << 16 | counter``. Ticking takes
``max(now << 16, last + 1)``, so the clock never goes back when the wall
clock does (the counter keeps counting, and carries into the millisecond
part if it ever overflows), and it stays close to real time when the wall
clock is right. Observing a remote value moves the clock up to it, so every
local write is later than everything the node has seen: that is what lets a
local last-writer-wins write skip the comparison.
"""

from __future__ import annotations

import datetime as _dt
import time
from typing import Callable

from .errors import ClockNotSet, ClockSkew

COUNTER_BITS = 16

#: No release of hemei ran before this instant (2026-01-01 UTC). A wall clock that reads earlier was
#: reset, as a flat CMOS battery does (to 2000, or the BIOS's date): stamps made with it would be
#: wrong in the audit trail and win every "earliest wins" clash. Raise it with a release, never lower it.
EARLIEST_WALL_MS = 1_767_225_600_000

#: How far ahead of this node's wall clock a remote entry may be stamped.
DEFAULT_MAX_AHEAD_MS = 15 * 60 * 1000


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def hlc_ms(hlc: int) -> int:
    return hlc >> COUNTER_BITS


def hlc_to_iso(hlc: int) -> str:
    """Human form: UTC time with milliseconds, plus the counter when non-zero."""
    ms = hlc_ms(hlc)
    counter = hlc & ((1 << COUNTER_BITS) - 1)
    stamp = _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc)
    text = stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    return f"{text}+{counter}" if counter else text


def iso_to_hlc(text: str, *, local: bool = False) -> int:
    """Parse a date or datetime into the lowest HLC at that instant.

    Naive text is UTC, or this PC's local time with ``local`` (what an operator
    types: the time the PC shows). Raises ValueError for text that is not such
    a date, or one outside 1970-9999.
    """
    stamp = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    try:
        if stamp.tzinfo is None:
            stamp = stamp.astimezone() if local else stamp.replace(tzinfo=_dt.timezone.utc)
        ms = int(stamp.timestamp() * 1000)
    except (OverflowError, OSError):
        raise ValueError(f"{text} is out of range") from None
    if not 0 <= ms < 1 << (63 - COUNTER_BITS):
        raise ValueError(f"{text} is out of range")
    return ms << COUNTER_BITS


def local_text(ms: int) -> str:
    """An instant as an operator reads it: this PC's local time, to the second (2026-11-22 10:36:05).

    Human output only; JSON and messages sent to other nodes say UTC (:func:`hlc_to_iso`).
    """
    try:
        return _dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):  # outside what this platform's localtime takes
        return hlc_to_iso(ms << COUNTER_BITS)


def iso_to_local_text(text: str) -> str:
    """:func:`local_text` of an instant written by :func:`hlc_to_iso` (the counter dropped); other text as is."""
    try:
        stamp = _dt.datetime.fromisoformat(text.split("Z", 1)[0] + "+00:00" if "Z" in text else text)
    except (TypeError, ValueError):
        return text
    if stamp.tzinfo is None:
        return text
    return local_text(int(stamp.timestamp() * 1000))


def utc_offset_min() -> int:
    """This PC's time zone now, as minutes ahead of UTC (480 in China): local wall-clock times of
    cases and hours mean an instant only with it."""
    offset = _dt.datetime.now().astimezone().utcoffset()
    return round(offset.total_seconds() / 60) if offset is not None else 0


def utc_offset_text(minutes: int) -> str:
    """480 as 'UTC+08:00', -330 as 'UTC-05:30'."""
    return f"UTC{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def span_text(ms: int) -> str:
    """A span of time as a person says it: '20 min', '3 h 5 min', '4 days' (days from two)."""
    minutes = round(abs(ms) / 60000)
    return (f"{minutes // 1440} days" if minutes >= 2 * 1440 else
            f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min")


def wait_text(ms: int) -> str:
    """How long until a stamp ``ms`` too far ahead is taken, as a person says it ("about 3 min",
    "about 2 h 45 min"), rounded up."""
    minutes = max(1, -(-ms // 60_000))
    return f"about {minutes} min" if minutes < 60 else f"about {minutes // 60} h {minutes % 60} min"


class HybridClock:
    """Monotonic HLC. ``last`` is persisted by the node with every write."""

    def __init__(self, last: int = 0, now: Callable[[], int] = wall_ms,
                 max_ahead_ms: int = DEFAULT_MAX_AHEAD_MS, earliest_ms: int = EARLIEST_WALL_MS):
        self.last = last
        self._now = now
        self.max_ahead_ms = max_ahead_ms
        self.earliest_ms = earliest_ms

    def tick(self) -> int:
        value = max(self.set_now() << COUNTER_BITS, self.last + 1)
        self.last = value
        return value

    def set_now(self) -> int:
        """The wall clock in ms; ClockNotSet when it reads before any release ran (see EARLIEST_WALL_MS)."""
        now = self._now()
        if now < self.earliest_ms:
            reading = local_text(max(0, now))[:16]  # as the PC shows it
            raise ClockNotSet(f"this PC's clock reads {reading}, before "
                              f"{hlc_to_iso(self.earliest_ms << COUNTER_BITS)[:10]}: it has been reset. Set its "
                              "date and time correctly, then try again (nothing was written)")
        return now

    def check_plausible(self, remote: int) -> None:
        """Refuse a remote stamp too far in the future: a street PC with a wrong clock."""
        ahead = hlc_ms(remote) - self._now()
        if ahead <= self.max_ahead_ms:
            return
        wait_ms = ahead - self.max_ahead_ms
        if wait_ms > 86_400_000:
            skew = ClockSkew(f"entry stamped {hlc_to_iso(remote)} is more than a day ahead of the receiving "
                             "node's clock: the sending PC's clock is wrong; set its date and time (entries "
                             "stamped so far ahead are taken only when that day comes)")
        else:
            # What is already stamped passes only when this clock gets there, whatever is set: say when.
            skew = ClockSkew(f"entry stamped {hlc_to_iso(remote)} is {ahead // 1000} s ahead of the receiving "
                             f"node's clock, taken in {wait_text(wait_ms)} (sync or import again then): the sending "
                             "PC's clock, or one it took a stamp from, is fast; set it right, nothing is lost")
        skew.stamp, skew.wait_ms = remote, wait_ms
        raise skew

    def observe(self, remote: int) -> None:
        if remote > self.last:
            self.last = remote
