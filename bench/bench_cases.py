"""The district's grid-case figures, beside a plain SQLite GROUP BY of the same derived rows.

Run by hand (never in CI):

    .venv/bin/python bench/bench_cases.py                       # 10 streets x 50,000 cases
    .venv/bin/python bench/bench_cases.py --streets 2 --cases 2000

How the district is built (so the rows are exactly what sync delivers):
each street is a real node with 4 communities x 5 grids (``grids.add_grid``),
two patrol check-ins a day per grid since 1 January (a few missed), and
``--cases`` cases reported over this year up to now, each with its events
(about 7 a case: register, dispatch, start, handle, verify, close, evaluate;
some reworked, rejected, duplicates, escalated, or still open), all written
as raw rows through ``node.writer()``: per transaction 1,000 cases, then
their events. After every commit the module folds the touched cases into
its local ``case_status`` table, at the street and again at the district,
which receives every street's log with ``apply_batch`` (verifying chains
and signatures). That folding is part of the build times printed, not of
the timings. Only then is the district timed:

* stats: ``metrics.stats()`` for the district (what ``hemei cases stats``
  prints): counts and rates per grid, community and street, categories,
  patrol coverage of every grid and day, ranking of the streets;
* show: ``cases.show()`` of one case with its history;
* list: ``cases.list_cases(level="district", open_only=True)``, the cases
  waiting at the district;
* baseline: the district's case rows with the same derived columns copied
  into a plain table, and one ``GROUP BY street`` with the same kinds of
  ``sum(...)``: the least a figure read from every case row can cost.
  ``stats()`` reads the module's daily summaries (one row per grid and day,
  kept in step as cases change) instead, so it can come in under it.

Each timing is the best of ``--repeat`` runs. The aim: stats under one second.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from hemei.cli.main import BUILTIN_PLUGINS
from hemei.core.node import Node
from hemei.plugins.grid_inspections import cases, grids, metrics
from hemei.plugins.grid_inspections.cases import DEFAULT_CATEGORIES
from hemei.plugins.grid_inspections.machine import RATINGS

from district_build import best, ship  # bench/ is on sys.path when a script in it runs

DISTRICT = "越城区"
COMMUNITIES, GRIDS_PER_COMMUNITY, CHUNK = 4, 5, 1000
AVAILABLE = {"grid_inspections": "hemei.plugins.grid_inspections"}
WHAT = {"environment": "垃圾堆放", "facilities": "路灯损坏", "safety": "消防通道堵塞",
        "dispute": "邻里噪音纠纷", "livelihood": "独居老人求助", "other": "其他事项"}
#: Longest gap, in hours, before each kind of event (handle: a share of the category's deadline).
GAP = {"register": 3, "reject": 4, "duplicate": 4, "dispatch": 4, "escalate": 24, "start": 12, "verify": 24,
       "rework": 12, "close": 12, "evaluate": 72}


def _node(root: Path, name: str, scope: str) -> Node:
    node = Node.init(root / name, name=name, scope=scope, actor="bench", available=AVAILABLE,
                     builtins=BUILTIN_PLUGINS)
    node.set_module_enabled("grid_inspections", True, "bench")
    return node


def lifecycle(rng: random.Random, reported: dt.datetime, hours: int, earlier: str | None,
              now: dt.datetime) -> list[tuple[str, str, dict]]:
    """(kind, at, extra) of one case's events in the order its street writes them, none after ``now``."""
    roll = rng.random()
    if roll < 0.03:
        plan = [("reject", {"note": "不属于网格事项"})]
    elif roll < 0.05 and earlier is not None:
        plan = [("register", {}), ("duplicate", {"duplicate_of": earlier})]
    else:
        plan = [("register", {}), ("dispatch", {"assignee": f"网格员{rng.randrange(40)}"})]
        roll = rng.random()
        if roll < 0.005:  # passed to the district, which has not acted yet: stays open there
            plan.append(("escalate", {"level": "district", "note": "街道无法处置"}))
        else:
            if roll < 0.04:
                plan += [("escalate", {"level": rng.choice(("community", "street")), "note": "超时上报"}),
                         ("dispatch", {"assignee": f"网格员{rng.randrange(40)}"})]
            plan += [("start", {}), ("handle", {"note": "已处置"})]
            if rng.random() < 0.12:
                plan += [("rework", {"note": "整改不到位"}), ("start", {}), ("handle", {"note": "已整改"})]
            plan += [("verify", {}), ("close", {})]
            if rng.random() < 0.85:
                plan.append(("evaluate", {"rating": rng.choices(RATINGS, (70, 22, 8))[0]}))
            if rng.random() < 0.03:  # stalled half-way: still open
                plan = plan[:rng.randrange(1, len(plan))]
    events, at = [], reported
    for kind, extra in plan:
        longest = hours * 0.7 if kind == "handle" else GAP[kind]
        at += dt.timedelta(seconds=rng.randrange(600, int(longest * 3600) + 601))
        if at > now:
            break
        events.append((kind, at.isoformat(timespec="seconds"), extra))
    return events


