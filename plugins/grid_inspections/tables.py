"""The module's synced tables, their merge policies, and the local case-status table.

Grids, staff and the category catalogue change over time: lww. A grid's key
is derived from its scope path, so the same grid defined at the district and
at its street is one row, not two. Patrol check-ins, cases and case events
are facts: append-only. A case row holds only what was reported; everything
that happened to it is an event (:mod:`.machine`).

``case_status`` is not synced: each node derives it from ``cases`` and
``case_events`` with the same fold (:mod:`.status`), so lists and metrics
read one row per case instead of replaying events.
"""

from __future__ import annotations

from hemei.core import APPEND_ONLY, LWW, MigrationSet, TableSpec

GRIDS = TableSpec(
    "grids",
    {"id": "text", "scope": "text", "code": "text", "name": "text", "street": "text", "community": "text",
     "parent": "text", "households": "integer", "patrols_per_day": "integer", "established": "text",
     "definition": "text"},
    policy=LWW, required=("code", "name", "street", "community", "patrols_per_day", "established"),
    indexes=(("code",), ("street",)))
STAFF = TableSpec(
    "grid_staff", {"id": "text", "scope": "text", "grid": "text", "name": "text", "role": "text"},
    policy=LWW, required=("grid", "name", "role"), indexes=(("grid",),))
PATROLS = TableSpec(
    "grid_patrols",
    {"id": "text", "scope": "text", "grid": "text", "street": "text", "worker": "text", "at": "text",
     "day": "text", "note": "text"},
    policy=APPEND_ONLY, required=("grid", "street", "worker", "at", "day"), indexes=(("day", "grid"),))
#: A grid's patrol plan over time: each change is a fact from its day on, so changing the plan does not
#: rewrite the coverage of the days before it. The plan on a day is that of the latest row from that day
#: or before (the later stamped, for two rows from one day); before the first row, the first row's. A row
#: names the grid's ``definition`` (a random id each time the grid is defined anew): a grid removed and
#: defined again starts with no history.
PLANS = TableSpec(
    "grid_plans",
    {"id": "text", "scope": "text", "grid": "text", "definition": "text", "from_day": "text",
     "patrols_per_day": "integer"},
    policy=APPEND_ONLY, required=("grid", "from_day", "patrols_per_day"), indexes=(("grid",),))
CATEGORIES = TableSpec(
    "case_categories",
    {"id": "text", "scope": "text", "code": "text", "name": "text", "deadline_hours": "integer",
     "active": "integer"},
    policy=LWW, required=("code", "name", "deadline_hours"))
CASES = TableSpec(
    "cases",
    {"id": "text", "scope": "text", "grid": "text", "street": "text", "district": "text", "community": "text",
     "category": "text", "deadline_hours": "integer", "place": "text", "description": "text",
     "reporter": "text", "source": "text", "patrol": "text", "reported_at": "text"},
    policy=APPEND_ONLY,
    required=("grid", "street", "district", "community", "category", "deadline_hours", "description", "reporter",
              "source", "reported_at"),
    indexes=(("grid",),))
EVENTS = TableSpec(
    "case_events",
    {"id": "text", "scope": "text", "case_id": "text", "kind": "text", "at": "text", "acting_scope": "text",
     "level": "text", "assignee": "text", "note": "text", "rating": "text", "duplicate_of": "text",
     "auto": "integer", "actor": "text"},
    policy=APPEND_ONLY, required=("case_id", "kind", "at", "acting_scope"), indexes=(("case_id",),))

TABLES = [GRIDS, STAFF, PATROLS, PLANS, CATEGORIES, CASES, EVENTS]
#: Per-case yes/no figures summed in the daily summaries (status.flags computes them).
FLAGS = ("cases", "responded", "accepted", "resolved", "on_time", "handled", "reworked", "evaluated", "satisfied",
         "escalated")
#: Synced tables the local case status is derived from.
CASE_TABLES = ("cases", "case_events")

migrations = MigrationSet("grid_inspections")


@migrations.step
def grid_0001_case_status(db):
    # One row per case, recomputed from its events whenever they change; see status.py.
    # ref is the end of the case id that lists print and commands accept.
    db.execute("""CREATE TABLE IF NOT EXISTS case_status (
        case_id TEXT PRIMARY KEY, ref TEXT NOT NULL, street TEXT NOT NULL, community TEXT NOT NULL,
        grid TEXT NOT NULL, category TEXT NOT NULL, reported_at TEXT NOT NULL, due TEXT NOT NULL,
        state TEXT NOT NULL, level TEXT NOT NULL, level_due TEXT NOT NULL, assignee TEXT, responded_at TEXT,
        handled_at TEXT, closed_at TEXT, evaluated_at TEXT, rating TEXT, reworks INTEGER NOT NULL,
        escalations INTEGER NOT NULL, events INTEGER NOT NULL, not_applied INTEGER NOT NULL)""")
    db.execute("CREATE INDEX IF NOT EXISTS case_status_ref ON case_status (ref)")
    db.execute("CREATE INDEX IF NOT EXISTS case_status_street ON case_status (street, reported_at)")
    db.execute("CREATE INDEX IF NOT EXISTS case_status_reported ON case_status (reported_at, case_id)")
    db.execute("CREATE INDEX IF NOT EXISTS case_status_grid ON case_status (grid, reported_at)")
    db.execute("CREATE INDEX IF NOT EXISTS case_status_open ON case_status (state, level_due)")
    # How far into cases and case_events (by rowid) every case is known to be folded.
    db.execute("CREATE TABLE IF NOT EXISTS case_status_mark (id INTEGER PRIMARY KEY CHECK (id = 1),"
               " cases_rowid INTEGER NOT NULL, events_rowid INTEGER NOT NULL)")


@migrations.step
def grid_0002_daily_summaries(db):
    # Figures per grid and report day, and per street, category and day: kept in step with case_status
    # (each refresh subtracts a case's old flags and adds its new ones), so stats sum a few
    # thousand rows instead of reading every case. See metrics.py for what each count means.
    db.execute(f"""CREATE TABLE IF NOT EXISTS case_grid_day (
        grid TEXT NOT NULL, day TEXT NOT NULL, street TEXT NOT NULL, community TEXT NOT NULL,
        {", ".join(f"{flag} INTEGER NOT NULL" for flag in FLAGS)}, PRIMARY KEY (grid, day))""")
    db.execute("CREATE INDEX IF NOT EXISTS case_grid_day_street ON case_grid_day (street, day)")
    db.execute("""CREATE TABLE IF NOT EXISTS case_category_day (
        street TEXT NOT NULL, category TEXT NOT NULL, day TEXT NOT NULL, cases INTEGER NOT NULL,
        resolved INTEGER NOT NULL, PRIMARY KEY (street, category, day))""")
    # Summaries are built by refreshing cases: fold every case again on the next read.
    db.execute("DELETE FROM case_status")
    db.execute("DELETE FROM case_status_mark")
