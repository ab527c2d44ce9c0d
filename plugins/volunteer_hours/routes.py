"""HTTP routes under /api/volunteers: the same operations as the CLI, roles enforced by the core.

Viewers read; operators register, record and redeem; admins configure the
catalogue and the star thresholds. ID numbers travel only in request bodies
(never in a URL, which ends up in access logs): search and balance are POST.
"""

from __future__ import annotations

from hemei.core import ApiCall, ApiRoute

from . import keys, ledger, registry, rollup

BASE = "/api/volunteers"


def _body(call: ApiCall, allowed: set[str], required: tuple[str, ...] = ()) -> dict:
    return call.fields(allowed, required)


def _actor(call: ApiCall) -> str:
    return call.user["name"]


def _person(call: ApiCall, body: dict):
    return registry.resolve_person(call.node, _actor(call), volunteer=body.get("volunteer"),
                                   id_number=body.get("id_number"))


def add_volunteer(call):
    b = _body(call, {"name", "id_number", "phone", "party_member", "skills", "team", "scope"}, ("name", "id_number"))
    return registry.add_volunteer(call.node, _actor(call), **b)


def find_volunteers(call):
    return registry.find_volunteers(call.node, _actor(call), _body(call, {"q"}, ("q",))["q"])


def get_volunteer(call):
    return registry.get_volunteer(call.node, call.path_params["id"])


def add_team(call):
    return registry.add_team(call.node, _actor(call), **_body(call, {"name", "leader", "note", "scope"}, ("name",)))


def list_teams(call):
    return registry.list_teams(call.node)


def list_categories(call):
    return [{"code": c, "name": n} for c, n in registry.categories(call.node).items()]


def set_category(call):
    b = _body(call, {"code", "name", "active"}, ("code", "name"))
    return registry.set_category(call.node, _actor(call), **b)


def add_activity(call):
    b = _body(call, {"title", "category", "date", "place", "capacity", "team", "organiser", "scope", "another"},
              ("title", "category", "date"))
    return registry.add_activity(call.node, _actor(call), **b)


def list_activities(call):
    return registry.list_activities(call.node, call.query.get("since"))


def signup(call):
    b = _body(call, {"volunteer"}, ("volunteer",))
    return registry.signup(call.node, _actor(call), activity=call.path_params["id"], volunteer=b["volunteer"])


def attendance(call):
    b = _body(call, {"volunteer", "status"}, ("volunteer", "status"))
    return registry.mark_attendance(call.node, _actor(call), activity=call.path_params["id"], **b)


def log_hours(call):
    b = _body(call, {"activity", "volunteer", "hours", "sign_in", "sign_out", "confirm"}, ("activity", "volunteer"))
    return ledger.log_hours(call.node, _actor(call), **b)


def pending_hours(call):
    return ledger.pending_hours(call.node)


def confirm_hours(call):
    _body(call, set())
    return ledger.confirm_hours(call.node, _actor(call), hour=call.path_params["id"])


def correct_hours(call):
    b = _body(call, {"hours", "reason", "confirm"}, ("hours", "reason"))
    return ledger.correct_hours(call.node, _actor(call), hour=call.path_params["id"], **b)


def redeem(call):
    b = _body(call, {"volunteer", "id_number", "hours", "item", "note"}, ("hours", "item"))
    person, registration = _person(call, b)
    return ledger.redeem(call.node, _actor(call), person=person, volunteer=registration, hours=b["hours"],
                         item=b["item"], note=b.get("note"))


def balance(call):
    person, _ = _person(call, _body(call, {"volunteer", "id_number"}))
    return ledger.balance(call.node, person)


def certificate(call):
    person, _ = _person(call, _body(call, {"volunteer", "id_number"}))
    return ledger.certificate(call.node, person)


def report(call):
    return rollup.rollup(call.node, call.query.get("scope"), call.query.get("since"))


def key_status(call):
    return keys.key_status(call.node)


_PERSON = {"type": "object", "properties": {"volunteer": {"type": "string"}, "id_number": {"type": "string"}}}

ROUTES = [
    ApiRoute(f"{BASE}/people", "POST", add_volunteer, role="operator", summary="Register a volunteer",
             body={"type": "object", "required": ["name", "id_number"],
                   "properties": {k: {"type": "string"} for k in ("name", "id_number", "phone", "skills", "team",
                                                                   "scope")} | {"party_member": {"type": "boolean"}}}),
    ApiRoute(f"{BASE}/people/search", "POST", find_volunteers, summary="Find volunteers by name, phone or ID number",
             body={"type": "object", "required": ["q"], "properties": {"q": {"type": "string"}}}),
    ApiRoute(f"{BASE}/people/{{id}}", "GET", get_volunteer, summary="One volunteer (phone masked)"),
    ApiRoute(f"{BASE}/teams", "POST", add_team, role="operator", summary="Add a team (服务队)"),
    ApiRoute(f"{BASE}/teams", "GET", list_teams, summary="List teams"),
    ApiRoute(f"{BASE}/categories", "GET", list_categories, summary="The activity category catalogue"),
    ApiRoute(f"{BASE}/categories", "POST", set_category, role="admin", summary="Add, rename or retire a category"),
    ApiRoute(f"{BASE}/activities", "POST", add_activity, role="operator", summary="Add an activity"),
    ApiRoute(f"{BASE}/activities", "GET", list_activities, summary="List activities (?since=YYYY-MM-DD)"),
    ApiRoute(f"{BASE}/activities/{{id}}/signups", "POST", signup, role="operator", summary="Sign a volunteer up"),
    ApiRoute(f"{BASE}/activities/{{id}}/attendance", "POST", attendance, role="operator",
             summary="Mark attended or no_show"),
    ApiRoute(f"{BASE}/hours", "POST", log_hours, role="operator", summary="Record hours at an activity"),
    ApiRoute(f"{BASE}/hours/pending", "GET", pending_hours, summary="Hour entries waiting for confirmation"),
    ApiRoute(f"{BASE}/hours/{{id}}/confirm", "POST", confirm_hours, role="operator", summary="Confirm an hour entry"),
    ApiRoute(f"{BASE}/hours/{{id}}/corrections", "POST", correct_hours, role="operator",
             summary="Correct a confirmed hour entry, or a correction not confirmed yet (a new entry with a reason)"),
    ApiRoute(f"{BASE}/redemptions", "POST", redeem, role="operator", summary="Redeem hours from the time bank"),
    ApiRoute(f"{BASE}/balance", "POST", balance, summary="Hours, balance and star level of a person", body=_PERSON),
    ApiRoute(f"{BASE}/certificate", "POST", certificate, summary="A person's certified service record",
             body=_PERSON),
    ApiRoute(f"{BASE}/report", "GET", report, summary="Roll-up per street, team and category (?scope=&since=)"),
    ApiRoute(f"{BASE}/key", "GET", key_status, role="admin", summary="Which volunteer key this node uses"),
]
