"""Mixed releases in one tree (design §6): a module's changes are upgraded, or quarantined and applied later.

The "notices" test module exists at two releases (tests/plugins/notices_v1.py
and notices_v2.py): release 2 renamed ``phone`` to ``contact`` and added
``urgent``. Nodes here are real homes; the last test runs real
``hemei serve`` and ``hemei sync`` processes with different releases installed.
"""

from __future__ import annotations

import json
import sqlite3
import types

import httpx
import notices_v1
import notices_v2
import orjson
import pytest
from conftest import PROBE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server import plugin_env, probe_site
from test_store import send_all
from tree import Tree

import hemei.core.modules as modules_module
import hemei.core.node as node_module
from hemei.cli.main import BUILTIN_PLUGINS
from hemei.core import LWW, Change, ModuleSchema, TableSpec, hookimpl
from hemei.core.merge import Projector
from hemei.core.errors import InvalidInput, NodeStateError
from hemei.core.node import Node

RELEASES = {1: notices_v1, 2: notices_v2}
STREET, DISTRICT, CITY = "越城区/府山街道", "越城区", ""


def available(release: int) -> dict:
    return {**PROBE, "notices": RELEASES[release]}


def make(root, name: str, scope: str, release: int) -> Node:
    node = Node.init(root / name, name=name, scope=scope or "绍兴市", actor="tester", available=available(release),
                     builtins=BUILTIN_PLUGINS)
    for module in ("hook_probe", "notices"):
        node.set_module_enabled(module, True, "tester")
    return node


def reopen(node: Node, release: int) -> Node:
    node.close()
    return Node.open(node.home, available=available(release), builtins=BUILTIN_PLUGINS)


def send(src: Node, dst: Node, confine: bool = True) -> None:
    """Everything ``src`` holds that ``dst`` lacks, as a child's push unless ``confine`` is False."""
    send_all(src, dst, confine=confine)


def notices(node: Node) -> list[tuple]:
    """Every column the current release declares, and the merge metadata."""
    cols = ", ".join(f"[{c}]" for c in node.specs["notices"].columns)
    return node.conn.execute(f"SELECT {cols}, _deleted, _hlc, _origin, _colv FROM notices ORDER BY id").fetchall()


def conflicts(node: Node, kind: str | None = None) -> list[tuple]:
    sql = "SELECT tbl, pk, kind, reason FROM _hemei_conflicts"
    return node.conn.execute(sql + (" WHERE kind = ?" if kind else "") + " ORDER BY pk", (kind,) if kind else ()).fetchall()


def test_a_newer_streets_changes_wait_at_an_older_district_and_apply_when_it_is_upgraded(tmp_path):
    street, district = make(tmp_path, "street", STREET, 2), make(tmp_path, "district", DISTRICT, 1)
    with street.writer("王丽") as w:
        first = w.insert("notices", {"title": "停水通知", "contact": "13800000000", "urgent": 1})
        second = w.insert("notices", {"title": "垃圾分类"})
        w.update("notices", second, {"contact": "府山社区"})
        w.insert("notes", {"title": "楼道粉刷"})  # another module, at the same release on both sides
    send(street, district)  # neither refused nor dropped
    assert district.version_vector()[street.id] == street.version_vector()[street.id]
    assert district.conn.execute("SELECT title FROM notes").fetchall() == [("楼道粉刷",)]
    assert notices(district) == []
    waiting = conflicts(district, "quarantined")
    assert [pk for _, pk, _, _ in waiting] == sorted([first, second, second])
    assert "notices schema v2; this node reads up to v1" in waiting[0][3]

    district = reopen(district, 2)
    assert notices(district) == notices(street)
    assert conflicts(district) == []
    upgrade = district.conn.execute("SELECT payload FROM _hemei_log WHERE kind = 'module.upgrade'").fetchall()
    assert [orjson.loads(p) for (p,) in upgrade] == [{"module": "notices", "from": 1, "to": 2}]
    district = reopen(district, 2)  # once: the next open finds nothing to do
    assert district.conn.execute("SELECT count(*) FROM _hemei_log WHERE kind = 'module.upgrade'").fetchone() == (1,)
    district.close()
    street.close()


