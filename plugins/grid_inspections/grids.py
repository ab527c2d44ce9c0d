"""Grids and micro-grids, their staff (1+1+N), patrol plans, check-ins and coverage.

A grid's scope is ``<street>/<community>/<code>`` (a micro-grid's is its
grid's scope plus its own code), so everything recorded in a grid lies in
the street's subtree: grids a district defines flow down to that street, and
what a street records flows up. Every function checks its input and either
writes one transaction or raises having written nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import sqlite3

from hemei.core import Conflict, InvalidInput, Node, NotFound, fields
from hemei.core.fields import flag, in_subtree_sql, iso_date, one, past_time, subtree_params, text, whole_number
from hemei.core.scope import covers, parse_scope

ROLES = ("leader", "instructor", "member")
MAX_PATROLS_PER_DAY = 24
MAX_HOUSEHOLDS = 1_000_000
#: Roles of which a grid has one (the "1+1" of 1+1+N); members are the N.
SINGLE_ROLES = ("leader", "instructor")
DEFAULT_PATROLS_PER_DAY = 2  # "每天早、晚各巡1次": morning and evening
_CODE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_.-]{0,31}$")
#: Paths /api/grids/WORD that a route of the module spells out: a grid of that code could not be named there.
ROUTE_WORDS = frozenset({"coverage"})
#: Grids named in an ambiguity message: codes such as "01" repeat in every community of a district.
NAMED_AT_MOST = 10
GRID_COLUMNS = ("id, scope, code, name, street, community, parent, households, patrols_per_day, established,"
                " definition")


def grid_id(scope: str) -> str:
    """The key of the grid at ``scope``: the same wherever it is defined, so two definitions merge."""
    return "grid-" + hashlib.sha256(scope.encode()).hexdigest()[:24]


def place_scope(node: Node, value, field: str = "street") -> str:
    """A scope at or below this node's: its own scope, a full path inside it, a path relative to it, or
    one relative to its parent, as its district writes it (``府山街道`` or ``府山街道/西小河社区`` on the
    street 越城区/府山街道). This node's name stands for its scope, and so does the name of a node
    below it, where no place held here is meant (``hemei nodes list`` shows 府山街道 for yuecheng/fushan)."""
    return fields.place_scope(node, value, field, lambda place: _held(node, place))


def _held(node: Node, scope: str) -> bool:
    """Whether ``scope`` is this node's, or a place at or above one known here, or inside one below it."""
    if scope == node.scope:
        return True
    known = {s for s in map(node.origin_scope, node.version_vector()) if s} | set(_peer_scopes(node, "child"))
    known |= {p for row in node.conn.execute("SELECT street, scope FROM grids WHERE _deleted = 0") for p in row}
    return any(covers(scope, k) or (k != node.scope and covers(k, scope)) for k in known)


def known_place(node: Node, value, field: str = "street") -> str:
    """``place_scope`` for a filter: a place this node has heard of (a node that synced here, or a grid's
    street or community), so a mistyped name is refused instead of showing nothing."""
    scope = place_scope(node, value, field)
    if scope == node.scope:
        return scope
    known = {s for s in map(node.origin_scope, node.version_vector()) if s}
    known |= {r[0] for r in node.conn.execute("SELECT DISTINCT scope FROM grids WHERE _deleted = 0")}
    if not any(covers(scope, place) for place in known):  # (this node's own scope covers any path below it)
        depth = node.scope.count("/") + 2  # segments of a place directly below this node
        below = sorted({"/".join(p.split("/")[:depth]) for p in known if p != node.scope and covers(node.scope, p)})
        raise InvalidInput(f"no {field} {value!r} is known below {node.scope}"
                           + (f" (known here: {', '.join(below[:5])}{', ...' if len(below) > 5 else ''})"
                              if below else "") + "; a street is known here once it has synced")
    return scope


def grids_inside_street(node: Node, scope: str) -> list[str] | None:
    """The ids of the grids at or inside ``scope`` when it lies inside a street (a community, a grid, a
    micro-grid), whose case figures are found by grid; None for a street or a place above streets, where
    they are found by the street column the case tables keep."""
    inside = node.conn.execute("SELECT 1 FROM grids WHERE substr(?, 1, length(street) + 1) = street || '/' LIMIT 1",
                               (scope,)).fetchone()
    if inside is None:
        return None
    return [r[0] for r in node.conn.execute(f"SELECT id FROM grids WHERE {in_subtree_sql('scope')}",
                                            subtree_params(scope))]


