"""Where the HTTP API meets what callers' tools send: paths, content types and encodings, against a real
`hemei serve`.

Found by a hostile review: `GET /people/search` was read as the person
"search", a grid coded `coverage` could not be named in a URL, a form or GBK
body was answered "not valid JSON" without saying why, and a JSON file saved
by Notepad (a BOM first) was refused.
"""

from __future__ import annotations

import httpx
import pytest

from server import answer_before_body
from tree import Tree


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    tree = Tree(tmp_path_factory.mktemp("edges"))
    server, token = tree.served_street()

    def call(method: str, path: str, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        return httpx.request(method, server.url + path, headers=headers, timeout=60, **kwargs)

    yield call, tree
    assert "Traceback" not in server.output()
    tree.stop()


def log_size(call) -> int:
    return call("GET", "/api/status").json()["log"]["size"]


def test_a_path_another_route_spells_out_is_not_a_parameter(api):
    call, _ = api
    wrong_method = call("GET", "/api/volunteers/people/search")
    assert wrong_method.status_code == 405, wrong_method.text
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"
    searched = call("POST", "/api/volunteers/people/search", json={"q": "无此人"})
    assert searched.status_code == 200 and searched.json() == []
    assert call("GET", "/api/volunteers/people/someone-else").json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("code", ["coverage"])
def test_a_grid_code_the_routes_use_is_refused(api, code):
    call, tree = api
    before = log_size(call)
    refused = call("POST", "/api/grids", json={"code": code, "name": "一网格", "community": "塔山社区"})
    assert refused.status_code == 400 and f"/api/grids/{code}" in refused.json()["error"]["message"]
    said = tree.hemei("fushan", "grids", "add", code, "一网格", "--community", "塔山社区")
    assert said.returncode == 1 and "choose another" in said.stderr and "Traceback" not in said.stderr
    assert log_size(call) == before


def test_an_ambiguous_grid_code_is_answered_with_ids_a_url_can_carry(api):
    call, _ = api
    made = [call("POST", "/api/grids", json={"code": "A7", "name": f"{c}七网格", "community": c}).json()
            for c in ("塔山社区", "府山社区")]
    ambiguous = call("GET", "/api/grids/A7")
    assert ambiguous.status_code == 400 and ambiguous.json()["error"]["code"] == "ambiguous_grid"
    message = ambiguous.json()["error"]["message"]
    assert all(f"{grid['id']} at {grid['scope']}" in message for grid in made)
    for grid in made:  # what the message offers works where the caller was
        assert call("GET", f"/api/grids/{grid['id']}").json()["scope"] == grid["scope"]


@pytest.mark.parametrize("content_type, said", [
    ("application/x-www-form-urlencoded", "it came as application/x-www-form-urlencoded"),
    ("text/plain", "it came as text/plain"),
    ("application/json; charset=GBK", "in UTF-8, Content-Type: application/json; charset=utf-8 (it came as gbk)"),
    ("application/json; CHARSET = gbk", "(it came as gbk)"),
    ('Application/JSON; charset=utf-8; charset="big5"', "(it came as big5)"),
])
def test_a_body_that_is_not_json_in_utf8_is_refused_415_saying_what_came(api, content_type, said):
    call, _ = api
    before = log_size(call)
    reply = call("POST", "/api/volunteers/teams", content='{"name": "红马甲服务队"}'.encode(),
                 headers={"Content-Type": content_type})
    assert reply.status_code == 415 and reply.json()["error"]["code"] == "unsupported_media_type"
    assert said in reply.json()["error"]["message"] and "application/json" in reply.json()["error"]["message"]
    assert log_size(call) == before


def test_a_gbk_body_is_refused_as_not_utf8_and_bad_json_says_where(api):
    call, _ = api
    before = log_size(call)
    gbk = call("POST", "/api/volunteers/teams", content='{"name": "红马甲服务队"}'.encode("gbk"),
               headers={"Content-Type": "application/json"})
    assert gbk.status_code == 400 and "not UTF-8" in gbk.json()["error"]["message"]
    broken = call("POST", "/api/volunteers/teams", content=b'{"name": }', headers={"Content-Type": "application/json"})
    assert broken.status_code == 400 and "column 10" in broken.json()["error"]["message"]
    assert log_size(call) == before


@pytest.mark.parametrize("body", [b"", b"  \r\n", b"\xef\xbb\xbf", b"\xef\xbb\xbf \n"])
def test_a_body_of_nothing_but_blanks_or_a_bom_is_no_body(api, body):
    call, _ = api
    reply = call("POST", "/api/volunteers/teams", content=body, headers={"Content-Type": "application/json"})
    assert reply.status_code == 400 and reply.json()["error"]["message"] == "missing field(s): name", reply.text


def test_a_grid_coded_like_a_word_no_route_spells_out_is_named_by_it(api):
    call, _ = api
    made = call("POST", "/api/grids", json={"code": "staff", "name": "职工网格", "community": "塔山社区"})
    assert made.status_code == 200, made.text
    assert call("GET", "/api/grids/staff").json()["id"] == made.json()["id"]


def test_an_ambiguous_code_of_many_grids_names_ten_and_says_how_many_more(api):
    call, _ = api
    for n in range(13):
        assert call("POST", "/api/grids", json={"code": "01", "name": "一网格", "community": f"第{n}社区"}).is_success
    message = call("GET", "/api/grids/01").json()["error"]["message"]
    assert message.count(" at 越城区/府山街道/第") == 10 and "and 3 more: `hemei grids list`" in message


def test_json_saved_with_a_bom_or_sent_without_a_type_is_read(api):
    call, _ = api
    with_bom = call("POST", "/api/volunteers/teams", content=b"\xef\xbb\xbf" + '{"name": "红马甲服务队"}'.encode(),
                    headers={"Content-Type": "application/json; charset=utf-8"})
    assert with_bom.status_code == 200, with_bom.text
    untyped = call("POST", "/api/volunteers/teams", content='{"name": "夕阳红服务队"}'.encode())
    assert untyped.status_code == 200, untyped.text
    ascii_only = call("POST", "/api/volunteers/teams", content=b'{"name": "Team A"}',
                      headers={"Content-Type": ";charset=US-ASCII"})
    assert ascii_only.status_code == 200, ascii_only.text
    names = {team["name"] for team in call("GET", "/api/volunteers/teams").json()}
    assert {"红马甲服务队", "夕阳红服务队", "Team A"} <= names


def test_every_path_of_one_word_after_api_grids_in_the_modules_routes_is_refused_as_a_code():
    from hemei.plugins.grid_inspections.grids import ROUTE_WORDS
    from hemei.plugins.grid_inspections.routes import GRIDS, ROUTES

    spelled = {route.path[len(GRIDS) + 1:] for route in ROUTES if route.path.startswith(GRIDS + "/")}
    assert {word for word in spelled if "/" not in word and "{" not in word} == ROUTE_WORDS


def test_grid_and_case_errors_name_what_the_caller_sent(api):
    """Found by an operator walkthrough: a coverage window ending 2000-01-03 was refused for a `from` the
    caller never gave (1999-12-28), and `"duplicate_of": 5` was answered "case must be text"."""
    call, _ = api
    early = call("GET", "/api/grids/coverage?to=2000-01-03")
    assert early.status_code == 200 and early.json()["from"] == "2000-01-01", early.text
    call("POST", "/api/grids", json={"code": "DUP-1", "name": "重复网格", "community": "稽山社区"})
    case = call("POST", "/api/cases", json={"grid": "DUP-1", "category": "environment", "description": "楼道堆物",
                                            "reporter": "李娟"}).json()
    refused = call("POST", f"/api/cases/{case['id']}/events", json={"kind": "duplicate", "duplicate_of": 5})
    assert refused.status_code == 400 and refused.json()["error"]["message"] == "duplicate_of must be text"


@pytest.mark.parametrize("allowed, said", [
    (set(), "unknown field(s): x; this route takes no fields (send {} or no body)"),
    ({"hours", "reason"}, "unknown field(s): x; expected some of hours, reason"),
])
def test_an_unknown_field_is_named_with_what_the_route_takes(allowed, said):
    """Found in review: a route that takes no fields said "expected some of " and nothing."""
    from hemei.core.api import ApiCall
    from hemei.core.errors import InvalidInput

    call = ApiCall(node=None, user=None, body={"x": 1}, path_params={}, query={}, request=None)
    with pytest.raises(InvalidInput) as refused:
        call.fields(allowed)
    assert refused.value.message == said


def test_a_query_parameter_given_twice_is_refused_not_half_read(api):
    """Found in review: `?grid=A&grid=B` answered for B alone, as if A had not been asked for."""
    call, _ = api
    twice = call("GET", "/api/grids/coverage?grid=A&grid=B")
    assert twice.status_code == 400, twice.text
    assert twice.json()["error"] == {"code": "invalid_input",
                                     "message": "query parameter 'grid' is given more than once: give it once"}
    assert call("GET", "/api/audit/log?limit=5&limit=6").status_code == 400
    assert call("GET", "/api/audit/log?limit=5&actor=王丽").status_code == 200


def test_a_request_without_a_valid_token_is_refused_before_its_body_is_read(api):
    """Found in review: a body (up to 1 MiB a route) was read whole before the token was looked at, so
    anyone could make a street's server hold a megabyte per connection for nothing."""
    call, tree = api
    url = tree.servers["fushan"].url
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        answer = answer_before_body(url, "/api/volunteers/people", {"Content-Type": "application/json", **headers},
                                    1024 * 1024)
        assert answer.startswith(b"HTTP/1.1 401"), answer


def test_a_caller_gone_mid_body_leaves_no_traceback_in_the_server_log(api):
    """Found in review: a street whose link died while it sent a body left a traceback in the district's
    log (starlette's ClientDisconnect), one per dropped upload."""
    import socket
    import time
    from urllib.parse import urlsplit

    call, tree = api
    server = tree.servers["fushan"]
    token = call("GET", "/api/health").request.headers["Authorization"]
    where = urlsplit(server.url)
    with socket.create_connection((where.hostname, where.port), timeout=30) as conn:
        conn.sendall(f"POST /api/volunteers/people HTTP/1.1\r\nHost: {where.netloc}\r\nContent-Length: 100000\r\n"
                     f"Content-Type: application/json\r\nAuthorization: {token}\r\n\r\n{{\"name\":".encode())
        time.sleep(0.5)  # the server is reading the body when the caller goes
    deadline = time.monotonic() + 3  # a traceback is logged as soon as the server hears the caller went
    while "Traceback" not in server.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert call("GET", "/api/health").status_code == 200 and "Traceback" not in server.output()


@pytest.mark.parametrize("path, body", [
    ("/api/volunteers/teams", {"name": "老吴热线"}),
    ("/api/volunteers/activities", {"title": "助老理发", "category": "daily_care", "date": "2026-11-20"}),
    ("/api/volunteers/people", {"name": "王丽", "id_number": "330602199001011231"}),
])
def test_a_scope_that_is_not_text_is_refused_not_a_server_error(api, path, body):
    """Found by a fuzzer: "scope": 1 on these three routes was a 500 with a traceback in the server's output."""
    call, _ = api
    before = log_size(call)
    for scope in (1, 0, True, {}, ["西小河社区"], 1.5):
        refused = call("POST", path, json={**body, "scope": scope})
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"] == {"code": "invalid_input", "message": "scope must be text"}
    assert log_size(call) == before
