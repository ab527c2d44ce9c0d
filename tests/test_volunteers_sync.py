"""The volunteer module across a district and two streets: real `hemei serve`, real `hemei sync`."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from hemei.plugins.volunteer_hours import pii
from tree import Tree

MODULES = ("volunteer_hours",)
FIRST17 = "33060219850312004"
ID_NUMBER = FIRST17 + pii.id_check_char(FIRST17)
PHONE = "13905756789"


def _json(tree: Tree, name: str, *args: str) -> dict:
    return json.loads(tree.ok(name, "--actor", "组织者", *args, "--json"))


def _serve_hours(tree: Tree, name: str, hours: list[float]) -> str:
    vol = _json(tree, name, "volunteers", "add", "--name", "王丽", "--id-number", ID_NUMBER, "--phone", PHONE)
    for day, amount in enumerate(hours, 1):
        act = _json(tree, name, "volunteers", "activity", "add", "--title", "助老服务", "--category", "daily_care",
                    "--date", f"2026-11-{day:02d}")
        _json(tree, name, "volunteers", "hours", "log", act["id"], vol["id"], "--hours", str(amount), "--confirm")
    return vol["id"]


def _raw_bytes(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in home.iterdir() if p.name.startswith("node.db"))


@pytest.fixture(scope="module")
def district_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("volunteers")
    tree = Tree(root)
    scopes = {"district": "越城区", "fushan": "越城区/府山街道", "tashan": "越城区/塔山街道"}
    for name, scope in scopes.items():
        tree.init(name, scope, modules=MODULES)
    tree.serve("district")
    tree.enroll("district", "fushan", scopes["fushan"])
    tree.enroll("district", "tashan", scopes["tashan"])
    yield tree
    tree.stop()


def test_one_person_on_two_streets_is_one_balance_at_the_district(district_tree):
    t = district_tree
    # No key yet: the street is told what to do, and its request is recorded.
    refused = t.hemei("fushan", "volunteers", "add", "--name", "王丽", "--id-number", ID_NUMBER)
    assert refused.returncode == 1 and "hemei sync" in refused.stderr and "Traceback" not in refused.stderr
    # Found in review: a street's own key made everyone registered there another person at the district.
    own = t.hemei("fushan", "volunteers", "key", "create")
    assert own.returncode == 1 and "uses the volunteer key of its district" in own.stderr and "--holder" in own.stderr
    keyring = t.home("fushan") / "volunteer_hours.keys"  # (holds the box key of the request made above)
    assert not keyring.exists() or not json.loads(keyring.read_text()).get("secrets")
    asked = t.hemei("district", "volunteers", "key", "request")
    assert asked.returncode == 1 and "no parent to ask" in asked.stderr
    t.ok("district", "volunteers", "key", "create")
    for street in ("fushan", "tashan"):
        t.ok(street, "volunteers", "key", "request")
        t.sync(street)  # the push carries the request; the district grants; the pull brings the grant down
        assert _json(t, street, "volunteers", "key", "status")["from_scope"] == "越城区"
    again = t.ok("fushan", "volunteers", "key", "request")  # not "key requested: run `hemei sync`" (walkthrough)
    assert "this node already uses key vk-" in again and "of 越城区: nothing to request" in again

    fushan_id = _serve_hours(t, "fushan", [20, 20, 20])
    tashan_id = _serve_hours(t, "tashan", [20, 20])
    for street, hours in (("fushan", 60), ("tashan", 40)):
        local = _json(t, street, "volunteers", "balance", "--id-number", ID_NUMBER)
        assert (local["hours"], local["balance"], local["star"]) == (hours, hours, 0)
        t.sync(street)

    at_district = _json(t, "district", "volunteers", "balance", "--id-number", ID_NUMBER)
    assert (at_district["hours"], at_district["balance"], at_district["star"]) == (100, 100, 1)
    assert {r["id"] for r in at_district["registrations"]} == {fushan_id, tashan_id}
    report = _json(t, "district", "volunteers", "report")
    assert [(u["unit"], u["name"], u["hours"], u["rank"]) for u in report["units"]] == \
        [("越城区/府山街道", "fushan", 60.0, 1), ("越城区/塔山街道", "tashan", 40.0, 2)]  # as invited
    assert t.ok("district", "volunteers", "report").splitlines()[1].split()[:3] == ["rank", "name", "unit"]
    assert report["totals"]["registered"] == 1 and report["stars"]["people"]["1"] == 1

    # The district holds pseudonyms and ciphertext only; no street holds the other's rows.
    for name in ("district", "fushan", "tashan"):
        raw = _raw_bytes(t.home(name))
        assert ID_NUMBER.encode() not in raw and PHONE.encode() not in raw, name
    fushan = t.open("fushan")
    try:
        assert {s for (s,) in fushan.conn.execute("SELECT scope FROM volunteers")} == {"越城区/府山街道"}
    finally:
        fushan.close()
    for name in ("district", "fushan", "tashan"):
        assert "verified" in t.ok(name, "audit", "verify").lower()


def test_two_offline_streets_cannot_spend_the_same_hours_twice(district_tree):
    t = district_tree  # continues from the test above: 60 h confirmed at fushan, 40 h at tashan
    if _json(t, "district", "volunteers", "balance", "--id-number", ID_NUMBER)["hours"] != 100:
        pytest.skip("needs the hours of the test above")
    # Both streets offline: each may spend only what it confirmed itself.
    over = t.hemei("fushan", "volunteers", "redeem", "--id-number", ID_NUMBER, "--hours", "61", "--item", "理发券")
    assert over.returncode == 1 and "only 60 hours can be redeemed here" in over.stderr
    t.ok("fushan", "volunteers", "redeem", "--id-number", ID_NUMBER, "--hours", "60", "--item", "理发券")
    t.ok("tashan", "volunteers", "redeem", "--id-number", ID_NUMBER, "--hours", "40", "--item", "体检")
    again = t.hemei("tashan", "volunteers", "redeem", "--id-number", ID_NUMBER, "--hours", "1", "--item", "体检")
    assert again.returncode == 1
    for street in ("fushan", "tashan"):
        t.sync(street)
    at_district = _json(t, "district", "volunteers", "balance", "--id-number", ID_NUMBER)
    assert (at_district["hours"], at_district["redeemed"], at_district["balance"]) == (100, 100, 0)
    assert all(a["balance"] >= 0 for a in at_district["accounts"]) and len(at_district["accounts"]) == 2
    assert _json(t, "district", "volunteers", "report")["totals"]["outstanding"] == 0


def test_routes_enforce_roles_and_answer_bad_input_with_json_errors(district_tree):
    t = district_tree
    for user, role in (("viewer1", "viewer"), ("op1", "operator")):
        done = t.hemei("district", "users", "add", user, "--role", role, "--password", "a-long-password")
        assert done.returncode == 0, done.stderr
    tokens = {u: t.ok("district", "users", "token", u).strip() for u in ("viewer1", "op1")}
    url = t.servers["district"].url + "/api/volunteers"

    def call(method, path, user, body=None):
        return httpx.request(method, url + path, json=body, headers={"Authorization": f"Bearer {tokens[user]}"})

    other = "33060219920315001" + pii.id_check_char("33060219920315001")
    person = {"name": "赵敏", "id_number": other, "phone": "13605750000"}
    assert call("POST", "/people", "viewer1", person).status_code == 403
    made = call("POST", "/people", "op1", person)
    assert made.status_code == 200, made.text
    assert made.json()["phone"] == "136****0000"
    found = call("POST", "/people/search", "viewer1", {"q": "13605750000"}).json()
    assert [f["id"] for f in found] == [made.json()["id"]]
    for body, code in [({"name": "x", "id_number": "123"}, "invalid_input"),
                       ({"name": "x"}, "invalid_input"),
                       ({"name": "x", "id_number": other, "extra": 1}, "invalid_input")]:
        bad = call("POST", "/people", "op1", body)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == code
    dup = call("POST", "/people", "op1", person)
    assert dup.status_code == 409
    act = call("POST", "/activities", "op1", {"title": "义诊", "category": "health", "date": "2026-11-21"}).json()
    logged = call("POST", "/hours", "op1", {"activity": act["id"], "volunteer": made.json()["id"], "hours": 2})
    assert logged.status_code == 200 and logged.json()["confirmed"] is False
    assert call("POST", f"/hours/{logged.json()['id']}/confirm", "viewer1").status_code == 403
    assert call("POST", f"/hours/{logged.json()['id']}/confirm", "op1").json()["confirmed"] is True
    balance = call("POST", "/balance", "viewer1", {"id_number": person["id_number"]}).json()
    assert (balance["hours"], balance["star"]) == (2, 0)
    over = call("POST", "/redemptions", "op1", {"id_number": person["id_number"], "hours": 3, "item": "券"})
    assert over.status_code == 400 and "only 2 hours" in over.json()["error"]["message"]
    assert call("GET", "/report", "viewer1").json()["scope"] == "越城区"
    assert "Traceback" not in t.servers["district"].output()


def test_a_district_under_a_city_creates_its_key_when_it_says_it_holds_it(tmp_path):
    tree = Tree(tmp_path)
    try:
        tree.init("city", "绍兴市", modules=MODULES)
        tree.init("district", "绍兴市/越城区", modules=MODULES)
        tree.serve("city")
        tree.enroll("city", "district", "绍兴市/越城区")
        assert tree.hemei("district", "volunteers", "key", "create").returncode == 1
        made = _json(tree, "district", "volunteers", "key", "create", "--holder")
        assert made["key_id"].startswith("vk-")
        assert _json(tree, "district", "volunteers", "key", "status")["key_id"] == made["key_id"]
    finally:
        tree.stop()



def test_a_street_without_a_link_gets_the_key_through_bundles_as_it_is_told(tmp_path):
    tree = Tree(tmp_path)
    tree.init("district", "越城区", modules=MODULES)
    tree.init("fushan", "越城区/府山街道", modules=MODULES)
    tree.serve("district")
    try:
        tree.enroll("district", "fushan", "越城区/府山街道")
        tree.servers["district"].stop()  # bundles only from here on
        tree.ok("district", "volunteers", "key", "create")
        refused = tree.hemei("fushan", "volunteers", "add", "--name", "王丽", "--id-number", ID_NUMBER)
        said = " ".join(refused.stderr.split())
        assert refused.returncode == 1 and "with no link: `hemei bundle export`" in said, said
        out = tmp_path / "府山 上报.hemei"
        tree.ok("fushan", "bundle", "export", "--out", str(out))
        ack = json.loads(tree.ok("district", "bundle", "import", str(out), "--json"))["ack"]
        tree.ok("fushan", "bundle", "import", ack)
        assert _json(tree, "fushan", "volunteers", "key", "status")["from_scope"] == "越城区"
        assert _json(tree, "fushan", "volunteers", "add", "--name", "王丽", "--id-number", ID_NUMBER)["id"]
    finally:
        tree.stop()
