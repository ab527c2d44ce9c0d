"""Requests that arrive at the same moment (a double click, two operators) against a real `hemei serve`.

Found by a hostile review: the modules checked what was stored before taking
the write lock, so requests at once all passed the check, and the same hours
were recorded, confirmed and spent several times. Each check of stored state
now runs under the lock: of N identical requests exactly one is written.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from hemei.plugins.volunteer_hours import pii
from tree import Tree

AT_ONCE = 6


def id_number(n: int) -> str:
    first17 = f"33060219900101{n:03d}"
    return first17 + pii.id_check_char(first17)


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    tree = Tree(tmp_path_factory.mktemp("at-once"))
    server, token = tree.served_street()
    headers = {"Authorization": f"Bearer {token}"}

    def call(method: str, path: str, body=None) -> httpx.Response:
        return httpx.request(method, server.url + path, json=body, headers=headers, timeout=60)

    def at_once(method: str, path: str, bodies: list) -> list[int]:
        """Send every body at the same moment, each on its own connection; the status codes."""
        start = threading.Barrier(len(bodies))

        def send(body) -> int:
            with httpx.Client(timeout=60, headers=headers) as client:
                start.wait()
                return client.request(method, server.url + path, json=body).status_code

        with ThreadPoolExecutor(len(bodies)) as pool:
            return list(pool.map(send, bodies))

    yield call, at_once, tree
    assert "Traceback" not in server.output()
    tree.stop()


#: Rounds of each race: one round let duplicates through most of the time before the fix, not always.
ROUNDS = 3


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_one_person_registered_at_once_is_registered_once(api, round_):
    call, at_once, _ = api
    name = f"并发人{round_}"
    codes = at_once("POST", "/api/volunteers/people", [{"name": name, "id_number": id_number(1 + round_)}] * AT_ONCE)
    assert sorted(codes) == [200] + [409] * (AT_ONCE - 1), codes
    assert len(call("POST", "/api/volunteers/people/search", {"q": name}).json()) == 1


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_hours_logged_at_once_are_logged_once_and_spent_once(api, round_):
    call, at_once, _ = api
    person = id_number(5 + round_)
    vol = call("POST", "/api/volunteers/people", {"name": "王丽", "id_number": person}).json()
    act = call("POST", "/api/volunteers/activities",
               {"title": f"助老服务{round_}", "category": "daily_care", "date": "2026-11-01"}).json()
    codes = at_once("POST", "/api/volunteers/hours",
                    [{"activity": act["id"], "volunteer": vol["id"], "hours": 4, "confirm": True}] * AT_ONCE)
    assert sorted(codes) == [200] + [409] * (AT_ONCE - 1), codes
    balance = call("POST", "/api/volunteers/balance", {"id_number": person}).json()
    assert (balance["hours"], balance["balance"]) == (4, 4)
    spent = at_once("POST", "/api/volunteers/redemptions",
                    [{"id_number": person, "hours": 3, "item": "米"}] * AT_ONCE)
    assert sorted(spent) == [200] + [400] * (AT_ONCE - 1), spent
    assert call("POST", "/api/volunteers/balance", {"id_number": person}).json()["balance"] == 1


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_an_activity_signed_up_at_once_keeps_its_places(api, round_):
    call, at_once, _ = api
    act = call("POST", "/api/volunteers/activities",
               {"title": f"义诊{round_}", "category": "health", "date": "2026-11-02", "capacity": 2}).json()
    first = 10 + AT_ONCE * round_
    people = [call("POST", "/api/volunteers/people", {"name": f"报名{i}", "id_number": id_number(i)}).json()
              for i in range(first, first + AT_ONCE)]
    codes = at_once("POST", f"/api/volunteers/activities/{act['id']}/signups",
                    [{"volunteer": p["id"]} for p in people])
    assert sorted(codes) == [200, 200] + [409] * (AT_ONCE - 2), codes
    listed = call("GET", "/api/volunteers/activities").json()
    assert next(a for a in listed if a["id"] == act["id"])["signed_up"] == 2


def test_a_no_show_marked_while_hours_are_logged_never_keeps_both(api):
    call, _, tree = api
    act = call("POST", "/api/volunteers/activities",
               {"title": "巡河", "category": "safety", "date": "2026-11-03"}).json()
    for i in range(16):  # each round a race; before the fix about one in six let both through
        made = call("POST", "/api/volunteers/people", {"name": f"缺席{i}", "id_number": id_number(50 + i)})
        assert made.status_code == 200, made.text
        vol = made.json()
        start = threading.Barrier(2)

        def send(method_path_body):
            path, body = method_path_body
            start.wait()
            return call("POST", path, body).status_code

        with ThreadPoolExecutor(2) as pool:
            codes = list(pool.map(send, [
                ("/api/volunteers/hours", {"activity": act["id"], "volunteer": vol["id"], "hours": 2}),
                (f"/api/volunteers/activities/{act['id']}/attendance", {"volunteer": vol["id"], "status": "no_show"}),
            ]))
        assert codes.count(200) == 1, codes
    with tree.open("fushan") as node:
        both = node.conn.execute(
            "SELECT count(*) FROM volunteer_attendance a JOIN volunteer_hours h"
            " ON h.activity = a.activity AND h.volunteer = a.volunteer WHERE a.status = 'no_show'").fetchone()[0]
    assert both == 0


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_a_team_name_and_a_grid_leader_added_at_once_are_added_once(api, round_):
    call, at_once, _ = api
    team = f"并发队{round_}"
    codes = at_once("POST", "/api/volunteers/teams", [{"name": team}] * AT_ONCE)
    assert sorted(codes) == [200] + [409] * (AT_ONCE - 1), codes
    assert [t["name"] for t in call("GET", "/api/volunteers/teams").json()].count(team) == 1
    code = f"FS-0{round_}"
    grid = call("POST", "/api/grids", {"code": code, "name": f"府山第{round_}网格", "community": "府山社区"})
    assert grid.status_code == 200, grid.text
    codes = at_once("POST", f"/api/grids/{code}/staff", [{"name": f"组长{i}", "role": "leader"} for i in range(AT_ONCE)])
    assert sorted(codes) == [200] + [409] * (AT_ONCE - 1), codes
    staff = call("GET", f"/api/grids/{code}").json()["staff"]
    assert [s["role"] for s in staff].count("leader") == 1
