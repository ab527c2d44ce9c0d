"""CLI commands of the sync transport: invite, join, nodes, sync, bundle."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING

import click

from hemei.core.cli_support import Duration, cli_actor, cli_context, cli_node, emit, home_option, json_option, table
from hemei.core.clock import COUNTER_BITS, hlc_to_iso, iso_to_local_text
from hemei.core.errors import HemeiError, InvalidInput
from hemei.core.scope import parse_scope

from . import bundles, enroll, wire
from .address import node_address
from .peers import all_peers, peers_status

if TYPE_CHECKING:
    from .client import SyncReport


@click.command()
@home_option
@click.option("--scope", "scope", required=True, help="The child's org path, inside this node's scope.")
@click.option("--name", required=True, help="The child's name, e.g. 府山街道.")
@click.option("--url", help="This node's address as the child reaches it [default: the last --url given].")
@click.option("--ttl", type=Duration(), default="24h", show_default=True, help="How long the token is valid.")
def invite(scope: str, name: str, url: str | None, ttl: int) -> None:
    """Print a single-use enrollment token for a child node, alone on stdout.

    Hand it to the child's operator, who runs 'hemei join TOKEN'. This node
    keeps only the token's hash.

    Example:

        hemei --home ./district invite --scope yuecheng/fushan --name 府山街道 --url http://10.0.0.5:8340 --ttl 1h
    """
    node = cli_node()
    remembered = url is None
    if remembered:
        row = node.conn.execute("SELECT value FROM _hemei_meta WHERE key = 'public_url'").fetchone()
        if row is None:
            raise InvalidInput("give --url: this node's address as the child will reach it")
        url = row[0]
    try:
        url = node_address(url)
    except InvalidInput as exc:
        if remembered:
            raise InvalidInput(f"the address remembered from the last --url, {url!r}, is not valid: give --url "
                               "(this node's address as the child will reach it)") from None
        raise InvalidInput(f"--url: {exc.message}") from None
    token = enroll.create_invite(node, name=name, scope=scope, url=url, ttl_s=ttl, actor=cli_actor())
    node.conn.execute("INSERT OR REPLACE INTO _hemei_meta (key, value) VALUES ('public_url', ?)", (url,))
    click.echo(token)
    if remembered:  # the token is printed alone: say where it sends the child, in case this node moved since
        click.echo(f"note: the token sends the child to {url} (the last --url given); if this node moved, "
                   "invite again with --url", err=True)
    # Two nodes may share a scope (two PCs of one office), so this is a note, not a refusal; but the usual
    # reason is a PC replaced after a fork or a lost disk, whose old identity should be revoked.
    for held in all_peers(node):
        if held["role"] == "child" and not held["revoked"] and held["scope"] == parse_scope(scope):
            never = "" if held["last_contact_ms"] else (
                " It has never synced: if its own join failed part-way, it joins again with this token as the "
                "same node, and nothing is to be revoked.")
            click.echo(f"note: {held['name']} ({held['node_id']}) is enrolled for {held['scope']} already.{never} If "
                       f"{'instead ' if never else ''}a new node replaces it, revoke it: hemei nodes revoke "
                       f"{held['node_id']}", err=True)


@click.command()
@home_option
@click.argument("token")
@click.option("--url", help="Reach the parent at this address instead of the one in the token.")
@click.option("--replace-parent", is_flag=True,
              help="This node's parent was replaced (a new PC, a restored copy that forked): the node that "
                   "issued TOKEN becomes its parent instead; this node keeps its log.")
@json_option
def join(token: str, url: str | None, replace_parent: bool, as_json: bool) -> None:
    """Enroll this node as the child of the node that issued TOKEN.

    Example:

        hemei --home ./fushan join hemei1.eyJ1Ijoi...

        hemei --home ./fushan join hemei1.eyJ1Ijoi... --replace-parent
    """
    from . import client  # the HTTP client: imported by the commands that go out, not by every command

    parent = client.join(cli_node(), token, cli_actor(), url=url, replace_parent=replace_parent)
    emit(parent, as_json, lambda p: click.echo(f"joined {p['name']} ({p['scope']}) at {p['url']}\n"
                                               f"parent id: {p['node_id']}"))


@click.group()
def nodes() -> None:
    """Enrolled child nodes: list them, revoke one.

    Example:

        hemei --home ./district nodes list
    """


@nodes.command("list")
@home_option
@json_option
def nodes_list(as_json: bool) -> None:
    """Children enrolled here: id, name, scope, last contact, revoked.

    Example:

        hemei --home ./district nodes list --json
    """
    children = [{k: p[k] for k in ("node_id", "name", "scope", "last_contact", "revoked", "pending_up",
                                   "pending_down", "last_error")}
                for p in peers_status(cli_node()) if p["role"] == "child"]
    emit(children, as_json, lambda rows: table(
        [{**r, "last_contact": iso_to_local_text(r["last_contact"]) if r["last_contact"] else "never",
          "revoked": "REVOKED" if r["revoked"] else ""} for r in rows],
        ["node_id", "name", "scope", "last_contact", "revoked"]) if rows else click.echo("no children enrolled"))


@nodes.command("revoke")
@home_option
@click.argument("node_id")
def nodes_revoke(node_id: str) -> None:
    """Refuse a child from now on, for good (its entries already received are kept).

    There is no undo: a revoked node can sync again only by joining from a
    new node home with a new invite.

    Example:

        hemei --home ./district nodes revoke ABCDEFG-HIJKLMN-...
    """
    peer = enroll.revoke(cli_node(), node_id, cli_actor())
    click.echo(f"revoked {peer['name']} ({peer['node_id']})")


class _ProgressBars:
    """One bar per phase (push, pull) on stderr when it is a terminal; nothing otherwise."""

    def __init__(self):
        self.bar = None
        self.phase = None

    def __call__(self, phase: str, done: int, total: int) -> None:
        if self.phase != phase:
            self.finish()
            self.bar = click.progressbar(length=max(total, 1), label=phase, file=sys.stderr)
            self.phase = phase
        self.bar.length = max(total, done, 1)
        self.bar.update(done - self.bar.pos)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.render_finish()
            self.bar = None


def _describe(report: SyncReport) -> str:
    text = f"pushed {report.pushed}, pulled {report.pulled}"
    if report.refused_changes:
        text += f", {report.refused_changes} change(s) kept as conflicts (hemei conflicts)"
    for message in report.messages:
        text += f"\n{message}"
    return text


@click.command("sync")
@home_option
@click.option("--watch", is_flag=True, help="Keep syncing; retry with backoff while the link is down.")
@click.option("--interval", type=Duration(), help="Pause between syncs, with --watch (default 30s).")
@click.option("--batch-size", type=click.IntRange(1, 20000), default=wire.DEFAULT_BATCH, show_default=True)
@click.option("--url", help="The parent's address, if it moved; kept once the parent answers there.")
@json_option
def sync_command(watch: bool, interval: int | None, batch_size: int, url: str | None, as_json: bool) -> None:
    """Push what the parent lacks, pull what this node should have, then exit.

    Example:

        hemei --home ./fushan sync

        hemei --home ./fushan sync --url http://192.168.1.20:8340
    """
    if interval is not None and not watch:
        raise click.UsageError("--interval is the pause between syncs of --watch: add --watch, or leave it out")
    from . import client

    node = cli_node()
    if not watch:
        bars = _ProgressBars() if sys.stderr.isatty() else None
        try:
            report = client.sync_once(node, batch_size, progress=bars, url=url)
        finally:
            if bars:
                bars.finish()
        emit({"ok": True, **report.to_json()}, as_json, lambda r: click.echo(_describe(report)))
        return

    shown: list = []  # the failure last printed as a line of its own

    def on_result(result) -> None:
        now = datetime.now().astimezone()
        shown[:] = [result]
        if as_json:  # one JSON object a line, for a script or a service log that follows the watch
            stamp = hlc_to_iso(time.time_ns() // 1_000_000 << COUNTER_BITS)  # UTC with a Z, as all --json times
            line = ({"time": stamp, "ok": False, "error": result.to_json()["error"]}
                    if isinstance(result, HemeiError) else {"time": stamp, "ok": True, **result.to_json()})
            click.echo(json.dumps(line, ensure_ascii=False))
            return
        stamp = now.strftime("%Y-%m-%d %H:%M:%S")
        if isinstance(result, HemeiError):
            if result.code not in client.NEEDS_AN_OPERATOR:  # those end the watch, with the message as its error
                click.echo(f"{stamp} not synced: {result.message}", err=True)
        else:
            click.echo(f"{stamp} {_describe(result)}", err=True)

    try:
        client.sync_watch(node, interval_s=30 if interval is None else interval, batch_size=batch_size,
                          on_result=on_result, url=url)
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    except HemeiError as exc:
        if shown and exc is shown[0]:  # its line is out (on_result): not a second one for the same failure
            cli_context().failure_as_json = False
        raise


@click.group()
def bundle() -> None:
    """Offline sync on a USB stick: export here, import on the other node.

    Example:

        hemei --home ./fushan bundle export --out E:\\fushan.hemei
    """


@bundle.command("export")
@home_option
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="File to write.")
@json_option
def bundle_export(out: str, as_json: bool) -> None:
    """Write what the parent lacks, as far as the last sync or acknowledgement told, signed.

    An export does not move that point: a second one before the
    acknowledgement came back holds the first one's entries again
    (importing both is harmless, nothing is imported twice).

    Example:

        hemei --home ./fushan bundle export --out E:\\fushan.hemei
    """
    result = bundles.export_push(cli_node(), out)
    emit({"ok": True, **result}, as_json,
         lambda r: click.echo(f"wrote {r['entries']} {'entry' if r['entries'] == 1 else 'entries'} for {r['to']} "
                              f"to {r['file']}"))
    if result["revoked"]:
        click.echo(f"note: {result['to']} refused this node as revoked at the last sync, and will refuse this "
                   "bundle too: ask its operator", err=True)


@bundle.command("import")
@home_option
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--ack-out", type=click.Path(dir_okay=False), help="Where to write the acknowledgement (parent).")
@json_option
def bundle_import(file: str, ack_out: str | None, as_json: bool) -> None:
    """Verify a bundle whole and apply it; on a parent, also write the child's acknowledgement.

    Example:

        hemei --home ./district bundle import E:\\fushan.hemei --ack-out E:\\fushan.ack.hemei
    """
    result = bundles.import_bundle(cli_node(), file, ack_out)

    def human(r):
        click.echo(f"imported {r['new']} new entries from {r['from']}"
                   + (f"; {r['refused']} kept as conflicts" if r["refused"] else ""))
        if r["time_zone_warning"]:
            click.echo(f"note: {r['from']}: {r['time_zone_warning']}", err=True)
        if r["kind"] == "push":
            click.echo(f"acknowledgement for {r['from']}: {r['ack']} ({r['ack_entries']} entries for it)")
        else:
            for said in r["not_taken"]:
                click.echo(f"note: {said}", err=True)
            if r["older"]:
                click.echo(f"note: this acknowledgement is older than what this node last heard from {r['from']}: "
                           "the next export holds again some entries the parent has (harmless: nothing is "
                           "imported twice)", err=True)
            if ack_out:
                click.echo("note: --ack-out is for a bundle from a child; this was an acknowledgement, and "
                           "nothing more was written", err=True)

    emit({"ok": True, **result}, as_json, human)


COMMANDS = [invite, join, nodes, sync_command, bundle]
