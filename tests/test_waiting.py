"""Updates and deletes that arrive before their row's insert, and judging them when it comes.

See ``tests/test_confinement_property.py`` for the same rules over every arrival order.
"""

from __future__ import annotations

from conftest import PROBE
from hemei.cli.main import BUILTIN_PLUGINS
from hemei.core.node import Node
from test_store import _push


def _streets_and_district(make_node, district_modules=("hook_probe",)):
    district = make_node("d", scope="yc", modules=district_modules)
    a, b = make_node("a", scope="yc/a"), make_node("b", scope="yc/b")
    with a.writer("w") as w:
        pk = w.insert("notes", {"title": "甲街的记录"})
    b.clock.observe(a.clock.last)  # later than a's insert: by the merge alone it would win
    with b.writer("mallory") as w:  # a leaked key: b names a's row from inside its own scope
        w._append("row.update", b.scope, {"t": "notes", "pk": pk, "v": {"title": "HIJACKED"}}, None)
    return district, a, b, pk


def _title_and_judgments(node: Node, pk: str):
    return (node.conn.execute("SELECT title FROM notes WHERE id = ?", (pk,)).fetchone(),
            node.conn.execute("SELECT kind FROM _hemei_conflicts").fetchall())


def test_a_waiting_change_keeps_its_confinement_through_a_rebuild(make_node):
    district, a, b, pk = _streets_and_district(make_node)
    _push(b, district, b.id)
    district.rebuild()  # e.g. an upgrade of the module, while b's update waits for a's insert
    assert district.conn.execute("SELECT confined_to FROM _hemei_waiting").fetchall() == [("yc/b",)]
    _push(a, district, a.id)
    assert _title_and_judgments(district, pk) == (("甲街的记录",), [("out_of_scope",)])


def test_changes_to_a_disabled_modules_tables_are_judged_when_it_is_enabled(make_node):
    """Kept in the log unprojected while the module is off; enabling replays and judges them."""
    district, a, b, pk = _streets_and_district(make_node, district_modules=())
    _push(a, district, a.id)
    _push(b, district, b.id)  # nothing to judge against: the district has no notes table yet
    assert district.set_module_enabled("hook_probe", True, "op") == ["ballots", "notes"]
    assert _title_and_judgments(district, pk) == (("甲街的记录",), [("out_of_scope",)])
    [(reason,)] = district.conn.execute("SELECT reason FROM _hemei_conflicts").fetchall()
    assert "a row of yc/a, outside yc/b" in reason


def test_changes_from_above_are_not_confined(make_node, run_cli):
    """A district's update of a street's row passes, before or after the insert it follows."""
    city, district, street = make_node("c", scope="sx"), make_node("d", scope="sx/yc"), make_node("s", "sx/yc/a")
    with street.writer("w") as w:
        pk = w.insert("notes", {"title": "甲街的记录"})
    _push(street, district, street.id)
    with district.writer("w") as w:
        w.update("notes", pk, {"body": "区里批示"})
    _push(district, city, district.id)  # the district's update first: it waits
    assert city.status()["waiting"] == 1
    shown = run_cli("--home", str(city.home), "status")
    assert shown.exit_code == 0 and "waiting:  1 updates or deletes received before the insert" in shown.output
    _push(district, city, street.id)
    assert city.conn.execute("SELECT title, body FROM notes").fetchall() == [("甲街的记录", "区里批示")]
    assert city.status()["waiting"] == 0 and city.status()["conflicts"] == 0


def test_an_old_home_moves_rows_without_a_scope_to_waiting_changes(make_node, tmp_path):
    """Before core migration 0003 an update that came before its insert made a row with no scope; a node
    opened by this release replays such tables once, and marks the origins it was confining already."""
    district, a, b, pk = _streets_and_district(make_node)
    _push(b, district, b.id)
    home = district.home
    # Back to the shape an older release left: the row without a scope, no waiting table, no flags.
    district.conn.executescript(f"""
        INSERT INTO notes (id, scope, title, _hlc, _origin, _colv)
            SELECT pk, NULL, 'HIJACKED', hlc, origin, '{{"_deleted":null,"body":null,"n":null,"scope":null}}'
            FROM _hemei_waiting;
        DROP TABLE _hemei_waiting;
        ALTER TABLE _hemei_origins DROP COLUMN confined;
        DELETE FROM _hemei_migrations WHERE step = 'core_0003_waiting_changes';
    """)
    district.close()
    reopened = Node.open(home, available=PROBE, builtins=BUILTIN_PLUGINS)
    try:
        assert reopened.conn.execute("SELECT count(*) FROM notes").fetchone() == (0,)
        assert reopened.status()["waiting"] == 1
        flags = dict(reopened.conn.execute("SELECT node_id, confined FROM _hemei_origins"))
        assert flags == {reopened.id: 0, b.id: 1}
        assert reopened.conn.execute("SELECT value FROM _hemei_meta WHERE key = 'reproject_unscoped'").fetchone() \
            is None
        _push(a, reopened, a.id)
        assert _title_and_judgments(reopened, pk) == (("甲街的记录",), [("out_of_scope",)])
    finally:
        reopened.close()
