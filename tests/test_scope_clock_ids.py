"""Scopes, the hybrid logical clock, time-ordered ids."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hemei.core.clock import (COUNTER_BITS, EARLIEST_WALL_MS, HybridClock, hlc_to_iso, iso_to_hlc,
                              iso_to_local_text, local_text)
from hemei.core.errors import ClockNotSet, ClockSkew, InvalidInput
from hemei.core.ids import new_id
from hemei.core.scope import covers, parse_scope


@pytest.mark.parametrize("text", ["yuecheng", "yuecheng/fushan/xihu", "越城区/府山街道/西湖社区", "a-1/b_2/c.3"])
def test_valid_scopes_are_kept(text):
    assert parse_scope(text) == text


@pytest.mark.parametrize("text", ["", "/a", "a/", "a//b", "a b", "a/../b", "a\nb", "a/b\t", "a;b", "x" * 65])
def test_bad_scopes_are_refused_with_a_reason(text):
    with pytest.raises(InvalidInput, match="scope"):
        parse_scope(text)


def test_covers_is_by_whole_segments():
    assert covers("yc/fs", "yc/fs") and covers("yc/fs", "yc/fs/xihu")
    assert not covers("yc/fs", "yc/fsx") and not covers("yc/fs/xihu", "yc/fs")


NOW = 1_795_000_000_000  # a wall clock in ms (2026-11), after any release's floor


def test_clock_stays_monotonic_when_the_wall_clock_jumps_back():
    wall = [NOW]
    clock = HybridClock(now=lambda: wall[0])
    first = clock.tick()
    wall[0] -= 60_000  # NTP correction, or an operator fixing the date
    later = [clock.tick() for _ in range(5)]
    assert all(b > a for a, b in zip([first] + later, later))
    wall[0] += 120_000
    assert clock.tick() >> COUNTER_BITS == wall[0]


@given(st.lists(st.integers(-5000, 5000), min_size=1, max_size=50))
def test_clock_is_monotonic_for_any_wall_clock_path(jumps):
    wall = [NOW]
    clock = HybridClock(now=lambda: wall[0])
    last = 0
    for jump in jumps:
        wall[0] += jump
        value = clock.tick()
        assert value > last
        last = value


def test_observing_a_remote_stamp_moves_the_clock_past_it():
    clock = HybridClock(now=lambda: NOW)
    remote = ((NOW + 4000) << COUNTER_BITS) + 3
    clock.observe(remote)
    assert clock.tick() > remote


def test_stamps_far_in_the_future_are_refused_with_advice():
    clock = HybridClock(now=lambda: NOW, max_ahead_ms=60_000)
    clock.check_plausible((NOW + 59_000) << COUNTER_BITS)
    with pytest.raises(ClockSkew, match="3600 s ahead .* taken in about 59 min .* clock, or one it took a stamp "
                                         "from, is fast"):
        clock.check_plausible((NOW + 3_600_000) << COUNTER_BITS)
    with pytest.raises(ClockSkew, match="taken in about 2 h 1 min"):  # rounded up, to the minute
        clock.check_plausible((NOW + 2 * 3_600_000 + 60_001) << COUNTER_BITS)
    with pytest.raises(ClockSkew, match="more than a day ahead .* the sending PC's clock is wrong"):
        clock.check_plausible((NOW + 2 * 86_400_000) << COUNTER_BITS)


@pytest.mark.parametrize("last", [0, NOW << COUNTER_BITS])  # a new node, and one used before the reset
def test_a_wall_clock_reset_to_before_any_release_stamps_nothing(last, china_time):
    reset = iso_to_hlc("2000-01-01T00:03:00") >> COUNTER_BITS  # a flat CMOS battery's date
    clock = HybridClock(last, now=lambda: reset)
    # Said as the PC shows it (local time), so the operator can compare it with the taskbar's clock.
    with pytest.raises(ClockNotSet, match="clock reads 2000-01-01 08:03, before 2026-01-01.*Set its date and time"):
        clock.tick()
    assert clock.last == last
    clock._now = lambda: EARLIEST_WALL_MS  # set right: stamps again
    assert clock.tick() > last


def test_hlc_iso_round_trip():
    hlc = iso_to_hlc("2026-11-01T08:00:00")
    assert hlc_to_iso(hlc) == "2026-11-01T08:00:00.000Z"
    assert hlc_to_iso(hlc + 2) == "2026-11-01T08:00:00.000Z+2"


def test_operators_read_and_type_local_time(china_time):
    """Human output and typed dates are the PC's local time; JSON and the log say UTC."""
    utc_8am = iso_to_hlc("2026-11-01T08:00:00")
    assert iso_to_hlc("2026-11-01T16:00:00", local=True) == utc_8am
    assert iso_to_hlc("2026-11-01T16:00:00+08:00", local=True) == utc_8am  # an offset is taken as written
    assert iso_to_hlc("2026-11-01", local=True) == iso_to_hlc("2026-10-31T16:00:00")  # the local day's start
    assert local_text(utc_8am >> COUNTER_BITS) == "2026-11-01 16:00:00"
    assert iso_to_local_text(hlc_to_iso(utc_8am + 5)) == "2026-11-01 16:00:00"
    assert iso_to_local_text("never") == "never"
    assert iso_to_local_text("2026-11-01T08:00:00") == "2026-11-01T08:00:00"  # no zone: not guessed at


def test_new_ids_are_uuid7_and_time_ordered():
    ids = [new_id(now_ms=1_700_000_000_000 + i) for i in range(50)]
    assert ids == sorted(ids)
    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert len(set(new_id() for _ in range(1000))) == 1000