def grid_street(node: Node, street, *, new_street: bool = False) -> str:
    """The street a new grid belongs to: this node's scope, or (at a district) a street directly below it
    that is known here (enrolled, synced, or holding grids already); ``new_street`` for one that is not
    in hemei yet. A mistyped street would otherwise be a street of its own in every ranking."""
    below = known_streets(node)
    if street is None:
        if below:
            raise InvalidInput(f"this node has streets below it ({', '.join(below[:3])}"
                               f"{', ...' if len(below) > 3 else ''}): name the grid's street with --street")
        return node.scope
    scope = place_scope(node, street)
    if scope == node.scope:
        return scope
    if scope.count("/") != node.scope.count("/") + 1:
        raise InvalidInput(f"street {scope} is not directly below this node's scope {node.scope}: "
                           "give the street's name, for example 府山街道")
    if scope in below:
        return scope
    # A node with a parent and no children enrolled is a street (or a district with no street yet, which
    # enrols them first): a street of its own below it would only be a typo ranked as a street.
    a_street = _peer_scopes(node, "parent") and not _peer_scopes(node, "child")
    if new_street and not a_street:
        return scope
    raise InvalidInput(f"no street {street!r} is known below {node.scope}"
                       + (f" (known here: {', '.join(below[:8])}{', ...' if len(below) > 8 else ''})"
                          if below else " (none yet)")
                       + (": a street's grids are its own, leave out --street" if a_street else
                          ": check the name; for a street not enrolled here yet, add --new-street"))


def known_streets(node: Node) -> list[str]:
    """Places directly below this node that it knows: enrolled children, nodes that synced here, streets of
    grids held."""
    depth = node.scope.count("/") + 1
    known = {s for s in map(node.origin_scope, node.version_vector()) if s}
    known |= set(_peer_scopes(node, "child"))
    known |= {r[0] for r in node.conn.execute("SELECT DISTINCT street FROM grids WHERE _deleted = 0")}
    return sorted(s for s in known if s.count("/") == depth and covers(node.scope, s))


def _peer_scopes(node: Node, role: str) -> list[str]:
    """Scopes of this node's unrevoked parent or children, read from the sync transport's table (this
    module may not import it; its status report computes every backlog, seconds on a large district)."""
    try:
        return [r[0] for r in node.conn.execute(
            "SELECT scope FROM _hemei_peers WHERE role = ? AND revoked = 0", (role,))]
    except sqlite3.OperationalError:  # a node without the sync transport's tables
        return []


def _segment(value, field: str) -> str:
    """Text that becomes one segment of a scope path: no '/', nothing a path cannot hold."""
    value = text(value, field, limit=64)
    if "/" in value or parse_scope(value) != value:
        raise InvalidInput(f"{field} {value!r} cannot contain '/' or start or end with spaces")
    return value


def add_grid(node: Node, actor: str, *, code, name, community=None, parent=None, street=None, households=None,
             patrols_per_day=None, established=None, new_street: bool = False) -> dict:
    """Define a grid in a community (or a micro-grid inside a grid).

    Defining a grid that exists (same street, community and code) changes only
    the fields given: its name, households, plan or start day. ``new_street``: the grid's street is not
    enrolled here yet (see :func:`grid_street`).
    """
    code = text(code, "code", limit=32)
    if not _CODE.match(code):
        raise InvalidInput(f"grid code {code!r}: use letters, digits, '-', '_' or '.' (at most 32)")
    if code in ROUTE_WORDS:
        raise InvalidInput(f"grid code {code!r} is a word of the API's paths (/api/grids/{code}): choose another")
    name = text(name, "name", limit=64)
    given = {"name": name}
    if households is not None:
        given["households"] = whole_number(households, "households", high=MAX_HOUSEHOLDS)
    if patrols_per_day is not None:
        given["patrols_per_day"] = whole_number(patrols_per_day, "patrols_per_day", high=MAX_PATROLS_PER_DAY)
    if established is not None:
        given["established"] = iso_date(established, "established")
    if parent is not None:
        above = find_grid(node, parent)
        if above["parent"] is not None:
            raise InvalidInput(f"{above['code']} is a micro-grid: micro-grids hold no further grids")
        if community is not None and text(community, "community") != above["community"]:
            raise InvalidInput(f"grid {above['code']} is in {above['community']}, not {community}")
        fixed = {"street": above["street"], "community": above["community"], "parent": above["id"]}
        scope, default_plan = f"{above['scope']}/{code}", 0  # micro-grids are walked on their grid's patrols
    else:
        street = grid_street(node, street, new_street=flag(new_street, "new_street"))
        community = _segment(community, "community")
        fixed = {"street": street, "community": community, "parent": None}
        scope, default_plan = parse_scope(f"{street}/{community}/{code}"), DEFAULT_PATROLS_PER_DAY
    pk = grid_id(scope)
    with node.writer(actor) as w:
        held = one(node, f"SELECT {GRID_COLUMNS} FROM grids WHERE id = ? AND _deleted = 0", (pk,))
        if held:
            plan = given.pop("patrols_per_day", None)
            w.update("grids", pk, given)
            if plan is not None and plan != current_plan(node, held):  # a change from today on, as `plan`
                _plan_from(w, node, {**held, **given}, plan, dt.date.today().isoformat())
        else:
            w.insert("grids", {"id": pk, "scope": scope, "code": code, **fixed, "households": None,
                               "definition": node.new_id(),  # a grid defined again starts a plan history anew
                               "patrols_per_day": default_plan, "established": dt.date.today().isoformat(),
                               **given})
    return get_grid(node, pk)


