"""Keeps the local ``case_status`` table equal to the fold of each case's events.

Called for every case whose row or events changed (local writes and
received batches, through ``change_applied``) and for all cases after
``hemei rebuild``. The table is a cache: dropping its rows and calling
:func:`refresh_all` gives the same table back.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from hemei.core import Node

from .machine import SATISFIED, due_after, fold, level_due
from .tables import FLAGS

#: Cases folded per query: bounded memory however many cases a batch touched.
CHUNK = 500

CASE_COLUMNS = "id, scope, grid, street, district, community, category, deadline_hours, reported_at"
EVENT_COLUMNS = ("id, scope, case_id, kind, at, acting_scope, level, assignee, note, rating, duplicate_of, auto,"
                 " actor, _hlc, _origin")
_STATUS_COLUMNS = ("case_id", "ref", "street", "community", "grid", "category", "reported_at", "due", "state",
                   "level", "level_due", "assignee", "responded_at", "handled_at", "closed_at", "evaluated_at",
                   "rating", "reworks", "escalations", "events", "not_applied")
_UPSERT = (f"INSERT OR REPLACE INTO case_status ({', '.join(_STATUS_COLUMNS)})"
           f" VALUES ({', '.join('?' * len(_STATUS_COLUMNS))})")
#: Characters at the end of a case id that name it in lists and commands.
REF_LENGTH = 8


def refresh(node: Node, case_ids: Iterable[str]) -> None:
    """Recompute the status rows of these cases (ids of cases not held yet are skipped)."""
    ids = sorted(set(case_ids))
    for start in range(0, len(ids), CHUNK):
        _in_transaction(node, lambda chunk=ids[start:start + CHUNK]: _refresh_chunk(node, chunk))


def refresh_all(node: Node) -> None:
    """Recompute every status row (after ``hemei rebuild``, which renumbers rows)."""
    def clear():
        for table in ("case_status", "case_grid_day", "case_category_day"):
            node.conn.execute(f"DELETE FROM {table}")
        _set_marks(node, 0, 0)

    _in_transaction(node, clear)
    ensure_fresh(node)


def after_changes(node: Node, changes) -> None:
    """Refresh the cases a committed batch touched; move the marks past its rows if none were missed."""
    ids = touched_cases(changes)
    if not ids:
        return
    refresh(node, ids)
    cases_mark, events_mark = _marks(node)
    new_cases = sum(1 for c in changes if c.table == "cases" and c.op == "insert")
    new_events = sum(1 for c in changes if c.table == "case_events" and c.op == "insert")
    unseen_cases = node.conn.execute("SELECT count(*), max(rowid) FROM cases WHERE rowid > ?",
                                     (cases_mark,)).fetchone()
    unseen_events = node.conn.execute("SELECT count(*), max(rowid) FROM case_events WHERE rowid > ?",
                                      (events_mark,)).fetchone()
    if unseen_cases[0] == new_cases and unseen_events[0] == new_events:
        _set_marks(node, unseen_cases[1] or cases_mark, unseen_events[1] or events_mark)


def ensure_fresh(node: Node) -> None:
    """Fold the cases whose row or events came in past the marks: those whose refresh a crash
    interrupted. Two index range scans when nothing is missing."""
    cases_mark, events_mark = _marks(node)
    ids = {r[0] for r in node.conn.execute("SELECT id FROM cases WHERE rowid > ?", (cases_mark,))}
    ids.update(r[0] for r in node.conn.execute("SELECT case_id FROM case_events WHERE rowid > ?", (events_mark,)))
    if not ids:
        return
    refresh(node, ids)
    top_case = node.conn.execute("SELECT max(rowid) FROM cases").fetchone()[0] or 0
    top_event = node.conn.execute("SELECT max(rowid) FROM case_events").fetchone()[0] or 0
    _set_marks(node, top_case, top_event)


def _marks(node: Node) -> tuple[int, int]:
    row = node.conn.execute("SELECT cases_rowid, events_rowid FROM case_status_mark WHERE id = 1").fetchone()
    return (row[0], row[1]) if row else (0, 0)


def _set_marks(node: Node, cases_rowid: int, events_rowid: int) -> None:
    node.conn.execute("INSERT OR REPLACE INTO case_status_mark (id, cases_rowid, events_rowid) VALUES (1, ?, ?)",
                      (cases_rowid, events_rowid))


def _in_transaction(node: Node, work) -> None:
    node.conn.execute("BEGIN IMMEDIATE")
    try:
        work()
        node.conn.execute("COMMIT")
    except BaseException:
        node.conn.execute("ROLLBACK")
        raise


_FLAG_SOURCE = "state, responded_at, handled_at, due, reworks, rating, escalations"
_GRID_DAY_UPSERT = (
    f"INSERT INTO case_grid_day (grid, day, street, community, {', '.join(FLAGS)})"
    f" VALUES (?, ?, ?, ?, {', '.join('?' * len(FLAGS))}) ON CONFLICT (grid, day) DO UPDATE SET "
    + ", ".join(f"{f} = {f} + excluded.{f}" for f in FLAGS))
_CATEGORY_DAY_UPSERT = (
    "INSERT INTO case_category_day (street, category, day, cases, resolved) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (street, category, day) DO UPDATE SET cases = cases + excluded.cases,"
    " resolved = resolved + excluded.resolved")


#: States of a resolved case.
RESOLVED_STATES = ("closed", "evaluated")


def flags(row: dict) -> tuple[int, ...]:
    """A case's contribution to each count of ``FLAGS`` (the definitions metrics.py documents)."""
    resolved = row["state"] in RESOLVED_STATES
    return (1, row["responded_at"] is not None, row["state"] not in ("rejected", "duplicate"), resolved,
            resolved and row["handled_at"] is not None and row["handled_at"] <= row["due"],
            row["handled_at"] is not None or row["reworks"] > 0, row["reworks"] > 0, row["rating"] is not None,
            row["rating"] in SATISFIED, row["escalations"] > 0)


