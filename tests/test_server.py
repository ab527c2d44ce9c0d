"""The HTTP API of a real ``hemei serve`` process on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time

import httpx
import pytest

from server import Server, hemei_command, plugin_env, probe_site


def hemei(env, *args, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(hemei_command() + list(args), env=env, input=input, capture_output=True, text=True,
                          encoding="utf-8", timeout=60)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    env = plugin_env(probe_site(root))
    home = str(root / "fushan")
    for args, stdin in [
        (["init", "--name", "府山街道", "--scope", "yuecheng/fushan"], None),
        (["modules", "enable", "hook_probe"], None),
        (["users", "add", "admin1", "--role", "admin"], "admin-password\n"),
        (["users", "add", "王丽", "--role", "operator"], "operator-password\n"),
        (["users", "add", "viewer1", "--role", "viewer"], "viewer-password\n"),
    ]:
        done = hemei(env, "--home", home, *args, input=stdin)
        assert done.returncode == 0, done.stderr
    tokens = {name: hemei(env, "--home", home, "users", "token", name).stdout.strip()
              for name in ("admin1", "王丽", "viewer1")}
    server = Server(root / "fushan", env)
    yield server, tokens, env, home
    server.stop()
    assert "Traceback" not in server.output()


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def log_size(served) -> int:
    server, tokens, *_ = served
    return httpx.get(server.url + "/api/status", headers=auth(tokens["viewer1"])).json()["log"]["size"]


def test_health_is_public(served):
    server, *_ = served
    reply = httpx.get(server.url + "/api/health")
    assert reply.status_code == 200 and reply.json()["name"] == "府山街道"


def test_status_needs_a_valid_token(served):
    server, tokens, *_ = served
    missing = httpx.get(server.url + "/api/status")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
    wrong = httpx.get(server.url + "/api/status", headers=auth("hm_not-a-token"))
    assert wrong.status_code == 401
    ok = httpx.get(server.url + "/api/status", headers=auth(tokens["viewer1"]))
    assert ok.status_code == 200 and ok.json()["modules"] == ["hook_probe"]


def test_status_shows_paths_and_callers_addresses_to_admins_only(served):
    server, tokens, *_ = served
    unsigned = httpx.post(server.url + "/api/sync/push", content=b"x")
    assert unsigned.status_code == 401  # recorded with the caller's address
    viewer = httpx.get(server.url + "/api/status", headers=auth(tokens["viewer1"]))
    admin = httpx.get(server.url + "/api/status", headers=auth(tokens["admin1"])).json()
    assert admin["home"].endswith("fushan") and admin["refused_unauthenticated"][0]["address"] == "127.0.0.1"
    assert "home" not in viewer.json() and "refused_unauthenticated" not in viewer.json()
    assert "fushan" not in viewer.text.replace("yuecheng/fushan", "") and "127.0.0.1" not in viewer.text
    assert viewer.json()["log"] == admin["log"] and "peers" in viewer.json()


def test_module_routes_enforce_roles_and_keep_unicode(served):
    server, tokens, *_ = served
    before = log_size(served)
    denied = httpx.post(server.url + "/api/probe/notes", json={"title": "x"}, headers=auth(tokens["viewer1"]))
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden"
    assert log_size(served) == before
    made = httpx.post(server.url + "/api/probe/notes", json={"title": "楼道粉刷"}, headers=auth(tokens["王丽"]))
    assert made.status_code == 200, made.text
    listed = httpx.get(server.url + "/api/probe/notes", headers=auth(tokens["viewer1"])).json()
    assert [made.json()["id"], "楼道粉刷"] in listed
    entry = httpx.get(server.url + "/api/audit/log?kind=row&limit=1", headers=auth(tokens["admin1"])).json()[0]
    assert entry["actor"] == "王丽" and entry["values"] == {"title": "楼道粉刷", "body": None}


@pytest.mark.parametrize("send, status, code", [
    (lambda url, h: httpx.post(url + "/api/probe/notes", content=b"{not json", headers=h), 400, "invalid_json"),
    (lambda url, h: httpx.post(url + "/api/probe/notes", json={"body": "no title"}, headers=h), 400, "invalid_input"),
    (lambda url, h: httpx.post(url + "/api/probe/notes", json={"title": "forbidden"}, headers=h), 400, "refused"),
    (lambda url, h: httpx.post(url + "/api/probe/notes", content=b"x" * (1024 * 1024 + 1), headers=h), 413,
     "body_too_large"),
    (lambda url, h: httpx.get(url + "/api/nothing-here", headers=h), 404, "not_found"),
    (lambda url, h: httpx.delete(url + "/api/probe/notes", headers=h), 405, "method_not_allowed"),
    (lambda url, h: httpx.get(url + "/api/audit/log?since=yesterday", headers=h), 400, "invalid_input"),
    (lambda url, h: httpx.get(url + "/api/audit/log?limit=abc", headers=h), 400, "invalid_input"),
    (lambda url, h: httpx.get(url + "/api/audit/log?limit=²", headers=h), 400, "invalid_input"),
    (lambda url, h: httpx.get(url + "/api/audit/log?since=9999-12-31T23:59-01:00", headers=h), 400, "invalid_input"),
])
def test_bad_requests_get_json_errors_and_write_nothing(served, send, status, code):
    server, tokens, *_ = served
    before = log_size(served)
    reply = send(server.url, auth(tokens["admin1"]))
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert body["error"]["code"] == code and body["error"]["message"]
    assert log_size(served) == before


def test_audit_routes_need_admin(served):
    server, tokens, *_ = served
    assert httpx.get(server.url + "/api/audit/verify", headers=auth(tokens["王丽"])).status_code == 403
    verified = httpx.get(server.url + "/api/audit/verify", headers=auth(tokens["admin1"])).json()
    assert verified["ok"] is True


def test_openapi_document_lists_every_route(served):
    server, *_ = served
    doc = httpx.get(server.url + "/api/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert {"/api/health", "/api/status", "/api/probe/notes", "/api/audit/log"} <= set(doc["paths"])
    assert doc["paths"]["/api/probe/notes"]["post"]["security"] == [{"bearer": []}]


def test_cli_writes_beside_a_running_server_keep_one_chain(served):
    server, tokens, env, home = served
    done = hemei(env, "--home", home, "probe", "note", "同时写入")
    assert done.returncode == 0, done.stderr
    made = httpx.post(server.url + "/api/probe/notes", json={"title": "after cli"}, headers=auth(tokens["王丽"]))
    assert made.status_code == 200
    verify = hemei(env, "--home", home, "audit", "verify", "--json")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_revoked_token_is_refused(served):
    server, tokens, env, home = served
    assert hemei(env, "--home", home, "users", "add", "viewer2", "--role", "viewer",
                 "--password", "viewer2-password").returncode == 0
    token = hemei(env, "--home", home, "users", "token", "viewer2").stdout.strip()
    assert httpx.get(server.url + "/api/status", headers=auth(token)).status_code == 200
    assert hemei(env, "--home", home, "users", "revoke", "viewer2").returncode == 0
    assert httpx.get(server.url + "/api/status", headers=auth(token)).status_code == 401


def test_a_served_node_ticks_on_its_own(tmp_path):
    env = {**plugin_env(probe_site(tmp_path)), "HEMEI_TICK_SECONDS": "0.3"}
    home = str(tmp_path / "ticking")
    for args in (["init", "--name", "府山街道", "--scope", "yuecheng/fushan"], ["modules", "enable", "hook_probe"]):
        assert hemei(env, "--home", home, *args).returncode == 0
    server = Server(tmp_path / "ticking", env)
    try:
        ticks = 0
        for _ in range(100):
            with sqlite3.connect(tmp_path / "ticking" / "node.db") as db:
                ticks = db.execute("SELECT count(*) FROM probe_reactions WHERE op = 'tick'").fetchone()[0]
            if ticks >= 2:
                break
            time.sleep(0.1)
        assert ticks >= 2
    finally:
        server.stop()
    assert "Traceback" not in server.output()


def test_a_running_server_follows_modules_enabled_and_disabled_beside_it(tmp_path):
    """``hemei modules enable`` and ``disable`` while ``hemei serve`` runs: its routes follow, no restart."""
    env = plugin_env(probe_site(tmp_path))
    home = str(tmp_path / "fushan")
    for args, stdin in [(["init", "--name", "府山街道", "--scope", "yuecheng/fushan"], None),
                        (["users", "add", "王丽", "--role", "operator"], "operator-password\n")]:
        assert hemei(env, "--home", home, *args, input=stdin).returncode == 0
    token = hemei(env, "--home", home, "users", "token", "王丽").stdout.strip()
    server = Server(tmp_path / "fushan", env)
    notes = server.url + "/api/probe/notes"

    def paths() -> set[str]:
        return set(httpx.get(server.url + "/api/openapi.json").json()["paths"])

    try:
        before = httpx.get(notes, headers=auth(token))
        assert before.status_code == 404 and before.json()["error"]["code"] == "not_found"
        assert "/api/probe/notes" not in paths()

        assert hemei(env, "--home", home, "modules", "enable", "hook_probe").returncode == 0
        made = httpx.post(notes, json={"title": "楼道粉刷"}, headers=auth(token))
        assert made.status_code == 200, made.text
        assert [made.json()["id"], "楼道粉刷"] in httpx.get(notes, headers=auth(token)).json()
        assert "/api/probe/notes" in paths()

        assert hemei(env, "--home", home, "modules", "disable", "hook_probe").returncode == 0
        gone = httpx.post(notes, json={"title": "停用之后"}, headers=auth(token))
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found", gone.text
        assert httpx.get(notes, headers=auth(token)).status_code == 404
        assert "/api/probe/notes" not in paths()
        assert httpx.get(server.url + "/api/status", headers=auth(token)).json()["modules"] == []
    finally:
        server.stop()
    assert "Traceback" not in server.output()
    with sqlite3.connect(tmp_path / "fushan" / "node.db") as db:
        assert db.execute("SELECT title FROM notes").fetchall() == [("楼道粉刷",)]


def test_serve_on_port_0_announces_the_port_it_took(served):
    server, _, env, home = served
    proc = subprocess.Popen(hemei_command() + ["--home", home, "serve", "--port", "0", "--log-level", "warning"],
                            env=env, stderr=subprocess.PIPE, text=True, encoding="utf-8")
    try:
        announced = proc.stderr.readline()
        assert announced.startswith("hemei node 府山街道 ("), announced
        port = int(announced.rsplit(":", 1)[1])
        assert port not in (0, server.port)
        reply = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=10)
        assert reply.status_code == 200 and reply.json()["name"] == "府山街道"
        if os.name != "nt":  # Ctrl-C stops a server cleanly: exit 0, as a service wrapper expects
            proc.send_signal(signal.SIGINT)
            assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)
        proc.stderr.close()


def test_serve_on_a_port_in_use_says_so_and_announces_nothing(served):
    server, _, env, home = served
    done = hemei(env, "--home", home, "serve", "--port", str(server.port))
    assert done.returncode == 1
    assert f"port {server.port} on 127.0.0.1 is already in use" in done.stderr
    assert "hemei node" not in done.stderr and "Traceback" not in done.stderr
    assert httpx.get(server.url + "/api/health").status_code == 200


@pytest.mark.parametrize("port, said", [(8340, "port 8340 is reserved on this PC or held by another program"),
                                         (80, "this user may not listen on port 80: choose a port above 1023")])
def test_a_port_windows_refuses_is_said_plainly(monkeypatch, port, said):
    """Windows answers WSAEACCES (10013) for a port in an excluded range or held exclusively, any number."""
    from hemei.cli import node_commands
    from hemei.core.errors import InvalidInput

    def refused(*args, **kwargs):
        raise OSError(10013, "An attempt was made to access a socket in a way forbidden by its access permissions")

    monkeypatch.setattr(node_commands, "_bound", refused)
    with pytest.raises(InvalidInput, match=said):
        node_commands.listen("127.0.0.1", port)



@pytest.mark.skipif(os.name == "nt", reason="asyncio's Windows loop makes accepted sockets itself; the listener's "
                    "option is set there too, but its inheritance is not checked here")
def test_served_connections_turn_nagle_off():
    """uvicorn serves the listener through asyncio, which turns Nagle's algorithm off only on sockets
    made for TCP (``proto`` IPPROTO_TCP). A listener made with ``proto`` 0 passed that on to every
    connection, and each answer waited for the client's delayed ACK (40 ms on Linux): a push of
    100,000 entries took a third longer."""
    import asyncio
    import socket

    from hemei.cli import node_commands

    listener = node_commands.listen("127.0.0.1", 0)

    async def accepted_nodelay() -> int:
        loop = asyncio.get_running_loop()
        seen = loop.create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport):
                sock = transport.get_extra_info("socket")
                seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

        server = await loop.create_server(Probe, sock=listener)
        _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
        try:
            return await asyncio.wait_for(seen, 10)
        finally:
            writer.close()
            server.close()

    assert asyncio.run(accepted_nodelay()) != 0


def test_served_connections_turn_nagle_off_where_asyncio_does_not():
    """asyncio's Windows loop makes accepted sockets with ``proto`` 0, so asyncio never turns Nagle's
    algorithm off on them, and the listener's option may not pass on. Made here as it is there: a
    listener with ``proto`` 0 and no TCP_NODELAY. uvicorn's own protocol leaves the option off on such a
    connection; the one `hemei serve` runs turns it on."""
    import asyncio
    import socket

    import uvicorn
    from uvicorn.protocols.http.auto import AutoHTTPProtocol
    from uvicorn.server import ServerState

    from hemei.cli import node_commands

    async def nodelay_of_served_connection(protocol: type) -> int:
        listener = socket.create_server(("127.0.0.1", 0))
        assert listener.proto == 0 and not listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)

        async def app(scope, receive, send):  # never reached: no request is sent
            raise AssertionError(scope)

        config = uvicorn.Config(app, http=protocol, log_level="critical", lifespan="off")
        config.load()
        state = ServerState()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: protocol(config=config, server_state=state, app_state={}),
                                          sock=listener)
        _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
        try:
            for _ in range(500):
                if state.connections:
                    break
                await asyncio.sleep(0.01)
            [connection] = state.connections
            return connection.transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP,
                                                                             socket.TCP_NODELAY)
        finally:
            writer.close()
            server.close()

    assert asyncio.run(nodelay_of_served_connection(AutoHTTPProtocol)) == 0  # the case is made as on Windows
    assert asyncio.run(nodelay_of_served_connection(node_commands.http_protocol())) != 0


def test_the_access_log_names_routes_not_the_personal_data_in_paths(tmp_path):
    """Found by a hostile review: an ID number put in a URL (a caller's mistake) was kept in clear in the
    server's access log, as was any query string."""
    env = plugin_env(probe_site(tmp_path))
    home = str(tmp_path / "fushan")
    assert hemei(env, "--home", home, "init", "--name", "府山街道", "--scope", "yuecheng/fushan").returncode == 0
    assert hemei(env, "--home", home, "modules", "enable", "volunteer_hours").returncode == 0
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(hemei_command() + ["--home", home, "serve", "--port", "0"],  # info: access lines
                                env=env, stdout=out, stderr=subprocess.PIPE, text=True, encoding="utf-8")
        try:
            port = int(proc.stderr.readline().rsplit(":", 1)[1])
            url = f"http://127.0.0.1:{port}"
            assert httpx.get(f"{url}/api/volunteers/people/330602199001011231?phone=13905756789").status_code == 401
            assert httpx.get(f"{url}/api/nothing/13905756789/x").status_code == 404
            assert httpx.get(f"{url}/api/nothing/139-0575-6789").status_code == 404
            forged = "/x%0aINFO:%20%20%20%20%20127.0.0.1:1%20-%20%22POST%20/api/sync/push%20HTTP/1.1%22%20200%20OK"
            assert httpx.get(url + forged).status_code == 404
            assert httpx.get(f"{url}/api/health?name=%E7%8E%8B%E4%B8%BD").status_code == 200
        finally:
            proc.terminate()
            proc.wait(15)
            proc.stderr.close()
    said = log.read_text(encoding="utf-8", errors="replace")
    assert '"GET /api/volunteers/people/{id} HTTP/1.1" 401' in said, said
    assert '"GET /api/nothing/***/x HTTP/1.1" 404' in said and '"GET /api/health HTTP/1.1" 200' in said, said
    assert "330602199001011231" not in said and "13905756789" not in said and "%E7%8E%8B" not in said
    assert "0575" not in said and '"GET /api/nothing/*** HTTP/1.1" 404' in said
    # Shown encoded again, as uvicorn shows it: a %0a decoded would forge a line of the log.
    assert '"GET /x%0AINFO%3A' in said and not any(line.startswith("INFO:     127.0.0.1:1 ") for line in
                                                    said.splitlines())


def test_a_path_with_a_trailing_slash_is_not_found_rather_than_redirected(served):
    """Found by a hostile review: Starlette answered 307 with an empty body and a Location built from the
    caller's Host header (Host: evil.example sent the client there)."""
    server = served[0]
    reply = httpx.get(server.url + "/api/health/", headers={"Host": "evil.example"})
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "not_found"
    assert "location" not in reply.headers
