"""What the bulk paths rely on: the cyclic-GC pause and WAL checkpoints off the request path."""

from __future__ import annotations

import gc
import threading
import time
import weakref

from hemei.core.api import NodePool
from hemei.core.checkpoint import Checkpointer, defer_checkpoints
from hemei.core import gc_pause
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


class _Cycle:
    def __init__(self):
        self.me = self


def test_overlapping_pauses_still_collect_once_the_collector_was_off_too_long(monkeypatch):
    """Streets syncing back to back must not keep cycles piling up for the whole rush."""
    monkeypatch.setattr(gc_pause, "MAX_OFF_S", 0.5)
    holding, release = threading.Event(), threading.Event()

    def long_push():
        with cyclic_gc_paused():
            holding.set()
            release.wait(5)

    worker = threading.Thread(target=long_push)
    worker.start()
    holding.wait(5)
    try:
        garbage = _Cycle()
        gone = weakref.ref(garbage)
        del garbage
        with cyclic_gc_paused():
            pass
        assert gone() is not None  # off for less than MAX_OFF_S: no collection yet
        time.sleep(0.6)
        with cyclic_gc_paused():
            pass
        assert gone() is None  # this pause ended after the limit: collected, though the other still runs
        assert not gc.isenabled()
    finally:
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


def test_when_the_checkpoint_thread_ends_lent_nodes_checkpoint_at_commit_again(node):
    pool = NodePool(node.home, None, ())
    checkpointer = pool.start_checkpointer()
    try:
        with pool.lend() as lent:
            assert lent.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        checkpointer.stop()  # however it ended, the pool must not keep deferring to a dead thread
        with pool.lend() as lent:
            assert lent.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
    finally:
        checkpointer.stop()
        pool.close()


def test_the_checkpoint_thread_survives_a_failure_and_tries_again(node, monkeypatch):
    from hemei.core import checkpoint

    real_connect, failures = checkpoint.sqlite3.connect, []

    def flaky_connect(*args, **kwargs):
        if not failures:
            failures.append("once")
            raise checkpoint.sqlite3.OperationalError("unable to open database file")
        return real_connect(*args, **kwargs)

    path = node.home / DB_NAME
    defer_checkpoints(node.conn)
    size = path.stat().st_size
    _fill(node, 3000)
    monkeypatch.setattr(checkpoint.sqlite3, "connect", flaky_connect)
    checkpointer = Checkpointer(path, interval_s=0.05).start()
    try:
        deadline = time.monotonic() + 10
        while path.stat().st_size == size and time.monotonic() < deadline:
            time.sleep(0.05)
        assert failures == ["once"] and checkpointer.is_alive()
    finally:
        checkpointer.stop()
    assert path.stat().st_size > size