def test_an_older_streets_changes_are_read_through_the_upgrade_and_relayed_unchanged(tmp_path):
    street, district, city = (make(tmp_path, "street", STREET, 1), make(tmp_path, "district", DISTRICT, 1),
                              make(tmp_path, "city", CITY, 2))
    with street.writer("王丽") as w:
        pk = w.insert("notices", {"title": "停水通知", "phone": "13800000000"})
        w.update("notices", pk, {"phone": "13900000000"})
        gone = w.insert("notices", {"title": "过期", "phone": "1"})
        w.delete("notices", gone)
    send(street, district)
    send(district, city)  # the v1 district relays the street's v1 entries; the v2 city upgrades them
    assert city.conn.execute("SELECT id, title, contact, urgent, _deleted FROM notices ORDER BY title").fetchall() == \
        sorted([(pk, "停水通知", "13900000000", None, 0), (gone, "过期", "1", None, 1)], key=lambda r: r[1])
    assert conflicts(city) == []
    # The city's copy of the street's chain is the street's own: relayed unchanged.
    assert city.version_vector()[street.id] == street.version_vector()[street.id]
    assert [r[0] for r in city.conn.execute("SELECT hash FROM _hemei_log WHERE origin = (SELECT ix FROM "
                                            "_hemei_origins WHERE node_id = ?) ORDER BY seq", (street.id,))] == \
        [r[0] for r in street.conn.execute("SELECT hash FROM _hemei_log WHERE origin = 1 ORDER BY seq")]
    for node in (street, district, city):
        node.close()


def test_a_change_its_upgrade_cannot_read_is_kept_as_a_conflict_and_the_rest_applies(tmp_path):
    street, district = make(tmp_path, "street", STREET, 1), make(tmp_path, "district", DISTRICT, 2)
    with street.writer("王丽") as w:
        w.insert("notices", {"title": "坏", "phone": notices_v2.UNREADABLE_PHONE})
        good = w.insert("notices", {"title": "好", "phone": "110"})
    send(street, district)
    assert district.conn.execute("SELECT id, contact FROM notices").fetchall() == [(good, "110")]
    [(table, _, kind, reason)] = conflicts(district)
    assert (table, kind) == ("notices", "unreadable") and "cannot read a change written at schema v1" in reason
    street.close()
    district.close()


def test_an_upgrade_must_return_the_same_change_and_its_failures_are_conflicts(make_node):
    node = make_node("d", scope=DISTRICT)
    change = Change("notes", "insert", "k1", STREET, {"title": "t", "text": "x"}, 5, "O" * 52, "w", False, 1)
    tv = node.projector.versions["notes"]
    bad = tv.__class__(tv.module, tv.schema.__class__(2, {1: lambda c: c._replace(table="volunteers")}), tv.tables)
    assert "not the same change" in bad.upgrade(change)
    moved = tv.__class__(tv.module, tv.schema.__class__(2, {1: lambda c: c._replace(pk="other")}), tv.tables)
    assert "not the same change" in moved.upgrade(change)
    other_table = tv.__class__(tv.module, tv.schema.__class__(2, {1: lambda c: c._replace(table="ballots")}),
                               tv.tables)
    assert "not the same change" in other_table.upgrade(change)
    rescoped = tv.__class__(tv.module, tv.schema.__class__(2, {1: lambda c: c._replace(scope="sx/other")}), tv.tables)
    assert "not the same change" in rescoped.upgrade(change)
    buggy = tv.__class__(tv.module, tv.schema.__class__(2, {1: lambda c: c.values["title"].nope()}), tv.tables)
    assert "AttributeError" in buggy.upgrade(change)  # a bug in plugin code: a conflict, not a 500
    assert tv.upgrade(change).values == {"title": "t", "body": "x"}


