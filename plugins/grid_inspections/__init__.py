"""Grid inspections with closed-loop cases and escalation (网格巡查 / 全科网格): a hemei program module.

Grids, staff and patrols are in :mod:`.grids`; cases, their events and
escalation in :mod:`.cases`, following the state machine and fold of
:mod:`.machine`; figures in :mod:`.metrics`. Each node keeps a local
``case_status`` table, the fold of every case's events (:mod:`.status`),
fresh through the hooks below. See ``docs/grids.md``.
"""

from __future__ import annotations

from hemei.core import ReportSection, hookimpl
from hemei.core.scope import covers

from . import commands, metrics, status
from .routes import ROUTES
from .tables import CASE_TABLES, TABLES, migrations


@hookimpl
def register_tables():
    return TABLES


@hookimpl
def register_migrations():
    return [migrations]


@hookimpl
def register_routes():
    return ROUTES


@hookimpl
def register_commands():
    # Through the module: `grids` and `cases` are also the names of this package's submodules.
    return [commands.grids, commands.cases]


@hookimpl
def validate_change(node, change):
    """A case event speaks for the node that wrote it, and a case lies inside its street.

    The fold decides who may act on a case by the event's ``acting_scope``;
    that must be the writer's declared scope, or a street could act in its
    district's name. Both checks read only the change and the writer's first
    entry, which every replica holding the change also holds.
    """
    if change.op != "insert":
        return None
    values = change.values
    if change.table == "case_events":
        declared = node.origin_scope(change.origin)
        if declared is not None and values.get("acting_scope") != declared:
            return f"a case event must name the scope of the node that wrote it ({declared})"
    elif change.table == "cases":
        street, district = values.get("street") or "", values.get("district") or ""
        if not covers(street, change.scope) or street.rsplit("/", 1)[0] != district:
            return "a case must lie inside its street, and name the district above that street"
    return None


@hookimpl
def change_applied(node, changes):
    status.after_changes(node, changes)


@hookimpl
def tables_rebuilt(node, tables):
    if set(CASE_TABLES) & set(tables):
        status.refresh_all(node)


@hookimpl
def report_sections(node, scope):
    data = metrics.stats(node, scope=scope)
    keep = ("rank", "street", "cases", "response_rate", "resolution_rate", "on_time_rate", "rework_rate",
            "satisfaction_rate", "patrol_coverage", "open", "overdue")
    return [
        ReportSection("grid_inspections", f"Grid cases by street, ranked ({data['from']} to {data['to']})",
                      totals=data["totals"], rows=[{k: r[k] for k in keep} for r in data["streets"]]),
        ReportSection("grid_inspections", "Grid cases by category", rows=[
            {"category": c["category"], "cases": c["cases"], "resolved": c["resolved"]} for c in data["categories"]]),
    ]
