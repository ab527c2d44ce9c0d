"""Every hook in core/hookspecs.py has a docstring and a test here (test_hook_<name>).

The probe plugin in tests/plugins/hook_probe.py implements each hook; each
test below shows the core calling it for real.
"""

from __future__ import annotations

import inspect
import json

import pytest
from conftest import PROBE

from hemei.cli.main import BUILTIN_PLUGINS
from hemei.core import Change, hookspecs
from hemei.core.errors import HemeiError, InvalidInput
from hemei.core.node import Node

HOOK_NAMES = sorted(name for name, fn in vars(hookspecs).items()
                    if inspect.isfunction(fn) and hasattr(fn, "hemei_spec"))


def test_hookspecs_exist():
    assert len(HOOK_NAMES) >= 7


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_every_hook_has_a_docstring_and_a_test(name):
    spec = getattr(hookspecs, name)
    assert spec.__doc__ and len(spec.__doc__.strip()) > 40, f"hook {name} needs a docstring"
    assert f"test_hook_{name}" in globals(), f"hook {name} has no test_hook_{name} in {__file__}"
    assert spec.__annotations__.get("return"), f"hook {name} needs a return annotation"


def test_hook_register_tables(node):
    assert {"notes", "ballots"} <= set(node.specs)
    columns = [r[1] for r in node.conn.execute("PRAGMA table_info(notes)")]
    assert columns[:5] == ["id", "scope", "title", "body", "n"] and "_hlc" in columns and "_colv" in columns
    assert node.specs["ballots"].policy == "append_only"


def test_hook_register_migrations(node):
    steps = node.conn.execute("SELECT step FROM _hemei_migrations WHERE set_name = 'hook_probe'").fetchall()
    assert steps == [("probe_0001_reactions",)]
    node._load_plugins()  # opening again does not run a step twice
    assert node.conn.execute("SELECT count(*) FROM _hemei_migrations WHERE set_name = 'hook_probe'").fetchone() == (1,)


def test_a_modules_delete_trigger_fires_on_an_update_in_every_process(make_node):
    """A migration step may add triggers (sqlite-utils' ``enable_fts(create_triggers=True)``); the
    projector updates by INSERT OR REPLACE, whose delete fires them only with recursive_triggers on.
    Found in review: once ``node.db`` was made lazily, the pragma was on only after it had been used."""
    node = make_node("n")
    with node.writer("tester") as w:
        pk = w.insert("notes", {"title": "x"})
    node.conn.execute("CREATE TABLE deleted_notes (id TEXT)")
    node.conn.execute("CREATE TRIGGER notes_ad AFTER DELETE ON notes BEGIN INSERT INTO deleted_notes VALUES (old.id);"
                      " END")
    home = node.home
    node.close()
    node = Node.open(home, available=PROBE, builtins=BUILTIN_PLUGINS)  # node.db never asked for
    try:
        with node.writer("tester") as w:
            w.update("notes", pk, {"title": "y"})
        assert node.conn.execute("SELECT id FROM deleted_notes").fetchall() == [(pk,)]
    finally:
        node.close()


def test_hook_module_schema(make_node):
    """hook_probe is at schema v2 (v1 called a note's text "text"): a v1 change is read through its upgrade."""
    street, district = make_node("street"), make_node("district", scope="yuecheng")
    assert district.module_versions["hook_probe"] == 2 and district.status()["module_versions"]["hook_probe"] == 2
    v1 = Change("notes", "insert", "n-1", "yuecheng/fushan", {"title": "旧", "text": "楼道粉刷"}, 1, street.id, "w",
                False, 1)
    v2 = v1._replace(pk="n-2", values={"title": "新", "body": "已办"}, schema=2)
    v3 = v1._replace(pk="n-3", values={"title": "未来", "body": "x", "colour": "red"}, schema=3)
    with district.conn:
        district.projector.apply([v1, v2, v3], local=False)
    rows = district.conn.execute("SELECT id, body FROM notes ORDER BY id").fetchall()
    assert rows == [("n-1", "楼道粉刷"), ("n-2", "已办")]
    kept = district.conn.execute("SELECT pk, kind, reason FROM _hemei_conflicts").fetchall()
    assert [(pk, kind) for pk, kind, _ in kept] == [("n-3", "quarantined")]
    assert "hook_probe schema v3" in kept[0][2] and "upgrade hemei" in kept[0][2]