@pytest.mark.parametrize("declared", [0, "2", 1.5])
def test_a_module_schema_must_be_a_version_from_1_with_steps_below_it(declared):
    from hemei.core import ModuleSchema

    with pytest.raises(ValueError):
        ModuleSchema(version=declared)
    with pytest.raises(ValueError):
        ModuleSchema(version=2, upgrades={2: lambda c: c})


def test_tables_built_by_a_newer_release_are_not_opened_by_an_older_one(tmp_path):
    node = make(tmp_path, "street", STREET, 2)
    node.close()
    import sqlite3
    with sqlite3.connect(tmp_path / "street" / "node.db") as raw:
        before = raw.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
    with pytest.raises(NodeStateError, match="built at schema v2.*reads up to v1.*newer hemei"):
        Node.open(tmp_path / "street", available=available(1), builtins=BUILTIN_PLUGINS)
    with sqlite3.connect(tmp_path / "street" / "node.db") as raw:  # refused before touching the schema
        assert raw.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall() == before
    # and the node still opens with the release that built it
    Node.open(tmp_path / "street", available=available(2), builtins=BUILTIN_PLUGINS).close()


def test_enabling_a_module_records_its_version_and_needs_no_upgrade(tmp_path):
    node = make(tmp_path, "street", STREET, 2)
    assert node.conn.execute("SELECT schema_version FROM _hemei_modules WHERE name = 'notices'").fetchone() == (2,)
    node = reopen(node, 2)
    assert node.conn.execute("SELECT count(*) FROM _hemei_log WHERE kind = 'module.upgrade'").fetchone() == (0,)
    node.close()


# -- the property: whatever the releases and the order, the upgraded replicas agree -------------------------

OPS = st.lists(st.tuples(st.sampled_from(["v1", "v2"]), st.sampled_from(["insert", "update", "delete"]),
                         st.integers(0, 3), st.text("水电气", max_size=2)), min_size=1, max_size=14)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS, order=st.randoms(use_true_random=False))
def test_replicas_of_mixed_releases_converge_once_upgraded(tmp_path_factory, ops, order):
    """A community at release 1 and its street at release 2 edit notices (the street also edits rows it
    received from the community).
    A district that always ran v2 and one that ran v1 and was upgraded midway, each receiving the entries
    in its own interleaving, end with identical notices and conflicts, equal to a rebuild."""
    root = tmp_path_factory.mktemp("mixed")
    old = make(root, "old", STREET + "/甲社区", 1)
    new = make(root, "new", STREET, 2)
    for who, op, index, text in ops:
        node = old if who == "v1" else new
        if who == "v2":
            send(old, new, confine=False)  # what the v1 street wrote, read by the v2 one through the upgrade
        live = [pk for (pk,) in node.conn.execute("SELECT id FROM notices WHERE _deleted = 0 ORDER BY id")]
        field = "phone" if who == "v1" else "contact"
        with node.writer("w") as w:
            if op == "insert" or not live:
                w.insert("notices", {"title": text or "题", field: text})
            elif op == "update":
                w.update("notices", live[index % len(live)], {field: text + "改"})
            else:
                w.delete("notices", live[index % len(live)])
    always, upgraded = make(root, "always", STREET, 2), make(root, "upgraded", STREET, 1)
    halfway = order.randint(0, 2)
    for step in range(3):
        if step == halfway:
            upgraded = reopen(upgraded, 2)
        sources = [old, new]
        order.shuffle(sources)
        for src in sources:
            send(src, upgraded, confine=False)
        send(new, always, confine=False)
        send(old, always, confine=False)
    assert notices(upgraded) == notices(always)
    assert conflicts(upgraded) == conflicts(always)
    always.rebuild()
    assert notices(always) == notices(upgraded) and conflicts(always) == conflicts(upgraded)
    for node in (old, new, always, upgraded):
        node.close()


# -- over the wire: real hemei serve and hemei sync, each with its own release installed ----------------------

