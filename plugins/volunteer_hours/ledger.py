"""Hours and the time bank: log, confirm, correct, redeem, balance, star level, certificate.

How hours count. An hour entry counts once it is confirmed; the confirmation
carries its ``delta_cents``: the entry's hours, or for a correction the new hours
minus those of the entry it corrects (which was confirmed, and is immutable).
A person's cumulative hours are the sum of the deltas of their
confirmations, whatever order they arrived in; the corrections telescope.

The offline double-spend problem, and its solution. Two streets that both
hold part of a person's hours could, while both are offline, each redeem
against the whole balance. Here every node keeps its own **account** per
person: the confirmations it wrote, minus the redemptions it wrote (both
recognisable by their origin). A node may redeem only from its own account,
and it alone writes to it, so it always knows that account exactly, online
or not; no account ever goes below zero, so neither does their sum, which
is the balance the district shows. The price: hours served at street A are
spent at street A (or transferred later by a future ``transfer`` entry);
the person still sees one balance and one star level at the district.
"It alone writes to it" is enforced: an entry is confirmed and corrected
only by the node that recorded it, here and in the module's
``validate_change`` for rows from elsewhere. A correction that lowers hours
is refused if that account would go below zero: when it is written, and
again when it is confirmed.

Corrections chain. A correction not confirmed yet may itself be corrected:
the new entry replaces it (it is never confirmed from then on) and counts
the change from the nearest confirmed entry up the chain. That is how an
operator withdraws a correction that a later redemption made impossible to
confirm: correct it again, with hours that fit (the old hours withdraw it).
"""

from __future__ import annotations

import datetime as dt

from hemei.core import Conflict, HemeiError, InvalidInput, Node, NotFound
from hemei.core.fields import (filter_scope, flag, in_subtree_sql, local_time, one, past_time, subtree_params,
                               text)
from hemei.core.scope import covers

from .registry import activity_recorded_here, attendance_of, get_volunteer, mark_attendance
from .tables import HELD_PLACES

DEFAULT_STARS = (100.0, 300.0, 600.0, 1000.0, 1500.0)
#: Sum hours as whole hundredths: a float sum depends on the order of its terms,
#: and two nodes holding the same rows must show the same figures. Confirmations
#: store ``delta_cents`` (an integer) so that the roll-up sums integers directly.
CENTS = "coalesce(sum(CAST(round({} * 100) AS INTEGER)), 0)"
MAX_HOURS_PER_ENTRY = 24.0
_EPS = 1e-9


def _hours(value, field: str = "hours", *, allow_zero: bool = False) -> float:
    if isinstance(value, bool):  # JSON true is not one hour
        raise InvalidInput(f"{field} must be a number")
    if not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise InvalidInput(f"{field} must be a number") from None
    given, value = value, round(float(value), 2)
    if value != value or value < 0 or (value == 0 and not allow_zero):
        # Said of the number given: 0.001 rounds to 0 (hours are kept to the hundredth), and "not 0" misled.
        least = "zero or more" if allow_zero else "at least 0.01 (hours are kept to the hundredth)"
        raise InvalidInput(f"{field} must be {least}, not {given:g}")
    return value


