"""The plugin host: built from a function, strict about hook names, lazy about modules."""

from __future__ import annotations

import types

import pytest

from conftest import PROBE
from test_store import send_all
from hemei.core import TableSpec, hookimpl
from hemei.core.errors import HemeiError, InvalidInput
from hemei.core.node import Node
from hemei.core.plugins import CORE_BUILTINS, PluginError, get_plugin_manager


def plugin_module(name: str, **hooks) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        fn.__name__ = hook_name
        setattr(module, hook_name, hookimpl(fn))
    return module


def test_each_call_builds_a_fresh_manager_with_the_builtins():
    one, two = get_plugin_manager(available={}), get_plugin_manager(available={})
    assert one is not two
    assert [name for name, _ in one.list_name_plugin()] == list(CORE_BUILTINS)


def test_a_misspelt_hook_fails_at_start():
    typo = plugin_module("typo", register_tabels=lambda: [])
    with pytest.raises(PluginError, match="register_tabels"):
        get_plugin_manager(["typo"], {"typo": typo})


def test_enabling_a_broken_module_is_refused_and_leaves_it_disabled(tmp_path):
    typo = plugin_module("typo", register_tabels=lambda: [])
    node = Node.init(tmp_path / "n", name="n", scope="a", available={"typo": typo})
    size = node.status()["log"]["size"]
    with pytest.raises(PluginError):
        node.set_module_enabled("typo", True, "t")
    assert node.enabled_modules() == [] and node.status()["log"]["size"] == size


def test_two_plugins_declaring_one_table_fail_loudly(tmp_path):
    spec = TableSpec("things", {"id": "text", "scope": "text"})
    first = plugin_module("first", register_tables=lambda: [spec])
    second = plugin_module("second", register_tables=lambda: [spec])
    node = Node.init(tmp_path / "n", name="n", scope="a", available={"first": first, "second": second})
    node.set_module_enabled("first", True, "t")
    with pytest.raises(InvalidInput, match="two plugins register the table 'things'"):
        node.set_module_enabled("second", True, "t")
    assert node.enabled_modules() == ["first"]  # nothing recorded: the node still opens


def test_a_node_whose_module_was_uninstalled_still_opens(make_node):
    node = make_node("n")
    home = node.home
    node.close()
    reopened = Node.open(home, available={})
    assert reopened.status()["missing_modules"] == ["hook_probe"]
    assert "notes" not in reopened.specs
    reopened.close()


def test_unknown_module_names_get_a_clear_error(node):
    with pytest.raises(InvalidInput, match="unknown module 'volunter_hours'"):
        node.set_module_enabled("volunter_hours", True, "t")


def test_registered_plugins_are_only_those_enabled(make_node):
    bare = make_node("bare", modules=())
    assert bare.pm.get_plugin("hook_probe") is None
    probe = make_node("probe")
    assert probe.pm.get_plugin("hook_probe") is PROBE["hook_probe"]


def test_password_prompt_on_a_terminal_asks_twice(tmp_path, run_cli, monkeypatch):
    from hemei.cli import admin_commands

    home = str(tmp_path / "h")
    run_cli("--home", home, "init", "--name", "a", "--scope", "x")
    monkeypatch.setattr(admin_commands, "_stdin_is_terminal", lambda: True)
    mismatch = run_cli("--home", home, "users", "add", "wang", "--role", "viewer",
                       input="first-password\nother-password\nfirst-password\nfirst-password\n")
    assert mismatch.exit_code == 0, mismatch.output
    assert "do not match" in mismatch.output.lower() and "first-password" not in mismatch.output
    node = Node.open(home)
    from hemei.core.users import check_password
    assert check_password(node, "wang", "first-password")["role"] == "viewer"


def test_a_change_is_validated_by_the_module_that_declared_its_table(tmp_path):
    """Each module judges its own rows: another module's validator is not asked about them."""
    asked: list[tuple[str, str]] = []

    def judge(name, refuse):
        def validate_change(change):
            asked.append((name, change.table))
            return f"{name} refuses {change.table}" if refuse and change.values.get("title") == "x" else None
        return validate_change

    owns_a = plugin_module("owns_a", register_tables=lambda: [TableSpec("table_a", {"id": "text", "scope": "text",
                                                                                  "title": "text"})],
                           validate_change=judge("owns_a", refuse=False))
    owns_b = plugin_module("owns_b", register_tables=lambda: [TableSpec("table_b", {"id": "text", "scope": "text",
                                                                                  "title": "text"})],
                           validate_change=judge("owns_b", refuse=True))
    node = Node.init(tmp_path / "n", name="n", scope="a", available={"owns_a": owns_a, "owns_b": owns_b})
    node.set_module_enabled("owns_a", True, "t")
    node.set_module_enabled("owns_b", True, "t")
    with node.writer("w") as w:
        w.insert("table_a", {"title": "x"})  # owns_b would refuse this title; it is not asked
    assert asked == [("owns_a", "table_a")]
    with pytest.raises(InvalidInput, match="owns_b refuses"):
        with node.writer("w") as w:
            w.insert("table_b", {"title": "x"})
    assert asked == [("owns_a", "table_a"), ("owns_b", "table_b")]


