"""A bare HTTP push of the same rows: the reference hemei's push is measured against.

No hemei code: a Starlette app under uvicorn that inflates a zlib'd JSON
list of rows and inserts it with one ``executemany`` and one commit, and a
client process that reads the rows from a SQLite file in batches, encodes
each with one ``orjson`` call, compresses it at level 1 and POSTs it, one
request at a time, with a thread preparing the next batch meanwhile. That
is the shape of ``hemei sync``'s push minus the log, the signatures, the
checks and the merge: what HTTP and SQLite alone cost on this machine.

``--lean`` stores what the leanest layout of a verified push would have to
keep, still verifying and merging nothing: each received message once, as
one blob row of a log keyed by (origin, first seq), and each row with the
hidden columns a state row needs (stamp, origin, deleted, and an empty
column-versions field; the origin as a number where hemei today keeps its
63-character node id). Like ``hemei serve`` it leaves WAL checkpoints to
a thread of its own. No design that keeps a log, verifies what it takes in
and takes one message at a time, as hemei's push does, can push faster than
that: it is the ceiling hemei's push is measured against.

    python bench/bare_push.py serve DB PORT [--lean]      # the receiving side
    python bench/bare_push.py push SOURCE_DB URL BATCH
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
import zlib
from queue import Queue

import orjson

COLUMNS = "id TEXT PRIMARY KEY, scope TEXT, volunteer TEXT, activity TEXT, hours REAL, served_on TEXT, note TEXT"
#: A hemei state row's hidden columns (see hemei.core.schema), and the log of whole messages.
LEAN_COLUMNS = COLUMNS + ", _hlc INTEGER, _origin INTEGER, _deleted INTEGER, _colv TEXT"
LEAN_LOG = "CREATE TABLE IF NOT EXISTS log (origin INTEGER, first INTEGER, body BLOB, PRIMARY KEY (origin, first))"
STAMP = 1_795_000_000_000 << 16  # a hybrid logical clock stamp of November 2026, as wide as a real one
ORIGIN = 1  # the sender's number in a table of origins


def connect(path: str, lean: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA cache_size=-8192")
    conn.execute(f"CREATE TABLE IF NOT EXISTS rows ({LEAN_COLUMNS if lean else COLUMNS})")
    if lean:
        conn.execute(LEAN_LOG)
    return conn


def serve(db: str, port: int, lean: bool = False) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import Response
    from starlette.routing import Route

    conn = connect(db, lean)
    lock = threading.Lock()
    received = 0
    if lean:  # as hemei.core.checkpoint does: commits leave the WAL to a thread
        conn.execute("PRAGMA wal_autocheckpoint=0")

        def checkpoint() -> None:
            own = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
            while True:
                time.sleep(0.25)
                own.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

        threading.Thread(target=checkpoint, daemon=True).start()

    def insert(body: bytes) -> int:
        nonlocal received
        rows = orjson.loads(zlib.decompress(body))
        with lock:
            conn.execute("BEGIN")
            if lean:
                conn.execute("INSERT INTO log VALUES (?, ?, ?)", (ORIGIN, received + 1, body))
                conn.executemany("INSERT INTO rows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, NULL)",
                                 [(*row, STAMP + received + i, ORIGIN) for i, row in enumerate(rows, 1)])
            else:
                conn.executemany("INSERT INTO rows VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            conn.execute("COMMIT")
            received += len(rows)
        return len(rows)

    async def push(request):
        count = await run_in_threadpool(insert, await request.body())
        return Response(orjson.dumps({"inserted": count}), media_type="application/json")

    async def health(request):
        return Response(b"{}", media_type="application/json")

    app = Starlette(routes=[Route("/push", push, methods=["POST"]), Route("/health", health)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def push(source: str, url: str, batch: int) -> None:
    import httpx

    queue: Queue = Queue(maxsize=2)

    def produce() -> None:
        cursor = sqlite3.connect(source).execute("SELECT * FROM rows ORDER BY rowid")
        while rows := cursor.fetchmany(batch):
            queue.put(zlib.compress(orjson.dumps(rows), 1))
        queue.put(None)

    threading.Thread(target=produce, daemon=True).start()
    with httpx.Client(base_url=url, timeout=60) as http:
        while (body := queue.get()) is not None:
            http.post("/push", content=body).raise_for_status()


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]), lean="--lean" in sys.argv[4:])
    else:
        push(sys.argv[2], sys.argv[3], int(sys.argv[4]))