def _span(served_on: str, sign_in, sign_out) -> tuple[str, str, float]:
    """Sign-in and sign-out as stored (local time, ``YYYY-MM-DDTHH:MM:SS``) and the hours between them.

    The sign-in is on the activity's day; the sign-out may be on the next (a night's service).
    """
    def at(value, field: str) -> str:
        typed = text(value, field, limit=40)
        try:
            return local_time(f"{served_on}T{typed}" if len(typed) <= 5 else typed, field)  # HH:MM: that day
        except InvalidInput as exc:
            if "years" in exc.message:
                raise
            raise InvalidInput(f"{field} {typed!r}: use HH:MM or YYYY-MM-DDTHH:MM") from None
    start, end = at(sign_in, "sign-in"), at(sign_out, "sign-out")
    if start[:10] != served_on:
        raise InvalidInput(f"sign-in {start.replace('T', ' ')} is not on the activity's day, {served_on}")
    if end <= start:
        raise InvalidInput("sign-out must be after sign-in")
    past_time(end, "sign-out")  # hours not served yet would count, and could be spent (found in a walkthrough)
    hours = (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds() / 3600
    return start, end, round(hours, 2)


# -- hour entries -----------------------------------------------------------------

def log_hours(node: Node, actor: str, *, activity, volunteer, hours=None, sign_in=None, sign_out=None,
              confirm: bool = False) -> dict:
    """Record a volunteer's hours at an activity (attended); ``confirm`` when the organiser enters them."""
    confirm = flag(confirm, "confirm")
    act = activity_recorded_here(node, activity)
    vol = get_volunteer(node, volunteer)
    # Hours of a later activity would be on a certificate already. A day's grace: a server kept in UTC is
    # still on yesterday's date for the first eight hours of a day in China.
    if act["date"] > (dt.date.today() + dt.timedelta(days=1)).isoformat():
        raise InvalidInput(f"{act['title']} is on {act['date']}: hours are recorded from that day on")
    if sign_in or sign_out:
        if not (sign_in and sign_out) or hours is not None:
            raise InvalidInput("give both sign-in and sign-out times, or hours")
        sign_in, sign_out, value = _span(act["date"], sign_in, sign_out)
    else:
        value = _hours(hours)
    if value > MAX_HOURS_PER_ENTRY:
        raise InvalidInput(f"one entry holds at most {MAX_HOURS_PER_ENTRY:g} hours, not {value:g}")
    entry = {"scope": act["scope"], "volunteer": vol["id"], "person": vol["person"], "activity": act["id"],
             "team": act["team"] or vol["team"], "category": act["category"], "served_on": act["date"],
             "sign_in": sign_in, "sign_out": sign_out, "hours": value}
    with node.writer(actor) as w:
        # Checked under the write lock: two requests at once (a double click) both passed these checks
        # when they were read before it, and the same hours were recorded, confirmed and spent twice.
        attended = attendance_of(node, act["id"], vol["id"])
        if attended == "no_show":
            raise InvalidInput(f"{vol['name']} is marked no-show at {act['title']}: no hours can be recorded")
        if one(node, "SELECT id FROM volunteer_hours WHERE activity = ? AND volunteer = ? AND corrects IS NULL"
                     " AND scope = ?", (act["id"], vol["id"], act["scope"])):  # see registry.get_activity
            raise Conflict(f"hours of {vol['name']} at {act['title']} are already recorded: correct them instead")
        if attended is None:
            mark_attendance(node, actor, activity=act["id"], volunteer=vol["id"], status="attended", writer=w)
        pk = w.insert("volunteer_hours", entry)
        if confirm:
            _confirm(node, w, _entry(node, pk, w))
        # A walk-in served and is recorded (capacity bounds sign-ups, not service), but the operator is told:
        # a volunteer id typed wrong looks the same (found in a walkthrough).
        # By person: one signed up under another of their registrations signed up all the same (review).
        walk_in = not one(node, "SELECT 1 AS x FROM volunteer_signups s JOIN volunteers v ON v.id = s.volunteer"
                                " WHERE s.activity = ? AND s.scope = ? AND v.person = ?",
                          (act["id"], act["scope"], vol["person"]))
    return {**hour_entry(node, pk), "walk_in": walk_in}


def _entry(node: Node, hour_id, w=None) -> dict:
    hour_id = text(hour_id, "hour")
    sql = ("SELECT id, scope, volunteer, person, activity, team, category, served_on, hours, corrects, reason,"
           " _origin AS recorded_by FROM volunteer_hours WHERE id = ?")
    rows = w.query(sql, (hour_id,)) if w is not None else list(node.db.query(sql, (hour_id,)))
    if not rows:
        raise NotFound(f"no hour entry {hour_id}")
    return rows[0]


def hour_entry(node: Node, hour_id: str) -> dict:
    entry = _entry(node, hour_id)
    conf = one(node, "SELECT id, _origin AS account FROM volunteer_confirmations WHERE hour = ?", (hour_id,))
    entry["confirmed"] = conf is not None
    corrected = one(node, "SELECT id FROM volunteer_hours WHERE corrects = ?", (hour_id,))
    entry["corrected_by"] = corrected["id"] if corrected else None
    return entry


def account(node: Node, person: str, origin: str, w=None) -> float:
    """Hours ``origin`` has confirmed for ``person`` minus what it redeemed: its own account."""
    return _account(w.conn if w is not None else node.conn, person, origin)


def _account(conn, person: str, origin: str) -> float:
    earned = conn.execute("SELECT coalesce(sum(delta_cents), 0) FROM volunteer_confirmations"
                          " WHERE person = ? AND _origin = ?", (person, origin)).fetchone()[0]
    spent = conn.execute(f"SELECT {CENTS.format('hours')} FROM volunteer_redemptions"
                         " WHERE person = ? AND _origin = ?", (person, origin)).fetchone()[0]
    return (earned - spent) / 100


def _owned(node: Node, entry: dict, what: str) -> None:
    if entry["recorded_by"] != node.id:
        raise Conflict(f"hour entry {entry['id']} was recorded by node {entry['recorded_by'][:7]}: it is {what} "
                       "there, where the account it counts in is kept")


#: What a confirmation copies from its hour entry (the roll-up groups by them).
CONFIRMATION_COPIES = ("scope", "volunteer", "person", "team", "category", "served_on")


def _confirmed_hours(conn, hour_id: str) -> float | None:
    row = conn.execute("SELECT h.hours FROM volunteer_hours h JOIN volunteer_confirmations c ON c.hour = h.id"
                       " WHERE h.id = ?", (hour_id,)).fetchone()
    return None if row is None else row[0]


def _replaced_hours(conn, corrects: str | None) -> tuple[float | None, str | None]:
    """What a correction's hours replace: ``(hours, None)`` of the nearest confirmed entry up its chain
    (corrections not confirmed before they were corrected are skipped: they never count), ``(None, None)``
    for an entry that corrects nothing, ``(None, id)`` when the chain ends at an entry ``id`` not confirmed."""
    hour_id, seen = corrects, set()
    while hour_id is not None and hour_id not in seen:
        seen.add(hour_id)
        row = conn.execute("SELECT h.hours, h.corrects, c.id FROM volunteer_hours h"
                           " LEFT JOIN volunteer_confirmations c ON c.hour = h.id WHERE h.id = ?",
                           (hour_id,)).fetchone()
        if row is None or row[2] is not None:
            return (None, hour_id) if row is None else (row[0], None)
        if row[1] is None:
            return None, hour_id  # a first entry not confirmed (honest nodes correct only confirmed ones)
        hour_id = row[1]
    return (None, corrects) if corrects is not None else (None, None)


def _corrected_by(conn, hour_id: str) -> str | None:
    row = conn.execute("SELECT id FROM volunteer_hours WHERE corrects = ?", (hour_id,)).fetchone()
    return None if row is None else row[0]


def _delta_cents(hours: float, corrected: float | None) -> int:
    """What a confirmation counts: the entry's hours, or for a correction the change from the entry it corrects."""
    return round((hours if corrected is None else round(hours - corrected, 2)) * 100)


def _overdraw(node: Node, conn, person: str, hours: float, replaced: float, target: str,
              pending: bool = False) -> tuple[str, str] | None:
    """Why confirming ``hours`` in place of ``replaced`` would take this node's account below zero, and what to
    do instead (correct ``target`` to hours that fit; ``pending``: ``target`` is that correction), or None."""
    delta = _delta_cents(hours, replaced)
    held = round(_account(conn, person, node.id) * 100)
    if delta >= 0 or held + delta >= 0:
        return None
    least = (round(replaced * 100) - held) / 100
    why = (f"this correction takes {-delta / 100:g} hours back, but part of them were already redeemed: the "
           "balance cannot go below zero")
    command = f"`hemei volunteers hours correct {target} --hours {{:g}} --reason …`"
    if least < replaced:
        instead = f"correct {target} to at least {least:g} hours instead ({command.format(least)}" + (
            f"; --hours {replaced:g} withdraws the correction)" if pending else ")")
    elif pending:  # nothing left here to take back
        instead = f"withdraw it: correct {target} back to {replaced:g} hours ({command.format(replaced)})"
    else:
        instead = (f"nothing is left here to take back, so {target} keeps its {replaced:g} hours; correct it "
                   "once more hours of this person are confirmed here")
    return why, instead


def _next_step(node: Node, conn, hour_id: str) -> str:
    """What the operator can do with the latest entry of the chain that ``hour_id`` starts, said plainly."""
    latest, seen = hour_id, {hour_id}
    while (after := _corrected_by(conn, latest)) is not None and after not in seen:
        latest = after
        seen.add(after)
    row = conn.execute("SELECT h.hours, h.corrects, h.person, c.id FROM volunteer_hours h"
                       " LEFT JOIN volunteer_confirmations c ON c.hour = h.id WHERE h.id = ?", (latest,)).fetchone()
    said = "" if latest == hour_id else f"its latest correction is {latest}: "
    if row[3] is not None:
        return f"{said}correct {latest}"
    replaced, _ = _replaced_hours(conn, row[1])
    if replaced is not None and (problem := _overdraw(node, conn, row[2], row[0], replaced, latest, True)):
        return f"{said}{latest} cannot be confirmed ({problem[0]}); {problem[1]}"
    return f"{said}confirm {latest}" + (", or correct it" if row[1] else "")


def _confirm(node: Node, w, entry: dict) -> str:
    _owned(node, entry, "confirmed")
    if w.query("SELECT 1 AS x FROM volunteer_confirmations WHERE hour = ?", (entry["id"],)):
        raise Conflict(f"hour entry {entry['id']} is already confirmed")
    if (replaced_by := _corrected_by(w.conn, entry["id"])) is not None:
        raise Conflict(f"hour entry {entry['id']} was corrected by {replaced_by} before it was confirmed, so it "
                       f"never counts: {_next_step(node, w.conn, replaced_by)}")
    corrected = None
    if entry["corrects"]:
        corrected, unconfirmed = _replaced_hours(w.conn, entry["corrects"])
        if corrected is None:
            raise Conflict(f"the entry {unconfirmed} this corrects is not confirmed")
        if problem := _overdraw(node, w.conn, entry["person"], entry["hours"], corrected, entry["id"], True):
            raise InvalidInput("; ".join(problem))
    return w.insert("volunteer_confirmations", {
        "hour": entry["id"], **{k: entry[k] for k in CONFIRMATION_COPIES},
        "delta_cents": _delta_cents(entry["hours"], corrected)})


def received_hours_problem(values: dict) -> str | None:
    """Why a received hour entry cannot count (its hours out of range), or None."""
    hours = values.get("hours")
    if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not 0 <= hours <= MAX_HOURS_PER_ENTRY:
        return f"an hour entry holds 0 to {MAX_HOURS_PER_ENTRY:g} hours, not {hours!r}"
    return None


def received_confirmation_problem(conn, scope: str, values: dict, origin: str) -> str | None:
    """Why a received confirmation cannot count, or None: it must be written by the node that recorded the
    entry, copy the entry's person, place and team, and count exactly its hours (or its correction's change).
    Reads only earlier entries of the same origin, so every replica judges it alike."""
    entry = conn.execute(f"SELECT _origin, hours, corrects, {', '.join(CONFIRMATION_COPIES)} FROM volunteer_hours"
                         " WHERE id = ?", (values.get("hour"),)).fetchone()
    if entry is None or entry[0] != origin:
        return "an hour entry is confirmed only by the node that recorded it (its account)"
    copied = dict(zip(CONFIRMATION_COPIES, entry[3:]))
    if any((scope if k == "scope" else values.get(k)) != v for k, v in copied.items()):
        return "a confirmation copies its hour entry's person, place, team, category and day"
    if _corrected_by(conn, values.get("hour")) is not None:
        return "an entry corrected before it was confirmed never counts: its correction replaces it"
    corrected = None
    if entry[2] is not None:
        corrected, unconfirmed = _replaced_hours(conn, entry[2])
        if corrected is None:
            return f"the entry {unconfirmed} this corrects is not confirmed"
    expected = _delta_cents(entry[1], corrected)
    if values.get("delta_cents") != expected:
        return f"a confirmation counts its entry's hours: {expected} hundredths, not {values.get('delta_cents')!r}"
    if expected < 0 and round(_account(conn, copied["person"], origin) * 100) + expected < 0:
        return "a correction cannot take back hours already redeemed: its node's account would go below zero"
    return None


#: What a correction copies from the entry it corrects (``correct_hours``).
CORRECTION_COPIES = ("volunteer", "person", "activity", "team", "category", "served_on")


def received_correction_problem(conn, scope: str, values: dict, origin: str) -> str | None:
    """Why a received correction cannot stand, or None: written by the node that recorded the entry it
    corrects, and about the same person, activity and day (only its hours and reason differ)."""
    corrected = conn.execute(f"SELECT _origin, scope, {', '.join(CORRECTION_COPIES)} FROM volunteer_hours"
                             " WHERE id = ?", (values["corrects"],)).fetchone()
    if corrected is None or corrected[0] != origin:
        return "an hour entry is corrected only by the node that recorded it"
    if corrected[1] != scope or any(values.get(k) != v for k, v in zip(CORRECTION_COPIES, corrected[2:])):
        return "a correction is of the same person, activity, place and day as the entry it corrects"
    return None


def received_redemption_problem(conn, values: dict, origin: str) -> str | None:
    """Why a received redemption cannot stand, or None: it spends more than zero, and no more than its
    node's own account for that person held (earlier entries of the same origin only)."""
    hours, person = values.get("hours"), values.get("person")
    if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not 0 < hours <= 1_000_000:
        return f"a redemption spends more than zero hours, not {hours!r}"
    if round(hours * 100) > round(_account(conn, person, origin) * 100):
        return "a redemption spends only its own node's account, which holds less for this person"
    return None


def confirm_hours(node: Node, actor: str, *, hour) -> dict:
    """The organiser confirms an hour entry: from now on it counts (and may be redeemed here)."""
    return confirm_all(node, actor, [hour])[0]


def confirm_all(node: Node, actor: str, hours: list) -> list[dict]:
    """Confirm several hour entries in one transaction: all of them, or none.

    None, when one cannot be: an organiser who confirms a day's sheet and
    is told that one line failed should not have to find out which others
    went through.
    """
    hours = list(dict.fromkeys(hours))  # an id given twice is one entry to confirm, not a conflict with itself
    with node.writer(actor) as w:
        for hour in hours:
            try:
                _confirm(node, w, _entry(node, hour, w))
            except HemeiError as exc:
                if len(hours) > 1:
                    exc.message = f"{exc.message}; none of the {len(hours)} entries was confirmed"
                    exc.args = (exc.message,)
                raise
    return [hour_entry(node, hour) for hour in hours]


def correct_hours(node: Node, actor: str, *, hour, hours, reason, confirm: bool = False) -> dict:
    """A new entry that replaces a confirmed entry's hours, with the reason; the old one stays.

    A correction not confirmed yet may be corrected too: the new one replaces it (it never counts), which is
    how a correction that can no longer be confirmed is withdrawn. A correction whose confirmation would take
    this node's account below zero is not written.
    """
    reason = text(reason, "reason", limit=500, lines=True)
    confirm = flag(confirm, "confirm")
    value = _hours(hours, allow_zero=True)
    if value > MAX_HOURS_PER_ENTRY:
        raise InvalidInput(f"one entry holds at most {MAX_HOURS_PER_ENTRY:g} hours, not {value:g}")
    with node.writer(actor) as w:
        # Checked under the write lock, like log_hours: a redemption or another correction made meanwhile
        # counts, so nothing is written that could not be confirmed.
        old = _entry(node, hour, w)
        _owned(node, old, "corrected")
        if _confirmed_hours(w.conn, old["id"]) is not None:
            replaced = old["hours"]
        elif old["corrects"]:
            replaced, unconfirmed = _replaced_hours(w.conn, old["corrects"])
            if replaced is None:
                raise Conflict(f"the entry {unconfirmed} that {old['id']} corrects is not confirmed")
        else:
            raise Conflict(f"hour entry {old['id']} is not confirmed yet: confirm it, or correct it once confirmed")
        if (corrected_by := _corrected_by(w.conn, old["id"])) is not None:
            raise Conflict(f"hour entry {old['id']} was already corrected by {corrected_by}: "
                           f"{_next_step(node, w.conn, corrected_by)}")
        if problem := _overdraw(node, w.conn, old["person"], value, replaced, old["id"]):
            raise InvalidInput("; ".join(problem))  # what `--confirm` would say: nothing is written
        entry = {k: old[k] for k in ("scope", *CORRECTION_COPIES)}
        entry.update(hours=value, corrects=old["id"], reason=reason)
        pk = w.insert("volunteer_hours", entry)
        if confirm:
            _confirm(node, w, _entry(node, pk, w))
    return hour_entry(node, pk)


def pending_hours(node: Node) -> list[dict]:
    """Entries waiting for confirmation: not confirmed, and not replaced by a correction of their own."""
    return list(node.db.query(
        "SELECT h.id, h.scope, v.name, a.title AS activity, h.served_on, h.hours, h.corrects"
        " FROM volunteer_hours h LEFT JOIN volunteers v ON v.id = h.volunteer"
        " LEFT JOIN volunteer_activities a ON a.id = h.activity"
        " WHERE NOT EXISTS (SELECT 1 FROM volunteer_confirmations c WHERE c.hour = h.id)"
        " AND NOT EXISTS (SELECT 1 FROM volunteer_hours x WHERE x.corrects = h.id)"
        " ORDER BY h.served_on, h.id"))


# -- the time bank -------------------------------------------------------------------

def redeem(node: Node, actor: str, *, person: str, volunteer: dict | None, hours, item, note=None) -> dict:
    """Spend hours from this node's account for the person; never below zero."""
    value = _hours(hours)
    item = text(item, "item", limit=100)
    with node.writer(actor) as w:
        here = account(node, person, node.id, w)
        if value > here + _EPS:
            total = balance(node, person)["balance"]
            raise InvalidInput(f"only {here:g} hours can be redeemed here (balance {total:g} in all): hours are "
                               "redeemed where they were confirmed, so that two offline streets cannot spend "
                               "them twice")
        pk = w.insert("volunteer_redemptions", {
            "scope": volunteer["scope"] if volunteer and covers(node.scope, volunteer["scope"]) else node.scope,
            "volunteer": volunteer["id"] if volunteer else None, "person": person, "hours": value, "item": item,
            "note": text(note, "note", required=False, limit=500, lines=True)})
    return {"id": pk, "hours": value, "item": item, "spendable_here": round(here - value, 2)}


def star_thresholds(node: Node, scope: str | None = None) -> tuple[float, ...]:
    """Hours for 1..5 stars in ``scope``: the nearest setting at or above it, else the national default."""
    scope = scope or node.scope
    best = None
    for where, value in node.conn.execute(
            "SELECT scope, value FROM volunteer_settings WHERE name = 'stars' AND _deleted = 0"):
        if covers(where, scope) and (best is None or len(where) > len(best[0])):
            best = (where, value)
    # A malformed setting (an older release took any in): fall back rather than fail every balance.
    return (parse_star_thresholds(best[1]) if best else None) or DEFAULT_STARS


def parse_star_thresholds(values) -> tuple[float, ...] | None:
    """Five increasing, positive, finite numbers of hours (text "100,300,…" or a sequence), else None."""
    try:
        parsed = tuple(float(v) for v in (values.split(",") if isinstance(values, str) else values))
    except (TypeError, ValueError):
        return None
    if len(parsed) != 5 or not all(0 < v < 1e9 for v in parsed) or list(parsed) != sorted(set(parsed)):
        return None
    return parsed


def set_star_thresholds(node: Node, actor: str, values) -> tuple[float, ...]:
    parsed = parse_star_thresholds(values)
    if parsed is None:
        raise InvalidInput("give five increasing positive thresholds in hours, e.g. 100,300,600,1000,1500")
    pk, value = f"{node.scope}|stars", ",".join(f"{v:g}" for v in parsed)
    with node.writer(actor) as w:
        if one(node, "SELECT 1 AS x FROM volunteer_settings WHERE id = ? AND _deleted = 0", (pk,)):
            w.update("volunteer_settings", pk, {"value": value})
        else:
            w.insert("volunteer_settings", {"id": pk, "name": "stars", "value": value})
    return parsed


def star_level(hours: float, thresholds) -> int:
    return sum(1 for t in thresholds if hours + _EPS >= t)


def balance(node: Node, person: str) -> dict:
    """Hours, balance and star level of one person over everything this node holds (a district: every street)."""
    accounts: dict[str, dict] = {}
    for origin, earned in node.conn.execute(
            "SELECT _origin, sum(delta_cents) FROM volunteer_confirmations WHERE person = ?"
            " GROUP BY _origin", (person,)):
        accounts.setdefault(origin, {"earned": 0, "redeemed": 0})["earned"] = earned
    for origin, spent in node.conn.execute(
            f"SELECT _origin, {CENTS.format('hours')} FROM volunteer_redemptions WHERE person = ?"
            " GROUP BY _origin", (person,)):
        accounts.setdefault(origin, {"earned": 0, "redeemed": 0})["redeemed"] = spent
    hours = sum(a["earned"] for a in accounts.values()) / 100
    redeemed = sum(a["redeemed"] for a in accounts.values()) / 100
    thresholds = star_thresholds(node)
    return {
        "person": person, "hours": hours, "redeemed": redeemed, "balance": round(hours - redeemed, 2),
        "star": star_level(hours, thresholds), "star_thresholds": list(thresholds),
        "spendable_here": account(node, person, node.id),
        "accounts": [{"node": origin, "hours": a["earned"] / 100, "redeemed": a["redeemed"] / 100,
                      "balance": (a["earned"] - a["redeemed"]) / 100} for origin, a in sorted(accounts.items())],
        "registrations": [dict(r) for r in node.db.query(
            "SELECT id, scope, name FROM volunteers WHERE person = ? AND _deleted = 0 ORDER BY scope", (person,))],
    }


# -- records: certificates and CSV ------------------------------------------------------

def service_records(node: Node, person: str | None = None, scope: str | None = None) -> list[dict]:
    """Every hour entry with its state: confirmed entries not replaced by a confirmed correction count.

    ``pending``: not confirmed yet; ``withdrawn``: a correction replaced by another before it was confirmed
    (it never counts); ``replaced``: a later correction of it was confirmed; ``counted``.
    """
    sql = ("SELECT h.id, h.scope, h.volunteer, v.name, h.person, a.title AS activity, h.category,"
           " t.name AS team, h.served_on, h.hours, h.corrects, h.reason, c._origin AS confirmed_by"
           " FROM volunteer_hours h LEFT JOIN volunteer_confirmations c ON c.hour = h.id"
           " LEFT JOIN volunteers v ON v.id = h.volunteer LEFT JOIN volunteer_activities a ON a.id = h.activity"
           " LEFT JOIN volunteer_teams t ON t.id = h.team WHERE 1 = 1")
    params: list = []
    if person:
        sql += " AND h.person = ?"
        params.append(person)
    if scope:
        scope = filter_scope(node, scope, HELD_PLACES)
        sql += " AND " + in_subtree_sql("scope").replace("[scope]", "h.scope")
        params += list(subtree_params(scope))
    rows = list(node.db.query(sql + " ORDER BY h.served_on, h.id", params))
    # A correction is of the same person and place as its entry, so a chain is whole in these rows.
    confirmed = {r["id"] for r in rows if r["confirmed_by"] is not None}
    corrected_by = {r["corrects"]: r["id"] for r in rows if r["corrects"]}
    for r in rows:
        later, seen = corrected_by.get(r["id"]), {r["id"]}
        while later is not None and later not in confirmed and later not in seen:  # skip withdrawn ones
            seen.add(later)  # (a chain a hostile node made circular ends too)
            later = corrected_by.get(later)
        r["replaced_by"] = later
        r["status"] = ("counted" if later is None else "replaced") if r["id"] in confirmed else \
            "withdrawn" if r["id"] in corrected_by else "pending"
    return rows


def certificate(node: Node, person: str) -> dict:
    records = [r for r in service_records(node, person) if r["status"] == "counted"]
    info = balance(node, person)
    names = sorted({r["name"] for r in records if r["name"]} | {r["name"] for r in info["registrations"]})
    offices = node.origin_names()  # a resident reads 府山街道 where a node id would mean nothing
    records = [{**r, "confirmed_by_name": offices.get(r["confirmed_by"])} for r in records]
    return {"names": names, "hours": info["hours"], "star": info["star"], "issued_by": node.name,
            "issued_scope": node.scope, "issued_on": dt.date.today().isoformat(), "records": records}