def test_sync_between_releases_announces_versions_quarantines_and_applies_after_upgrade(tmp_path):
    tree = Tree(tmp_path)
    envs = {release: plugin_env(probe_site(tmp_path, {"notices": f"notices_v{release}"}, name=f"site{release}"))
            for release in (1, 2)}
    try:
        for name, scope, release in (("district", DISTRICT, 1), ("street", STREET, 2)):
            tree.ok(name, "init", "--name", name, "--scope", scope, env=envs[release])
            for module in ("hook_probe", "notices"):
                tree.ok(name, "modules", "enable", module, env=envs[release])
        tree.serve("district", env=envs[1])
        token = tree.ok("district", "invite", "--scope", STREET, "--name", "府山", "--url",
                        tree.servers["district"].url, env=envs[1]).strip()
        tree.ok("street", "join", token, env=envs[2])
        with Node.open(tree.home("street"), available=available(2), builtins=BUILTIN_PLUGINS) as street:
            with street.writer("王丽") as w:
                w.insert("notices", {"title": "停水通知", "contact": "府山社区", "urgent": 1})
                w.insert("notes", {"title": "楼道粉刷"})
        done = json.loads(tree.ok("street", "sync", "--json", env=envs[2]))
        assert done["pending_up"] == 0, done

        status = json.loads(tree.ok("district", "status", "--json", env=envs[1]))
        [child] = [p for p in status["peers"] if p["role"] == "child"]
        assert child["modules"]["notices"] == 2 and child["version_gaps"] == {"notices": {"here": 1, "there": 2}}
        assert status["module_versions"]["notices"] == 1
        assert "quarantined conflicts" in tree.ok("district", "status", env=envs[1])
        listed = tree.ok("district", "conflicts", env=envs[1])
        assert "quarantined" in listed and "upgrade hemei" in listed
        street_status = json.loads(tree.ok("street", "status", "--json", env=envs[2]))
        assert street_status["peers"][0]["version_gaps"] == {"notices": {"here": 2, "there": 1}}

        # The new release's CLI upgrades the home while the old release's server still runs: the server
        # stops writing (503, so the street retries later) instead of projecting by the outdated schema.
        tree.ok("district", "status", env=envs[2])
        with Node.open(tree.home("street"), available=available(2), builtins=BUILTIN_PLUGINS) as street:
            with street.writer("王丽") as w:
                w.insert("notes", {"title": "升级时写的"})
        refused = tree.hemei("street", "sync", env=envs[2])
        assert refused.returncode != 0 and "restart it with the new release" in refused.stderr, refused.stderr
        outdated = httpx.get(tree.servers["district"].url + "/api/health")  # reads too: no old-shaped rows
        assert outdated.status_code == 503 and outdated.json()["error"]["code"] == "restart_needed"
        assert "Traceback" not in refused.stderr + refused.stdout
        port = tree.servers["district"].port
        tree.servers["district"].stop()
        assert "Traceback" not in tree.servers["district"].output()
        tree.serve("district", env=envs[2], port=port)
        tree.ok("street", "sync", env=envs[2])
        status = json.loads(tree.ok("district", "status", "--json", env=envs[2]))
        assert status["conflicts"] == 0 and status["module_versions"]["notices"] == 2
        with Node.open(tree.home("district"), available=available(2), builtins=BUILTIN_PLUGINS) as district:
            assert district.conn.execute("SELECT title, contact, urgent FROM notices").fetchall() == \
                [("停水通知", "府山社区", 1)]
        tree.ok("street", "sync", env=envs[2])
        downgraded = tree.hemei("district", "status", env=envs[1])  # release 1 again: refused, clearly
        assert downgraded.returncode != 0 and "install the newer hemei" in downgraded.stderr
        assert "Traceback" not in downgraded.stderr + downgraded.stdout
        street_status = json.loads(tree.ok("street", "status", "--json", env=envs[2]))
        assert street_status["peers"][0]["version_gaps"] == {}
    finally:
        tree.stop()