def _refresh_chunk(node: Node, ids: list[str]) -> None:
    marks = ", ".join("?" * len(ids))
    cases = {r["id"]: r for r in node.db.query(f"SELECT {CASE_COLUMNS} FROM cases WHERE id IN ({marks})", ids)}
    events = defaultdict(list)
    for e in node.db.query(f"SELECT {EVENT_COLUMNS} FROM case_events WHERE case_id IN ({marks})", ids):
        events[e["case_id"]].append(e)
    before = {r["case_id"]: r for r in node.db.query(
        f"SELECT case_id, grid, street, community, category, reported_at, {_FLAG_SOURCE} FROM case_status"
        f" WHERE case_id IN ({marks})", ids)}
    rows = []
    grid_days: dict[tuple, list[int]] = defaultdict(lambda: [0] * len(FLAGS))
    category_days: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])

    def count(row: dict, sign: int) -> None:
        day = row["reported_at"][:10]
        values = flags(row)
        totals = grid_days[row["grid"], day, row["street"], row["community"]]
        for i, value in enumerate(values):
            totals[i] += sign * value
        per_category = category_days[row["street"], row["category"], day]
        per_category[0] += sign
        per_category[1] += sign * values[3]

    for case_id, case in cases.items():
        s = fold(case, events[case_id])
        row = {"case_id": case_id, "ref": case_id[-REF_LENGTH:], "street": case["street"],
               "community": case["community"], "grid": case["grid"], "category": case["category"],
               "reported_at": case["reported_at"], "due": due_after(case["reported_at"], case["deadline_hours"]),
               "state": s.state, "level": s.level, "level_due": level_due(case, s), "assignee": s.assignee,
               "responded_at": s.responded_at, "handled_at": s.handled_at, "closed_at": s.closed_at,
               "evaluated_at": s.evaluated_at, "rating": s.rating, "reworks": s.reworks,
               "escalations": s.escalations, "events": len(s.verdicts),
               "not_applied": sum(1 for v in s.verdicts if v is not None)}
        rows.append(tuple(row[c] for c in _STATUS_COLUMNS))
        if case_id in before:
            count(before[case_id], -1)
        count(row, +1)
    node.conn.executemany(_UPSERT, rows)
    node.conn.executemany(_GRID_DAY_UPSERT, [(*key, *totals) for key, totals in grid_days.items() if any(totals)])
    node.conn.executemany(_CATEGORY_DAY_UPSERT,
                          [(*key, *totals) for key, totals in category_days.items() if any(totals)])


def touched_cases(changes) -> set[str]:
    """Ids of the cases whose row or events are among ``changes``."""
    ids = set()
    for c in changes:
        if c.table == "cases" and c.op == "insert":
            ids.add(c.pk)
        elif c.table == "case_events" and c.op == "insert" and c.values.get("case_id"):
            ids.add(c.values["case_id"])
    return ids
