"""People and what they sign up for: volunteers, teams, the category catalogue, activities, attendance.

Every function takes an open node (and the actor its writes are logged
under), checks its input, and either writes one transaction or raises a
:class:`hemei.core.HemeiError` having written nothing. The CLI and the HTTP
routes are thin layers over these.
"""

from __future__ import annotations

import datetime as dt
import re

from hemei.core import Conflict, InvalidInput, Node, NotFound
from hemei.core.fields import flag, iso_date, one, row_scope, since_date, text
from hemei.core.scope import covers

from . import keys, pii

#: Used until a district configures its own catalogue (``hemei volunteers category add``):
#: the six kinds of free service the 96345 centre offers four special groups.
DEFAULT_CATEGORIES = {
    "daily_care": "生活照料",
    "health": "医疗保健",
    "companionship": "精神慰藉",
    "legal": "法律援助",
    "culture": "文体教育",
    "safety": "安全守护",
}
ATTENDANCE_STATES = ("attended", "no_show")
_CODE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


# -- volunteers ----------------------------------------------------------------

PUBLIC_COLUMNS = "id, scope, name, person, party_member, skills, team, registered_on, key_id"


def add_volunteer(node: Node, actor: str, *, name, id_number, phone=None, party_member=False, skills=None,
                  team=None, scope=None) -> dict:
    """Register a volunteer; the ID number and phone are stored only encrypted and as pseudonyms."""
    name = text(name, "name", limit=64)
    id_number = pii.normalize_id_number(id_number)
    phone = pii.normalize_phone(phone) if phone not in (None, "") else None
    skills = text(skills, "skills", required=False, limit=500, lines=True)
    if not isinstance(party_member, bool):
        raise InvalidInput("party_member must be true or false")
    scope = row_scope(node, scope)
    team_id = find_team(node, team)["id"] if team else None
    key = keys.require_key(node, actor)
    person = key.pseudonym("id", id_number)
    pk = node.new_id()
    row = {"id": pk, "scope": scope, "name": name, "person": person, "party_member": int(party_member),
           "skills": skills, "team": team_id, "key_id": key.key_id, "registered_on": dt.date.today().isoformat(),
           "id_number_enc": key.encrypt(id_number, "volunteers", pk, "id_number"),
           "phone_enc": key.encrypt(phone, "volunteers", pk, "phone") if phone else None,
           "phone_key": key.pseudonym("phone", phone) if phone else None}
    with node.writer(actor) as w:
        # Under the write lock, as every check of what is stored: a double click registered the person twice.
        held = one(node, "SELECT id FROM volunteers WHERE person = ? AND scope = ? AND _deleted = 0", (person, scope))
        if held:
            raise Conflict(f"this person is already registered in {scope} as volunteer {held['id']}")
        w.insert("volunteers", row)
    return get_volunteer(node, pk)


def get_volunteer(node: Node, volunteer_id) -> dict:
    volunteer_id = text(volunteer_id, "volunteer")
    row = one(node, f"SELECT {PUBLIC_COLUMNS}, phone_enc FROM volunteers WHERE id = ? AND _deleted = 0",
              (volunteer_id,))
    if row is None:
        raise NotFound(f"no volunteer {volunteer_id}")
    return _shown(node, row)


def _shown(node: Node, row: dict) -> dict:
    """A volunteer as users see it: phone masked, ID number never."""
    phone_enc = row.pop("phone_enc", None)
    row["phone"] = None
    row["party_member"] = bool(row["party_member"])
    # Its name as well as its id: an operator reads 老吴热线, not a key (found in a walkthrough).
    team = row["team"] and one(node, "SELECT name FROM volunteer_teams WHERE id = ? AND _deleted = 0", (row["team"],))
    row["team_name"] = team["name"] if team else None
    key = keys.active_key(node)
    if phone_enc and key is not None and phone_enc.startswith(key.key_id + ":"):
        try:
            row["phone"] = mask_phone(key.decrypt(phone_enc, "volunteers", row["id"], "phone"))
        except InvalidInput:
            row["phone"] = None  # unreadable here (altered, or another key): show the rest
    return row