def set_plan(node: Node, actor: str, grid, patrols_per_day, *, from_day=None) -> dict:
    """Change how many patrols a day a grid's plan asks for, from ``from_day`` (today by default) on: the
    days before keep the plan they had, so their coverage does not change."""
    row = find_grid(node, grid)
    plan = whole_number(patrols_per_day, "patrols_per_day", high=MAX_PATROLS_PER_DAY)
    today = dt.date.today().isoformat()
    day = iso_date(from_day or today, "from")
    if day > today:
        raise InvalidInput(f"from {day} is after today: set the plan on the day it starts")
    starts = max(day, row["established"])  # a grid has no plan before it was established
    with node.writer(actor) as w:
        # Read under the write lock. A plan already in effect from that day is not written again: each run
        # added a row to the plan history (found in a walkthrough).
        timeline = _timelines(node, row["id"]).get(row["id"], [])
        changed = plan_on(timeline, starts, row["patrols_per_day"]) != plan
        if changed:
            _plan_from(w, node, row, plan, starts)
    # Said, so that an operator who typed a day before the grid's start knows when the plan starts.
    return {**get_grid(node, row["id"]), "plan_from": starts, "changed": changed}


#: The first day of a plan history: the plan a grid was defined with holds from here until its first
#: change (for a micro-grid, whose check-ins before its own start count for its grid, that matters).
PLAN_START = "2000-01-01"


def _plan_from(w, node: Node, row: dict, plan: int, day: str) -> None:
    """Record ``plan`` for ``row``'s grid from ``day`` on, in writer ``w``. The first change of a grid
    also records the plan it had, which until then was only the grid row's, from :data:`PLAN_START`."""
    changes = dict(_timelines(node, row["id"]).get(row["id"], []))  # (the writer's rows apply at its commit)
    fact = {"scope": row["scope"], "grid": row["id"], "definition": row["definition"]}
    if not changes and day > PLAN_START:
        changes[PLAN_START] = row["patrols_per_day"]
        w.insert("grid_plans", {**fact, "from_day": PLAN_START, "patrols_per_day": row["patrols_per_day"]})
    changes[day] = plan
    w.insert("grid_plans", {**fact, "from_day": day, "patrols_per_day": plan})
    # The grid row keeps the plan of today, for readers that know no plan history (an older release).
    w.update("grids", row["id"], {"patrols_per_day": plan_on(sorted(changes.items()), dt.date.today().isoformat(),
                                                             plan)})


def _timelines(node: Node, grid: str | None = None) -> dict[str, list[tuple[str, int]]]:
    """Each grid's plan changes (or ``grid``'s), ``[(from_day, patrols_per_day), ...]`` by day, of the grid's
    current definition (removed grids included: their micro-grids' patrols); of two changes from one day,
    the later stamped (then the writer's id), so every replica reads the same plan."""
    changes: dict[str, dict[str, int]] = {}
    for grid_id_, day, plan in node.conn.execute(
            "SELECT p.grid, p.from_day, p.patrols_per_day FROM grid_plans p JOIN grids g ON g.id = p.grid"
            " AND p.definition IS g.definition" + (" WHERE p.grid = ?" if grid else "")
            + " ORDER BY p.grid, p.from_day, p._hlc, p._origin", (grid,) if grid else ()):
        changes.setdefault(grid_id_, {})[day] = plan
    return {g: sorted(days.items()) for g, days in changes.items()}


