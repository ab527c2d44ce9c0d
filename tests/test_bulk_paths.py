"""What the bulk paths rely on: the cyclic-GC pause and WAL checkpoints off the request path."""

from __future__ import annotations

import gc
import threading
import time

from hemei.core.api import NodePool
from hemei.core.checkpoint import Checkpointer, defer_checkpoints
from hemei.core.gc_pause import cyclic_gc_paused
from hemei.core.node import DB_NAME


def test_pauses_nest_and_overlap_across_threads_and_the_collector_resumes_after_the_last():
    assert gc.isenabled()
    inside, release = threading.Event(), threading.Event()

    def other_thread():
        with cyclic_gc_paused():
            inside.set()
            release.wait(5)

    worker = threading.Thread(target=other_thread)
    with cyclic_gc_paused():
        worker.start()
        inside.wait(5)
        with cyclic_gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert not gc.isenabled()  # the other thread's pause still runs
    release.set()
    worker.join()
    assert gc.isenabled()


def test_a_pause_leaves_a_collector_that_was_off_off():
    gc.disable()
    try:
        with cyclic_gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_pause_ends_when_the_work_fails():
    try:
        with cyclic_gc_paused():
            raise ValueError
    except ValueError:
        pass
    assert gc.isenabled()


def _fill(node, rows: int) -> None:
    with node.writer("w") as w:
        for i in range(rows):
            w.insert("notes", {"title": f"第{i}条", "body": "府山街道" * 20})


def test_deferred_commits_leave_the_wal_to_the_checkpointer(node):
    """With checkpoints deferred the database file stays as it was; the thread copies the WAL into it."""
    path = node.home / DB_NAME
    defer_checkpoints(node.conn)
    size = path.stat().st_size
    _fill(node, 3000)  # several MB of WAL: past the 1,000 pages that a commit would checkpoint by default
    assert path.stat().st_size == size
    checkpointer = Checkpointer(path, interval_s=0.05).start()
    try:
        deadline = time.monotonic() + 10
        while path.stat().st_size == size and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        checkpointer.stop()
    assert path.stat().st_size > size
    assert node.conn.execute("SELECT count(*) FROM notes").fetchone()[0] == 3000


def test_a_served_pool_defers_checkpoints_on_every_node_it_lends(node):
    pool = NodePool(node.home, None, ())
    before = pool.get()
    assert before.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
    checkpointer = pool.start_checkpointer()
    try:
        with pool.lend() as first, pool.lend() as second:
            assert {first.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0],
                    second.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]} == {0}
    finally:
        checkpointer.stop()
        pool.close()
