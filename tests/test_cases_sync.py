"""Grid cases across a district and two streets: real `hemei serve`, real `hemei sync`.

Grids and the catalogue defined at the district flow down; a case escalated
by a street reaches the district's queue; its handling and closure at the
district flow back to the street, which sees the whole history.
"""

from __future__ import annotations

import datetime as dt
import json
import re

import httpx
import pytest

from tree import Tree

MODULES = ("grid_inspections",)
SCOPES = {"district": "越城区", "fushan": "越城区/府山街道", "tashan": "越城区/塔山街道"}


def _json(tree: Tree, name: str, *args: str):
    return json.loads(tree.ok(name, "--actor", f"{name}-staff", *args, "--json"))


@pytest.fixture(scope="module")
def district_tree(tmp_path_factory):
    tree = Tree(tmp_path_factory.mktemp("grids"))
    for name, scope in SCOPES.items():
        tree.init(name, scope, modules=MODULES)
    tree.serve("district")
    tree.enroll("district", "fushan", SCOPES["fushan"])
    tree.enroll("district", "tashan", SCOPES["tashan"])
    yield tree
    tree.stop()


def test_a_case_escalated_to_the_district_is_closed_there_and_the_street_sees_it_all(district_tree):
    t = district_tree
    # Grid definitions and the catalogue are set at the district and flow down. The streets are known as
    # enrolled before they ever synced; a typo is not a street.
    typo = t.hemei("district", "grids", "add", "FS-02", "二网格", "--community", "西小河社区", "--street", "府山")
    said = " ".join(typo.stderr.split())
    assert typo.returncode == 1 and "known here: 越城区/塔山街道, 越城区/府山街道" in said and "--new-street" in said, said
    at_street = t.hemei("fushan", "grids", "add", "TS-09", "塔山九网格", "--community", "塔山社区", "--street", "塔山街道",
                        "--new-street")  # found in review: it made 府山街道/塔山街道 a street of its own
    assert at_street.returncode == 1 and "a street's grids are its own, leave out --street" in at_street.stderr
    _json(t, "district", "grids", "add", "FS-01", "西小河一网格", "--community", "西小河社区", "--street", "府山街道",
          "--households", "300")
    _json(t, "district", "grids", "add", "TS-01", "塔山一网格", "--community", "塔山社区", "--street", "塔山街道")
    _json(t, "district", "cases", "category", "add", "stairwell", "楼道堆物", "--deadline-hours", "48")
    for street in ("fushan", "tashan"):
        t.sync(street)
    assert [g["code"] for g in _json(t, "fushan", "grids", "list")] == ["FS-01"]  # not its sibling's grid
    assert [g["code"] for g in _json(t, "tashan", "grids", "list")] == ["TS-01"]
    assert any(c["code"] == "stairwell" for c in _json(t, "fushan", "cases", "category", "list"))

    # The street reports, registers and escalates beyond itself; it can no longer act on the case.
    case = _json(t, "fushan", "cases", "report", "--grid", "FS-01", "--category", "stairwell", "--description",
                 "楼道堆物堵塞消防通道", "--reporter", "李娟", "--place", "3幢2单元")
    case_id = case["id"]
    _json(t, "fushan", "cases", "register", case_id)
    escalated = _json(t, "fushan", "cases", "escalate", case_id, "--to-level", "district", "--note", "需区级协调")
    assert (escalated["level"], escalated["held_by"]) == ("district", "越城区")
    refused = t.hemei("fushan", "cases", "dispatch", case_id, "--to", "王强")
    assert refused.returncode == 1 and "held by 越城区" in refused.stderr and "Traceback" not in refused.stderr
    _json(t, "tashan", "cases", "report", "--grid", "TS-01", "--category", "environment", "--description", "垃圾",
          "--reporter", "张三")
    t.sync("fushan")
    t.sync("tashan")

    # It is in the district's queue, which handles and closes it.
    queue = _json(t, "district", "cases", "list", "--level", "district", "--open")
    assert [c["id"] for c in queue] == [case_id]
    for args in (["dispatch", case_id, "--to", "区城管执法队"], ["start", case_id],
                 ["handle", case_id, "--note", "已清运"], ["verify", case_id], ["close", case_id]):
        _json(t, "district", "cases", *args)
    t.sync("fushan")
    t.sync("tashan")

    # Back at the street: closed, at district level, with every event from both nodes.
    shown = _json(t, "fushan", "cases", "show", case_id)
    assert (shown["state"], shown["level"]) == ("closed", "district")
    assert [(e["kind"], e["by"], e.get("acting_scope")) for e in shown["events"]] == [
        ("report", "李娟", None), ("register", "fushan-staff", SCOPES["fushan"]),
        ("escalate", "fushan-staff", SCOPES["fushan"])] + [
        (kind, "district-staff", SCOPES["district"]) for kind in ("dispatch", "start", "handle", "verify", "close")]
    assert "close      district-staff (越城区)" in t.ok("fushan", "cases", "show", case_id)  # who did it, and where
    assert all(e["applied"] for e in shown["events"])
    assert shown == {**_json(t, "district", "cases", "show", case_id)}  # both levels see the same history

    # The street records what the resident said; the district sees it after the next sync.
    _json(t, "fushan", "cases", "evaluate", case_id, "--rating", "basically_satisfied")
    t.sync("fushan")
    assert _json(t, "district", "cases", "show", case_id)["state"] == "evaluated"
    tashan = t.open("tashan")
    try:
        assert tashan.conn.execute("SELECT count(*) FROM cases WHERE street = ?", (SCOPES["fushan"],)).fetchone() \
            == (0,)
    finally:
        tashan.close()

    # The district ranks its streets from the events it received.
    stats = _json(t, "district", "cases", "stats")
    assert [(s["rank"], s["street"], s["name"], s["cases"], s["resolution_rate"]) for s in stats["streets"]] == [
        (1, SCOPES["fushan"], "fushan", 1, 1.0), (2, SCOPES["tashan"], "tashan", 1, 0.0)]
    ranked = t.ok("district", "cases", "stats").split("\n\n")[-1].splitlines()
    assert ranked[0].split()[:3] == ["rank", "name", "street"] and ranked[1].split()[:2] == ["1", "fushan"]
    assert stats["totals"]["satisfaction_rate"] == 1.0 and stats["totals"]["escalated"] == 1
    report = _json(t, "district", "report")
    [ranked_section] = [s for s in report["sections"] if s["title"].startswith("Grid cases by street")]
    assert [(r["rank"], r["name"]) for r in ranked_section["rows"]] == [(1, "fushan"), (2, "tashan")]  # as docs say
    # Found by an operator walkthrough: the district's lists did not say whose case or grid a row was.
    listed = t.ok("district", "cases", "list").splitlines()
    assert listed[0].split()[:2] == ["ref", "street"]
    assert sorted(line.split()[1] for line in listed[1:]) == ["塔山街道", "府山街道"]
    covered = t.ok("district", "grids", "coverage").splitlines()
    header = next(i for i, line in enumerate(covered) if line.startswith("code"))
    assert covered[header].split()[:2] == ["code", "street"]
    assert sorted(line.split()[1] for line in covered[header + 1:header + 3]) == ["塔山街道", "府山街道"]
    assert "street" not in t.ok("fushan", "cases", "list").splitlines()[0]  # one street: said by the node
    for name in ("district", "fushan", "tashan"):
        assert "verified" in t.ok(name, "audit", "verify").lower()


