"""Cases: the category catalogue, reporting, transitions, escalation, and reading a case back.

Every transition is one append-only event checked against the state the
node currently folds for the case (:mod:`.machine`); a refused transition
raises with the reason and writes nothing. The rules that apply here are
the same ones every replica applies when it folds, so what a node accepts
is what the others will accept, unless a concurrent event from another
node got there first (then the later one is kept in the history, marked
as not applied).
"""

from __future__ import annotations

import json
import re

from hemei.core import Conflict, InvalidInput, Node, NotFound
from hemei.core.fields import ahead_of_this_pc, flag, now_local, one, past_time, subtree_params, text, whole_number
from hemei.core.scope import covers

from . import grids, status
from .machine import (LEVELS, NEEDS, OPEN_STATES, RATINGS, STATES, TRANSITIONS, CaseState, apply, due_after, fold,
                      holder_scope, level_due, next_level, refusal)

#: Used until a district or street configures its own (``hemei cases category add``): code -> (name, hours).
DEFAULT_CATEGORIES = {
    "environment": ("环境卫生", 48),
    "facilities": ("设施维修", 72),
    "safety": ("安全隐患", 24),
    "dispute": ("矛盾纠纷", 72),
    "livelihood": ("民生服务", 120),
    "other": ("其他", 168),
}
SOURCES = ("patrol", "resident")
MAX_DEADLINE_HOURS = 24 * 366
_CODE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


# -- the category catalogue -------------------------------------------------------

def categories(node: Node, scope: str | None = None) -> dict[str, dict]:
    """code -> {name, deadline_hours} in force at ``scope``.

    The definition highest up the tree wins: a district's deadlines hold for
    every street under it, so all streets are measured against the same
    ones; a street may add codes of its own. The defaults apply until
    someone above defines (or retires) the code.
    """
    scope = scope or node.scope
    found = {code: (10**6, name, hours, 1) for code, (name, hours) in DEFAULT_CATEGORIES.items()}
    for code, name, hours, active, where in node.conn.execute(
            "SELECT code, name, deadline_hours, active, scope FROM case_categories WHERE _deleted = 0"):
        if covers(where, scope) and len(where) < found.get(code, (10**7,))[0]:
            found[code] = (len(where), name, hours, active)
    return {code: {"name": name, "deadline_hours": hours}
            for code, (_, name, hours, active) in sorted(found.items()) if active}


def set_category(node: Node, actor: str, *, code, name, deadline_hours, active: bool = True) -> dict:
    """Add, change or retire a category for this node's subtree (a district's flow down to its streets)."""
    code = text(code, "code", limit=32)
    if not _CODE.match(code):
        raise InvalidInput(f"category code {code!r}: use lower-case letters, digits and _")
    values = {"code": code, "name": text(name, "name", limit=64),
              "deadline_hours": whole_number(deadline_hours, "deadline_hours", low=1, high=MAX_DEADLINE_HOURS),
              "active": int(flag(active, "active"))}
    above = [where for (where,) in node.conn.execute(
        "SELECT scope FROM case_categories WHERE code = ? AND _deleted = 0", (code,))
        if where != node.scope and covers(where, node.scope)]
    if above:
        raise Conflict(f"category {code} is set at {above[0]} for everyone below it; change it there, "
                       "or add a code of your own")
    pk = f"{node.scope}|{code}"
    with node.writer(actor) as w:
        if one(node, "SELECT 1 AS held FROM case_categories WHERE id = ? AND _deleted = 0", (pk,)):
            w.update("case_categories", pk, values)
        else:
            w.insert("case_categories", {"id": pk, **values})
    return {**values, "active": bool(active), "scope": node.scope}


# -- reporting ---------------------------------------------------------------------

