"""Cuts at any moment lose nothing and duplicate nothing: client killed, server killed, link cut.

Each test repeats its fault over several seeds on a real district server
and a real `hemei sync` (or the client library behind a cutting proxy),
then syncs normally and checks that the street's whole log is at the
district exactly once, with identical rows, and that both logs verify.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import time

import pytest

from hemei.core.audit import verify_log
from hemei.sync import client
from faultproxy import CuttingProxy
from server import hemei_command
from tree import Tree, write_notes

SEEDS = range(3)


def backlog(t: Tree, seed: int, rows: int = 4500) -> None:
    with t.open("street") as street:
        for chunk in range(3):  # several transactions: several checkpoints to resume from
            write_notes(street, [(f"s{seed} c{chunk} 记录 {i}", "sx/yc/fs/xihu") for i in range(rows // 3)])


def assert_converged(t: Tree) -> None:
    with t.open("street") as street, t.open("district") as district:
        size = street.version_vector()[street.id]
        assert district.version_vector()[street.id] == size
        log = "SELECT seq, hash FROM _hemei_log WHERE origin = (SELECT ix FROM _hemei_origins WHERE node_id = ?) ORDER BY seq"
        assert district.conn.execute(log, (street.id,)).fetchall() == street.conn.execute(log, (street.id,)).fetchall()
        rows = "SELECT * FROM notes WHERE scope LIKE 'sx/yc/fs%' ORDER BY id"
        street_rows = street.conn.execute(rows).fetchall()
        assert district.conn.execute(rows).fetchall() == street_rows
        assert len({r[0] for r in street_rows}) == len(street_rows)
        assert verify_log(street)["ok"] and verify_log(district)["ok"]


def behind(t: Tree) -> bool:
    """True when the district does not yet hold all of the street's log: the fault hit mid-transfer."""
    with t.open("street") as street, t.open("district") as district:
        return district.version_vector().get(street.id, 0) < street.version_vector()[street.id]


def received(t: Tree, origin: str) -> int:
    """How much of ``origin`` the district holds, read beside the running server."""
    conn = sqlite3.connect(t.home("district") / "node.db", timeout=10)
    try:
        row = conn.execute("SELECT size FROM _hemei_origins WHERE node_id = ?", (origin,)).fetchone()
        return row[0] if row else 0
    finally:
        conn.close()


def when_partly_received(t: Tree, rng: random.Random, proc: subprocess.Popen) -> None:
    """Wait until the district holds a random share of the street's backlog (or the sync ended)."""
    with t.open("street") as street:
        origin, total = street.id, street.version_vector()[street.id]
    start = received(t, origin)
    target = start + int((total - start) * rng.uniform(0.1, 0.8))
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline and received(t, origin) < target:
        time.sleep(0.005)


def sync_until_done(t: Tree) -> None:
    for _ in range(3):
        done = t.hemei("street", "sync")
        if done.returncode == 0:
            return
    raise AssertionError(done.stderr)


def test_client_killed_mid_push(pair):
    interrupted = 0
    for seed in SEEDS:
        rng = random.Random(seed)
        backlog(pair, seed)
        proc = subprocess.Popen(hemei_command() + ["--home", str(pair.home("street")), "sync", "--batch-size", "300"],
                                env=pair.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        when_partly_received(pair, rng, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        interrupted += behind(pair)
        sync_until_done(pair)
        assert_converged(pair)
    assert interrupted, "no kill landed mid-push: make the backlog larger"


def test_server_killed_mid_apply(pair):
    interrupted = 0
    for seed in SEEDS:
        rng = random.Random(100 + seed)
        backlog(pair, seed)
        server = pair.servers["district"]
        proc = subprocess.Popen(hemei_command() + ["--home", str(pair.home("street")), "sync", "--batch-size", "300"],
                                env=pair.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        when_partly_received(pair, rng, proc)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
        server.stop()
        interrupted += behind(pair)
        _, err = proc.communicate(timeout=60)
        assert "Traceback" not in err
        restarted = pair.serve("district", port=server.port)
        assert restarted.url == server.url
        sync_until_done(pair)
        assert_converged(pair)
    assert interrupted, "no kill landed mid-apply: make the backlog larger"


@pytest.mark.parametrize("seed", SEEDS)
def test_connection_cut_after_k_bytes(pair, seed):
    rng = random.Random(200 + seed)
    backlog(pair, seed, rows=3000)
    proxy = CuttingProxy(pair.servers["district"].port, cut_after=rng.randint(200, 60_000))
    with pair.open("street") as street:
        real_url = street.conn.execute("SELECT url FROM _hemei_peers").fetchone()[0]
        street.conn.execute("UPDATE _hemei_peers SET url = ?", (proxy.url,))
        try:
            for _ in range(20):  # every attempt is cut somewhere; each one moves the backlog forward or not at all
                try:
                    client.sync_once(street, batch_size=300)
                    break
                except client.Unreachable:
                    continue
                except client.SyncRefused as exc:
                    raise AssertionError(f"a cut connection must not look like a refusal: {exc.message}")
        finally:
            street.conn.execute("UPDATE _hemei_peers SET url = ?", (real_url,))
            proxy.close()
        assert proxy.cuts > 0
    sync_until_done(pair)
    assert_converged(pair)
