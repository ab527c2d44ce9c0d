"""A street pushes its backlog to a district over loopback: rate and peak memory.

Run by hand (never in CI):

    .venv/bin/python bench/bench_sync.py --rows 100000
    .venv/bin/python bench/bench_sync.py --rows 1000000

A real district (`hemei serve`, uvicorn on 127.0.0.1) and a real
`hemei sync` process; the street's backlog is written first (not timed).
Printed beside it, measured in the same run: a plain ``sqlite3``
``executemany`` of the same rows into a table of the same columns; a bare
Starlette + SQLite push of the same rows (``bare_push.py``: HTTP and
SQLite alone), once into a plain table and once into the leanest layout a
verified push could keep (``--lean``: one log blob per message, state rows
with the hidden columns a merge needs; the fastest a verified push taking
one message at a time could be); and the SQL floor, the log and state rows
the district ended up with inserted again by bare ``executemany`` (what
today's storage layout costs with no hemei code and no HTTP). Peak
RSS is each process's own high-water mark (``VmHWM``, Linux), so memory
that grows with the backlog instead of the batch shows here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bare_push as bare  # noqa: E402
from bench_core import COLUMNS, baseline, make_rows, sql_floor  # noqa: E402

from hemei.core.node import Node  # noqa: E402
from hemei.sync import client, enroll  # noqa: E402

PLUGIN = f'''
from hemei.core import TableSpec, hookimpl

@hookimpl
def register_tables():
    return [TableSpec("bench_rows", {COLUMNS!r})]
'''


def plugin_site(root: Path) -> Path:
    site = root / "site"
    dist = site / "hemei_bench-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hemei-bench\nVersion: 0\n")
    (dist / "entry_points.txt").write_text("[hemei]\nbench = hemei_bench_plugin\n")
    (site / "hemei_bench_plugin.py").write_text(PLUGIN)
    return site


def hemei(*args: str) -> list[str]:
    script = Path(sys.executable).parent / "hemei"
    return ([str(script)] if script.exists() else [sys.executable, "-m", "hemei.cli"]) + list(args)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vm_hwm_mb(pid: int) -> float:
    """The process's own RSS high-water mark (VmHWM: per address space, so reset at exec)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def wait_peak(proc: subprocess.Popen) -> tuple[int, float]:
    """Exit code and peak RSS (MB) of a running child, sampled every 20 ms until it exits.

    ``wait4``'s ru_maxrss would include this benchmark's own memory at fork
    time on Linux, hence the sampling.
    """
    peak = 0.0
    while proc.poll() is None:
        try:
            peak = max(peak, vm_hwm_mb(proc.pid))
        except (FileNotFoundError, ProcessLookupError):
            pass
        time.sleep(0.02)
    return proc.returncode, peak


def wait_up(url: str) -> None:
    import httpx

    for _ in range(100):
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"no answer from {url}")


def bare_push(work: Path, rows: list[dict], batch: int, lean: bool = False) -> tuple[float, float]:
    """Rows/s and server peak RSS of bench/bare_push.py: the same rows over HTTP into SQLite, no hemei.

    ``lean``: into the leanest layout a verified push could keep (see bare_push.py), still unverified.
    """
    if not (work / "bare-source.db").exists():
        source = bare.connect(str(work / "bare-source.db"))
        source.executemany("INSERT INTO rows VALUES (?, ?, ?, ?, ?, ?, ?)", [tuple(r.values()) for r in rows])
        source.commit()
        source.close()
    target = work / "bare.db"
    for leftover in (target, target.with_name("bare.db-wal"), target.with_name("bare.db-shm")):
        leftover.unlink(missing_ok=True)
    port = free_port()
    script = str(HERE / "bare_push.py")
    server = subprocess.Popen([sys.executable, script, "serve", str(target), str(port)] + ["--lean"] * lean)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_up(url + "/health")
        start = time.perf_counter()
        subprocess.run([sys.executable, script, "push", str(work / "bare-source.db"), url, str(batch)], check=True)
        elapsed = time.perf_counter() - start
        rss = vm_hwm_mb(server.pid)
    finally:
        server.terminate()
        server.wait()
    held = sqlite3.connect(target).execute("SELECT count(*) FROM rows").fetchone()[0]
    assert held == len(rows), f"bare push stored {held} rows, expected {len(rows)}"
    return len(rows) / elapsed, rss