def report(node: Node, actor: str, *, grid, category, description, reporter, source="patrol", place=None,
           patrol=None, at=None, on_the_spot=None) -> dict:
    """Report a case in a grid. ``on_the_spot`` (what was done) fixes a small issue at once:
    the case is registered, dispatched to the reporter, started, handled, verified and closed,
    each step an event of its own, so the trail is the same as for any other case."""
    row = grids.find_grid(node, grid)
    category = text(category, "category", limit=32)
    catalogue = categories(node, row["street"])
    if category not in catalogue:
        raise InvalidInput(f"unknown category {category!r}; known: {', '.join(catalogue)}", code="unknown_category")
    if source not in SOURCES:
        raise InvalidInput(f"source must be one of {', '.join(SOURCES)}")
    at = past_time(at, "at")
    if patrol is not None:
        patrol = text(patrol, "patrol")
        held = one(node, "SELECT at FROM grid_patrols WHERE id = ? AND grid = ?", (patrol, row["id"]))
        if held is None:
            raise NotFound(f"no patrol {patrol} in grid {row['code']}")
        if at < held["at"]:  # found in a walkthrough: a case found on a patrol before it was walked
            raise InvalidInput(f"time {at} is before the patrol it was found on ({held['at']}): a case found on a "
                               "patrol is reported at or after its start")
    if "/" not in row["street"]:
        raise InvalidInput(f"street {row['street']} has no district above it in its scope path")
    if row["street"] != node.scope and row["street"] not in set(map(node.origin_scope, node.version_vector())):
        # The street's node holds the case below district level: without one, nobody could act on it.
        raise InvalidInput(f"no node of {row['street']} is known here yet: report the case at that street, "
                           "or after it has synced once")
    case = {"scope": row["scope"], "grid": row["id"], "street": row["street"],
            "district": row["street"].rsplit("/", 1)[0], "community": row["community"], "category": category,
            "deadline_hours": catalogue[category]["deadline_hours"],
            "place": text(place, "place", required=False, limit=200),
            "description": text(description, "description", limit=2000, lines=True),
            "reporter": text(reporter, "reporter", limit=64), "source": source, "patrol": patrol,
            "reported_at": at}
    fix = text(on_the_spot, "on_the_spot", required=False, limit=2000, lines=True)
    if fix is not None and row["street"] != node.scope:
        raise InvalidInput(f"a case reported here is held by its street, {row['street']}, which handles it: "
                           "report it without on_the_spot (--on-the-spot), or at the street")
    with node.writer(actor) as w:
        case_id = w.insert("cases", case)
        if fix is not None:
            case["id"] = case_id
            current = CaseState(level_since=at, last_at=at)
            steps = [("register", {}), ("dispatch", {"assignee": case["reporter"]}), ("start", {}),
                     ("handle", {"note": fix}), ("verify", {"note": "on the spot"}), ("close", {"note": "on the spot"})]
            for kind, extra in steps:
                _write_event(node, w, case, current, {"kind": kind, "at": at, **extra})
    return show(node, case_id)


# -- transitions ---------------------------------------------------------------------

#: What each kind may carry besides its time and note.
FIELDS = {"dispatch": {"assignee"}, "evaluate": {"rating"}, "duplicate": {"duplicate_of"}, "escalate": {"level"}}


def transition(node: Node, actor: str, case_ref, kind, *, at=None, note=None, assignee=None, rating=None,
               duplicate_of=None, level=None) -> dict:
    """Move a case on by one event (register, dispatch, ..., escalate); refused with the reason if invalid."""
    if not isinstance(kind, str) or kind not in TRANSITIONS:
        raise InvalidInput(f"unknown transition {kind!r}; one of {', '.join(TRANSITIONS)}")
    given = {"assignee": assignee, "rating": rating, "duplicate_of": duplicate_of, "level": level}
    stray = sorted(f for f, v in given.items() if v is not None and f not in FIELDS.get(kind, ()))
    if stray:
        raise InvalidInput(f"{kind} does not take {', '.join(stray)}")
    case = find_case(node, case_ref)
    event = {"kind": kind, "at": past_time(at, "at"),
             "note": text(note, "note", required=False, limit=2000, lines=True),
             "assignee": text(assignee, "assignee", required=False, limit=64)}
    if kind == "evaluate" and rating is not None and rating not in RATINGS:
        raise InvalidInput(f"rating must be one of {', '.join(RATINGS)}")
    event["rating"] = rating
    if kind == "escalate" and level is not None and level not in LEVELS:
        raise InvalidInput(f"level must be one of {', '.join(LEVELS)}")
    if kind == "duplicate":
        if duplicate_of is None:
            raise InvalidInput("duplicate needs the case it repeats (duplicate_of)")
        other = find_case(node, duplicate_of, "duplicate_of")
        if other["id"] == case["id"]:
            raise InvalidInput("a case cannot duplicate itself")
        event["duplicate_of"] = other["id"]
    needed = NEEDS.get(kind)
    if needed and needed != "level" and not event.get(needed):
        raise InvalidInput(f"{kind} needs {needed.replace('_', ' ')}"
                           + (" (what was done, or why)" if needed == "note" else ""))
    with node.writer(actor) as w:
        # Folded inside the write transaction: another process cannot slip an event in between.
        current = fold(case, w.query(f"SELECT {status.EVENT_COLUMNS} FROM case_events WHERE case_id = ?",
                                     (case["id"],)))
        if kind == "escalate":
            event["level"] = level or next_level(current.level)
        _write_event(node, w, case, current, event)
    return show(node, case["id"])


