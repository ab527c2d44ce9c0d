"""Grids over time at two tiers: removal and definition again, plan history, micro-grids whose check-ins
count for their grid. Each case here was found by review of the first version of these features."""

from __future__ import annotations

import datetime as dt

import pytest

from test_convergence import _send
from hemei.plugins.grid_inspections import grids

ACTOR = "网格员"
STREET = "越城区/府山街道"
DAY0 = dt.date.today() - dt.timedelta(days=30)


def day(n: int) -> str:
    return (DAY0 + dt.timedelta(days=n)).isoformat()


def at(n: int, hour: int = 9) -> str:
    return f"{day(n)}T{hour:02d}:00:00"


@pytest.fixture
def street(make_node):
    return make_node("street", scope=STREET, modules=["grid_inspections"])


@pytest.fixture
def tiers(make_node):
    district = make_node("district", scope="越城区", modules=["grid_inspections"])
    street = make_node("street", scope=STREET, modules=["grid_inspections"])
    _send(street, district, rewind=0)
    _send(district, street, rewind=0)
    return district, street


def sync(district, street) -> None:
    _send(street, district, rewind=0)
    _send(district, street, rewind=0)


def done_of(node, code: str, first: str, last: str) -> int:
    return next(g["done"] for g in grids.coverage(node, first, last)["grids"] if g["code"] == code)


def test_a_grid_defined_again_starts_its_plan_history_anew(street):
    grids.add_grid(street, ACTOR, code="FS-01", name="一网格", community="西小河社区", established=day(0))
    grids.set_plan(street, ACTOR, "FS-01", 3, from_day=day(5))
    grids.remove_grid(street, ACTOR, "FS-01")
    again = grids.add_grid(street, ACTOR, code="FS-01", name="一网格", community="西小河社区", patrols_per_day=1,
                           established=day(20))
    assert (again["patrols_per_day"], again["plan_changes"]) == (1, [])  # it took the removed one's 3
    assert grids.coverage(street, day(20), day(24))["planned"] == 5


def test_a_micro_grids_plan_change_or_removal_keeps_what_its_past_patrols_counted_for(street):
    grids.add_grid(street, ACTOR, code="FS-01", name="一网格", community="西小河社区", established=day(0),
                   patrols_per_day=1)
    grids.add_grid(street, ACTOR, code="M1", name="3幢微网格", parent="FS-01")  # defined today, plan 0
    grids.add_grid(street, ACTOR, code="M2", name="5幢微网格", parent="FS-01", established=day(0))
    for n in range(10):
        grids.check_in(street, ACTOR, "M1" if n < 5 else "M2", worker="李娟", at=at(n))
    assert done_of(street, "FS-01", day(0), day(9)) == 10
    grids.set_plan(street, ACTOR, "M1", 1)  # its own plan from today on
    grids.remove_grid(street, ACTOR, "M2")
    assert done_of(street, "FS-01", day(0), day(9)) == 10  # both dropped the grid's past to 0
    assert [(g["code"], g["patrols_per_day"]) for g in grids.list_grids(street)] == [("FS-01", 1), ("M1", 1)]


def test_a_plan_follows_its_history_not_the_grid_rows_column_whichever_tier_wrote_last(tiers):
    district, street = tiers
    grids.add_grid(district, ACTOR, code="FS-01", name="一网格", community="西小河社区", street="府山街道",
                   established=day(0), patrols_per_day=1)
    sync(district, street)
    grids.add_grid(district, ACTOR, code="M1", name="3幢微网格", parent="FS-01", established=day(0))
    sync(district, street)
    grids.set_plan(district, ACTOR, "M1", 2, from_day=day(5))
    grids.set_plan(street, ACTOR, "M1", 0, from_day=day(3))  # written later: the grid row's column says 0
    sync(district, street)
    for n in range(4):
        grids.check_in(street, ACTOR, "M1", worker="李娟", at=at(6 + n))
    sync(district, street)
    for node in (district, street):
        shown = {g["code"]: (g["planned"], g["done"]) for g in grids.coverage(node, day(6), day(9))["grids"]}
        assert shown == {"FS-01": (4, 0), "M1": (8, 4)}  # the day-5 change of 2 holds from day 5
        assert grids.get_grid(node, grids.find_grid(node, "M1")["id"])["patrols_per_day"] == 2


def test_a_patrol_of_a_micro_grid_whose_grid_was_removed_elsewhere_is_kept_and_said_not_to_count(tiers):
    """A removal at the district while the street added a micro-grid: the check-in was written, then
    answered with an error (so it was entered again, twice)."""
    district, street = tiers
    grids.add_grid(district, ACTOR, code="FS-01", name="一网格", community="西小河社区", street="府山街道",
                   established=day(0))
    sync(district, street)
    grids.remove_grid(district, ACTOR, "FS-01")
    grids.add_grid(street, ACTOR, code="M1", name="3幢微网格", parent="FS-01")
    sync(district, street)
    patrol = grids.check_in(street, ACTOR, "M1", worker="李娟", at=at(3))
    assert patrol["counted"] is False and "micro-grid M1's grid was removed" in patrol["not_counted"]
    assert street.conn.execute("SELECT count(*) FROM grid_patrols").fetchone() == (1,)
    for node in (district, street):
        [m1] = [g for g in grids.list_grids(node) if g["code"] == "M1"]
        assert m1["warnings"] == [patrol["not_counted"]]