def test_a_grid_removed_at_either_tier_is_removed_at_both(district_tree):
    t = district_tree
    for code in ("TS-08", "TS-09"):
        _json(t, "district", "grids", "add", code, "错建网格", "--community", "塔山社区", "--street", "塔山街道")
    t.sync("tashan")
    _json(t, "tashan", "grids", "staff", "add", "TS-09", "周敏", "--role", "leader")
    removed = t.ok("district", "grids", "remove", "塔山街道/塔山社区/TS-08")  # the district's own mistake
    assert removed.strip() == "removed grid TS-08 at 越城区/塔山街道/塔山社区/TS-08"
    said = t.ok("tashan", "grids", "remove", "TS-09")  # the street takes back one the district defined
    assert said.strip() == "removed grid TS-09 at 越城区/塔山街道/塔山社区/TS-09 and 1 staff"
    t.sync("tashan")
    for name in ("district", "tashan"):
        assert not {"TS-08", "TS-09"} & {g["code"] for g in _json(t, name, "grids", "list")}
    gone = t.hemei("district", "grids", "remove", "TS-09")
    assert gone.returncode == 1 and "no grid 'TS-09'" in gone.stderr and "Traceback" not in gone.stderr


def test_two_leaders_added_on_two_pcs_before_a_sync_are_flagged_until_one_is_removed(district_tree):
    """Found by an operator walkthrough: one PC refuses a second leader, but a district and its street
    each adding one offline both kept theirs after the sync, and nothing said so."""
    t = district_tree
    _json(t, "district", "grids", "add", "TS-07", "塔山七网格", "--community", "塔山社区", "--street", "塔山街道")
    t.sync("tashan")
    _json(t, "district", "grids", "staff", "add", "TS-07", "王强", "--role", "leader")
    _json(t, "tashan", "grids", "staff", "add", "TS-07", "周敏", "--role", "leader")
    t.sync("tashan")
    for name in ("district", "tashan"):
        [grid] = [g for g in _json(t, name, "grids", "list") if g["code"] == "TS-07"]
        [warning] = grid["warnings"]
        assert "grid TS-07 has 2 leaders (周敏, 王强), added on different PCs before they synced" in warning
        listed = t.hemei(name, "grids", "list")
        assert listed.returncode == 0 and f"note: {warning}" in " ".join(listed.stderr.split())
        assert "has 2 leaders" in t.hemei(name, "grids", "staff", "list", "TS-07").stderr
    staff_id = re.search(r"grids staff remove (\S+)`", warning).group(1)
    t.ok("tashan", "grids", "staff", "remove", staff_id)
    t.sync("tashan")
    for name in ("district", "tashan"):
        shown = _json(t, name, "grids", "list")
        assert [g["warnings"] for g in shown if g["code"] == "TS-07"] == [[]]
        assert [g["staff"]["leader"] for g in shown if g["code"] == "TS-07"] == [1]