def _write_event(node: Node, w, case: dict, current: CaseState, event: dict) -> None:
    event = {k: v for k, v in event.items() if v is not None}
    event["acting_scope"] = node.scope
    event["actor"] = w.actor  # the operator is in the log entry too, but a row does not know its entry
    reason = refusal(case, current, event)
    if reason is not None:
        raise InvalidInput(reason, code="invalid_transition")
    if event["at"] < current.last_at:
        said = (f"time {event['at']} is before the case's last step ({current.last_at}): steps are recorded in "
                "the order they happened")
        if ahead_of_this_pc(current.last_at):  # another PC's local time, ahead of this one's (walkthrough)
            said += (f"; that step is later than this PC's time now ({now_local()}): it was recorded on a PC whose "
                     "clock or time zone is ahead of this one's. Check both; `hemei status` shows each peer's")
        raise InvalidInput(said)
    w.insert("case_events", {"scope": case["scope"], "case_id": case["id"], **event})
    apply(case, current, event)


def escalate_overdue(node: Node, actor: str, now=None) -> list[dict]:
    """Escalate, one level, every open case this node holds below the district whose level deadline has passed.

    Only the street's node holds cases below the district level, so only the
    cases of the street this node is are looked at; all are escalated in one
    transaction (one signature per thousand, not one per case).
    """
    now = past_time(now, "now")
    status.ensure_fresh(node)
    due = [r[0] for r in node.conn.execute(
        "SELECT case_id FROM case_status WHERE street = ? AND state IN ({}) AND level != 'district'"
        " AND level_due < ? ORDER BY level_due".format(", ".join("?" * len(OPEN_STATES))),
        (node.scope, *OPEN_STATES, now))]
    moved: list[dict] = []
    if not due:
        return moved
    with node.writer(actor) as w:
        for case_id in due:
            case = find_case(node, case_id)
            current = fold(case, w.query(f"SELECT {status.EVENT_COLUMNS} FROM case_events WHERE case_id = ?",
                                         (case_id,)))
            deadline = level_due(case, current)
            if current.state not in OPEN_STATES or deadline >= now or current.level == "district":
                continue
            event = {"kind": "escalate", "at": max(now, current.last_at), "level": next_level(current.level),
                     "auto": 1, "note": f"deadline {deadline} passed at {current.level} level"}
            if refusal(case, current, {**event, "acting_scope": node.scope}) is not None:
                continue  # held by another node: that node escalates it
            moved.append({"id": case_id, "from": current.level, "to": event["level"]})
            _write_event(node, w, case, current, event)
    return moved


# -- reading -----------------------------------------------------------------------

_CASE_READ = f"SELECT {status.CASE_COLUMNS}, place, description, reporter, source, patrol FROM cases"


def find_case(node: Node, ref, field: str = "case") -> dict:
    """A case by its id, or by the last 8 characters of it (as lists print it); ``field`` names it in errors."""
    ref = text(ref, field, limit=64)
    row = one(node, f"{_CASE_READ} WHERE id = ?", (ref,))
    if row is None and len(ref) == status.REF_LENGTH:
        status.ensure_fresh(node)
        ids = [r[0] for r in node.conn.execute("SELECT case_id FROM case_status WHERE ref = ? LIMIT 2", (ref,))]
        if len(ids) > 1:
            raise InvalidInput(f"{ref!r} ends more than one case id: give the whole id")
        row = one(node, f"{_CASE_READ} WHERE id = ?", (ids[0],)) if ids else None
    if row is None:
        raise NotFound(f"no case {ref!r}: give its id or the last {status.REF_LENGTH} characters of it "
                       "(`hemei cases list` shows them)")
    return row


