"""Moving SQLite's WAL checkpoints off the request path of ``hemei serve``.

In WAL mode every commit appends pages to the ``-wal`` file, and by
default the commit that takes the WAL past 1,000 pages also copies it back
into the database file (a *checkpoint*) before it returns. On a district
receiving a street's backlog that was a tenth of the time of each push
(bench/bench_sync.py). A served node's connections therefore do not
checkpoint; this thread does, on its own connection, every fraction of a
second, as a PASSIVE checkpoint: it copies what no reader still needs and
never waits for, or blocks, a writer. SQLite does that work with the GIL
released, so on a machine with a second core it runs beside the requests.

Command-line processes keep SQLite's default (checkpoint at commit), and
closing the last connection checkpoints what is left, so nothing depends
on this thread for correctness: only where the time is spent.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

logger = logging.getLogger("hemei")

#: Seconds between two checkpoints: the WAL stays within a few MB during a large push.
INTERVAL_S = 0.25


def defer_checkpoints(conn: sqlite3.Connection) -> None:
    """Let ``conn``'s commits leave the WAL to a :class:`Checkpointer`."""
    conn.execute("PRAGMA wal_autocheckpoint=0")


class Checkpointer:
    """A daemon thread that checkpoints the WAL of the database at ``path`` until :meth:`stop`."""

    def __init__(self, path: Path, interval_s: float = INTERVAL_S):
        self.path = path
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hemei-wal-checkpoint", daemon=True)

    def start(self) -> Checkpointer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            while True:
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error:  # e.g. the disk is full: requests will say so; try again later
                    logger.exception("WAL checkpoint failed")
                if self._stop.wait(self.interval_s):
                    return
        finally:
            conn.close()