def mask_phone(phone: str) -> str:
    """Enough to recognise a number, not to dial it: 138****1234; short numbers keep only their last 2."""
    if len(phone) >= 11:
        return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]
    return "*" * (len(phone) - 2) + phone[-2:]


def find_volunteers(node: Node, actor: str, query, limit: int = 50) -> list[dict]:
    """Volunteers matching a name (part of it), a phone number or an ID number."""
    query = text(query, "query", limit=64)
    plain = pii.typed_plainly(query).strip()  # numbers typed in full-width are numbers too
    params: tuple
    if re.fullmatch(r"[0-9]{17}[0-9Xx]", plain):
        person = keys.require_key(node, actor).pseudonym("id", pii.normalize_id_number(plain))
        where, params = "person = ?", (person,)
    elif re.fullmatch(r"[+0-9(][0-9\s\-()]{4,24}", plain):
        key = keys.require_key(node, actor)
        spellings = pii.phone_spellings(pii.normalize_phone(plain))
        where = f"phone_key IN ({', '.join('?' * len(spellings))})"
        params = tuple(key.pseudonym("phone", spelling) for spelling in spellings)
    else:
        escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where, params = "name LIKE ? ESCAPE '\\'", (f"%{escaped}%",)
    rows = node.db.query(f"SELECT {PUBLIC_COLUMNS}, phone_enc FROM volunteers WHERE _deleted = 0 AND {where}"
                         f" ORDER BY name, id LIMIT ?", (*params, limit))
    return [_shown(node, r) for r in rows]


def resolve_person(node: Node, actor: str, *, volunteer=None, id_number=None) -> tuple[str, dict | None]:
    """(person pseudonym, a local registration or None) from a volunteer id or an ID number."""
    if volunteer:
        row = get_volunteer(node, volunteer)
        if id_number and keys.require_key(node, actor).pseudonym("id", pii.normalize_id_number(id_number)) \
                != row["person"]:  # two names for one act: which one was meant is not for this node to guess
            raise InvalidInput(f"volunteer {row['id']} is not the person with this ID number: give one of the two")
        return row["person"], row
    if not id_number:
        raise InvalidInput("name the volunteer: a volunteer id or an ID number")
    person = keys.require_key(node, actor).pseudonym("id", pii.normalize_id_number(id_number))
    row = one(node, f"SELECT {PUBLIC_COLUMNS} FROM volunteers WHERE person = ? AND _deleted = 0"
                    " ORDER BY length(scope) DESC, id LIMIT 1", (person,))
    if row is None and not _person_known(node, person):
        raise NotFound("no volunteer with this ID number is known on this node")
    return person, row


def _person_known(node: Node, person: str) -> bool:
    return any(node.conn.execute(f"SELECT 1 FROM {t} WHERE person = ? LIMIT 1", (person,)).fetchone()
               for t in ("volunteers", "volunteer_confirmations"))


# -- teams ----------------------------------------------------------------------

def add_team(node: Node, actor: str, *, name, leader=None, note=None, scope=None) -> dict:
    name = text(name, "name", limit=64)
    scope = row_scope(node, scope)
    with node.writer(actor) as w:
        if one(node, "SELECT id FROM volunteer_teams WHERE name = ? AND scope = ? AND _deleted = 0", (name, scope)):
            raise Conflict(f"{scope} already has a team named {name}")
        pk = w.insert("volunteer_teams", {"name": name, "scope": scope,
                                          "leader": text(leader, "leader", required=False, limit=64),
                                          "note": text(note, "note", required=False, limit=500, lines=True)})
    return find_team(node, pk)


def find_team(node: Node, ref) -> dict:
    """A team by id, or by name (the one nearest this node's scope)."""
    ref = text(ref, "team", limit=64)
    row = one(node, "SELECT id, scope, name, leader, note FROM volunteer_teams WHERE id = ? AND _deleted = 0",
              (ref,))
    if row is None:
        rows = [r for r in node.db.query("SELECT id, scope, name, leader, note FROM volunteer_teams"
                                         " WHERE name = ? AND _deleted = 0 ORDER BY id", (ref,))
                if covers(r["scope"], node.scope) or covers(node.scope, r["scope"])]
        rows.sort(key=lambda r: -len(r["scope"]))
        row = rows[0] if rows else None
    if row is None:
        raise NotFound(f"no team {ref!r}: add it with `hemei volunteers team add`")
    return row