def test_hook_register_routes(node):
    from hemei.core.api import create_app

    app = create_app(node.home, available=node._available, builtins=node._builtins)
    paths = {(r.method, r.path) for r in app.state.routes.api_routes}
    assert ("POST", "/api/probe/notes") in paths and ("GET", "/api/health") in paths
    app.state.pool.close()
    # tests/test_server.py calls these routes on a real server.


def test_hook_register_commands(node, run_cli):
    result = run_cli("--home", str(node.home), "probe", "note", "楼道粉刷", "--json")
    assert result.exit_code == 0, result.output
    assert '"title": "楼道粉刷"' in result.output
    assert node.conn.execute("SELECT title FROM notes").fetchall() == [("楼道粉刷",)]


def test_hook_validate_change(node):
    with pytest.raises(InvalidInput, match="refused by hook_probe") as err:
        with node.writer("w") as w:
            w.insert("notes", {"title": "fine"})
            w.insert("notes", {"title": "forbidden"})
    assert err.value.code == "refused"
    assert node.conn.execute("SELECT count(*) FROM notes").fetchone() == (0,)
    # Remote refusals: tests/test_store.py::test_remote_change_refused_by_a_plugin_is_kept_with_its_reason


def test_hook_change_applied(node):
    with node.writer("w") as w:
        pk = w.insert("notes", {"title": "a"})
        w.update("notes", pk, {"n": 1})
        assert node.conn.execute("SELECT count(*) FROM probe_reactions").fetchone() == (0,)  # not before commit
    assert node.conn.execute("SELECT tbl, op, pk, local FROM probe_reactions").fetchall() == [
        ("notes", "insert", pk, 1), ("notes", "update", pk, 1)]


def test_hook_change_applied_that_fails_does_not_fail_the_write_and_is_told_at_the_next_open(node, caplog):
    import hook_probe

    hook_probe.REBUILDS.clear()
    hook_probe.REACTION_FAILS.append("a row no check foresaw")
    try:
        with node.writer("w") as w:  # committed: neither an error for the writer nor a reason to stop others
            w.insert("notes", {"title": "kept"})
    finally:
        hook_probe.REACTION_FAILS.clear()
    assert node.conn.execute("SELECT title FROM notes").fetchall() == [("kept",)]
    assert "a row no check foresaw" in caplog.text and hook_probe.REBUILDS == []
    with Node.open(node.home, available=PROBE, builtins=BUILTIN_PLUGINS):
        assert hook_probe.REBUILDS == [(node.id, ["notes"])]  # its second chance to catch up


def test_hook_change_applied_that_fails_on_another_modules_table_is_told_of_that_table(make_node):
    import hook_probe
    from hemei.plugins.volunteer_hours import registry

    node = make_node("n", scope="越城区", modules=["hook_probe", "volunteer_hours"])
    hook_probe.REBUILDS.clear()
    hook_probe.REACTION_FAILS.append("boom")
    try:
        registry.set_category(node, "w", code="x1", name="新类别")  # a volunteer_hours table
    finally:
        hook_probe.REACTION_FAILS.clear()
    with Node.open(node.home, available=PROBE, builtins=BUILTIN_PLUGINS):  # found in review: never asked again
        assert (node.id, ["volunteer_categories"]) in hook_probe.REBUILDS