def plan_on(timeline: list[tuple[str, int]], day: str, default: int) -> int:
    """The plan in effect on ``day``: the latest change from that day or before; before the first change
    (which the module writes from :data:`PLAN_START`), the first change's; ``default`` (the grid row's) when
    it never changed."""
    if not timeline:
        return default
    plan = timeline[0][1]
    for start, n in timeline:
        if start > day:
            break
        plan = n
    return plan


def _plan_segments(timeline: list[tuple[str, int]], first: str, last: str, default: int) -> list[tuple[str, str, int]]:
    """``[first, last]`` cut into runs of days with one plan: ``[(start, end, patrols_per_day), ...]``."""
    if first > last:
        return []
    cuts = [start for start, _ in timeline if first < start <= last]
    starts = [first, *cuts]
    ends = [(dt.date.fromisoformat(c) - dt.timedelta(days=1)).isoformat() for c in cuts] + [last]
    return [(a, b, plan_on(timeline, a, default)) for a, b in zip(starts, ends)]


def remove_grid(node: Node, actor: str, grid) -> dict:
    """Remove a grid defined wrongly (or given up), with its staff. What was recorded in it stays: its
    cases keep their history and still count for their street and community; its patrols are kept but no
    longer counted, since coverage is of the grids that exist. A grid with micro-grids is refused until they
    are removed. Defining it again (``add_grid``, same place and code) brings it back under the same key."""
    row = find_grid(node, grid)
    with node.writer(actor) as w:
        micro = [r[0] for r in node.conn.execute("SELECT code FROM grids WHERE parent = ? AND _deleted = 0"
                                                 " ORDER BY code", (row["id"],))]
        if micro:
            raise Conflict(f"grid {row['code']} holds micro-grids {', '.join(micro)}: remove them first "
                           f"(`hemei grids remove {row['scope']}/{micro[0]}`)")
        staff = [r[0] for r in node.conn.execute("SELECT id FROM grid_staff WHERE grid = ? AND _deleted = 0",
                                                 (row["id"],))]
        for staff_id in staff:
            w.delete("grid_staff", staff_id)
        w.delete("grids", row["id"])
    cases, patrols = (node.conn.execute(f"SELECT count(*) FROM {table} WHERE grid = ?", (row["id"],)).fetchone()[0]
                      for table in ("cases", "grid_patrols"))
    return {**{k: row[k] for k in ("id", "code", "name", "scope", "street", "community")},
            "staff_removed": len(staff), "cases": cases, "patrols": patrols}


def get_grid(node: Node, pk: str) -> dict:
    row = one(node, f"SELECT {GRID_COLUMNS} FROM grids WHERE id = ? AND _deleted = 0", (pk,))
    if row is None:
        raise NotFound(f"no grid {pk}")
    row["staff"] = staff_of(node, pk)
    row["warnings"] = staff_warnings(row["code"], row["staff"])
    timeline = _timelines(node, pk).get(pk, [])
    row["patrols_per_day"] = plan_on(timeline, dt.date.today().isoformat(), row["patrols_per_day"])
    row["plan_changes"] = [{"from": day, "patrols_per_day": n} for day, n in timeline]
    row["warnings"] += orphan_warnings(node, [row]).values()
    return row


def current_plan(node: Node, row: dict, day: str | None = None) -> int:
    """The plan in effect on ``day`` (today) for a grid row: from its history, whose changes from two PCs
    merge by day; the row's own column only for a grid whose plan never changed."""
    return plan_on(_timelines(node, row["id"]).get(row["id"], []), day or dt.date.today().isoformat(),
                   row["patrols_per_day"])


def orphan_warnings(node: Node, rows: list[dict]) -> dict[str, str]:
    """Micro-grids among ``rows`` whose grid was removed (at one tier while the micro-grid was added at
    the other), by id: their patrols count for nothing until the grid is defined again or they are removed."""
    parents = {r["parent"] for r in rows if r["parent"]}
    if not parents:
        return {}
    alive = {r[0] for r in node.conn.execute("SELECT id FROM grids WHERE _deleted = 0 AND id IN"
                                             " (SELECT value FROM json_each(?))", (json.dumps(sorted(parents)),))}
    return {r["id"]: f"micro-grid {r['code']}'s grid was removed: define the grid again, or remove the "
                     f"micro-grid (`hemei grids remove {r['scope']}`)"
            for r in rows if r["parent"] and r["parent"] not in alive}