def killed_before_replaying(self, names, progress):
    raise KeyboardInterrupt  # the operator's Ctrl-C, or a power cut, right after the enable committed


def test_a_process_killed_between_enabling_and_replaying_leaves_the_replay_to_the_next_open(make_node, monkeypatch):
    street = make_node("street", scope="yuecheng/fushan/xihu")
    with street.writer("王丽") as w:
        w.insert("notes", {"title": "楼道粉刷"})
    district = make_node("district", scope="yuecheng/fushan", modules=())
    send_all(street, district)  # received while the module is off: only in the log

    monkeypatch.setattr(Node, "_reproject", killed_before_replaying)
    with pytest.raises(KeyboardInterrupt):
        district.set_module_enabled("hook_probe", True, "op")
    monkeypatch.undo()
    assert district.conn.execute("SELECT count(*) FROM notes").fetchone()[0] == 0  # enabled, not replayed yet
    with Node.open(district.home, available=PROBE) as reopened:
        assert reopened.conn.execute("SELECT title FROM notes").fetchall() == [("楼道粉刷",)]
        assert reopened.conn.execute("SELECT count(*) FROM _hemei_meta WHERE key LIKE 'replay:%'").fetchone()[0] == 0


def test_a_running_reader_finishes_a_replay_the_enabling_process_left(make_node, monkeypatch):
    """A server's node follows the home's modules on every request: when the CLI that enabled a module
    was killed before replaying, the server's next request does the replay (Node._reload_modules)."""
    street = make_node("street", scope="yuecheng/fushan/xihu")
    with street.writer("王丽") as w:
        w.insert("notes", {"title": "楼道粉刷"})
    district = make_node("district", scope="yuecheng/fushan", modules=())
    send_all(street, district)
    reader = Node.open(district.home, available=PROBE)  # opened before the enable, like hemei serve
    try:
        monkeypatch.setattr(Node, "_reproject", killed_before_replaying)
        with pytest.raises(KeyboardInterrupt):
            district.set_module_enabled("hook_probe", True, "op")
        monkeypatch.undo()
        assert reader.follow_modules() is True
        assert reader.conn.execute("SELECT title FROM notes").fetchall() == [("楼道粉刷",)]
        assert reader.conn.execute("SELECT count(*) FROM _hemei_meta WHERE key LIKE 'replay:%'").fetchone()[0] == 0
        assert reader.follow_modules() is False
    finally:
        reader.close()


def test_a_replay_that_fails_leaves_the_node_usable_so_the_module_can_be_disabled(make_node, monkeypatch, caplog):
    node = make_node("district", modules=())

    def broken(self, names, progress):
        raise RuntimeError("a module's check crashed on an old row")

    monkeypatch.setattr(Node, "_reproject", broken)
    with pytest.raises(RuntimeError):
        node.set_module_enabled("hook_probe", True, "op")
    with Node.open(node.home, available=PROBE) as reopened:  # the replay fails again: logged, the node opens
        assert "an old row" in caplog.text
        reopened.set_module_enabled("hook_probe", False, "op")
        assert reopened.enabled_modules() == []


def test_an_open_beside_another_process_writing_does_not_wait_to_replay(make_node):
    """Marks left by a killed process; another process holds the write lock (a long replay, say)."""
    node = make_node("district")
    node.conn.execute("INSERT INTO _hemei_meta (key, value) VALUES ('replay:notes', 1)")
    node.conn.execute("BEGIN IMMEDIATE")
    try:
        with Node.open(node.home, available=PROBE) as beside:  # opens: the replay is left for later
            assert beside.conn.execute("SELECT 1 FROM _hemei_meta WHERE key = 'replay:notes'").fetchone()
    finally:
        node.conn.execute("ROLLBACK")
    with Node.open(node.home, available=PROBE) as later:
        assert not later.conn.execute("SELECT 1 FROM _hemei_meta WHERE key = 'replay:notes'").fetchone()


def test_one_modules_failing_tables_rebuilt_does_not_keep_another_from_being_told(make_node):
    import hook_probe

    failing = types.ModuleType("failing")
    failing.register_tables = hookimpl(lambda: [TableSpec("failing_rows", {"id": "text", "scope": "text"})])
    failing.register_tables.__name__ = "register_tables"

    def tables_rebuilt(node, tables):
        raise RuntimeError("cache service down")

    failing.tables_rebuilt = hookimpl(tables_rebuilt)
    available = {**PROBE, "failing": failing}
    node = make_node("n")
    with Node.open(node.home, available=available) as both:
        with pytest.raises(HemeiError, match="cache service down"):  # enabled and replayed all the same
            both.set_module_enabled("failing", True, "op")
        hook_probe.REBUILDS.clear()
        with pytest.raises(HemeiError, match="failing: RuntimeError: cache service down"):
            both.rebuild(["notes", "failing_rows"])
        assert hook_probe.REBUILDS == [(both.id, ["failing_rows", "notes"])]  # told, despite the other
        marks = both.conn.execute("SELECT key FROM _hemei_meta WHERE key LIKE 'rebuilt:%'").fetchall()
        assert marks == [("rebuilt:failing_rows",)]  # only the failing module is asked again