def test_plan_changes_made_offline_at_both_tiers_give_one_plan_history(district_tree):
    t = district_tree
    week_ago = (dt.date.today() - dt.timedelta(days=7)).isoformat()
    _json(t, "district", "grids", "add", "TS-06", "塔山六网格", "--community", "塔山社区", "--street", "塔山街道",
          "--established", week_ago)
    t.sync("tashan")
    three_days_ago = (dt.date.today() - dt.timedelta(days=3)).isoformat()
    _json(t, "district", "grids", "plan", "TS-06", "3", "--from", three_days_ago)
    _json(t, "tashan", "grids", "plan", "TS-06", "1", "--from", three_days_ago)  # set later: it stands
    t.sync("tashan")
    t.sync("tashan")
    shown = {name: next(g for g in _json(t, name, "grids", "list") if g["code"] == "TS-06")
             for name in ("district", "tashan")}
    assert shown["district"]["patrols_per_day"] == shown["tashan"]["patrols_per_day"] == 1
    covered = {name: next(g for g in _json(t, name, "grids", "coverage", "--from", week_ago)["grids"]
                          if g["code"] == "TS-06") for name in ("district", "tashan")}
    assert covered["district"]["planned"] == covered["tashan"]["planned"] == 2 * 4 + 1 * 3


