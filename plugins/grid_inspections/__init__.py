"""Grid inspections with closed-loop cases and escalation (网格巡查 / 全科网格): a hemei program module.

Grids, staff and patrols are in :mod:`.grids`; cases, their events and
escalation in :mod:`.cases`, following the state machine and fold of
:mod:`.machine`; figures in :mod:`.metrics`. Each node keeps a local
``case_status`` table, the fold of every case's events (:mod:`.status`),
fresh through the hooks below. See ``docs/grids.md``.
"""

from __future__ import annotations

from hemei.core import Change, ModuleSchema, ReportSection, hookimpl
from hemei.core.fields import is_scoped_key
from hemei.core.scope import covers

from . import cases, commands, metrics, status
from .cases import MAX_DEADLINE_HOURS, SOURCES
from .grids import MAX_HOUSEHOLDS, MAX_PATROLS_PER_DAY, grid_id
from .machine import EVENT_KINDS, LEVELS, RATINGS, is_local_time
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


def _event_actor_from_its_entry(change: Change) -> Change:
    """A case event written at v1 named no operator: its entry's, as v2 writes it (a pure function of the
    change, so every replica upgrading it agrees)."""
    if change.table == "case_events" and change.op == "insert":
        return change._replace(values={**change.values, "actor": change.actor})
    return change


@hookimpl
def module_schema():
    # v2: a case event names the operator who recorded it (`actor`), so a case's history says who did what,
    # not only at which level. A release that reads v1 only keeps v2 changes as `quarantined` until upgraded.
    return ModuleSchema(version=2, upgrades={1: _event_actor_from_its_entry})


@hookimpl
def register_commands():
    # Through the module: `grids` and `cases` are also the names of this package's submodules.
    return [commands.grids, commands.cases]


@hookimpl
def validate_change(node, change):
    """Rows a case's fold can trust, whoever wrote them.

    A case event speaks for the node that wrote it (its ``acting_scope`` is
    the writer's declared scope, or a street could act in its district's
    name), a case is reported by its street or the district above it, and
    every value the fold computes with is well formed, so one bad row from a
    modified node cannot break lists and figures. Each check reads only the
    change and the writer's first entry, which every replica holding the
    change also holds.
    """
    if change.table in DERIVED_KEYS and not DERIVED_KEYS[change.table](change):
        # Keys anyone can compute. Without this a street could insert a sibling's grid or category
        # first (and every later push of that sibling would reach "a row of another street"), or
        # update one before it exists at the district (and keep its values when the insert comes).
        # An honest update or delete carries its row's scope (hemei.core.writer), so it passes.
        return f"a {change.table} row's key is derived from its place; {change.pk!r} is not this row's"
    if change.table in VALUE_RULES and change.op != "delete":
        for column, ok in VALUE_RULES[change.table].items():
            if column in change.values and not ok(change.values[column]):
                return f"a {change.table} row's {column} {change.values[column]!r} is not one the figures can use"
    if change.table == "grid_plans" and change.op == "insert" and change.values.get("grid") != grid_id(change.scope):
        return "a patrol plan's scope is its grid's, and names the grid by its key"
    if change.op != "insert" or change.table not in CASE_TABLES:
        return None
    values, declared = change.values, node.origin_scope(change.origin)
    if declared is None:
        return "the writer of a case row must be known (its first entry held) before its rows are"
    if change.table == "case_events":
        return _event_problem(values, declared, change.actor)
    return _case_problem(change.scope, values, declared)


#: Tables whose keys are computed from the row (the same wherever the row is defined, so two
#: definitions merge): whether a change's key is the one its row's place gives.
DERIVED_KEYS = {
    "grids": lambda change: change.pk == grid_id(change.scope),
    "case_categories": lambda change: is_scoped_key(change, "code"),
}


def _whole(low: int, high: int):
    return lambda value: type(value) is int and low <= value <= high


def _definition(value) -> bool:
    """A grid definition's id: absent (a grid defined before plans had a history) or short text."""
    return value is None or (isinstance(value, str) and 0 < len(value) <= 64)


