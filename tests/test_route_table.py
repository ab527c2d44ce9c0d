"""The route table of a served node follows modules changed beside it (core/api.py, RouteTable).

Real ``hemei serve`` processes, except where a request must be held
half-read while the modules change: that one calls the app as ASGI.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time

import httpx
import pytest
import route_extra
import route_openapi
import route_successor
from conftest import PROBE
from server import Server, plugin_env, probe_site
from test_server import hemei

import hemei.core.api as api
from hemei.cli.main import BUILTIN_PLUGINS
from hemei.core.api import create_app
from hemei.core.errors import InvalidInput, NodeStateError
from hemei.core.node import Node

PLUGINS = {"route_successor": "route_successor", "route_extra": "route_extra"}
AVAILABLE = {**PROBE, "route_successor": route_successor, "route_extra": route_extra, "route_openapi": route_openapi}


def served_home(tmp_path, modules, plugins=PLUGINS):
    env = plugin_env(probe_site(tmp_path, plugins))
    home = str(tmp_path / "home")
    for args in (["init", "--name", "府山街道", "--scope", "yc/fs"], *(["modules", "enable", m] for m in modules)):
        done = hemei(env, "--home", home, *args)
        assert done.returncode == 0, done.stderr
    return env, home


@pytest.mark.parametrize("module", ["route_successor", "route_openapi"])
def test_a_module_whose_routes_clash_with_an_enabled_one_is_not_enabled(make_node, module):
    """hook_probe holds GET /api/probe/notes; the core holds GET /api/openapi.json like its other routes."""
    node = make_node("n")
    with Node.open(node.home, available=AVAILABLE, builtins=BUILTIN_PLUGINS) as cli:
        with pytest.raises(InvalidInput, match="two plugins register the route"):
            cli.set_module_enabled(module, True, "op")
        assert module not in cli.enabled_modules()


def test_a_server_whose_modules_clash_keeps_serving_the_routes_it_had(tmp_path):
    """A clash that reached the home another way (a release that did not check) must not take every
    route down: health, sync and the rest keep answering, and the log says so once."""
    env, home = served_home(tmp_path, ["hook_probe"])
    server = Server(tmp_path / "home", env)
    try:
        with sqlite3.connect(tmp_path / "home" / "node.db") as db:
            db.execute("INSERT INTO _hemei_modules (name, enabled, changed_hlc) VALUES ('route_successor', 1, 0)")
        for _ in range(3):
            assert httpx.get(server.url + "/api/health").status_code == 200
            assert httpx.get(server.url + "/api/nothing-here").status_code == 404
    finally:
        server.stop()
    assert server.output().count("cannot be served together") == 1 and "Traceback" not in server.output()


def test_a_method_a_module_adds_to_a_served_path_answers_from_the_next_request(tmp_path):
    env, home = served_home(tmp_path, [])
    server = Server(tmp_path / "home", env)
    health = server.url + "/api/health"
    try:
        assert httpx.post(health).status_code == 405
        assert hemei(env, "--home", home, "modules", "enable", "route_extra").returncode == 0
        first = httpx.post(health)
        assert first.status_code == 200 and first.json() == {"from": "route_extra"}, first.text
        assert httpx.post(server.url + "/api/extra/search").json() == {"searched": True}  # not the {item} route's 405
        assert httpx.get(server.url + "/api/extra/福山").json() == {"item": "福山"}
        assert hemei(env, "--home", home, "modules", "enable", "hook_probe").returncode == 0  # unrelated change
        assert httpx.post(health).status_code == 200  # served as before: no refusal because the table was rebuilt
        assert hemei(env, "--home", home, "modules", "disable", "route_extra").returncode == 0
        gone = httpx.post(health)
        assert gone.status_code == 405 and gone.json()["error"]["code"] == "method_not_allowed"
        assert httpx.get(health).status_code == 200
    finally:
        server.stop()
    assert "Traceback" not in server.output()


def test_a_request_routed_before_its_module_was_disabled_never_runs_its_handler(tmp_path):
    """Held while its body is read, its module disabled and another serving the same route meanwhile:
    the route served now answers, by its own rules (it needs a token this request does not have)."""
    with Node.init(tmp_path / "home", name="府山街道", scope="yc/fs", available=AVAILABLE,
                   builtins=BUILTIN_PLUGINS) as node:
        node.set_module_enabled("route_successor", True, "t")
    app = create_app(tmp_path / "home", available=AVAILABLE, builtins=BUILTIN_PLUGINS)

    async def held_request() -> tuple[int, bytes]:
        body_sent, sent = asyncio.Event(), []

        async def receive():
            await body_sent.wait()
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                 "scheme": "http", "path": "/api/probe/notes", "raw_path": b"/api/probe/notes", "root_path": "",
                 "query_string": b"", "headers": [(b"host", b"t"), (b"content-length", b"0")],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
        request = asyncio.create_task(app(scope, receive, send))
        await asyncio.sleep(0.2)  # routed, waiting for its body
        with Node.open(tmp_path / "home", available=AVAILABLE, builtins=BUILTIN_PLUGINS) as cli:
            cli.set_module_enabled("route_successor", False, "op")
            cli.set_module_enabled("hook_probe", True, "op")  # the same (GET, path), for viewers only
        body_sent.set()
        await request
        status = next(m["status"] for m in sent if m["type"] == "http.response.start")
        return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")

    try:
        status, body = asyncio.run(held_request())
    finally:
        app.state.pool.close()
    assert status == 401 and b"route_successor" not in body, (status, body)  # hook_probe's route: a token


def asgi_get(app, path: str) -> tuple[int, bytes]:
    """One GET through the app as ASGI, in this thread's own event loop (at most 5 s)."""
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
             "headers": [(b"host", b"t")], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 5))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_a_request_no_route_serves_takes_no_node_from_the_pool(tmp_path):
    """Every node of the pool lent (long pushes, say): a scanner's 404 still answers at once, and a
    module enabled beside the server is still served from its first request."""
    with Node.init(tmp_path / "home", name="府山街道", scope="yc/fs", available=AVAILABLE,
                   builtins=BUILTIN_PLUGINS):
        pass
    app = create_app(tmp_path / "home", available=AVAILABLE, builtins=BUILTIN_PLUGINS)
    slots = app.state.pool._slots
    held = 0
    try:
        while slots.acquire(blocking=False):
            held += 1
        assert held == 4
        status, body = asgi_get(app, "/wp-login.php")
        assert status == 404 and b"not_found" in body
        for _ in range(held):
            slots.release()
        held = 0
        with Node.open(tmp_path / "home", available=AVAILABLE, builtins=BUILTIN_PLUGINS) as cli:
            cli.set_module_enabled("hook_probe", True, "op")
        assert asgi_get(app, "/api/probe/notes")[0] == 401  # served now: it needs a token
    finally:
        for _ in range(held):
            slots.release()
        app.state.routes.close()
        app.state.pool.close()


