"""HTTP routes under /api/grids and /api/cases: the CLI's operations, roles enforced by the core.

Viewers read; operators check in patrols, report cases and move them on;
admins define grids, staff and the category catalogue.
"""

from __future__ import annotations

from hemei.core import ApiCall, ApiRoute
from hemei.core.fields import query_flag

from . import cases, grids, metrics
from .machine import EVENT_KINDS

GRIDS, CASES = "/api/grids", "/api/cases"
_TRANSITION_FIELDS = {"at", "note", "assignee", "rating", "duplicate_of", "level"}


def add_grid(call: ApiCall):
    b = call.fields({"code", "name", "community", "parent", "street", "households", "patrols_per_day",
                     "established", "new_street"}, ("code", "name"))
    return grids.add_grid(call.node, call.actor, **b)


def list_grids(call: ApiCall):
    return grids.list_grids(call.node, call.query.get("street"))


def get_grid(call: ApiCall):
    return grids.get_grid(call.node, grids.find_grid(call.node, call.path_params["grid"])["id"])


def remove_grid(call: ApiCall):
    return grids.remove_grid(call.node, call.actor, call.path_params["grid"])


def set_plan(call: ApiCall):
    b = call.fields({"patrols_per_day", "from"}, ("patrols_per_day",))
    return grids.set_plan(call.node, call.actor, call.path_params["grid"], b["patrols_per_day"],
                          from_day=b.get("from"))


def add_staff(call: ApiCall):
    b = call.fields({"name", "role"}, ("name", "role"))
    return grids.add_staff(call.node, call.actor, call.path_params["grid"], **b)


def remove_staff(call: ApiCall):
    return grids.remove_staff(call.node, call.actor, call.path_params["id"])


def check_in(call: ApiCall):
    b = call.fields({"worker", "at", "note"}, ("worker",))
    return grids.check_in(call.node, call.actor, call.path_params["grid"], **b)


def coverage(call: ApiCall):
    q = call.query
    return grids.coverage(call.node, q.get("from"), q.get("to"), q.get("street"))


def report_case(call: ApiCall):
    b = call.fields({"grid", "category", "description", "reporter", "source", "place", "patrol", "at",
                     "on_the_spot"}, ("grid", "category", "description", "reporter"))
    return cases.report(call.node, call.actor, **b)


def list_cases(call: ApiCall):
    q = call.query
    return cases.list_cases(call.node, state=q.get("state"), level=q.get("level"), grid=q.get("grid"),
                            street=q.get("street"), open_only=query_flag(q.get("open"), "open"),
                            overdue=query_flag(q.get("overdue"), "overdue"), limit=q.get("limit", 200))


def show_case(call: ApiCall):
    return cases.show(call.node, call.path_params["id"])


def transition(call: ApiCall):
    b = call.fields(_TRANSITION_FIELDS | {"kind"}, ("kind",))
    kind = b.pop("kind")
    return cases.transition(call.node, call.actor, call.path_params["id"], kind, **b)


def escalate_overdue(call: ApiCall):
    call.fields(set())
    return cases.escalate_overdue(call.node, call.actor)


def list_categories(call: ApiCall):
    return [{"code": code, **c} for code, c in cases.categories(call.node).items()]


def set_category(call: ApiCall):
    b = call.fields({"code", "name", "deadline_hours", "active"}, ("code", "name", "deadline_hours"))
    return cases.set_category(call.node, call.actor, **b)


def stats(call: ApiCall):
    q = call.query
    return metrics.stats(call.node, start=q.get("from"), end=q.get("to"), scope=q.get("scope"))


_TEXT = {"type": "string"}
ROUTES = [
    ApiRoute(GRIDS, "GET", list_grids, summary="Grids and micro-grids (?street=)"),
    ApiRoute(GRIDS, "POST", add_grid, role="admin", summary="Define a grid or micro-grid (again: update it)",
             body={"type": "object", "required": ["code", "name"],
                   "properties": {k: _TEXT for k in ("code", "name", "community", "parent", "street", "established")}
                   | {"households": {"type": "integer"}, "patrols_per_day": {"type": "integer"},
                      "new_street": {"type": "boolean"}}}),
    ApiRoute(f"{GRIDS}/coverage", "GET", coverage, summary="Patrols planned vs done per grid per day (?from=&to=)"),
    ApiRoute(f"{GRIDS}/{{grid}}", "GET", get_grid, summary="One grid with its staff"),
    ApiRoute(f"{GRIDS}/{{grid}}", "DELETE", remove_grid, role="admin",
             summary="Remove a grid and its staff (its cases and patrols are kept)"),
    ApiRoute(f"{GRIDS}/{{grid}}/plan", "POST", set_plan, role="admin",
             summary="Set patrols per day, from a day on (default today; the days before keep their plan)",
             body={"type": "object", "required": ["patrols_per_day"],
                   "properties": {"patrols_per_day": {"type": "integer"}, "from": _TEXT}}),
    ApiRoute(f"{GRIDS}/{{grid}}/staff", "POST", add_staff, role="admin",
             summary="Add grid staff (leader, instructor, member)"),
    ApiRoute(f"{GRIDS}/staff/{{id}}", "DELETE", remove_staff, role="admin", summary="Remove grid staff"),
    ApiRoute(f"{GRIDS}/{{grid}}/patrols", "POST", check_in, role="operator", summary="Check in a patrol"),
    ApiRoute(CASES, "GET", list_cases, summary="Cases (?state=&level=&grid=&street=&open=1&overdue=1&limit=)"),
    ApiRoute(CASES, "POST", report_case, role="operator", summary="Report a case (on_the_spot: fixed at once)"),
    ApiRoute(f"{CASES}/categories", "GET", list_categories, summary="The case category catalogue"),
    ApiRoute(f"{CASES}/categories", "POST", set_category, role="admin",
             summary="Add, change or retire a category and its deadline"),
    ApiRoute(f"{CASES}/stats", "GET", stats, summary="Case and patrol metrics, streets ranked (?from=&to=&scope=)"),
    ApiRoute(f"{CASES}/escalate-overdue", "POST", escalate_overdue, role="operator",
             summary="Escalate every open case past its deadline one level"),
    ApiRoute(f"{CASES}/{{id}}", "GET", show_case, summary="A case: state, level and every event"),
    ApiRoute(f"{CASES}/{{id}}/events", "POST", transition, role="operator",
             summary=f"Move a case on: kind is one of {', '.join(EVENT_KINDS)}",
             body={"type": "object", "required": ["kind"],
                   "properties": {"kind": {"type": "string", "enum": list(EVENT_KINDS)}}
                   | {k: _TEXT for k in sorted(_TRANSITION_FIELDS)}}),
]