def _is_date(value) -> bool:
    """``YYYY-MM-DD`` in the years of :func:`is_local_time`."""
    return isinstance(value, str) and is_local_time(f"{value}T00:00:00")


#: What coverage and the case figures compute with, checked on insert and update (a street's own values
#: reach its district's figures): the ranges of the module's own commands. An absent optional value is None.
VALUE_RULES = {
    "grids": {"established": _is_date, "patrols_per_day": _whole(0, MAX_PATROLS_PER_DAY), "definition": _definition,
              "households": lambda value: value is None or _whole(0, MAX_HOUSEHOLDS)(value)},
    "case_categories": {"deadline_hours": _whole(1, MAX_DEADLINE_HOURS), "active": _whole(0, 1)},
    "grid_plans": {"from_day": _is_date, "patrols_per_day": _whole(0, MAX_PATROLS_PER_DAY),
                   "definition": _definition},
}


def _event_problem(values: dict, declared: str, actor: str) -> str | None:
    if values.get("acting_scope") != declared:
        return f"a case event must name the scope of the node that wrote it ({declared})"
    if values.get("actor") != actor:
        return f"a case event must name the operator of the entry that wrote it ({actor})"
    if values.get("kind") not in EVENT_KINDS:
        return f"unknown case event kind {values.get('kind')!r}"
    if not is_local_time(values.get("at")):
        return "a case event needs its time as YYYY-MM-DDTHH:MM:SS"
    if values.get("level") not in (None, *LEVELS) or values.get("rating") not in (None, *RATINGS):
        return "a case event's level or rating is not one the module knows"
    if values.get("auto") not in (None, 0, 1):
        return "a case event's auto flag must be 0 or 1"
    return None


def _case_problem(scope: str, values: dict, declared: str) -> str | None:
    street, district = values.get("street") or "", values.get("district") or ""
    if not covers(street, scope) or street.rsplit("/", 1)[0] != district:
        return "a case must lie inside its street, and name the district above that street"
    if values.get("grid") != grid_id(scope) or not scope.startswith(f"{street}/{values.get('community')}/"):
        return "a case's scope is its grid's: inside its street and community, and named by the grid's key"
    if declared not in (street, district):
        return f"a case in {street} is reported by that street or its district, not by {declared}"
    if not is_local_time(values.get("reported_at")):
        return "a case needs its report time as YYYY-MM-DDTHH:MM:SS"
    hours = values.get("deadline_hours")
    if isinstance(hours, bool) or not isinstance(hours, int) or not 1 <= hours <= MAX_DEADLINE_HOURS:
        return f"a case's deadline must be 1 to {MAX_DEADLINE_HOURS} hours"
    if values.get("source") not in SOURCES:
        return f"a case's source must be one of {', '.join(SOURCES)}"
    return None


#: The actor under which this module writes on its own (escalations when a deadline passes).
MODULE_ACTOR = "grid_inspections"


@hookimpl
def tick(node):
    """Escalate the cases whose level deadline passed: while served, every minute; at every sync."""
    cases.escalate_overdue(node, MODULE_ACTOR)


@hookimpl
def change_applied(node, changes):
    status.after_changes(node, changes)


@hookimpl
def tables_rebuilt(node, tables):
    if set(CASE_TABLES) & set(tables):
        status.refresh_all(node)


@hookimpl
def report_sections(node, scope):
    data = metrics.stats(node, scope=scope, known_only=False)
    keep = ("rank", "name", "street", "cases", "response_rate", "resolution_rate", "on_time_rate", "rework_rate",
            "satisfaction_rate", "patrol_coverage", "open", "overdue")
    return [
        ReportSection("grid_inspections", f"Grid cases by street, ranked ({data['from']} to {data['to']})",
                      totals=data["totals"], rows=[{k: r[k] for k in keep} for r in data["streets"]]),
        ReportSection("grid_inspections", "Grid cases by category", rows=[
            {"category": c["category"], "cases": c["cases"], "resolved": c["resolved"]} for c in data["categories"]]),
    ]