def test_a_process_that_loaded_the_node_earlier_follows_modules_enabled_since(make_node):
    """``hemei modules enable`` beside a running ``hemei serve``: what the server receives next is projected."""
    street = make_node("street", scope="yc/a")
    with street.writer("w") as w:
        pk = w.insert("notes", {"title": "楼道粉刷"})
    server = make_node("district", scope="yc", modules=())
    cli = Node.open(server.home, available=PROBE, builtins=BUILTIN_PLUGINS)  # the operator's command
    try:
        cli.set_module_enabled("hook_probe", True, "op")
    finally:
        cli.close()
    send(street, server)  # without the check, the server skipped notes: its module set was the old one
    assert server.conn.execute("SELECT title FROM notes").fetchall() == [("楼道粉刷",)]
    assert "hook_probe" in server.enabled_modules() and "notes" in server.specs
    assert server.follow_modules() is False  # already following: nothing to load again
    # and the module's reactions ran for that push (asked after the reload, not before)
    assert server.conn.execute("SELECT tbl, op, pk FROM probe_reactions WHERE tbl = 'notes'").fetchall() == \
        [("notes", "insert", pk)]


def test_a_reader_follows_modules_another_process_enabled_or_disabled(make_node):
    """What a served request does first (``NodePool.lend``): no write needed to see the home's modules."""
    server = make_node("district", scope="yc", modules=())
    for enabled in (True, False):
        with Node.open(server.home, available=PROBE, builtins=BUILTIN_PLUGINS) as cli:
            cli.set_module_enabled("hook_probe", enabled, "op")
        assert ("notes" in server.specs) is not enabled
        assert server.follow_modules() is True
        assert ("notes" in server.specs) is enabled and ("hook_probe" in server.enabled_modules()) is enabled
        assert server.follow_modules() is False


def test_a_process_running_the_older_release_stops_writing_once_the_node_is_upgraded(tmp_path):
    old = make(tmp_path, "district", DISTRICT, 1)  # say, a hemei serve started before the upgrade
    street = make(tmp_path, "street", STREET, 2)
    with street.writer("王丽") as w:
        w.insert("notices", {"title": "停水通知", "contact": "13800000000"})
    upgraded = Node.open(old.home, available=available(2), builtins=BUILTIN_PLUGINS)  # the new CLI
    upgraded.close()
    size = old.version_vector()[old.id]
    with pytest.raises(NodeStateError) as err:
        with old.writer("王丽") as w:
            w.insert("notices", {"title": "旧版写入", "phone": "1"})
    assert err.value.code == "restart_needed" and err.value.status == 503
    assert "restart it with the new release" in err.value.message
    with pytest.raises(NodeStateError, match="restart"):
        send(street, old)
    with pytest.raises(NodeStateError, match="restart"):  # what a served read does first
        old.follow_modules()
    assert old.version_vector()[old.id] == size and street.id not in old.version_vector()  # nothing written
    old.close()
    reopened = Node.open(old.home, available=available(2), builtins=BUILTIN_PLUGINS)
    try:
        send(street, reopened)
        assert reopened.conn.execute("SELECT title, contact FROM notices").fetchall() == [("停水通知", "13800000000")]
    finally:
        reopened.close()


def test_a_module_enabled_while_this_process_upgrades_is_loaded_before_it_writes(tmp_path, monkeypatch):
    """Another command enables a module right after this process's upgrade commits: the settings this
    process records as loaded are the ones of its own transaction, so its next write reloads."""
    district = make(tmp_path, "district", DISTRICT, 1)
    district.set_module_enabled("hook_probe", False, "t")
    district.close()
    street = make(tmp_path, "street", STREET, 2)
    with street.writer("w") as w:
        w.insert("notes", {"title": "楼道粉刷"})
    react = Node._react

    def then_the_operator_enables(node, applied):  # the first thing after the upgrade's commit
        react(node, applied)
        monkeypatch.setattr(Node, "_react", react)
        with Node.open(district.home, available=available(2), builtins=BUILTIN_PLUGINS) as other:
            other.set_module_enabled("hook_probe", True, "op")

    monkeypatch.setattr(Node, "_react", then_the_operator_enables)
    server = Node.open(district.home, available=available(2), builtins=BUILTIN_PLUGINS)  # upgrades notices
    try:
        assert Node._react is react  # the operator did run
        send(street, server)
        assert server.conn.execute("SELECT title FROM notes").fetchall() == [("楼道粉刷",)]
    finally:
        server.close()


