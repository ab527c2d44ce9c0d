"""Updates and deletes that arrive before their row's insert, and judging them when it comes.

See ``tests/test_confinement_property.py`` for the same rules over every arrival order.
"""

from __future__ import annotations

import pytest

from conftest import PROBE
from hemei.cli.main import BUILTIN_PLUGINS
from hemei.core.node import Node
from test_store import _push, send_all


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


@pytest.mark.parametrize("off", ["disabled", "not installed", "disabled again"])
def test_an_insert_under_a_siblings_key_is_judged_when_its_module_comes_back(make_node, off):
    """Received while the district projected no notes table (module disabled, enabled but missing after
    a reinstall, or disabled after a's insert was judged at receipt), so no receipt judged b's insert:
    the replay that brings the module back does, in stamp order, and the row stays a's, which inserted
    it first. The merge alone would let the later stamp win, moving the row into b's scope and refusing
    a's next edit; replaying by origin would let b win for having been heard from first."""
    district = make_node("d", scope="yc", modules=() if off == "disabled" else ("hook_probe",))
    a, b = make_node("a", scope="yc/a"), make_node("b", scope="yc/b")
    _push(b, district, b.id)  # b is heard from first: its entries come first in the log's order
    with a.writer("w") as w:
        pk = w.insert("notes", {"title": "甲街的记录"})
    b.clock.observe(a.clock.last)
    with b.writer("mallory") as w:  # a leaked key, inserted again from inside b's own scope
        w._append("row.insert", b.scope, {"t": "notes", "pk": pk, "v": {"title": "HIJACKED"}}, None)
    if off == "not installed":
        district.close()
        with Node.open(district.home, available={}, builtins=BUILTIN_PLUGINS) as missing:
            _push(a, missing, a.id)
            _push(b, missing, b.id)
        district = Node.open(district.home, available=PROBE, builtins=BUILTIN_PLUGINS)
    else:
        _push(a, district, a.id)
        if off == "disabled again":
            district.set_module_enabled("hook_probe", False, "op")
        _push(b, district, b.id)
        district.set_module_enabled("hook_probe", True, "op")
    try:
        assert _title_and_judgments(district, pk) == (("甲街的记录",), [("out_of_scope",)])
        assert district.conn.execute("SELECT scope FROM notes WHERE id = ?", (pk,)).fetchone() == ("yc/a",)
        district.rebuild()  # the judgment made by that replay is kept, like one made at receipt
        assert _title_and_judgments(district, pk) == (("甲街的记录",), [("out_of_scope",)])
        with a.writer("w") as w:  # its owner goes on editing it
            w.update("notes", pk, {"body": "跟进"})
        _push(a, district, a.id)
        assert district.conn.execute("SELECT title, body FROM notes WHERE id = ?", (pk,)).fetchone() == (
            "甲街的记录", "跟进")
    finally:
        district.close()


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
    district.conn.executescript("""
        INSERT INTO notes (id, scope, title, _hlc, _origin, _colv)
            SELECT pk, NULL, 'HIJACKED', hlc, origin, '{"_deleted":null,"body":null,"n":null,"scope":null}'
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


def test_a_district_restored_from_backup_judges_what_it_pulls_of_its_streets(make_node):
    """The city holds the district's streets' entries; a district restored from an old backup gets them
    back by pull. Those origins lie below it: their changes are confined (kept, the city judged them
    already) and stay confined for the next rebuild."""
    district, a, b, pk = _streets_and_district(make_node)
    for street in (b, a):  # as a pull from the city delivers them: b's update first
        after = 0
        while (batch := street.read_batch(street.id, after)) is not None:
            district.apply_batch(batch, tree=True)
            after = batch.entries[-1][0]
    assert _title_and_judgments(district, pk) == (("甲街的记录",), [("out_of_scope",)])
    flags = dict(district.conn.execute("SELECT node_id, confined FROM _hemei_origins"))
    assert flags == {district.id: 0, a.id: 1, b.id: 1}
    before = district.conn.execute("SELECT * FROM notes").fetchall()
    district.rebuild()
    assert district.conn.execute("SELECT * FROM notes").fetchall() == before
    assert _title_and_judgments(district, pk)[1] == [("out_of_scope",)]


def _relay_all(district: Node, city: Node, origins) -> None:
    for origin in origins:
        _push(district, city, origin)


def test_a_change_refused_anyway_is_judged_for_scope_whichever_came_first(make_node):
    """b's update of a's row is also one the module refuses. Insert first, it is judged out of scope;
    update first, it waits (judge only, never applied) and the insert judges it the same."""
    results = []
    for order in ("insert first", "update first"):
        city, district = make_node(f"c-{order}", scope="sx"), make_node(f"d-{order}", scope="sx/yc")
        a, b = make_node(f"a-{order}", scope="sx/yc/a"), make_node(f"b-{order}", scope="sx/yc/b")
        with a.writer("w") as w:
            pk = w.insert("notes", {"title": "甲街的记录"})
            ballot = w.insert("ballots", {"vote": "v1", "voter": "p1", "choice": "A"})
        with b.writer("mallory") as w:
            w._append("row.update", b.scope, {"t": "notes", "pk": pk, "v": {"title": "forbidden"}}, None)
            w._append("row.delete", b.scope, {"t": "ballots", "pk": ballot, "v": {}}, None)
        for street in (a, b):
            send_all(street, district)
        _relay_all(district, city, [a.id, b.id] if order == "insert first" else [b.id, a.id])
        judged = city.conn.execute("SELECT tbl, kind FROM _hemei_conflicts ORDER BY tbl").fetchall()
        results.append(judged)
        assert judged == [("ballots", "out_of_scope"), ("notes", "out_of_scope")], order
        assert city.status()["waiting"] == 0
        city.rebuild()
        assert city.conn.execute("SELECT tbl, kind FROM _hemei_conflicts ORDER BY tbl").fetchall() == judged
    assert results[0] == results[1]


def test_an_old_homes_merged_edit_of_a_siblings_row_is_judged_on_upgrade(make_node):
    """An older release merged b's edit, which came first, into a's row once a's insert arrived. The
    first open by this release replays the tables of a node that confines origins, judging it now."""
    district, a, b, pk = _streets_and_district(make_node)
    send_all(b, district)
    send_all(a, district)
    district.conn.execute("UPDATE notes SET title = 'HIJACKED' WHERE id = ?", (pk,))  # what the old merge kept
    district.conn.executescript("""
        DROP TABLE _hemei_waiting;
        ALTER TABLE _hemei_origins DROP COLUMN confined;
        DELETE FROM _hemei_migrations WHERE step = 'core_0003_waiting_changes';
    """)
    home = district.home
    district.close()
    reopened = Node.open(home, available=PROBE, builtins=BUILTIN_PLUGINS)
    try:
        assert _title_and_judgments(reopened, pk) == (("甲街的记录",), [("out_of_scope",)])
    finally:
        reopened.close()


def test_a_change_to_a_key_held_only_by_a_losing_duplicate_does_not_wait(make_node):
    """c's ballot loses a's unique (vote, voter) and is kept as a duplicate; b's update of c's key is
    judged against it. Whichever came first, nothing is left waiting."""
    states = []
    for order in ("acb", "abc"):
        d = make_node(f"d{order}", scope="yc")
        a, b, c = (make_node(f"{n}{order}", scope=f"yc/{n}") for n in "abc")
        with a.writer("w") as w:
            w.insert("ballots", {"vote": "v1", "voter": "p1", "choice": "A"})
        c.clock.observe(a.clock.last)
        with c.writer("w") as w:
            key = w.insert("ballots", {"vote": "v1", "voter": "p1", "choice": "B"})
        with b.writer("mallory") as w:
            w._append("row.update", b.scope, {"t": "ballots", "pk": key, "v": {"choice": "C"}}, None)
        nodes = {"a": a, "b": b, "c": c}
        for name in order:
            street = nodes[name]
            after = 0
            while (batch := street.read_batch(street.id, after)) is not None:
                d.apply_batch(batch, tree=True)
                after = batch.entries[-1][0]
        states.append((sorted((pk == key, kind) for pk, kind in d.conn.execute(
            "SELECT pk, kind FROM _hemei_conflicts")), d.status()["waiting"]))
    assert states[0] == states[1] == ([(True, "duplicate"), (True, "out_of_scope")], 0)