def fill_street(node: Node, n_cases: int, rng: random.Random, now: dt.datetime) -> None:
    """Grids, two patrols a day per grid since 1 January, then per transaction 1,000 cases and their events."""
    year_start = dt.datetime(now.year, 1, 1)
    grid_rows = [grids.add_grid(node, "bench", code=f"C{c}-G{g}", name=f"第{g}网格", community=f"社区{c}",
                                households=rng.randrange(200, 600), established=year_start.date())
                 for c in range(1, COMMUNITIES + 1) for g in range(1, GRIDS_PER_COMMUNITY + 1)]
    patrols = []
    for day in range((now - year_start).days):
        date = (year_start + dt.timedelta(days=day)).date().isoformat()
        for g in grid_rows:
            for hour in (8, 18):
                if rng.random() < 0.93:
                    at = f"{date}T{hour:02d}:{rng.randrange(60):02d}:00"
                    patrols.append({"scope": g["scope"], "grid": g["id"], "street": node.scope,
                                    "worker": f"网格员{rng.randrange(40)}", "at": at, "day": date})
    for start in range(0, len(patrols), CHUNK):
        with node.writer("bench") as w:
            for row in patrols[start:start + CHUNK]:
                w.insert("grid_patrols", row)
    span = int((now - year_start).total_seconds())
    moments = sorted(year_start + dt.timedelta(seconds=rng.randrange(span)) for _ in range(n_cases))
    district, earlier = node.scope.rsplit("/", 1)[0], None
    for start in range(0, n_cases, CHUNK):
        with node.writer("bench") as w:
            planned = []
            for reported in moments[start:start + CHUNK]:
                g, category = rng.choice(grid_rows), rng.choice(list(DEFAULT_CATEGORIES))
                hours = DEFAULT_CATEGORIES[category][1]
                source = "patrol" if rng.random() < 0.7 else "resident"
                case_id = w.insert("cases", {
                    "scope": g["scope"], "grid": g["id"], "street": node.scope, "district": district,
                    "community": g["community"], "category": category, "deadline_hours": hours,
                    "place": f"{rng.randrange(1, 200)}号", "description": WHAT[category],
                    "reporter": f"网格员{rng.randrange(40)}" if source == "patrol" else "居民",
                    "source": source, "reported_at": reported.isoformat(timespec="seconds")})
                planned.append((case_id, g["scope"], lifecycle(rng, reported, hours, earlier, now)))
                earlier = case_id
            for case_id, scope, events in planned:  # after the cases: consecutive inserts are executemany'd
                for kind, at, extra in events:
                    w.insert("case_events", {"scope": scope, "case_id": case_id, "kind": kind, "at": at,
                                             "acting_scope": node.scope, "actor": w.actor, **extra})


BASELINE_COLUMNS = ("street, community, grid, category, reported_at, due, state, level_due, responded_at,"
                    " handled_at, rating, reworks, escalations")