def test_a_rebuild_refuses_tables_of_a_module_another_command_disabled(make_node):
    node = make_node("district", scope="yc")
    with node.writer("w") as w:
        w.insert("notes", {"title": "楼道粉刷"})
    with Node.open(node.home, available=PROBE, builtins=BUILTIN_PLUGINS) as other:
        other.set_module_enabled("hook_probe", False, "op")
    with pytest.raises(InvalidInput, match="is its module enabled"):
        node.rebuild(["notes"])
    assert node.conn.execute("SELECT title FROM notes").fetchall() == [("楼道粉刷",)]  # disabling deletes nothing


def test_a_module_installed_again_gets_what_arrived_while_it_was_missing(make_node):
    """Enabled but not installed (a reinstall that forgot a plugin): its changes wait in the log, and the
    first open with it installed again replays its tables."""
    street, district = make_node("street", scope="yc/a"), make_node("district", scope="yc")
    home = district.home
    district.close()
    missing = Node.open(home, available={}, builtins=BUILTIN_PLUGINS)
    try:
        assert missing.status()["missing_modules"] == ["hook_probe"]
        with street.writer("w") as w:
            w.insert("notes", {"title": "楼道粉刷"})
        send(street, missing)
    finally:
        missing.close()
    with Node.open(home, available=PROBE, builtins=BUILTIN_PLUGINS) as back:
        assert back.conn.execute("SELECT title FROM notes").fetchall() == [("楼道粉刷",)]
        assert not back.conn.execute("SELECT key FROM _hemei_meta WHERE key LIKE 'missing:%'").fetchall()


def test_inserts_into_a_table_a_newer_release_adds_are_judged_by_the_upgrade(tmp_path):
    """The district, at release 2, has no ``notice_reads`` table (release 3 adds it): its streets' entries for it wait in the
    log, judged by nothing. The upgrade that adds the table replays it and judges them then: a sibling's
    insert under a street's key is kept as ``out_of_scope`` instead of taking the row over."""
    reads = TableSpec("notice_reads", {"id": "text", "scope": "text", "reader": "text"}, policy=LWW)
    release_3 = types.ModuleType("notices_v3")
    release_3.register_tables = hookimpl(lambda: [notices_v2.NOTICES, reads])
    release_3.register_tables.__name__ = "register_tables"
    release_3.module_schema = hookimpl(lambda: ModuleSchema(version=3, upgrades={1: notices_v2.from_v1,
                                                                   2: lambda change: change}))
    release_3.module_schema.__name__ = "module_schema"
    newer = {**PROBE, "notices": release_3}
    a = make(tmp_path, "a", STREET, 2)
    b = make(tmp_path, "b", "越城区/北海街道", 2)
    district = make(tmp_path, "district", DISTRICT, 2)
    for street in (a, b):
        street.close()
    a, b = (Node.open(s.home, available=newer, builtins=BUILTIN_PLUGINS) for s in (a, b))
    with a.writer("w") as w:
        pk = w.insert("notice_reads", {"reader": "王丽"})
    b.clock.observe(a.clock.last)
    with b.writer("mallory") as w:  # a leaked key, inserted again from inside b's own scope
        w._append("row.insert", b.scope, {"t": "notice_reads", "pk": pk, "v": {"reader": "HIJACKED"}, "s": 3}, None)
    send(a, district)
    send(b, district)
    district.close()
    district = Node.open(district.home, available=newer, builtins=BUILTIN_PLUGINS)
    try:
        assert district.conn.execute("SELECT reader, scope FROM notice_reads").fetchall() == [("王丽", STREET)]
        assert [(t, kind) for t, _, kind, _ in conflicts(district)] == [("notice_reads", "out_of_scope")]
    finally:
        for node in (a, b, district):
            node.close()


