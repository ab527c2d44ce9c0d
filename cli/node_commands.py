"""Commands about the node itself: init, status, conflicts, rebuild, report, serve."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import socket

import click

from hemei.core.audit import list_conflicts, unknown_table, verify_log
from hemei.core.cli_support import (home_option, NodeContext, cli_actor, cli_context, cli_node, emit, json_option,
                                     is_rate, percent, progress, shown, table)
from hemei.core.clock import iso_to_local_text, span_text
from hemei.core.errors import InvalidInput, NodeStateError
from hemei.core.fields import filter_scope
from hemei.core.node import Node
from hemei.core.slow_links import MIN_RATE, request_base_s



@click.command()
@home_option
@click.option("--name", required=True, help="Human name of the node, e.g. 府山街道.")
@click.option("--scope", "scope", required=True, help="Org path this node covers, e.g. yuecheng/fushan.")
@json_option
def init(name: str, scope: str, as_json: bool) -> None:
    """Create a node home: database, private key (owner-only) and node id.

    Refuses, changing nothing, when the home already holds a node.

    Example:

        hemei init --home ./fushan --name 府山街道 --scope yuecheng/fushan
    """
    ctx = cli_context()
    node = Node.init(ctx.home, name=name, scope=scope, actor=cli_actor(), available=ctx.available,
                     builtins=ctx.builtins)
    ctx._node = node
    emit({"node_id": node.id, "name": node.name, "scope": node.scope, "home": str(node.home)}, as_json,
         lambda d: click.echo(f"created node {d['name']} ({d['scope']}) in {d['home']}\nnode id: {d['node_id']}"))


def _print_status(s: dict) -> None:
    click.echo(f"node id:  {s['node_id']}")
    click.echo(f"name:     {s['name']}")
    click.echo(f"scope:    {s['scope']}")
    click.echo(f"home:     {s['home']}")
    versions = s.get("module_versions", {})
    shown = [f"{m} v{versions[m]}" if versions.get(m, 1) != 1 else m for m in s["modules"]]
    click.echo(f"modules:  {', '.join(shown) or '(none enabled)'}")
    click.echo(f"log:      {_count(s['log']['size'], 'entry', 'entries')}, head {s['log']['head'][:16]}…")
    click.echo(f"received: {_count(s['log']['entries_all_origins'] - s['log']['size'], 'entry', 'entries')} from "
               f"{_count(s['log']['origins'] - 1, 'other node', 'other nodes')}")
    click.echo(f"conflicts: {s['conflicts']}")
    if s.get("waiting"):
        click.echo(f"waiting:  {s['waiting']} updates or deletes received before the insert of their row"
                   " (applied when it arrives)")
    if s.get("clock_ahead_of_pc_ms"):
        ahead = s["clock_ahead_of_pc_ms"]
        click.echo(f"CLOCK:    this node's stamps run {span_text(ahead)} ahead of this PC's clock (entries written "
                   "while the PC clock was ahead, or received from a node whose clock is): every new entry is "
                   "stamped after them, and a parent takes them only when real time gets there. Nothing is lost")
    if s.get("missing_modules"):
        click.echo(f"MISSING modules (enabled but not installed): {', '.join(s['missing_modules'])}")
    for peer in s.get("peers", []):
        contact = iso_to_local_text(peer["last_contact"]) if peer["last_contact"] else "never"
        state = "REVOKED" if peer["revoked"] else f"last contact {contact}"
        # pending_up / pending_down go up and down the tree: from a child's line, up is what comes here.
        here_to_there, there_to_here = ((peer["pending_up"], peer["pending_down"]) if peer["role"] == "parent"
                                        else (peer["pending_down"], peer["pending_up"]))
        click.echo(f"{peer['role']:<9} {peer['name']} ({peer['scope']}) {state}; "
                   f"to send {here_to_there}, to receive {there_to_here}")
        if peer.get("url"):
            click.echo(f"          at {peer['url']}")
        latest = peer["refusals"][0] if peer["refusals"] else None
        if peer.get("last_error") and (latest is None or peer["last_error"] != f"{latest['code']}: {latest['reason']}"):
            click.echo(f"          last attempt failed: {peer['last_error']}")  # a refusal is shown below
        if peer.get("clock_warning"):
            click.echo(f"          {peer['clock_warning']}")
        if peer.get("time_zone_warning"):
            click.echo(f"          {peer['time_zone_warning']}")
        for module, gap in peer.get("version_gaps", {}).items():
            if gap["there"] > gap["here"]:
                click.echo(f"          {module} is v{gap['there']} there, v{gap['here']} here: its changes wait "
                           f"here as quarantined conflicts until this node is upgraded")
            else:
                click.echo(f"          {module} is v{gap['there']} there, v{gap['here']} here: this node's changes "
                           f"wait there until that node is upgraded")
        for module in peer.get("modules_not_there") or ():
            click.echo(f"          {module} is not enabled there: its changes from here are kept there unread, and "
                       "applied once it is enabled there (hemei modules enable)")
        for refusal in peer["refusals"][:3]:
            repeats = (f" ({refusal['refusals']} refusals like it in the hour after the one before, counted; the "
                       "latest said this)") if refusal.get("refusals") else ""
            click.echo(f"          refused {iso_to_local_text(refusal['time'])}: {refusal['code']}: {refusal['reason']}"
                       + repeats)
        if peer.get("refusals_not_logged"):
            click.echo(f"          {peer['refusals_not_logged']} more refusals like these since, counted: logged as "
                       "one entry of each kind once its hour is over")
    for fork in s.get("forks", []):
        click.echo(f"FORK      {fork['origin']}: held {fork['held_size']} entries, presented "
                   f"{fork['presented_size']} with another history ({iso_to_local_text(fork['seen'])})")


@click.command()
@home_option
@json_option
def status(as_json: bool) -> None:
    """Show node id, name, scope, enabled modules, log size and head.

    Example:

        hemei --home ./fushan status --json
    """
    emit(cli_node().status(), as_json, _print_status)


@click.command()
@home_option
@click.option("--table", "table_name", help="Only conflicts of this table.")
@json_option
def conflicts(table_name: str | None, as_json: bool) -> None:
    """List changes that were kept but not applied, and why.

    Duplicate keys (the earliest row wins), refusals by a module or by a
    table's merge policy, and changes this node cannot read. Nothing listed
    here was lost: each is also an entry in the log.

    Example:

        hemei --home ./fushan conflicts --table volunteers --json
    """
    node = cli_node()
    items = list_conflicts(node, table_name)
    if table_name is not None and not items and table_name not in node.specs:  # a typo, not "no conflicts"
        raise unknown_table(node, table_name)

    def human(rows):
        if not rows:
            click.echo("no conflicts")
            return
        table([{**r, "origin": r["origin"][:7], "time": iso_to_local_text(r["time"])} for r in rows],
              ["table", "pk", "kind", "time", "origin", "reason"])

    emit(items, as_json, human)


def _digest(node: Node, name: str) -> str:
    h = hashlib.sha256()
    for row in node.conn.execute(f"SELECT * FROM [{name}] ORDER BY 1"):
        h.update(repr(row).encode())
    for row in node.conn.execute("SELECT * FROM _hemei_conflicts WHERE tbl = ? ORDER BY pk, hlc, origin", (name,)):
        h.update(repr(row).encode())
    return h.hexdigest()


@click.command()
@home_option
@click.option("--table", "tables", multiple=True, help="Rebuild only this table (repeatable).")
@json_option
def rebuild(tables: tuple[str, ...], as_json: bool) -> None:
    """Recompute state tables from the log, and say which ones changed.

    Safe to run at any time: the log is the truth and state tables are its
    projection. The log is verified first (as `hemei audit verify` does);
    one changed outside hemei is not projected. A table reported as
    "repaired" had been changed outside hemei (or damaged) and now matches
    the log again.

    Example:

        hemei --home ./fushan rebuild
    """
    node = cli_node()
    names = list(tables) or sorted(node.specs)
    for name in names:
        if name not in node.specs:
            raise unknown_table(node, name)
    with progress(node.conn.execute("SELECT count(*) FROM _hemei_log").fetchone()[0], "verifying") as bar:
        verified = verify_log(node, progress=bar.update)
    if not verified["ok"]:  # a tampered log projected would put the tampering in every figure, unremarked
        raise NodeStateError(f"the log does not verify ({verified['errors'][0]}"
                             + (f"; {len(verified['errors']) - 1} more" if len(verified["errors"]) > 1 else "")
                             + "), so nothing was rebuilt: restore the node home from a backup"
                             " (`hemei audit verify` lists every problem)")
    before = {n: _digest(node, n) for n in names}
    total = node.conn.execute("SELECT count(*) FROM _hemei_log WHERE kind LIKE 'row.%'").fetchone()[0]
    with progress(total, "rebuilding") as bar:
        replayed = node.rebuild(names, progress=bar.update)
    result = {"entries_replayed": replayed,
              "tables": {n: ("unchanged" if _digest(node, n) == before[n] else "repaired") for n in names}}

    def human(r):
        click.echo(f"replayed {r['entries_replayed']} entries")
        for n, state in r["tables"].items():
            click.echo(f"  {n}: {state}")

    emit(result, as_json, human)


@click.command()
@home_option
@click.option("--scope", "scope",
              help="Place to report on: a path, relative or full, or a street's name [default: the node's scope].")
@json_option
def report(scope: str | None, as_json: bool) -> None:
    """Figures from every enabled module for an org subtree.

    Example:

        hemei --home ./district report --scope yuecheng/fushan --json
    """
    node = cli_node()
    # A place where a node synced or an enabled module holds a row: a typo, or a place this node holds no
    # part of, would read as zeros. Each module then reports that place, zeros where it holds nothing.
    scope = filter_scope(node, scope, tuple(node.specs))
    sections = [s for group in node.pm.hook.report_sections(node=node, scope=scope) for s in group or ()]
    data = {"scope": scope, "sections": [s.to_json() for s in sections]}

    def human(d):
        if not d["sections"]:
            click.echo("no enabled module contributes a report")
        for s in d["sections"]:
            click.echo(f"== {s['title']} ({s['module']})")
            for k, v in s["totals"].items():
                click.echo(f"  {k}: {percent(v) if is_rate(k) else shown(v)}")
            if s["rows"]:
                table(s["rows"], list(s["rows"][0]))

    emit(data, as_json, human)


@click.command()
@home_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8340, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def serve(host: str, port: int, log_level: str) -> None:
    """Run the node's HTTP API (health, status, audit, module routes, OpenAPI).

    Example:

        hemei --home ./district serve --host 127.0.0.1 --port 8340
    """
    import uvicorn

    from hemei.core.api import RouteNotPath, create_app

    ctx: NodeContext = cli_context()
    request_base_s()  # a wrong HEMEI_REQUEST_SECONDS is said now, not at the first request
    app = create_app(ctx.home, available=ctx.available, builtins=ctx.builtins)
    node = app.state.pool.get()
    # Bound here, before anything is announced: the address printed is the one
    # listened on (``--port 0`` takes a free port and says which), and a port
    # another program holds is said plainly instead of after a false announcement.
    listener = listen(host, port)
    port = listener.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"hemei node {node.name} ({node.id}) on http://{shown}:{port}", err=True)
    # A street whose link died mid-upload leaves a request waiting for its body:
    # do not let it hold a shutdown forever.
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5,
                            http=http_protocol())
    logging.getLogger("uvicorn.access").addFilter(RouteNotPath(app.state.routes))  # after uvicorn's logging setup
    try:
        uvicorn.Server(config).run(sockets=[listener])
    except KeyboardInterrupt:  # uvicorn raises Ctrl-C again after its clean shutdown; uvicorn.run hid it
        pass


def http_protocol() -> type:
    """uvicorn's HTTP protocol, turning Nagle's algorithm off on every connection it is given, and
    closing a connection whose next request has not come whole within a request's base time.

    asyncio turns Nagle off itself only for sockets whose ``proto`` says TCP, and its Windows loop makes
    accepted sockets with ``proto`` 0: without this, each answer there could wait for the client's
    delayed ACK (the listener's option, set in :func:`_bound`, may or may not pass on to them).

    uvicorn waits for a request's headers for ever (its keep-alive timeout stops at the first byte, and
    does not run before the first request): a connection opened and left silent, or sent a header
    line a second, or from a PC switched off mid-request, held a socket for good, and a few hundred of
    them every socket the process may open. The body has its own budget (core/api.py).
    """
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    from hemei.sync import wire

    class NoDelayHTTP(AutoHTTPProtocol):
        def connection_made(self, transport) -> None:
            no_delay(transport.get_extra_info("socket"))
            super().connection_made(transport)
            self._await_request()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._await_request()

        def connection_lost(self, exc) -> None:
            self._stop_awaiting()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            self._received += len(data)
            super().data_received(data)

        def _await_request(self, rest_of_a_body: bool = False) -> None:
            self._stop_awaiting()
            self._received = 0
            if not rest_of_a_body:
                self._rest_taken = 0
            if not self.transport.is_closing():
                base_s = request_base_s()
                self._awaiting = self.loop.call_later(base_s, self._close_if_no_request, self.cycle, base_s)

        def _stop_awaiting(self) -> None:
            if getattr(self, "_awaiting", None) is not None:
                self._awaiting.cancel()
                self._awaiting = None

        def _close_if_no_request(self, awaited_after, base_s: float) -> None:
            """Close unless a request came since ``awaited_after`` (the last one answered, or None), or
            that one is still being answered (a pipelined one, taken in on_response_complete), or bytes
            still come at the pace a body must keep: the rest of a body refused before it was read (401,
            413, 408), which the client may still be sending (review: cut, a Windows client could lose
            the refusal it had not read yet); at most as much as any route takes."""
            idle = awaited_after is None or awaited_after.response_complete
            if self.cycle is not awaited_after or not idle or self.transport.is_closing():
                return
            if (awaited_after is not None and awaited_after.more_body and self._received >= base_s * MIN_RATE
                    and self._rest_taken + self._received <= wire.MAX_COMPRESSED):  # no route takes more
                self._rest_taken += self._received
                self._await_request(rest_of_a_body=True)
            else:
                self.transport.close()

    return NoDelayHTTP


def no_delay(sock) -> None:
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # the peer already gone: its connection fails on its own
            pass


#: What Windows sockets report instead of the POSIX codes (the errno module names them only on Windows).
_WSAEACCES, _WSAEADDRINUSE, _WSAEADDRNOTAVAIL = 10013, 10048, 10049


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port``; the reason in plain words when it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        found = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        raise InvalidInput(f"--host {host!r} is not an address or a name this PC can resolve") from None
    try:
        return _bound(*found[0])
    except OSError as e:
        if e.errno in (errno.EADDRINUSE, _WSAEADDRINUSE):
            raise InvalidInput(f"port {port} on {host} is already in use by another program:"
                               " stop it, or choose another --port") from None
        if e.errno in (errno.EACCES, _WSAEACCES):
            if port < 1024:
                raise InvalidInput(f"this user may not listen on port {port}: choose a port above 1023") from None
            raise InvalidInput(f"port {port} is reserved on this PC or held by another program: choose another "
                               "--port") from None
        if e.errno in (errno.EADDRNOTAVAIL, _WSAEADDRNOTAVAIL):
            raise InvalidInput(f"--host {host} is not an address of this PC") from None
        raise InvalidInput(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def _bound(family: int, kind: int, proto: int, _name: str, address: tuple) -> socket.socket:
    """A listening socket made as asyncio makes its own. ``proto`` must say TCP: asyncio turns Nagle's
    algorithm off only on such sockets, and connections inherit it from the listener
    (``socket.create_server`` leaves it 0, and every answer then waited 40 ms for a delayed ACK)."""
    sock = socket.socket(family, kind, proto)
    try:
        if os.name == "posix":  # on Windows the option lets another program take the port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        # Also on the listener: connections inherit it on Linux, and asyncio's Windows loop (which uvicorn
        # uses there) makes accepted sockets with proto 0, so asyncio never sets it on them itself.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock


COMMANDS = [init, status, conflicts, rebuild, report, serve]


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"
