"""Volunteer hours and the time bank (志愿服务 / 义工时间银行): a hemei program module.

Everything reaches the core through hooks: tables and merge policies
(:mod:`.tables`), routes (:mod:`.routes`), the ``hemei volunteers`` commands
(:mod:`.commands`), reactions to synced changes (key grants, below) and the
district roll-up (:mod:`.rollup`). The operations themselves live in
:mod:`.registry` (people, teams, activities) and :mod:`.ledger` (hours and
the time bank); personal data handling in :mod:`.pii` and :mod:`.keys`.
See ``docs/volunteers.md``.
"""

from __future__ import annotations

from hemei.core import ModuleSchema, ReportSection, hookimpl
from hemei.core.fields import is_scoped_key
from hemei.core.merge import UNREADABLE

from . import keys, ledger, rollup
from .commands import volunteers
from .routes import ROUTES
from .tables import TABLES, migrations

#: The actor under which this module writes on its own (key grants).
MODULE_ACTOR = "volunteer_hours"


@hookimpl
def register_tables():
    return TABLES


@hookimpl
def register_migrations():
    return [migrations]


@hookimpl
def module_schema():
    # v2: a correction may correct a correction not confirmed yet (which then never counts), and its
    # confirmation counts the change from the nearest confirmed entry up the chain. A release that reads
    # v1 only would keep such a confirmation as a conflict; a newer change waits there as `quarantined`
    # instead, and the upgrade's replay applies it. Nothing changed shape: no upgrade step.
    return ModuleSchema(version=2)


@hookimpl
def register_routes():
    return ROUTES


@hookimpl
def register_commands():
    return [volunteers]


@hookimpl
def validate_change(node, change):
    """Rules that keep accounts and keys sound when rows arrive from other nodes.

    Each depends only on the change and on earlier entries of the same
    origin (or its declared scope), which every replica holding the change
    also holds: replicas agree whatever order entries arrived in.
    """
    if change.op == UNREADABLE:
        return None
    table = change.table
    if table in DERIVED_KEYS and not is_scoped_key(change, DERIVED_KEYS[table]):
        # Keys anyone can compute: a street could otherwise insert a sibling's key first (and wedge
        # that sibling's pushes) or update it before it exists at the district.
        return f"a {table} row's key is derived from its scope; {change.pk!r} is not this row's"
    # What the accounts, balances and rankings add up is checked here, or one bad row from a modified
    # street would skew other streets' figures (or overflow a sum and break the report for good).
    if table == "volunteer_confirmations" and change.op == "insert":
        return ledger.received_confirmation_problem(node.conn, change.scope, change.values, change.origin)
    elif table == "volunteer_hours" and change.op == "insert":
        if change.values.get("corrects"):
            problem = ledger.received_correction_problem(node.conn, change.scope, change.values, change.origin)
            if problem:
                return problem
        return ledger.received_hours_problem(change.values)
    elif table == "volunteer_redemptions" and change.op == "insert":
        return ledger.received_redemption_problem(node.conn, change.values, change.origin)
    elif table == "volunteer_settings" and change.op != "delete" and change.values.get("value") is not None:
        if change.pk.endswith("|stars") and ledger.parse_star_thresholds(change.values["value"]) is None:
            return "star thresholds are five increasing positive numbers of hours"
    elif table == "volunteer_key_requests" and change.pk != change.origin:
        return "a node requests the volunteer key for itself only"
    elif table == "volunteer_key_grants" and change.op == "insert":
        if change.values.get("grantor_scope") != node.origin_scope(change.origin):
            return "a key grant must name the scope of the node that wrote it"
    return None


#: Tables whose keys are ``<scope>|<value of this column>`` (one row per node and code or name).
DERIVED_KEYS = {"volunteer_categories": "code", "volunteer_settings": "name"}


@hookimpl
def change_applied(node, changes):
    requests = [c.pk for c in changes if c.table == "volunteer_key_requests" and not c.local]
    if requests:
        keys.grant_requests(node, MODULE_ACTOR, requests)
    if any(c.table == "volunteer_key_grants" and c.values.get("request") == node.id for c in changes):
        keys.forget_cached(node)


@hookimpl
def tables_rebuilt(node, tables):
    # A replay (the module enabled late, an upgrade, `hemei rebuild`) calls no change_applied: requests
    # it brought into the table are granted here, and a grant it brought in replaces any cached key.
    if "volunteer_key_requests" in tables:
        keys.grant_requests(node, MODULE_ACTOR)
    if "volunteer_key_grants" in tables:
        keys.forget_cached(node)


@hookimpl
def report_sections(node, scope):
    data = rollup.rollup(node, scope, known_only=False)  # resolved by the core
    return [
        ReportSection("volunteer_hours", "Volunteer hours by unit (ranked)", totals=data["totals"],
                      rows=data["units"]),
        ReportSection("volunteer_hours", "Volunteer hours by team", rows=data["teams"]),
        ReportSection("volunteer_hours", "Volunteer hours by category", rows=data["categories"]),
        ReportSection("volunteer_hours", "Star volunteers", totals=data["stars"]["people"]),
    ]