def release_2b(*tables) -> dict:
    """Release "2b" of notices: adds ``tables`` but keeps schema version 2 (a plugin author's slip)."""
    module = types.ModuleType("notices_v2b")
    module.register_tables = hookimpl(lambda: [notices_v2.NOTICES, *tables])
    module.register_tables.__name__ = "register_tables"
    module.module_schema = notices_v2.module_schema
    return {**PROBE, "notices": module}


def street_ahead(tmp_path, newer: dict) -> tuple[Node, Node]:
    """A street opened at release ``newer`` and its district at release 2 (both built at 2)."""
    street = make(tmp_path, "street", STREET, 2)
    district = make(tmp_path, "district", DISTRICT, 2)
    street.close()
    return Node.open(street.home, available=newer, builtins=BUILTIN_PLUGINS), district


READS = TableSpec("notice_reads", {"id": "text", "scope": "text", "reader": "text"}, policy=LWW)
LIKES = TableSpec("notice_likes", {"id": "text", "scope": "text", "who": "text"}, policy=LWW)


def test_a_table_a_release_adds_without_a_new_schema_version_gets_what_the_log_holds(tmp_path):
    """The district's server still runs release 2 when a command of release 2b (installed beside it)
    has already created ``notice_reads``; the server takes the street's entries for it into the log
    only. Restarted at 2b, the district projects them, instead of leaving the table empty until
    someone runs ``hemei rebuild``: receipt marked the table for a replay."""
    newer = release_2b(READS)
    street, district = street_ahead(tmp_path, newer)  # the district: a server process at release 2
    try:
        Node.open(district.home, available=newer, builtins=BUILTIN_PLUGINS).close()  # `hemei status` at 2b
        with street.writer("w") as w:
            pk = w.insert("notice_reads", {"reader": "王丽"})
        send(street, district)
        assert "notice_reads" not in district.specs
        district.close()
        district = Node.open(district.home, available=newer, builtins=BUILTIN_PLUGINS)
        assert district.conn.execute("SELECT id, reader, scope FROM notice_reads").fetchall() == [
            (pk, "王丽", STREET)]
        assert conflicts(district) == []
    finally:
        street.close()
        district.close()


def test_an_open_that_fails_between_creating_two_new_tables_loses_no_replay(tmp_path, monkeypatch):
    """Each new table is created on its own; an open that fails after the first (another process
    holding the lock, say) must not leave it created and never replayed."""
    newer = release_2b(READS, LIKES)
    street, district = street_ahead(tmp_path, newer)
    try:
        with street.writer("w") as w:
            read = w.insert("notice_reads", {"reader": "王丽"})
            like = w.insert("notice_likes", {"who": "李雷"})
        send(street, district)
        district.close()
        real = modules_module.create_or_extend_table

        def locked_at_likes(conn, spec):
            if spec.name == "notice_likes":
                raise sqlite3.OperationalError("database is locked")
            return real(conn, spec)

        monkeypatch.setattr(modules_module, "create_or_extend_table", locked_at_likes)
        with pytest.raises(sqlite3.OperationalError):
            Node.open(district.home, available=newer, builtins=BUILTIN_PLUGINS)
        monkeypatch.setattr(modules_module, "create_or_extend_table", real)
        district = Node.open(district.home, available=newer, builtins=BUILTIN_PLUGINS)
        assert district.conn.execute("SELECT id FROM notice_reads").fetchall() == [(read,)]
        assert district.conn.execute("SELECT id FROM notice_likes").fetchall() == [(like,)]
    finally:
        street.close()
        district.close()


