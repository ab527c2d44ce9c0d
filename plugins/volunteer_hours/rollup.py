"""The district roll-up: figures per street, team and category, stars, and a ranking of streets.

Everything is computed from synced rows with a few grouped passes over
covering indexes, so a district gets the same numbers whichever order its
streets synced in. Hours are summed as whole hundredths (integers), because a
sum of floats depends on the order of its terms and two districts holding the
same rows must print the same figures.

A "unit" is the part of the report scope one level down: reporting on a
district gives its streets, on a street its communities. Rows recorded at
the report scope itself are shown under that scope's own name.
"""

from __future__ import annotations

from collections import defaultdict

from hemei.core import Node
from hemei.core.fields import filter_scope, in_subtree_sql, place_names_by_scope, since_date, subtree_params

from .ledger import CENTS, star_level, star_thresholds
from .tables import HELD_PLACES


def unit_of(scope: str, report_scope: str) -> str:
    if scope == report_scope:
        return report_scope
    rest = scope[len(report_scope) + 1:]
    return report_scope + "/" + rest.split("/", 1)[0]


def _hours(cents: int) -> float:
    return round(cents / 100, 2)


def rollup(node: Node, scope: str | None = None, since: str | None = None, known_only: bool = True) -> dict:
    """The roll-up of ``scope`` (this node's by default) as the module docstring says.

    ``known_only``: refuse a place where nothing of this module is held (a typo), as `volunteers report`
    should; the core's `hemei report` gives a place it has resolved, where the grid module may hold
    everything and this one nothing (its figures are zeros then, found in a walkthrough).
    """
    # (an empty form field: the node's own)
    scope = filter_scope(node, scope, HELD_PLACES) if known_only else scope or node.scope
    since = since_date(since)
    where = in_subtree_sql()
    params = subtree_params(scope)
    conn = node.conn
    teams = {tid: (name, where) for tid, name, where in conn.execute("SELECT id, name, scope FROM volunteer_teams")}
    thresholds = star_thresholds(node, scope)

    units: dict[str, dict] = defaultdict(lambda: {
        "hours": 0, "registered": 0, "active": 0, "attended": 0, "no_show": 0, "redeemed": 0, "outstanding": 0})
    by_team: dict[str | None, int] = defaultdict(int)  # by team id: two streets may name teams alike
    by_category: dict[str, int] = defaultdict(int)
    in_period = "sum(CASE WHEN served_on >= ? THEN delta_cents ELSE 0 END)" if since else "sum(delta_cents)"
    since_param = (since,) if since else ()
    for where_scope, team, category, cents in conn.execute(
            f"SELECT scope, team, category, {in_period} FROM volunteer_confirmations"
            f" WHERE {where} GROUP BY scope, team, category", since_param + params):
        unit = units[unit_of(where_scope, scope)]
        unit["hours"] += cents
        by_team[team] += cents
        by_category[category or "(none)"] += cents

    # Who served here, and whether active in the period.
    person_cents: dict[str, int] = defaultdict(int)
    active_in: dict[str, set] = defaultdict(set)
    for where_scope, person, cents, period_cents in conn.execute(
            f"SELECT scope, person, sum(delta_cents), {in_period} FROM volunteer_confirmations"
            f" WHERE {where} GROUP BY scope, person", since_param + params):
        person_cents[person] += cents
        if period_cents > 0:
            active_in[unit_of(where_scope, scope)].add(person)
    registered_people: dict[str, set] = defaultdict(set)
    for where_scope, person in conn.execute(
            f"SELECT scope, person FROM volunteers WHERE _deleted = 0 AND {where}", params):
        registered_people[unit_of(where_scope, scope)].add(person)
    everyone = set().union(*registered_people.values()) if registered_people else set()
    # Stars of everyone registered or serving here, each by all-time hours over everything this node holds,
    # as `volunteers balance` gives them: people registered with no hours yet were left out (found in a
    # walkthrough), and a person's hours elsewhere count towards their star here too (found in review).
    all_time = dict(conn.execute("SELECT person, sum(delta_cents) FROM volunteer_confirmations GROUP BY person"))
    stars = [0] * (len(thresholds) + 1)
    for person in everyone | person_cents.keys():
        stars[star_level(all_time.get(person, 0) / 100, thresholds)] += 1
    # Outstanding: the hours the people registered here hold unspent, each as `volunteers balance` gives them.
    # Hours are earned where the activity is and spent where the person is registered, so "hours served here
    # less redeemed here" went negative for a community whose residents served in the next one (walkthrough).
    spent = dict(conn.execute(f"SELECT person, {CENTS.format('hours')} FROM volunteer_redemptions GROUP BY person"))
    unspent = {person: all_time.get(person, 0) - spent.get(person, 0) for person in everyone}
    for unit, people in registered_people.items():
        units[unit]["registered"] = len(people)
        units[unit]["outstanding"] = sum(unspent[person] for person in people)
    for unit, people in active_in.items():
        units[unit]["active"] = len(people)

    for where_scope, status, count in conn.execute(
            f"SELECT scope, status, count(*) FROM volunteer_attendance WHERE _deleted = 0 AND {where}"
            " AND status IN ('attended', 'no_show') GROUP BY scope, status", params):
        units[unit_of(where_scope, scope)][status] += count
    for where_scope, cents in conn.execute(
            f"SELECT scope, {CENTS.format('hours')} FROM volunteer_redemptions WHERE {where} GROUP BY scope",
            params):
        units[unit_of(where_scope, scope)]["redeemed"] += cents

    rows = []
    names = place_names_by_scope(node)
    for unit, u in units.items():
        marked = u["attended"] + u["no_show"]
        rows.append({
            "unit": unit, "name": names.get(unit), "hours": _hours(u["hours"]), "registered": u["registered"],
            "active": u["active"],
            "attended": u["attended"], "no_show": u["no_show"],
            "no_show_rate": round(u["no_show"] / marked, 4) if marked else None,
            "redeemed": _hours(u["redeemed"]), "outstanding": _hours(u["outstanding"]),
        })
    rows.sort(key=lambda r: (-r["hours"], r["unit"]))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    total_marked = sum(r["attended"] + r["no_show"] for r in rows)
    return {
        "scope": scope, "since": since,
        "totals": {
            "hours": _hours(sum(u["hours"] for u in units.values())),
            "registered": len(everyone),
            "active": len(set().union(*active_in.values())) if active_in else 0,
            "no_show_rate": round(sum(r["no_show"] for r in rows) / total_marked, 4) if total_marked else None,
            "redeemed": _hours(sum(u["redeemed"] for u in units.values())),
            "outstanding": _hours(sum(unspent.values())),  # a person registered in two units counts once
        },
        "units": rows,
        "teams": sorted(({"team": teams.get(k, (k or "(no team)", None))[0], "scope": teams.get(k, (None, None))[1],
                          "hours": _hours(v)} for k, v in by_team.items()),
                        key=lambda r: (-r["hours"], r["team"], r["scope"] or "")),
        "categories": [{"category": k, "hours": _hours(v)}
                       for k, v in sorted(by_category.items(), key=lambda kv: (-kv[1], kv[0]))],
        "stars": {"thresholds": list(thresholds), "people": {str(level): n for level, n in enumerate(stars)}},
    }