def list_teams(node: Node) -> list[dict]:
    return list(node.db.query("SELECT id, scope, name, leader, note FROM volunteer_teams WHERE _deleted = 0"
                              " ORDER BY scope, name"))


# -- the category catalogue --------------------------------------------------------

def categories(node: Node, scope: str | None = None) -> dict[str, str]:
    """code -> name for activities in ``scope``: the nearest definition of each code wins."""
    scope = scope or node.scope
    found = {code: (-1, name, 1) for code, name in DEFAULT_CATEGORIES.items()}
    for code, name, active, where in node.conn.execute(
            "SELECT code, name, active, scope FROM volunteer_categories WHERE _deleted = 0"):
        if covers(where, scope) and len(where) >= found.get(code, (-2,))[0]:
            found[code] = (len(where), name, active)
    return {code: name for code, (_, name, active) in sorted(found.items()) if active}


def set_category(node: Node, actor: str, *, code, name, active: bool = True) -> dict:
    """Add, rename or retire a category for this node's subtree (rows flow down to its streets)."""
    code = text(code, "code", limit=32)
    if not _CODE.match(code):
        raise InvalidInput(f"category code {code!r}: use lower-case letters, digits and _")
    name = text(name, "name", limit=64)
    active = flag(active, "active")
    pk = f"{node.scope}|{code}"
    values = {"code": code, "name": name, "active": int(bool(active))}
    with node.writer(actor) as w:
        if one(node, "SELECT 1 AS x FROM volunteer_categories WHERE id = ? AND _deleted = 0", (pk,)):
            w.update("volunteer_categories", pk, values)
        else:
            w.insert("volunteer_categories", {"id": pk, **values})
    return {"code": code, "name": name, "active": bool(active), "scope": node.scope}


# -- activities, sign-up, attendance -----------------------------------------------

def add_activity(node: Node, actor: str, *, title, category, date, place=None, capacity=None, team=None,
                 organiser=None, scope=None, another: bool = False) -> dict:
    """Add an activity. One with the same title, date, place and scope as one held is refused as entered
    twice (an operator who ran the command again to be sure), unless ``another`` says it is a second one
    (a second session): with no way to remove an activity, a copy would stay in every count."""
    title = text(title, "title", limit=100)
    category = text(category, "category", limit=32)
    scope = row_scope(node, scope)
    catalogue = categories(node, scope)
    if category not in catalogue:
        raise InvalidInput(f"unknown category {category!r}: one of {', '.join(catalogue)}")
    if capacity is not None and (isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1):
        raise InvalidInput("capacity must be a whole number of at least 1")
    row = {"title": title, "scope": scope, "category": category, "date": iso_date(date),
           "place": text(place, "place", required=False), "capacity": capacity,
           "team": find_team(node, team)["id"] if team else None,
           "organiser": text(organiser, "organiser", required=False, limit=64) or actor}
    another = flag(another, "another")
    with node.writer(actor) as w:
        held = one(node, "SELECT id FROM volunteer_activities WHERE scope = ? AND title = ? AND date = ? AND"
                         " place IS ? AND _deleted = 0 ORDER BY id LIMIT 1",
                   (row["scope"], row["title"], row["date"], row["place"]))
        if held is not None and not another:
            where = f" at {row['place']}" if row["place"] else ""
            raise Conflict(f"{row['title']} on {row['date']}{where} is held here already, as activity {held['id']}: "
                           "record on it; to add a second one on purpose (another session), give --another "
                           '("another": true in the API)',
                           code="activity_exists")
        pk = w.insert("volunteer_activities", row)
    return get_activity(node, pk)


