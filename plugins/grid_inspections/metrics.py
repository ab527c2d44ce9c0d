"""Case and patrol metrics per grid, community and street, and the ranking of streets.

Every figure is computed from the cases' events and the patrol check-ins,
never from figures a street reports about itself, so a district recomputes
every street's numbers under one definition. The events are folded into
``case_status`` (one row per case), whose yes/no figures are summed into
daily summaries per grid and per street and category as they change
(:mod:`.status`); stats add up the summaries of the window's days. For
cases reported in the window:

* response rate (答复率): cases that got any answer by a person (registered,
  rejected, marked duplicate, escalated by hand, ...) / cases;
* resolution rate (解决率): cases closed (or closed and evaluated) / cases
  accepted (not rejected, not duplicates);
* on-time rate: resolved cases whose accepted handling came by the
  category's deadline counted from the report / resolved cases;
* rework rate: cases sent back for rework at least once / cases handled at
  least once;
* satisfaction rate (满意率): evaluations "satisfied" or "basically
  satisfied" / evaluations;
* patrol coverage: patrols done / planned (see :func:`.grids.coverage`).

A rate with nothing to divide by is ``None``, not 0 or 100%. Streets are
ranked by resolution rate, then on-time rate, then satisfaction, then
response rate (a missing rate ranks below any figure).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict

from hemei.core import Node
from hemei.core.fields import in_subtree_sql, iso_date, now_local, place_names_by_scope, subtree_params

from . import grids, status
from .machine import OPEN_STATES
from .tables import FLAGS

COUNTS = (*FLAGS, "open", "overdue")
RATES = {"response_rate": ("responded", "cases"), "resolution_rate": ("resolved", "accepted"),
         "on_time_rate": ("on_time", "resolved"), "rework_rate": ("reworked", "handled"),
         "satisfaction_rate": ("satisfied", "evaluated")}
RANK_BY = ("resolution_rate", "on_time_rate", "satisfaction_rate", "response_rate")


def _window(start, end) -> tuple[str, str]:
    """``[start, end]`` as given; by default up to today, from the first of January of the year it ends in,
    or of this year when it ends later (`--to 2027-01-01` alone read one day, found in a walkthrough)."""
    end = iso_date(end or dt.date.today(), "to")
    return grids.check_window(start or f"{min(end, dt.date.today().isoformat())[:4]}-01-01", end)


def _place_sql(subtree: tuple, grid_ids: list[str] | None, prefix: str = "") -> tuple[str, tuple]:
    """Where a case row lies in the place asked for: by its street, or (inside a street) by its grid."""
    if grid_ids is None:
        return in_subtree_sql(f"{prefix}street"), subtree
    return f"{prefix}grid IN (SELECT value FROM json_each(?))", (json.dumps(grid_ids),)


def _grid_rows(node: Node, subtree: tuple, start: str, end: str, grid_ids: list[str] | None = None) -> list[dict]:
    """Counts per grid for cases reported in the window: sums of the daily summaries, plus open and
    overdue cases now (few, found through the open-state index)."""
    place, place_params = _place_sql(subtree, grid_ids)
    rows = {(r["street"], r["community"], r["grid"]): {**r, "open": 0, "overdue": 0} for r in node.db.query(
        f"SELECT street, community, grid, {', '.join(f'sum({f}) AS {f}' for f in FLAGS)} FROM case_grid_day"
        f" WHERE {place} AND day >= ? AND day <= ? GROUP BY street, community, grid", (*place_params, start, end))}
    end_exclusive = _day_after(end)
    for r in node.db.query(
            "SELECT street, community, grid, count(*) AS open, sum(level_due < ?) AS overdue FROM case_status"
            " WHERE state IN ({}) AND {} AND reported_at >= ? AND reported_at < ?"
            " GROUP BY street, community, grid".format(", ".join("?" * len(OPEN_STATES)), place),
            (now_local(), *OPEN_STATES, *place_params, start, end_exclusive)):
        key = (r["street"], r["community"], r["grid"])
        if key in rows:
            rows[key].update(open=r["open"], overdue=r["overdue"])
    return [r for r in rows.values() if r["cases"]]


def _day_after(day: str) -> str:
    return (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat()


def _category_rows(node: Node, subtree: tuple, start: str, end: str, grid_ids: list[str] | None):
    """(category, street, cases, resolved) for cases reported in the window: from the daily summary kept per
    street, or, inside a street, from the status of the cases of its grids (few)."""
    if grid_ids is None:
        return node.conn.execute(
            "SELECT category, street, sum(cases), sum(resolved) FROM case_category_day"
            f" WHERE {in_subtree_sql('street')} AND day >= ? AND day <= ? GROUP BY category, street",
            (*subtree, start, end))
    place, place_params = _place_sql(subtree, grid_ids)
    return node.conn.execute(
        f"SELECT category, street, count(*), sum(state IN ({', '.join('?' * len(status.RESOLVED_STATES))}))"
        f" FROM case_status WHERE {place} AND reported_at >= ? AND reported_at < ? GROUP BY category, street",
        (*status.RESOLVED_STATES, *place_params, start, _day_after(end)))


def _with_rates(row: dict) -> dict:
    for rate, (part, whole) in RATES.items():
        row[rate] = round(row[part] / row[whole], 4) if row[whole] else None
    return row


def _with_patrols(row: dict, planned: int, done: int) -> dict:
    row.update(patrols_planned=planned, patrols_done=done,
               patrol_coverage=round(done / planned, 4) if planned else None)
    return row


def _add(into: dict, row: dict) -> None:
    for key in COUNTS:
        into[key] = into.get(key, 0) + (row[key] or 0)


def stats(node: Node, *, start=None, end=None, scope: str | None = None, known_only: bool = True) -> dict:
    """All case and patrol figures for cases reported in [start, end] within ``scope``.

    ``known_only``: refuse a place this node has not heard of (a typo), as `hemei cases stats` should;
    the core's `hemei report` asks every module about any place inside the node, grids or not.
    """
    start, end = _window(start, end)
    if scope:
        scope = grids.known_place(node, scope, "scope") if known_only else grids.place_scope(node, scope, "scope")
    else:
        scope = node.scope
    status.ensure_fresh(node)
    subtree = subtree_params(scope)
    names = {r[0]: (r[1], r[2]) for r in node.conn.execute("SELECT id, code, name FROM grids")}
    totals: dict = {}
    streets: dict[str, dict] = defaultdict(dict)
    communities: dict[tuple, dict] = defaultdict(dict)
    by_grid: dict[str, dict] = {}
    grid_ids = grids.grids_inside_street(node, scope)
    for row in _grid_rows(node, subtree, start, end, grid_ids):
        _add(totals, row)
        _add(streets[row["street"]], row)
        _add(communities[row["street"], row["community"]], row)
        code, name = names.get(row["grid"], (None, None))
        by_grid[row["grid"]] = _with_rates({**row, "code": code, "name": name})
    categories = defaultdict(lambda: {"cases": 0, "resolved": 0, "by_street": {}})
    for category, street, cases, resolved in _category_rows(node, subtree, start, end, grid_ids):
        if not cases:
            continue
        entry = categories[category]
        entry["cases"] += cases
        entry["resolved"] += resolved
        entry["by_street"][street] = cases
    patrols = grids.coverage(node, start, end, scope, list_missed=False, known_only=False)  # resolved above
    # Patrol figures per grid, community and street, as the docs say (the grid and community rows had none,
    # found in a walkthrough); a place with patrols and no cases has a row of its own.
    street_patrols, community_patrols = defaultdict(lambda: [0, 0]), defaultdict(lambda: [0, 0])
    for g in patrols["grids"]:
        for counted in (street_patrols[g["street"]], community_patrols[g["street"], g["community"]]):
            counted[0] += g["planned"]
            counted[1] += g["done"]
        row = by_grid.setdefault(g["grid"], _with_rates({
            "street": g["street"], "community": g["community"], "grid": g["grid"], **{k: 0 for k in COUNTS},
            "code": g["code"], "name": g["name"]}))
        _with_patrols(row, g["planned"], g["done"])
    for key in community_patrols:
        communities.setdefault(key, {})
    per_grid = list(by_grid.values())
    street_rows = []
    names = place_names_by_scope(node)
    for street in sorted(set(streets) | set(street_patrols)):
        row = _with_rates({"street": street, "name": names.get(street), **{k: 0 for k in COUNTS},
                           **streets.get(street, {})})
        street_rows.append(_with_patrols(row, *street_patrols.get(street, (0, 0))))
    street_rows.sort(key=lambda r: tuple(-(r[k] if r[k] is not None else -1) for k in RANK_BY) + (r["street"],))
    for rank, row in enumerate(street_rows, 1):
        row["rank"] = rank
    return {
        "scope": scope, "from": start, "to": end,
        "totals": _with_rates({**{k: 0 for k in COUNTS}, **totals, "patrol_coverage": patrols["coverage"]}),
        "streets": street_rows,
        "communities": [_with_patrols(_with_rates({"street": s, "community": c, **{k: 0 for k in COUNTS}, **v}),
                                      *community_patrols.get((s, c), (0, 0)))
                        for (s, c), v in sorted(communities.items())],
        "grids": sorted(per_grid, key=lambda r: (r["street"], r["community"], r["code"] or "")),
        "categories": [{"category": k, **v} for k, v in sorted(categories.items())],
        "patrols": {"planned": patrols["planned"], "done": patrols["done"], "coverage": patrols["coverage"],
                    "missed": patrols["missed_count"], "counted_to": patrols["counted_to"]},
    }
