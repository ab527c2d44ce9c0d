"""The module's synced tables, their merge policies, and its migrations.

Registrations, teams, activities and attendance change over time: lww.
Everything that counts hours is append-only, so a district can always
recompute a balance from the entries and an auditor can see every step:
hour entries (a correction is a new entry naming the one it corrects),
confirmations, redemptions, key grants.

Columns copied from an hour entry onto its confirmation (person, team,
category, date, delta_cents) let the district roll up from one table without a
join; they are fixed when the confirmation is written and never change.
"""

from __future__ import annotations

from hemei.core import APPEND_ONLY, LWW, MigrationSet, TableSpec

KEY_REQUESTS = TableSpec(
    "volunteer_key_requests", {"id": "text", "scope": "text", "public_key": "text"},
    policy=LWW, required=("public_key",))
KEY_GRANTS = TableSpec(
    "volunteer_key_grants",
    {"id": "text", "scope": "text", "request": "text", "key_id": "text", "grantor_scope": "text", "sealed": "text"},
    policy=APPEND_ONLY, required=("request", "key_id", "grantor_scope", "sealed"), indexes=(("request",),))
SETTINGS = TableSpec(
    "volunteer_settings", {"id": "text", "scope": "text", "name": "text", "value": "text"},
    policy=LWW, required=("name", "value"))
CATEGORIES = TableSpec(
    "volunteer_categories", {"id": "text", "scope": "text", "code": "text", "name": "text", "active": "integer"},
    policy=LWW, required=("code", "name"))
TEAMS = TableSpec(
    "volunteer_teams", {"id": "text", "scope": "text", "name": "text", "leader": "text", "note": "text"},
    policy=LWW, required=("name",), indexes=(("name",),))
VOLUNTEERS = TableSpec(
    "volunteers",
    {"id": "text", "scope": "text", "name": "text", "person": "text", "id_number_enc": "text",
     "phone_enc": "text", "phone_key": "text", "party_member": "integer", "skills": "text", "team": "text",
     "key_id": "text", "registered_on": "text"},
    policy=LWW, required=("name", "person", "key_id"),
    indexes=(("person",), ("phone_key",), ("name",)))
ACTIVITIES = TableSpec(
    "volunteer_activities",
    {"id": "text", "scope": "text", "title": "text", "category": "text", "date": "text", "place": "text",
     "capacity": "integer", "team": "text", "organiser": "text"},
    policy=LWW, required=("title", "category", "date"))
SIGNUPS = TableSpec(
    "volunteer_signups", {"id": "text", "scope": "text", "activity": "text", "volunteer": "text"},
    policy=APPEND_ONLY, required=("activity", "volunteer"), unique=("activity", "volunteer"))
ATTENDANCE = TableSpec(
    "volunteer_attendance",
    {"id": "text", "scope": "text", "activity": "text", "volunteer": "text", "person": "text", "status": "text"},
    policy=LWW, required=("activity", "volunteer", "status"), indexes=(("activity",),))
HOURS = TableSpec(
    "volunteer_hours",
    {"id": "text", "scope": "text", "volunteer": "text", "person": "text", "activity": "text", "team": "text",
     "category": "text", "served_on": "text", "sign_in": "text", "sign_out": "text", "hours": "real",
     "corrects": "text", "reason": "text"},
    # One correction per entry: two made offline at once keep the earliest, the other is a conflict.
    policy=APPEND_ONLY, required=("volunteer", "person", "activity", "hours"), unique=("corrects",),
    indexes=(("person",), ("activity",)))
CONFIRMATIONS = TableSpec(
    "volunteer_confirmations",
    {"id": "text", "scope": "text", "hour": "text", "volunteer": "text", "person": "text", "team": "text",
     "category": "text", "served_on": "text", "delta_cents": "integer"},
    policy=APPEND_ONLY, required=("hour", "person", "delta_cents"), unique=("hour",),
    indexes=(("person",),))
REDEMPTIONS = TableSpec(
    "volunteer_redemptions",
    {"id": "text", "scope": "text", "volunteer": "text", "person": "text", "hours": "real", "item": "text",
     "note": "text"},
    policy=APPEND_ONLY, required=("person", "hours", "item"), indexes=(("person",),))

TABLES = [KEY_REQUESTS, KEY_GRANTS, SETTINGS, CATEGORIES, TEAMS, VOLUNTEERS, ACTIVITIES, SIGNUPS, ATTENDANCE,
          HOURS, CONFIRMATIONS, REDEMPTIONS]

migrations = MigrationSet("volunteer_hours")


@migrations.step
def volunteer_0001_rollup_indexes(db):
    # Covering indexes for the district roll-up: one pass over confirmations per grouping.
    db.execute("CREATE INDEX IF NOT EXISTS volunteer_confirmations_rollup"
               " ON volunteer_confirmations (scope, team, category, delta_cents, served_on)")
    db.execute("CREATE INDEX IF NOT EXISTS volunteer_confirmations_people"
               " ON volunteer_confirmations (scope, person, delta_cents, served_on)")
    db.execute("CREATE INDEX IF NOT EXISTS volunteer_confirmations_account"
               " ON volunteer_confirmations (person, _origin, delta_cents)")
    db.execute("CREATE INDEX IF NOT EXISTS volunteer_redemptions_account"
               " ON volunteer_redemptions (person, _origin, hours)")

#: Tables whose rows make a place known to a report or an export: people, teams, activities and hours
#: recorded there (a mistyped place is refused instead of reading as zeros).
HELD_PLACES = ("volunteers", "volunteer_teams", "volunteer_activities", "volunteer_hours")