def find_grid(node: Node, ref) -> dict:
    """A grid by id, by code, or by its path (from this node's scope or in full)."""
    ref = text(ref, "grid", limit=512)
    rows = list(node.db.query(
        f"SELECT {GRID_COLUMNS} FROM grids WHERE _deleted = 0 AND (id = ? OR code = ? OR scope = ? OR scope = ?)",
        (ref, ref, ref, f"{node.scope}/{ref}")))
    if not rows:
        raise NotFound(f"no grid {ref!r}: `hemei grids list` shows the grids this node holds", code="unknown_grid")
    if len(rows) > 1:
        # An id first: a path's '/' cannot stand for one segment of an API URL (the CLI takes either).
        named = ", ".join(f"{r['id']} at {r['scope']}" for r in rows[:NAMED_AT_MOST])
        more = f", and {len(rows) - NAMED_AT_MOST} more: `hemei grids list`" if len(rows) > NAMED_AT_MOST else ""
        raise InvalidInput(f"grid code {ref!r} is used in {len(rows)} places: give its id, or in the CLI its path "
                           f"({named}{more})", code="ambiguous_grid")
    return rows[0]


def list_grids(node: Node, street: str | None = None, *, known_only: bool = True) -> list[dict]:
    """The grids (of ``street``, a place as ``known_place`` takes it; any place inside with ``known_only``
    false)."""
    rows = list(node.db.query(f"SELECT {GRID_COLUMNS} FROM grids WHERE _deleted = 0 ORDER BY scope"))
    if street is not None:
        where = known_place(node, street) if known_only else place_scope(node, street)
        rows = [r for r in rows if covers(where, r["scope"])]
    counts: dict[str, dict[str, int]] = {}
    for grid, role, n in node.conn.execute(
            "SELECT grid, role, count(*) FROM grid_staff WHERE _deleted = 0 GROUP BY grid, role"):
        counts.setdefault(grid, {})[role] = n
    timelines, today = _timelines(node), dt.date.today().isoformat()
    for r in rows:
        r["patrols_per_day"] = plan_on(timelines.get(r["id"], []), today, r["patrols_per_day"])
        r["staff"] = {role: counts.get(r["id"], {}).get(role, 0) for role in ROLES}
        doubled = any(r["staff"][role] > 1 for role in SINGLE_ROLES)
        r["warnings"] = staff_warnings(r["code"], staff_of(node, r["id"])) if doubled else []
    for grid, warning in orphan_warnings(node, rows).items():
        next(r for r in rows if r["id"] == grid)["warnings"].append(warning)
    return rows


def staff_warnings(code: str, staff: list[dict]) -> list[str]:
    """What is wrong with a grid's staff: two leaders (or instructors), which one PC refuses but two PCs
    adding one each before they synced both keep, since each row is a person of its own."""
    said = []
    for role in SINGLE_ROLES:
        held = [s for s in staff if s["role"] == role]
        if len(held) > 1:
            said.append(f"grid {code} has {len(held)} {role}s ({', '.join(s['name'] for s in held)}), added on "
                        f"different PCs before they synced: keep one (`hemei grids staff remove {held[-1]['id']}`)")
    return said


# -- staff -----------------------------------------------------------------------

def add_staff(node: Node, actor: str, grid, *, name, role) -> dict:
    row = find_grid(node, grid)
    name = text(name, "name", limit=64)
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)} (网格长, 网格指导员, 兼职网格员)")
    with node.writer(actor) as w:
        held = staff_of(node, row["id"])  # under the write lock: a grid got four leaders from four requests at once
        if any(s["name"] == name and s["role"] == role for s in held):
            raise Conflict(f"{name} is already {role} of grid {row['code']}")
        if role in SINGLE_ROLES:
            current = [s for s in held if s["role"] == role]
            if current:
                raise Conflict(f"grid {row['code']} already has a {role}, {current[0]['name']}: remove them first "
                               f"(`hemei grids staff remove {current[0]['id']}`)")
        pk = w.insert("grid_staff", {"scope": row["scope"], "grid": row["id"], "name": name, "role": role})
    return {"id": pk, "grid": row["id"], "code": row["code"], "name": name, "role": role}