BASELINE_SQL = """SELECT street, count(*), sum(responded_at IS NOT NULL), sum(state NOT IN ('rejected', 'duplicate')),
    sum(state IN ('closed', 'evaluated')), sum(state IN ('closed', 'evaluated') AND handled_at <= due),
    sum(handled_at IS NOT NULL OR reworks > 0), sum(reworks > 0), sum(rating IS NOT NULL),
    sum(rating IN ('satisfied', 'basically_satisfied')), sum(escalations > 0),
    sum(state IN ('reported', 'registered', 'dispatched', 'in_progress')),
    sum(state IN ('reported', 'registered', 'dispatched', 'in_progress') AND level_due < ?)
    FROM c GROUP BY street"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streets", type=int, default=10)
    parser.add_argument("--cases", type=int, default=50_000, help="cases per street")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    rng = random.Random(7)
    now = dt.datetime.now().replace(microsecond=0)
    root = Path(tempfile.mkdtemp(prefix="hemei-bench-cases-"))
    try:
        district = _node(root, "district", DISTRICT)
        t0, write_s, ship_s = time.perf_counter(), 0.0, 0.0
        for s in range(args.streets):
            t1 = time.perf_counter()
            street = _node(root, f"street{s}", f"{DISTRICT}/街道{s:02d}")
            fill_street(street, args.cases, rng, now)
            t2 = time.perf_counter()
            ship(street, district)
            t3 = time.perf_counter()
            street.close()
            write_s, ship_s = write_s + t2 - t1, ship_s + t3 - t2
            print(f"  street {s + 1}/{args.streets}: written in {t2 - t1:.1f} s, received by the district in"
                  f" {t3 - t2:.1f} s ({t3 - t0:.0f} s so far)", file=sys.stderr)
        district.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        count = {t: district.conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                 for t in ("cases", "case_events", "case_status", "grid_patrols", "grids")}
        entries = district.conn.execute("SELECT count(*) FROM _hemei_log").fetchone()[0]
        refused = district.conn.execute("SELECT (SELECT count(*) FROM _hemei_conflicts)"
                                        " + (SELECT sum(not_applied) FROM case_status)").fetchone()[0]
        assert refused == 0, f"{refused} rows or events refused: the generated data is not valid"

        stats_s, data = best(lambda: metrics.stats(district), args.repeat)
        assert data["totals"]["cases"] == args.streets * args.cases == count["case_status"], data["totals"]
        assert len(data["streets"]) == args.streets and len(data["grids"]) == count["grids"]
        sample = district.conn.execute("SELECT case_id FROM case_status"
                                       " ORDER BY reworks + escalations DESC, case_id LIMIT 1").fetchone()[0]
        show_s, shown = best(lambda: cases.show(district, sample), args.repeat)
        list_s, waiting = best(lambda: cases.list_cases(district, level="district", open_only=True), args.repeat)

        plain = sqlite3.connect(root / "plain.db")
        plain.execute(f"CREATE TABLE c ({BASELINE_COLUMNS})")
        plain.executemany(f"INSERT INTO c VALUES ({', '.join('?' * len(BASELINE_COLUMNS.split(',')))})",
                          district.conn.execute(f"SELECT {BASELINE_COLUMNS} FROM case_status"))
        plain.commit()
        stamp = now.isoformat()
        base_s, base = best(lambda: plain.execute(BASELINE_SQL, (stamp,)).fetchall(), args.repeat)
        assert sum(r[1] for r in base) == data["totals"]["cases"]
        plain.close()
        district.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    n = args.streets
    print(f"district case figures over {n} streets x {args.cases:,} cases: {count['cases']:,} cases,"
          f" {count['case_events']:,} events ({count['case_events'] / count['cases']:.1f} a case),"
          f" {count['grid_patrols']:,} patrols, {count['grids']} grids; {entries:,} log entries at the district")
    print(f"  build: streets wrote in {write_s:.0f} s ({write_s / n:.1f} s a street), the district received"
          f" in {ship_s:.0f} s ({ship_s / n:.1f} s a street), folding included")
    print(f"  baseline: plain GROUP BY street      {base_s * 1000:8.1f} ms")
    print(f"  hemei cases stats (metrics.stats)    {stats_s * 1000:8.1f} ms   {stats_s / base_s:5.1f}x baseline"
          f"   aim < 1000 ms: {'met' if stats_s < 1 else 'NOT met'}")
    print(f"  one case with its history (show)     {show_s * 1000:8.1f} ms   ({len(shown['events'])} entries,"
          f" {shown['state']}, reworks {shown['reworks']})")
    print(f"  open cases at the district (list)    {list_s * 1000:8.1f} ms   ({len(waiting)} rows)")
    print(f"  totals: {data['totals']}")
    print(f"  patrols: {data['patrols']}; top street: {data['streets'][0]['street']}"
          f" (resolution {data['streets'][0]['resolution_rate']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
