"""What the grid-inspection case tests share: a street with two grids, and short ways to report and walk a case."""

from __future__ import annotations

import datetime as dt

from hemei.plugins.grid_inspections import cases, grids

ACTOR = "网格员"
STREET = "越城区/府山街道"
#: Fixed points in the recent past, so nothing is "in the future" whenever the tests run.
DAY0 = dt.date.today() - dt.timedelta(days=30)


def at(day: int, hour: int = 9, minute: int = 0) -> str:
    """A local time ``day`` days after DAY0."""
    return dt.datetime.combine(DAY0 + dt.timedelta(days=day), dt.time(hour, minute)).isoformat()


def two_grid_street(make_node):
    """The street 府山街道 with grids FS-01 (西小河社区, 300 households) and FS-02 (仓桥社区, one patrol a day)."""
    node = make_node("street", scope=STREET, modules=["grid_inspections"])
    grids.add_grid(node, ACTOR, code="FS-01", name="西小河一网格", community="西小河社区", households=300,
                   established=DAY0.isoformat())
    grids.add_grid(node, ACTOR, code="FS-02", name="仓桥一网格", community="仓桥社区", patrols_per_day=1,
                   established=DAY0.isoformat())
    return node


def report_case(node, grid="FS-01", category="environment", day=1, hour=9, **extra) -> str:
    return cases.report(node, ACTOR, grid=grid, category=category, description="楼道堆物", reporter="李娟",
                        at=at(day, hour), **extra)["id"]


def walk(node, case_id, steps) -> dict:
    shown = None
    for kind, when, extra in steps:
        shown = cases.transition(node, ACTOR, case_id, kind, at=when, **extra)
    return shown
