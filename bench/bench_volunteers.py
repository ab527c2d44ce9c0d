"""The district roll-up of volunteer hours, beside a plain SQLite GROUP BY of the same rows.

Run by hand (never in CI):

    .venv/bin/python bench/bench_volunteers.py                       # 10 streets x 100,000 entries
    .venv/bin/python bench/bench_volunteers.py --streets 3 --entries 20000

How the district is built (so the rows are exactly what sync delivers):
each street is a real node that writes ``--entries`` hour entries and as
many confirmations through ``node.writer()`` (1,000 per transaction), for
people drawn from one district-wide pool (so a person serves in several
streets); the district then receives every street's log with
``apply_batch``, which verifies chains and signatures and projects the rows.
Only then is the roll-up timed:

* roll-up: ``rollup()`` for the district scope: hours per street, team and
  category, active vs registered, no-show rate, outstanding balance, star
  distribution, ranking (what ``hemei volunteers report`` prints);
* balance: ``balance()`` of one person across all streets;
* baseline: the same confirmed rows (scope, team, category, person, hours)
  copied into a plain table with one covering index, and one
  ``GROUP BY scope`` over them: the least any per-street figure can cost.

Each timing is the best of ``--repeat`` runs. The aim: roll-up under one second.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from hemei.cli.main import BUILTIN_PLUGINS
from hemei.core.node import Node

from hemei.plugins.volunteer_hours import keys, ledger, rollup

from district_build import best, ship  # bench/ is on sys.path when a script in it runs

DISTRICT = "越城区"
TEAMS = ["老吴热线", "雷锋驿站", "306和事佬", "最红星期五", "小棉袄"]
CATEGORIES = ["daily_care", "health", "companionship", "legal", "culture", "safety"]
AVAILABLE = {"volunteer_hours": "hemei.plugins.volunteer_hours"}


def _node(root: Path, name: str, scope: str) -> Node:
    node = Node.init(root / name, name=name, scope=scope, actor="bench", available=AVAILABLE,
                     builtins=BUILTIN_PLUGINS)
    node.set_module_enabled("volunteer_hours", True, "bench")
    return node


def fill_street(node: Node, entries: int, people: list[str], rng: random.Random) -> None:
    """Registrations, teams, activities, then hour entries each with its confirmation."""
    mine = rng.sample(people, min(len(people), 5000))
    with node.writer("bench") as w:
        teams = [w.insert("volunteer_teams", {"name": t}) for t in TEAMS]
        vols = [(w.insert("volunteers", {"name": f"志愿者{i}", "person": p, "key_id": "vk-bench"}), p)
                for i, p in enumerate(mine)]
        acts = [(w.insert("volunteer_activities", {"title": f"活动{i}", "category": CATEGORIES[i % 6],
                                                   "date": f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}",
                                                   "team": teams[i % len(teams)]}), i) for i in range(3000)]
    done = 0
    while done < entries:
        with node.writer("bench") as w:
            for i in range(done, min(entries, done + 500)):
                vol, person = vols[i % len(vols)]
                act, a = acts[i % len(acts)]
                row = {"volunteer": vol, "person": person, "team": teams[a % len(teams)],
                       "category": CATEGORIES[a % 6], "served_on": f"2026-{1 + a % 12:02d}-{1 + a % 28:02d}"}
                hours = 0.5 + (i % 8) * 0.5
                hour = w.insert("volunteer_hours", {**row, "activity": act, "hours": hours})
                w.insert("volunteer_confirmations", {**row, "hour": hour, "delta_cents": round(hours * 100)})
            done = min(entries, done + 500)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streets", type=int, default=10)
    parser.add_argument("--entries", type=int, default=100_000, help="confirmed hour entries per street")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    rng = random.Random(7)
    people = [f"id-{rng.getrandbits(128):032x}" for _ in range(30_000)]
    root = Path(tempfile.mkdtemp(prefix="hemei-bench-volunteers-"))
    try:
        district = _node(root, "district", DISTRICT)
        keys.create_key(district, "bench")
        t0 = time.perf_counter()
        for s in range(args.streets):
            street = _node(root, f"street{s}", f"{DISTRICT}/街道{s:02d}")
            fill_street(street, args.entries, people, rng)
            ship(street, district)
            street.close()
            print(f"  street {s + 1}/{args.streets} written and synced ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr)
        district.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows = district.conn.execute("SELECT count(*) FROM volunteer_confirmations").fetchone()[0]

        roll_s, data = best(lambda: rollup.rollup(district, DISTRICT), args.repeat)
        bal_s, bal = best(lambda: ledger.balance(district, people[0]), args.repeat)

        plain = sqlite3.connect(root / "plain.db")
        plain.execute("CREATE TABLE c (scope TEXT, team TEXT, category TEXT, person TEXT, hours REAL)")
        plain.executemany("INSERT INTO c VALUES (?, ?, ?, ?, ?)", district.conn.execute(
            "SELECT scope, team, category, person, delta_cents / 100.0 FROM volunteer_confirmations"))
        plain.execute("CREATE INDEX c_scope ON c (scope, hours)")
        plain.commit()
        base_s, _ = best(lambda: plain.execute("SELECT scope, sum(hours) FROM c GROUP BY scope").fetchall(),
                         args.repeat)
        plain.close()
        district.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"district roll-up over {args.streets} streets x {args.entries:,} confirmed entries ({rows:,} rows)")
    print(f"  baseline: plain GROUP BY scope   {base_s * 1000:8.1f} ms")
    print(f"  hemei volunteers report (rollup) {roll_s * 1000:8.1f} ms   {roll_s / base_s:5.1f}x baseline"
          f"   aim < 1000 ms: {'met' if roll_s < 1 else 'NOT met'}")
    print(f"  one person's balance             {bal_s * 1000:8.1f} ms   ({bal['hours']:g} h, star {bal['star']},"
          f" {len(bal['accounts'])} accounts)")
    print(f"  totals: {data['totals']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