def remove_staff(node: Node, actor: str, staff_id) -> dict:
    staff_id = text(staff_id, "staff id")
    row = one(node, "SELECT id, grid, name, role FROM grid_staff WHERE id = ? AND _deleted = 0", (staff_id,))
    if row is None:
        raise NotFound(f"no grid staff {staff_id}")
    with node.writer(actor) as w:
        w.delete("grid_staff", staff_id)
    return row


def staff_of(node: Node, grid: str) -> list[dict]:
    order = "CASE role WHEN 'leader' THEN 0 WHEN 'instructor' THEN 1 ELSE 2 END"
    return list(node.db.query(f"SELECT id, name, role FROM grid_staff WHERE grid = ? AND _deleted = 0"
                              f" ORDER BY {order}, name", (grid,)))


# -- patrols and coverage ------------------------------------------------------------

def check_in(node: Node, actor: str, grid, *, worker, at=None, note=None) -> dict:
    """Record a patrol of a grid (time, worker, notes). ``counted``: whether coverage counts it (not before
    the plan of the grid it counts for starts), with the reason under ``not_counted`` when it does not."""
    row = find_grid(node, grid)
    worker = text(worker, "worker", limit=64)
    at = past_time(at, "patrol time")
    note = text(note, "note", required=False, limit=2000, lines=True)
    with node.writer(actor) as w:
        _refuse_a_second_entry(node, row, worker, at)  # inside the write: two requests at once go in turn
        pk = w.insert("grid_patrols", {"scope": row["scope"], "grid": row["id"], "street": row["street"],
                                       "worker": worker, "at": at, "day": at[:10], "note": note})
    shown = {"id": pk, "grid": row["id"], "code": row["code"], "worker": worker, "at": at, "note": note,
             "counted": True}
    planned = row
    if row["parent"] and not current_plan(node, row, at[:10]):  # walked on its grid's patrols that day
        planned = one(node, f"SELECT {GRID_COLUMNS}, _deleted FROM grids WHERE id = ?", (row["parent"],)) or {}
        if planned.get("_deleted", 1):  # recorded all the same: the patrol happened
            return {**shown, "counted": False, "not_counted": orphan_warnings(node, [row])[row["id"]]}
    if at[:10] < planned["established"]:
        shown.update(counted=False, not_counted=f"grid {planned['code']}'s patrol plan starts on "
                     f"{planned['established']}: coverage does not count this patrol (to count earlier patrols, "
                     f"define the grid again with an earlier established day)")
    return shown


#: Two check-ins of one worker on one grid closer than this are one patrol entered twice (a form sent
#: twice, a double click), not two patrols: the plan's patrols are hours apart.
SAME_PATROL = dt.timedelta(minutes=10)


def _refuse_a_second_entry(node: Node, grid: dict, worker: str, at: str) -> None:
    moment = dt.datetime.fromisoformat(at)
    days = sorted({(moment + step).date().isoformat() for step in (-SAME_PATROL, dt.timedelta(0), SAME_PATROL)})
    for held, pk in node.conn.execute(  # the days either side too: 23:58 and 00:02 are one patrol
            f"SELECT at, id FROM grid_patrols WHERE day IN ({', '.join('?' * len(days))}) AND grid = ? AND worker = ?",
            (*days, grid["id"], worker)):
        try:
            apart = abs(dt.datetime.fromisoformat(held) - moment)
        except (TypeError, ValueError):  # a row another node's release wrote otherwise: not this patrol
            continue
        if apart < SAME_PATROL:
            raise Conflict(f"{worker} checked in on grid {grid['code']} at {held[11:16]} already (patrol {pk}): "
                           f"one patrol entered twice counts once; a second patrol is at least "
                           f"{SAME_PATROL.seconds // 60} minutes after the first")


def check_window(start, end) -> tuple[str, str]:
    """A range of days for figures: both dates valid, in order, and in years an office can mean."""
    start, end = iso_date(start, "from"), iso_date(end, "to")
    if start > end:
        raise InvalidInput(f"from {start} is after to {end}")
    if start < "2000-01-01" or end > "2999-12-31":
        raise InvalidInput("dates must lie between 2000-01-01 and 2999-12-31")
    return start, end