@pytest.mark.parametrize("error", ["disk I/O error", "database is locked"])
def test_a_failed_read_of_the_module_settings_still_answers_the_callers_404(tmp_path, monkeypatch, error):
    """The read only asks whether a module enabled since serves the path: when it fails, the caller
    still asked for a path nobody serves, and gets 404 (not 500, nor 503 busy)."""
    with Node.init(tmp_path / "home", name="府山街道", scope="yc/fs", available=AVAILABLE,
                   builtins=BUILTIN_PLUGINS):
        pass
    app = create_app(tmp_path / "home", available=AVAILABLE, builtins=BUILTIN_PLUGINS)

    def failing(conn):
        raise sqlite3.OperationalError(error)

    monkeypatch.setattr(api, "stored_module_settings", failing)
    try:
        status, body = asgi_get(app, "/wp-login.php")
        assert status == 404 and b"not_found" in body, body
    finally:
        app.state.routes.close()
        app.state.pool.close()


def test_an_outdated_server_answers_503_and_says_so_once_without_tracebacks(tmp_path):
    releases = {r: plugin_env(probe_site(tmp_path, {"notices": f"notices_v{r}"}, name=f"site{r}")) for r in (1, 2)}
    env, home = served_home(tmp_path, ["notices"], {"notices": "notices_v1"})
    server = Server(tmp_path / "home", {**releases[1], "HEMEI_TICK_SECONDS": "0.2"})
    try:
        assert hemei(releases[2], "--home", home, "status").returncode == 0  # the new release upgrades the home
        for reply in (httpx.get(server.url + "/api/health"), httpx.post(server.url + "/api/health"),
                      httpx.get(server.url + "/api/nothing-here")):
            assert reply.status_code == 503 and reply.json()["error"]["code"] == "restart_needed", reply.text
        time.sleep(1.0)  # a few ticks
    finally:
        server.stop()
    assert "Traceback" not in server.output() and server.output().count("ticks stopped") == 1, server.output()


def test_a_connection_a_server_opens_after_an_upgrade_answers_restart_needed(tmp_path):
    """A busy server opens another connection to its home: if a newer release upgraded the home since, that
    is the server's state (503 restart_needed), not the caller's mistake (it was 409 node_state; found when
    the suite ran two tests at a time and the tick held the server's only connection)."""
    import notices_v1

    from hemei.core.api import NodePool

    newer = plugin_env(probe_site(tmp_path, {"notices": "notices_v2"}, name="site2"))
    _, home = served_home(tmp_path, ["notices"], {"notices": "notices_v1"})
    pool = NodePool(home, {**PROBE, "notices": notices_v1}, BUILTIN_PLUGINS)
    pool.get()
    try:
        with pool.lend():  # its one connection busy (a long push, say)
            assert hemei(newer, "--home", home, "status").returncode == 0  # the newer release upgrades the home
            with pytest.raises(NodeStateError) as err:
                with pool.lend():
                    pass
        assert err.value.code == "restart_needed" and err.value.status == 503 and "restart" in err.value.message
    finally:
        pool.close()


def test_a_connection_the_server_cannot_open_for_another_reason_is_not_called_an_upgrade(make_node):
    """Found in review: every refusal to open became 'restart it with the new release'."""
    import os

    from hemei.core.api import NodePool

    home = make_node("n").home
    pool = NodePool(home, PROBE, BUILTIN_PLUGINS)
    pool.get()
    try:
        with pool.lend():
            os.chmod(home / "node.db", 0o644)  # readable by others: refused at open, and not an upgrade
            with pytest.raises(NodeStateError) as err:
                with pool.lend():
                    pass
        assert err.value.code == "node_state" and "new release" not in err.value.message
    finally:
        os.chmod(home / "node.db", 0o600)
        pool.close()
