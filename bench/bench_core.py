"""Logged local writes and remote-entry applies, beside plain sqlite3 executemany.

Run by hand (never in CI):

    .venv/bin/python bench/bench_core.py            # 100,000 rows
    .venv/bin/python bench/bench_core.py --rows 300000 --batch 1000

Every figure is measured in the same run on the same machine:

* baseline: ``executemany`` of the same rows into a table of the same
  columns (TEXT primary key, WAL, synchronous=NORMAL, the node's cache
  size), committed every ``--batch`` rows;
* logged writes: ``node.writer()`` inserts, ``--batch`` per transaction:
  clock, hash chain, log row, merge policy, a signed checkpoint per batch;
* applies: a second node receives those entries with ``apply_batch``:
  chain and signature verification, log row, merge policy;
* SQL floor: the log rows and state rows that hemei wrote, inserted again
  by bare ``executemany`` into tables of the same schema: what the storage
  layout costs with no hemei code at all. Logged writes and applies cannot
  beat it; the distance to it is hemei's own overhead.

Each of the three is run ``--repeat`` times, interleaved, on fresh files;
the best rate of each is reported (this machine's timings vary by ~30%
from run to run). The issue's aims: logged writes at least 1/3 of the
baseline rate, applies at least 1/2.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from hemei.core import LWW, APPEND_ONLY, TableSpec, hookimpl
from hemei.core.ids import new_id
from hemei.core.node import CACHE_KIB, Node

COLUMNS = {"id": "text", "scope": "text", "volunteer": "text", "activity": "text", "hours": "real",
           "served_on": "text", "note": "text"}


class BenchPlugin:
    def __init__(self, policy: str):
        self.policy = policy

    @hookimpl
    def register_tables(self):
        return [TableSpec("bench_rows", COLUMNS, policy=self.policy)]


def make_rows(n: int) -> list[dict]:
    return [{"id": new_id(), "scope": "yuecheng/fushan/xihu", "volunteer": f"v{i % 5000:05d}",
             "activity": f"a{i % 3000:04d}", "hours": 1.5 + (i % 7) * 0.5, "served_on": "2026-11-01",
             "note": "楼道粉刷"} for i in range(n)]


def baseline(path: Path, rows: list[dict], batch: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    conn.execute("CREATE TABLE bench_rows (id TEXT PRIMARY KEY, scope TEXT, volunteer TEXT, activity TEXT,"
                 " hours REAL, served_on TEXT, note TEXT)")
    tuples = [tuple(r.values()) for r in rows]
    start = time.perf_counter()
    for i in range(0, len(tuples), batch):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO bench_rows VALUES (?, ?, ?, ?, ?, ?, ?)", tuples[i:i + batch])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def open_node(home: Path, plugin, name: str) -> Node:
    node = Node.init(home, name=name, scope="yuecheng/fushan", available={"bench": plugin})
    node.set_module_enabled("bench", True, "bench")
    return node


def logged_writes(node: Node, rows: list[dict], batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(rows), batch):
        with node.writer("bench") as w:
            for row in rows[i:i + batch]:
                w.insert("bench_rows", row)
    return time.perf_counter() - start


def applies(src: Node, dst: Node, batch: int) -> tuple[float, int]:
    batches = []
    after = dst.version_vector().get(src.id, 0)
    while (b := src.read_batch(src.id, after, limit=batch)) is not None:
        batches.append(b)
        after = b.entries[-1][0]
    start = time.perf_counter()
    for b in batches:
        dst.apply_batch(b)
    return time.perf_counter() - start, sum(len(b.entries) for b in batches)


def sql_floor(node: Node, path: Path, batch: int) -> float:
    """Seconds to insert the node's own log and state rows again with bare executemany."""
    schema = [r[0] for r in node.conn.execute(
        "SELECT sql FROM sqlite_master WHERE name IN ('_hemei_log', 'bench_rows') AND type = 'table'")]
    log = node.conn.execute("SELECT * FROM _hemei_log WHERE kind = 'row.insert' ORDER BY seq").fetchall()
    state = node.conn.execute("SELECT * FROM bench_rows").fetchall()
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", f"cache_size=-{CACHE_KIB}"):
        conn.execute(f"PRAGMA {pragma}")
    for sql in schema:
        conn.execute(sql)
    log_sql = f"INSERT INTO _hemei_log VALUES ({', '.join('?' * len(log[0]))})"
    state_sql = f"INSERT INTO bench_rows VALUES ({', '.join('?' * len(state[0]))})"
    start = time.perf_counter()
    for i in range(0, len(state), batch):
        conn.execute("BEGIN")
        conn.executemany(log_sql, log[i:i + batch])
        conn.executemany(state_sql, state[i:i + batch])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def run_once(work: Path, rows: list[dict], batch: int, policy: str) -> tuple[float, ...]:
    """Rates (rows/s) of baseline, logged writes, applies and SQL floor, on fresh files in ``work``."""
    work.mkdir()
    base = baseline(work / "plain.db", rows, batch)
    plugin = BenchPlugin(policy)
    street = open_node(work / "street", plugin, "street")
    district = open_node(work / "district", plugin, "district")
    write = logged_writes(street, rows, batch)
    apply, entries = applies(street, district, batch)
    assert district.conn.execute("SELECT count(*) FROM bench_rows").fetchone()[0] == len(rows)
    floor = sql_floor(street, work / "floor.db", batch)
    street.close()
    district.close()
    return len(rows) / base, len(rows) / write, entries / apply, len(rows) / floor


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--policy", choices=[LWW, APPEND_ONLY], default=LWW)
    args = parser.parse_args()
    rows = make_rows(args.rows)
    work = Path(tempfile.mkdtemp(prefix="hemei-bench-"))
    try:
        runs = [run_once(work / f"run{i}", rows, args.batch, args.policy) for i in range(args.repeat)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base_rate, write_rate, apply_rate, floor_rate = (max(r[i] for r in runs) for i in range(4))
    print(f"hemei core benchmark: {args.rows:,} rows, {args.batch} per transaction, policy {args.policy},"
          f" best of {args.repeat}, Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}")
    print(f"{'what':<34}{'rows/s':>12}{'ratio':>9}   aim")
    print(f"{'plain sqlite3 executemany':<34}{base_rate:>12,.0f}{1:>9.2f}")
    print(f"{'logged local writes':<34}{write_rate:>12,.0f}{write_rate / base_rate:>9.2f}   >= 0.33")
    print(f"{'remote-entry applies':<34}{apply_rate:>12,.0f}{apply_rate / base_rate:>9.2f}   >= 0.50")
    print(f"{'SQL floor (same log+state rows)':<34}{floor_rate:>12,.0f}{floor_rate / base_rate:>9.2f}"
          "   (ceiling of both)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