def get_activity(node: Node, activity_id) -> dict:
    activity_id = text(activity_id, "activity")
    row = one(node, "SELECT id, scope, title, category, date, place, capacity, team, organiser"
                    " FROM volunteer_activities WHERE id = ? AND _deleted = 0", (activity_id,))
    if row is None:
        raise NotFound(f"no activity {activity_id}")
    # Only rows in the activity's own scope are about it (what honest nodes write): a street that learnt a
    # district activity's id could otherwise fill its places, or block its hours, with rows of its own.
    row["signed_up"] = node.conn.execute("SELECT count(*) FROM volunteer_signups WHERE activity = ? AND scope = ?",
                                         (activity_id, row["scope"])).fetchone()[0]
    return row


def activity_recorded_here(node: Node, activity_id) -> dict:
    """An activity whose sign-ups, attendance and hours this node records: one inside its scope.

    A street lists its district's activities too (they flow down), but their rows are the district's to
    write; the writer's "scope … is outside this node's scope" said that in no words an operator reads.
    """
    act = get_activity(node, activity_id)
    if not covers(node.scope, act["scope"]):
        raise InvalidInput(f"{act['title']} is an activity of {act['scope']}: its sign-ups and hours are "
                           "recorded there")
    return act


def list_activities(node: Node, since: str | None = None) -> list[dict]:
    sql = ("SELECT a.id, a.scope, a.title, a.category, a.date, a.place, a.capacity,"
           " (SELECT count(*) FROM volunteer_signups s WHERE s.activity = a.id AND s.scope = a.scope) AS signed_up"
           " FROM volunteer_activities a WHERE a._deleted = 0")
    params: tuple = ()
    if since := since_date(since):
        sql, params = sql + " AND a.date >= ?", (since,)
    return list(node.db.query(sql + " ORDER BY a.date, a.title", params))


def signup(node: Node, actor: str, *, activity, volunteer) -> dict:
    vol = get_volunteer(node, volunteer)
    with node.writer(actor) as w:
        # Its places counted under the write lock: two sign-ups at once overfilled it.
        act = activity_recorded_here(node, activity)
        if one(node, "SELECT id FROM volunteer_signups WHERE activity = ? AND volunteer = ? AND scope = ?",
               (act["id"], vol["id"], act["scope"])):
            raise Conflict(f"{vol['name']} is already signed up for {act['title']}")
        if act["capacity"] is not None and act["signed_up"] >= act["capacity"]:
            raise Conflict(f"{act['title']} is full ({act['capacity']} places)")
        pk = w.insert("volunteer_signups", {"scope": act["scope"], "activity": act["id"], "volunteer": vol["id"]})
    return {"id": pk, "activity": act["id"], "volunteer": vol["id"]}


def attendance_of(node: Node, activity_id: str, volunteer_id: str) -> str | None:
    row = one(node, "SELECT status FROM volunteer_attendance WHERE id = ? AND _deleted = 0",
              (f"{activity_id}:{volunteer_id}",))
    return row["status"] if row else None


def mark_attendance(node: Node, actor: str, *, activity, volunteer, status, writer=None) -> dict:
    """Mark a volunteer attended or no-show at an activity; marking again corrects it."""
    if not isinstance(status, str) or status not in ATTENDANCE_STATES:
        raise InvalidInput(f"attendance is one of {', '.join(ATTENDANCE_STATES)}, not {status!r}")
    act = activity_recorded_here(node, activity)
    vol = get_volunteer(node, volunteer)
    pk = f"{act['id']}:{vol['id']}"

    def write(w):
        # Read under the write lock: hours logged at the same moment must not leave a no-show with hours.
        if status == "no_show" and one(node, "SELECT 1 AS x FROM volunteer_hours WHERE activity = ?"
                                             " AND volunteer = ? AND scope = ?", (act["id"], vol["id"], act["scope"])):
            raise Conflict(f"{vol['name']} has hours recorded for {act['title']}: a no-show cannot have hours")
        current = attendance_of(node, act["id"], vol["id"])
        if current is None:
            w.insert("volunteer_attendance", {"id": pk, "scope": act["scope"], "activity": act["id"],
                                              "volunteer": vol["id"], "person": vol["person"], "status": status})
        elif current != status:
            w.update("volunteer_attendance", pk, {"status": status})

    if writer is not None:
        write(writer)
    else:
        with node.writer(actor) as w:
            write(w)
    return {"activity": act["id"], "volunteer": vol["id"], "status": status}
