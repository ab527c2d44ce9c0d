"""The log as an audit trail: verify it, read it."""

from __future__ import annotations

import sys

import click

from hemei.core.audit import audit_log, log_kinds, verify_log
from hemei.core.clock import iso_to_local_text
from hemei.core.cli_support import home_option, cli_node, emit, json_option, progress, table



@click.group()
def audit() -> None:
    """Verify the log and read who did what.

    Example:

        hemei audit verify
    """


@audit.command("verify")
@home_option
@json_option
def audit_verify(as_json: bool) -> None:
    """Re-check every chain and signed checkpoint; exit 1 and name the first bad entry.

    Example:

        hemei --home ./district audit verify --json
    """
    node = cli_node()
    total = node.conn.execute("SELECT count(*) FROM _hemei_log").fetchone()[0]
    with progress(total, "verifying") as bar:
        result = verify_log(node, progress=bar.update)

    def human(r):
        for origin, info in r["origins"].items():
            click.echo(f"{origin}  {info['size']} entries  head {info['head'][:16]}…")
        for error in r["errors"]:
            click.echo(f"BAD: {error}", err=True)
        click.echo("log verified" if r["ok"] else f"log verification FAILED ({len(r['errors'])} problem(s))",
                   err=not r["ok"])

    emit(result, as_json, human)
    if not result["ok"]:
        sys.exit(1)


@audit.command("log")
@home_option
@click.option("--actor", help="Only entries by this actor.")
@click.option("--kind", help="Only this kind, or kind family (row, user, module, token, node).")
@click.option("--table", "table_name", help="Only changes to this table.")
@click.option("--since", help="Only entries at or after this date or time (this PC's local time unless it "
              "carries an offset), e.g. 2026-11-01 or 2026-11-01T08:00.")
@click.option("--origin", help="Only entries from the node whose id starts with this.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100000))
@json_option
def audit_log_cmd(actor: str | None, kind: str | None, table_name: str | None, since: str | None,
                  origin: str | None, limit: int, as_json: bool) -> None:
    """Who did what, newest first.

    Entries another node withheld from this one (another branch's, kind
    redacted: only their digest is held) are left out unless asked for
    with --kind redacted.

    Example:

        hemei audit log --actor wangli --since 2026-11-01 --limit 20
    """
    items = audit_log(cli_node(), actor=actor, kind=kind, table=table_name, since=since, origin=origin,
                      limit=limit)

    def human(rows):
        if not rows:
            # A kind is any a module writes, so one not in this log is not refused; but named, a typo shows.
            if not kind:
                click.echo("no entries")
                return
            kinds = log_kinds(cli_node())
            asked = kind.casefold()  # as SQL's LIKE matches it
            known = any(k.casefold() == asked or k.casefold().startswith(asked + ".") for k in kinds)
            click.echo("no entries" if known else f"no entries of kind {kind!r} (kinds in this log: {', '.join(kinds)})")
            return

        def what(r: dict) -> str:
            if "unreadable" in r:
                return f"(not readable: {r['unreadable'][:60]})"
            if "table" in r:
                return f"{r['table']} {r['pk']}"
            return ", ".join(f"{k}={v}" for k, v in r["details"].items())

        shown = [{"time": iso_to_local_text(r["time"]) if r["time"] else "(withheld)", "origin": r["origin"][:7],
                  "seq": r["seq"], "actor": r["actor"], "kind": r["kind"], "what": what(r)} for r in rows]
        table(shown, ["time", "origin", "seq", "actor", "kind", "what"])

    emit(items, as_json, human)


COMMANDS = [audit]
