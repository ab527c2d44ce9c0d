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
closing the last connection checkpoints what is left. The thread keeps
going through any error (logged, retried next time); should it still end,
the server's pool gives its connections SQLite's default back
(:meth:`hemei.core.api.NodePool.lend`), so the WAL cannot grow without
bound.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

logger = logging.getLogger("hemei")

#: Seconds between two checkpoints: the WAL stays within a few MB during a large push.
INTERVAL_S = 0.25
#: Longest wait between two attempts while checkpoints keep failing (logged once, not every time).
MAX_BACKOFF_S = 30.0


#: SQLite's own default: a commit that takes the WAL past this many pages checkpoints it.
DEFAULT_AUTOCHECKPOINT = 1000


def defer_checkpoints(conn: sqlite3.Connection) -> None:
    """Let ``conn``'s commits leave the WAL to a :class:`Checkpointer`."""
    conn.execute("PRAGMA wal_autocheckpoint=0")


def checkpoint_at_commit(conn: sqlite3.Connection) -> None:
    """Give ``conn`` SQLite's default back (no :class:`Checkpointer` running)."""
    conn.execute(f"PRAGMA wal_autocheckpoint={DEFAULT_AUTOCHECKPOINT}")


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

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        conn, wait, failing = None, 0.0, False
        try:
            while not self._stop.wait(wait):
                try:
                    if conn is None:
                        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if failing:
                        logger.warning("WAL checkpoints work again")
                    wait, failing = self.interval_s, False
                except Exception:  # e.g. the disk is full: requests will say so; try again, less often
                    if not failing:
                        logger.exception("WAL checkpoint failed; retrying with backoff")
                    wait, failing = min(MAX_BACKOFF_S, max(wait, self.interval_s) * 2), True
        finally:
            if conn is not None:
                conn.close()