def test_hook_tick(node):
    import hook_probe

    assert node.tick() == []
    assert node.conn.execute("SELECT count(*) FROM probe_reactions WHERE op = 'tick'").fetchone() == (1,)
    hook_probe.TICK_FAILS.append("the probe broke")
    try:
        assert node.tick() == ["hook_probe: RuntimeError: the probe broke"]  # reported, not raised
        node.conn.execute("BEGIN IMMEDIATE")  # a failing tick that left a transaction open
        assert len(node.tick()) == 1 and not node.conn.in_transaction
    finally:
        hook_probe.TICK_FAILS.clear()
    # A served node ticks on its own: tests/test_server.py::test_a_served_node_ticks_on_its_own;
    # hemei sync ticks first: tests/test_cases_sync.py


def test_hook_tables_rebuilt(node):
    with node.writer("w") as w:
        w.insert("notes", {"title": "a"})
    import hook_probe

    hook_probe.REBUILDS.clear()
    node.rebuild(["notes"])
    assert hook_probe.REBUILDS == [(node.id, ["notes"])]
    # The grid module's use: tests/test_cases.py::test_the_status_table_is_the_fold_of_the_events_and_survives_a_rebuild


def test_hook_tables_rebuilt_that_fails_is_called_again_on_the_next_open(node, caplog):
    import hook_probe

    hook_probe.REBUILDS.clear()
    hook_probe.REBUILD_FAILS.append("cache unavailable")
    try:
        with pytest.raises(HemeiError, match="hook_probe: RuntimeError: cache unavailable"):
            node.rebuild(["notes"])  # the operator's rebuild says so; the tables are rebuilt all the same
        reopened = Node.open(node.home, available=PROBE, builtins=BUILTIN_PLUGINS)  # still opens: the failure is logged
        reopened.close()
        assert "cache unavailable" in caplog.text and hook_probe.REBUILDS == []
    finally:
        hook_probe.REBUILD_FAILS.clear()
    with Node.open(node.home, available=PROBE, builtins=BUILTIN_PLUGINS):
        assert hook_probe.REBUILDS == [(node.id, ["notes"])]
    with Node.open(node.home, available=PROBE, builtins=BUILTIN_PLUGINS):
        assert hook_probe.REBUILDS == [(node.id, ["notes"])]  # told once: not again


def test_hook_report_sections(node, run_cli):
    with node.writer("w") as w:
        w.insert("notes", {"title": "a", "scope": "yuecheng/fushan/xihu"})
        w.insert("notes", {"title": "b"})
    sections = [s for group in node.pm.hook.report_sections(node=node, scope="yuecheng/fushan/xihu") for s in group]
    assert [(s.module, s.totals) for s in sections] == [("hook_probe", {"notes": 1})]
    result = run_cli("--home", str(node.home), "report", "--json")
    assert '"notes": 2' in result.output
    # A place as an operator types it (found by an operator walkthrough: only the full path was taken).
    for typed in ("xihu", "fushan/xihu", "yuecheng/fushan/xihu", "node/xihu"):
        said = json.loads(run_cli("--home", str(node.home), "report", "--scope", typed, "--json").output)
        assert said["scope"] == "yuecheng/fushan/xihu" and said["sections"][0]["totals"] == {"notes": 1}, typed
    outside = run_cli("--home", str(node.home), "report", "--scope", "yuecheng/beihai")
    assert outside.exit_code == 1 and "outside this node's scope yuecheng/fushan" in outside.output


def test_hook_node_status(node, run_cli):
    with node.writer("w") as w:
        w.insert("notes", {"title": "a"})
    assert node.status()["probe"] == {"notes": 1}
    import json
    assert json.loads(run_cli("--home", str(node.home), "status", "--json").output)["probe"] == {"notes": 1}


def test_hook_place_names(node):
    from hemei.core.fields import named_places, place_scope

    assert named_places(node)["探针社区"] == node.scope + "/probe"
    assert place_scope(node, "探针社区/三楼", "place", held=lambda place: False) == node.scope + "/probe/三楼"
    # A place held here by that path comes first: a name never takes over what the operator typed.
    assert place_scope(node, "探针社区", "place", held=lambda place: True) == node.scope + "/探针社区"