def coverage(node: Node, start=None, end=None, street: str | None = None, *, list_missed: bool = True,
             known_only: bool = True) -> dict:
    """Planned vs done patrols per grid per day in [start, end] (default start: the 7 days that are over,
    up to ``end``; default end: today).

    A grid plans ``patrols_per_day`` from the day it was established; a day's
    check-ins beyond the plan do not make up for another day's misses. Every
    grid-day short of its plan is listed under ``missed`` (counted only, when
    ``list_missed`` is false). Only days that are over are counted (up to
    ``counted_to``): at ten in the morning the evening patrol is not missed
    yet, and a ranking that counted it would punish every street for the
    hour it was asked. Today's patrols so far are under ``today``.
    """
    today = dt.date.today()
    end = iso_date(end or today, "to")
    counted_to = min(check_window(end, end)[0], (today - dt.timedelta(days=1)).isoformat())
    if start is None:  # the 7 days over up to ``end``, never before the years check_window takes
        start = max("2000-01-01", (dt.date.fromisoformat(counted_to) - dt.timedelta(days=6)).isoformat())
    start, end = check_window(start, end)
    if (dt.date.fromisoformat(end) - dt.date.fromisoformat(start)).days >= 3660:
        raise InvalidInput("coverage covers at most ten years at once")
    timelines = _timelines(node)
    grids = [g for g in list_grids(node, street, known_only=known_only)
             if g["patrols_per_day"] > 0 or any(n for _, n in timelines.get(g["id"], []))]
    # A micro-grid is walked on its grid's patrols on the days it has no plan of its own: its check-ins of
    # those days are the grid's (removed micro-grids too: the days before keep what they counted for).
    micro = {grid: (parent, plan) for grid, parent, plan in node.conn.execute(
        "SELECT id, parent, patrols_per_day FROM grids WHERE parent IS NOT NULL")}
    done: dict[str, dict[str, int]] = {}
    for grid, day, n in node.conn.execute("SELECT grid, day, count(*) FROM grid_patrols"
                                          " WHERE day >= ? AND day <= ? GROUP BY grid, day", (start, end)):
        if grid in micro and not plan_on(timelines.get(grid, []), day, micro[grid][1]):
            grid = micro[grid][0]
        days = done.setdefault(grid, {})
        days[day] = days.get(day, 0) + n
    in_window = start <= today.isoformat() <= end
    per_grid, missed, missed_count = [], [], 0
    today_planned = today_done = 0
    for g in grids:
        timeline, column = timelines.get(g["id"], []), g["patrols_per_day"]
        patrolled = done.get(g["id"], {})
        grid_planned = made = 0
        for first, last, plan in _plan_segments(timeline, max(start, g["established"]), counted_to, column):
            days = (dt.date.fromisoformat(last) - dt.date.fromisoformat(first)).days + 1
            counts = {day: min(n, plan) for day, n in patrolled.items() if first <= day <= last}
            grid_planned += plan * days
            made += sum(counts.values())
            if not plan:
                continue
            missed_count += days - sum(1 for n in counts.values() if n == plan)
            if list_missed:
                for offset in range(days):
                    day = (dt.date.fromisoformat(first) + dt.timedelta(days=offset)).isoformat()
                    if counts.get(day, 0) < plan:
                        missed.append({"grid": g["id"], "code": g["code"], "name": g["name"],
                                       "street": g["street"], "community": g["community"], "day": day,
                                       "planned": plan, "done": counts.get(day, 0)})
        shown = {"grid": g["id"], "code": g["code"], "name": g["name"], "street": g["street"],
                 "community": g["community"], "planned": grid_planned, "done": made,
                 "coverage": round(made / grid_planned, 4) if grid_planned else None}
        if in_window and g["established"] <= today.isoformat():
            plan = g["patrols_per_day"]  # list_grids gives the plan in effect today
            shown["today"] = min(patrolled.get(today.isoformat(), 0), plan)
            today_planned += plan
            today_done += shown["today"]
        per_grid.append(shown)
    planned = sum(r["planned"] for r in per_grid)
    made = sum(r["done"] for r in per_grid)
    return {"from": start, "to": end, "counted_to": counted_to if counted_to >= start else None,
            "planned": planned, "done": made, "coverage": round(made / planned, 4) if planned else None,
            "grids": per_grid, "missed_count": missed_count, "missed": missed,
            "today": {"day": today.isoformat(), "planned": today_planned, "done": today_done} if in_window else None}