def _events(node: Node, case_id: str) -> list[dict]:
    return list(node.db.query(f"SELECT {status.EVENT_COLUMNS} FROM case_events WHERE case_id = ?", (case_id,)))


def show(node: Node, case_ref) -> dict:
    """A case with its current state and level and every event, in the order they are folded."""
    case = find_case(node, case_ref)
    events = sorted(_events(node, case["id"]), key=lambda e: (e["_hlc"], e["_origin"]))
    current = fold(case, events)
    grid = one(node, "SELECT code, name FROM grids WHERE id = ?", (case["grid"],)) or {}
    history = [{"kind": "report", "at": case["reported_at"], "by": case["reporter"], "applied": True,
                "note": case["description"]}]
    for event, reason in zip(events, current.verdicts):
        history.append({"id": event["id"], "kind": event["kind"], "at": event["at"], "by": event["actor"],
                        "acting_scope": event["acting_scope"],
                        **{k: event[k] for k in ("level", "assignee", "note", "rating", "duplicate_of")
                           if event[k] is not None},
                        **({"auto": True} if event["auto"] else {}),
                        "applied": reason is None, **({"not_applied_because": reason} if reason else {})})
    return {"id": case["id"], "state": current.state, "level": current.level,
            "held_by": holder_scope(case, current.level),
            "grid": case["grid"], "grid_code": grid.get("code"), "grid_name": grid.get("name"),
            "community": case["community"], "street": case["street"], "category": case["category"],
            "place": case["place"], "description": case["description"], "reporter": case["reporter"],
            "source": case["source"], "patrol": case["patrol"], "reported_at": case["reported_at"],
            "due": due_after(case["reported_at"], case["deadline_hours"]), "level_due": level_due(case, current),
            "assignee": current.assignee, "rating": current.rating, "reworks": current.reworks,
            "duplicate_of": current.duplicate_of, "events": history}


def list_cases(node: Node, *, state=None, level=None, grid=None, street=None, open_only: bool = False,
               overdue: bool = False, limit: int = 200) -> list[dict]:
    """Cases newest first, from the local status table; filters combine."""
    status.ensure_fresh(node)
    where, params = [], []
    if state is not None:
        if state not in STATES:
            raise InvalidInput(f"state must be one of {', '.join(STATES)}")
        where.append("s.state = ?")
        params.append(state)
    if level is not None:
        if level not in LEVELS:
            raise InvalidInput(f"level must be one of {', '.join(LEVELS)}")
        where.append("s.level = ?")
        params.append(level)
    if grid is not None:
        where.append("s.grid = ?")
        params.append(grids.find_grid(node, grid)["id"])
    if street is not None:  # a district, a street, or (by its grids) a community or grid inside one
        place = grids.known_place(node, street)
        grid_ids = grids.grids_inside_street(node, place)
        if grid_ids is None:
            where.append("s.street >= ? AND s.street < ? AND (s.street = ? OR s.street > ?)")
            params.extend(subtree_params(place))
        else:
            where.append("s.grid IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(grid_ids))
    if open_only or overdue:
        where.append("s.state IN ({})".format(", ".join("?" * len(OPEN_STATES))))
        params.extend(OPEN_STATES)
    if overdue:
        where.append("s.level_due < ?")
        params.append(now_local())
    limit = whole_number(limit, "limit", low=1, high=10_000)
    sql = ("SELECT s.case_id AS id, s.state, s.level, s.category, s.street, s.community, g.code AS grid,"
           " s.reported_at, s.level_due, s.assignee, c.description FROM case_status s"
           " JOIN cases c ON c.id = s.case_id LEFT JOIN grids g ON g.id = s.grid"
           + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY s.reported_at DESC, s.case_id LIMIT ?")
    return list(node.db.query(sql, (*params, limit)))