def push_round(work: Path, k: int, env: dict, batch: int, nodes: dict) -> tuple[int, float, float, float, Path]:
    """One push on fresh copies of the street and the district:
    (entries pushed, seconds, client RSS, server RSS, the district's home)."""
    street_home, district_home = work / f"street{k}", work / f"district{k}"
    shutil.copytree(work / "street", street_home)
    shutil.copytree(work / "district", district_home)
    port = free_port()
    server = subprocess.Popen(hemei("--home", str(district_home), "serve", "--port", str(port),
                                    "--log-level", "warning"), env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_up(url + "/api/health")
        with Node.open(district_home, **nodes) as district, Node.open(street_home, **nodes) as street:
            token = enroll.create_invite(district, name="street", scope="yuecheng/fushan", url=url, ttl_s=600,
                                         actor="bench")
            client.join(street, token, "bench")
            entries = street.version_vector()[street.id]
        start = time.perf_counter()
        sync = subprocess.Popen(hemei("--home", str(street_home), "sync", "--batch-size", str(batch)),
                                env=env, stdout=subprocess.DEVNULL)
        code, client_rss = wait_peak(sync)
        elapsed = time.perf_counter() - start
        if code != 0:
            raise SystemExit(f"hemei sync failed with exit code {code}")
        server_rss = vm_hwm_mb(server.pid)
    finally:
        server.terminate()
        server.wait()
    shutil.rmtree(street_home)
    return entries, elapsed, client_rss, server_rss, district_home


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of plain insert, bare push and hemei push, interleaved; the best of each")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hemei-bench-sync-"))
    env = dict(os.environ, PYTHONPATH=str(plugin_site(work)))
    sys.path.insert(0, env["PYTHONPATH"])
    import hemei_bench_plugin

    nodes = {"available": {"bench": hemei_bench_plugin}, "builtins": ("hemei.core.builtin", "hemei.sync.plugin")}
    try:
        rows = make_rows(args.rows)
        district = Node.init(work / "district", name="district", scope="yuecheng", **nodes)
        district.set_module_enabled("bench", True, "bench")
        district.close()
        street = Node.init(work / "street", name="street", scope="yuecheng/fushan", **nodes)
        street.set_module_enabled("bench", True, "bench")
        start = time.perf_counter()
        for i in range(0, len(rows), 5000):
            with street.writer("bench") as w:
                for row in rows[i:i + 5000]:
                    w.insert("bench_rows", dict(row, scope="yuecheng/fushan/xihu"))
        written = time.perf_counter() - start
        street.close()
        bases, bares, leans, pushes = [], [], [], []
        client_rss = server_rss = bare_server_rss = 0.0
        for k in range(args.repeat):
            bases.append(args.rows / baseline(work / f"plain{k}.db", rows, args.batch))
            rate, rss = bare_push(work, rows, args.batch)
            bares.append(rate)
            bare_server_rss = max(bare_server_rss, rss)
            leans.append(bare_push(work, rows, args.batch, lean=True)[0])
            entries, elapsed, c_rss, s_rss, district_home = push_round(work, k, env, args.batch, nodes)
            pushes.append(entries / elapsed)
            client_rss, server_rss = max(client_rss, c_rss), max(server_rss, s_rss)
            with Node.open(district_home, **nodes) as check:
                held = check.conn.execute("SELECT count(*) FROM bench_rows").fetchone()[0]
                assert held == args.rows, f"district holds {held} rows, expected {args.rows}"
                if k == args.repeat - 1:
                    floor = args.rows / sql_floor(check, work / "floor.db", args.batch)
            shutil.rmtree(district_home)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base, bare, lean, rate = max(bases), max(bares), max(leans), max(pushes)
    print(f"hemei sync benchmark: {args.rows:,} rows ({entries:,} entries), batches of {args.batch},"
          f" best of {args.repeat}, Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}")
    print(f"  street backlog written in {written:.1f} s (not part of the push)")
    print(f"  {'':<34}{'per second':>12}   vs plain   vs bare push")
    print(f"  {'plain sqlite3 executemany':<34}{base:>12,.0f}   {1:>8.2f}")
    print(f"  {'bare HTTP push, no hemei':<34}{bare:>12,.0f}   {bare / base:>8.2f}   {1:>12.2f}")
    print(f"  {'bare push into the leanest layout':<34}{lean:>12,.0f}   {lean / base:>8.2f}   {lean / bare:>12.2f}"
          "   (fastest a verified push could be)")
    print(f"  {'SQL floor: its log + state rows':<34}{floor:>12,.0f}   {floor / base:>8.2f}   {floor / bare:>12.2f}")
    print(f"  {'hemei sync: street -> district':<34}{rate:>12,.0f}   {rate / base:>8.2f}   {rate / bare:>12.2f}"
          f"   ({entries / rate:.1f} s)")
    print(f"  every round, hemei sync: {', '.join(f'{r:,.0f}' for r in pushes)} entries/s")
    print(f"  peak RSS: hemei sync {client_rss:.0f} MB, hemei serve {server_rss:.0f} MB"
          f" (bare push server {bare_server_rss:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
