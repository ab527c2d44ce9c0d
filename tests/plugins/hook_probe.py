"""A test plugin that implements every hook; tests/test_hooks.py drives each one.

Two tables cover both merge policies: ``notes`` (lww) and ``ballots``
(append-only, one ballot per voter per vote).
"""

from __future__ import annotations

import click

from hemei.core import (APPEND_ONLY, LWW, ApiRoute, InvalidInput, MigrationSet, ModuleSchema, ReportSection,
                        TableSpec, cli_actor, cli_node, emit, hookimpl, json_option)

NOTES = TableSpec("notes", {"id": "text", "scope": "text", "title": "text", "body": "text", "n": "integer"},
                  policy=LWW, required=("title",), indexes=(("title",),))
BALLOTS = TableSpec("ballots", {"id": "text", "scope": "text", "vote": "text", "voter": "text", "choice": "text"},
                    policy=APPEND_ONLY, required=("vote", "voter"), unique=("vote", "voter"))
FORBIDDEN_TITLE = "forbidden"

migrations = MigrationSet("hook_probe")


@migrations.step
def probe_0001_reactions(db):
    db.execute("CREATE TABLE probe_reactions (tbl TEXT, op TEXT, pk TEXT, local INTEGER)")


@hookimpl
def register_tables():
    return [NOTES, BALLOTS]


@hookimpl
def register_migrations():
    return [migrations]


def notes_from_v1(change):
    """hook_probe v1 called a note's text ``text``; v2 calls it ``body``."""
    if change.table != "notes" or "text" not in change.values:
        return change
    values = dict(change.values)
    values["body"] = values.pop("text")
    if not isinstance(values["body"], (str, type(None))):
        raise InvalidInput("a v1 note's text must be text")
    return change._replace(values=values)


@hookimpl
def module_schema():
    return ModuleSchema(version=2, upgrades={1: notes_from_v1})


def add_note(call):
    body = call.body if isinstance(call.body, dict) else {}
    if not isinstance(body.get("title"), str):
        raise InvalidInput("title (text) is required")
    with call.node.writer(call.user["name"]) as w:
        pk = w.insert("notes", {"title": body["title"], "body": body.get("body")})
    return {"id": pk}


def list_notes(call):
    return call.node.db.execute("SELECT id, title FROM notes WHERE _deleted = 0 ORDER BY id").fetchall()


@hookimpl
def register_routes():
    return [
        ApiRoute("/api/probe/notes", "POST", add_note, role="operator", summary="Add a note",
                 body={"type": "object", "properties": {"title": {"type": "string"}}}),
        ApiRoute("/api/probe/notes", "GET", list_notes, role="viewer", summary="List notes"),
    ]


@click.group()
def probe():
    """Commands of the hook probe plugin.

    Example:

        hemei probe note "第一条"
    """


@probe.command()
@click.argument("title")
@json_option
def note(title, as_json):
    """Add a note.

    Example:

        hemei probe note "楼道粉刷"
    """
    node = cli_node()
    with node.writer(cli_actor()) as w:
        pk = w.insert("notes", {"title": title})
    emit({"id": pk, "title": title}, as_json, lambda d: click.echo(d["id"]))


@hookimpl
def register_commands():
    return [probe]


@hookimpl
def validate_change(change):
    if change.table == "notes" and change.values.get("title") == FORBIDDEN_TITLE:
        return f"title {FORBIDDEN_TITLE!r} is refused by hook_probe"
    return None


#: Set by a test to make the next reactions fail.
REACTION_FAILS: list[str] = []


@hookimpl
def change_applied(node, changes):
    if REACTION_FAILS:
        raise RuntimeError(REACTION_FAILS[0])
    node.conn.executemany("INSERT INTO probe_reactions (tbl, op, pk, local) VALUES (?, ?, ?, ?)",
                          [(c.table, c.op, c.pk, int(c.local)) for c in changes])


#: (node id, tables) for each rebuild seen, for tests/test_hooks.py.
REBUILDS: list[tuple[str, list[str]]] = []


#: Set by a test to make the next ticks fail.
TICK_FAILS: list[str] = []


@hookimpl
def tick(node):
    if TICK_FAILS:
        raise RuntimeError(TICK_FAILS[0])
    # In the node's own table, so a test can see ticks of a served node (another process).
    node.conn.execute("INSERT INTO probe_reactions (tbl, op, pk, local) VALUES ('', 'tick', '', 1)")


#: Set by a test to make the next tables_rebuilt calls fail.
REBUILD_FAILS: list[str] = []


@hookimpl
def tables_rebuilt(node, tables):
    if REBUILD_FAILS:
        raise RuntimeError(REBUILD_FAILS[0])
    REBUILDS.append((node.id, list(tables)))


@hookimpl
def place_names(node):
    return [("探针社区", node.scope + "/probe")]  # a name for a place below the node, as the sync transport gives


@hookimpl
def node_status(node):
    return {"probe": {"notes": node.conn.execute("SELECT count(*) FROM notes WHERE _deleted = 0").fetchone()[0]}}


@hookimpl
def report_sections(node, scope):
    count = node.conn.execute("SELECT count(*) FROM notes WHERE _deleted = 0 AND (scope = ? OR scope LIKE ?)",
                              (scope, scope + "/%")).fetchone()[0]
    return [ReportSection("hook_probe", "Notes", totals={"notes": count})]