def test_routes_enforce_roles_and_refuse_bad_input_with_json_errors(district_tree):
    t = district_tree  # the street serves its own staff's browsers
    for user, role in (("viewer2", "viewer"), ("op2", "operator"), ("admin2", "admin")):
        done = t.hemei("fushan", "users", "add", user, "--role", role, "--password", "a-long-password")
        assert done.returncode == 0, done.stderr
    tokens = {u: t.ok("fushan", "users", "token", u).strip() for u in ("viewer2", "op2", "admin2")}
    base = t.serve("fushan").url + "/api"

    def call(method, path, user, body=None):
        return httpx.request(method, base + path, json=body, headers={"Authorization": f"Bearer {tokens[user]}"})

    grid = {"code": "FS-09", "name": "测试网格", "community": "西小河社区"}
    assert call("POST", "/grids", "op2", grid).status_code == 403
    made = call("POST", "/grids", "admin2", grid)
    assert made.status_code == 200, made.text
    assert call("POST", "/grids/FS-09/staff", "admin2", {"name": "周敏", "role": "leader"}).status_code == 200
    assert call("GET", "/grids/FS-09", "viewer2").json()["staff"][0]["name"] == "周敏"
    report = {"grid": "FS-09", "category": "safety", "description": "井盖缺失", "reporter": "周敏"}
    assert call("POST", "/cases", "viewer2", report).status_code == 403
    case = call("POST", "/cases", "op2", report)
    assert case.status_code == 200 and case.json()["state"] == "reported"
    case_id = case.json()["id"]
    before = t.open("fushan")
    try:
        log_size = before.conn.execute("SELECT count(*) FROM _hemei_log").fetchone()[0]
    finally:
        before.close()
    for path, body, status, code in [
        ("/cases", {**report, "grid": "NOPE"}, 404, "unknown_grid"),
        ("/cases", {**report, "category": "aliens"}, 400, "unknown_category"),
        ("/cases", {**report, "extra": 1}, 400, "invalid_input"),
        ("/cases", ["not", "an", "object"], 400, "invalid_input"),
        (f"/cases/{case_id}/events", {"kind": "evaluate", "rating": "satisfied"}, 400, "invalid_transition"),
        (f"/cases/{case_id}/events", {"kind": "fly"}, 400, "invalid_input"),
        ("/cases/no-such-case/events", {"kind": "register"}, 404, "not_found"),
        (f"/cases/{case_id}/events", {"kind": ["register"]}, 400, "invalid_input"),
        (f"/cases/{case_id}/events", {"kind": "dispatch", "assignee": 7}, 400, "invalid_input"),
        ("/grids/FS-09/patrols", {"worker": "周敏", "at": "9999-12-31 08:00"}, 400, "invalid_input"),
    ]:
        answer = call("POST", path, "op2", body)
        assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), (path, body, answer.text)
    after = t.open("fushan")
    try:
        assert after.conn.execute("SELECT count(*) FROM _hemei_log").fetchone()[0] == log_size
    finally:
        after.close()
    registered = call("POST", f"/cases/{case_id}/events", "op2", {"kind": "register"})
    assert registered.status_code == 200 and registered.json()["state"] == "registered"
    shown = call("GET", f"/cases/{case_id}", "viewer2").json()
    assert [e["kind"] for e in shown["events"]] == ["report", "register"]
    assert call("GET", "/cases/stats", "viewer2").json()["scope"] == SCOPES["fushan"]
    assert call("GET", "/grids/coverage", "viewer2").status_code == 200
    for path in ("/cases/stats?to=9999-12-31", "/grids/coverage?from=9999-12-25&to=9999-12-31",
                 "/grids/coverage?to=0001-01-02", "/cases?state=bogus", "/cases?limit=many"):
        answer = call("GET", path, "viewer2")
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_input", (path, answer.text)
    assert call("DELETE", f"/grids/staff/{made.json()['id']}", "admin2").status_code == 404
    assert call("DELETE", "/grids/FS-09", "op2").status_code == 403
    removed = call("DELETE", "/grids/FS-09", "admin2").json()
    assert (removed["code"], removed["staff_removed"], removed["cases"]) == ("FS-09", 1, 1)
    assert call("GET", "/grids/FS-09", "viewer2").json()["error"]["code"] == "unknown_grid"
    assert call("GET", f"/cases/{case_id}", "viewer2").json()["grid_code"] == "FS-09"  # its case stays
    assert "Traceback" not in t.servers["fushan"].output()


def test_a_case_past_its_deadline_escalates_by_itself_when_the_street_syncs(district_tree):
    t = district_tree
    if not _json(t, "fushan", "grids", "list"):
        pytest.skip("needs the grids of the first test")
    three_days_ago = (dt.datetime.now() - dt.timedelta(days=3)).strftime("%Y-%m-%d %H:%M")
    case = _json(t, "fushan", "cases", "report", "--grid", "FS-01", "--category", "safety", "--description",
                 "井盖松动", "--reporter", "李娟", "--at", three_days_ago)
    assert case["level"] == "grid"
    t.sync("fushan")  # ticks first: safety cases have 24 h per level, so it goes up one level, then up to the district
    at_district = _json(t, "district", "cases", "show", case["id"])
    assert at_district["level"] == "community"
    assert [(e["kind"], e.get("auto"), e["by"], e["acting_scope"]) for e in at_district["events"][1:]] == [
        ("escalate", True, "grid_inspections", SCOPES["fushan"])]
    assert at_district["events"][1]["note"].startswith("deadline ")