def test_entries_taken_in_before_receipt_marked_tables_are_projected_when_their_table_is_created(
        tmp_path, monkeypatch):
    """A district that took the street's entries for ``notice_reads`` under a core that did not yet
    mark such tables at receipt (0.1.0, say): the open that creates the table marks and replays it."""
    newer = release_2b(READS)
    street, district = street_ahead(tmp_path, newer)
    try:
        with street.writer("w") as w:
            pk = w.insert("notice_reads", {"reader": "王丽"})
        with monkeypatch.context() as older_core:
            older_core.setattr(Projector, "_unprojected", lambda self, table, judge: None)
            send(street, district)
        district.close()
        district = Node.open(district.home, available=newer, builtins=BUILTIN_PLUGINS)
        assert district.conn.execute("SELECT id, reader, scope FROM notice_reads").fetchall() == [
            (pk, "王丽", STREET)]
    finally:
        street.close()
        district.close()


def test_made_up_table_names_from_a_child_do_not_make_every_open_slower(tmp_path, monkeypatch):
    """Receipt marks a table no module declares, for the release that may declare it; a child that sends
    changes to thousands of made-up tables must not make every later open read all those marks."""
    street = make(tmp_path, "street", STREET, 2)
    district = make(tmp_path, "district", DISTRICT, 2)
    district.close()

    def open_steps() -> int:
        steps = [0]
        connect = node_module._connect

        def counting(path):
            conn = connect(path)
            conn.set_progress_handler(lambda: steps.__setitem__(0, steps[0] + 1), 10)
            return conn

        with monkeypatch.context() as m:
            m.setattr(node_module, "_connect", counting)
            Node.open(district.home, available=available(2), builtins=BUILTIN_PLUGINS).close()
        return steps[0]

    try:
        before = open_steps()
        with street.writer("mallory") as w:
            for i in range(5000):
                w._append("row.insert", street.scope, {"t": f"made_up_{i}", "pk": "k", "v": {}}, None)
        with Node.open(district.home, available=available(2), builtins=BUILTIN_PLUGINS) as d:
            send(street, d)
            marks = d.conn.execute("SELECT count(*) FROM _hemei_meta WHERE key LIKE '%:made_up_%'").fetchone()[0]
        assert marks == 10_000  # replay: and judge: per name, kept for a release that may declare it
        assert open_steps() < 2 * before
    finally:
        street.close()


def test_a_column_made_required_is_filled_by_the_upgrade_step_or_older_rows_wait_as_conflicts(tmp_path,
                                                                                             monkeypatch):
    """Found in review: a release that made a column required with no step kept the node's older rows as
    unreadable conflicts. The check stays (a sender can claim any older version to skip it); the step fills
    the column, and without one nothing is lost: the rows wait in the log for a release that has it."""
    import notices_required

    node = make(tmp_path, "s", STREET, 1)
    with node.writer("w") as w:
        w.insert("notices", {"title": "停水通知", "phone": "123"})
    monkeypatch.setitem(RELEASES, 2, notices_required)
    monkeypatch.setattr(notices_required, "STEPS", {})
    node = reopen(node, 2)  # the module's version rose: its tables are replayed through the upgrade steps
    try:
        assert node.conn.execute("SELECT count(*) FROM notices").fetchone() == (0,)
        assert node.conn.execute("SELECT kind, reason FROM _hemei_conflicts").fetchall() == [
            ("unreadable", "notices: lang required")]
    finally:
        node.close()
    monkeypatch.undo()
    monkeypatch.setitem(RELEASES, 2, notices_required)
    node = Node.open(node.home, available=available(2), builtins=BUILTIN_PLUGINS)
    try:
        node.rebuild(["notices"])  # the release with the step
        assert node.conn.execute("SELECT title, lang FROM notices").fetchall() == [("停水通知", "zh")]
        assert node.conn.execute("SELECT count(*) FROM _hemei_conflicts").fetchone() == (0,)
        with pytest.raises(InvalidInput, match="lang required"):  # what this release writes must have it
            with node.writer("w") as w:
                w.insert("notices", {"title": "新通知"})
    finally:
        node.close()
