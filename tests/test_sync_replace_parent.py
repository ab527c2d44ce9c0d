"""A district (or city) restored from a backup, or replaced: it goes on as a new node, and its streets
follow it with `hemei join --replace-parent`, keeping their logs (docs/operations.md, "A parent restored
from a backup, or replaced")."""

from __future__ import annotations

import json
import shutil

from tree import Tree, note_titles, write_notes


def test_a_district_restored_from_a_backup_goes_on_as_a_new_node_and_its_street_follows_with_its_log(pair):
    """Found in review: a restored district that forked stranded its streets, which could only start new
    homes and type again what they wrote since; docs/operations.md had no district case."""
    with pair.open("street") as s:
        write_notes(s, [("修复前", "sx/yc/fs")])
    pair.sync("street")
    district = pair.servers["district"]
    district.stop()
    shutil.copytree(pair.home("district"), pair.root / "district-backup")
    pair.serve("district", port=district.port)
    with pair.open("district") as d:
        write_notes(d, [("区里写的", "sx/yc")])
    pair.sync("street")  # the street holds the district's own note: more of its log than the backup
    pair.servers["district"].stop()
    shutil.rmtree(pair.home("district"))
    shutil.copytree(pair.root / "district-backup", pair.home("district"))
    pair.serve("district", port=district.port)
    forked = pair.hemei("street", "sync")
    assert forked.returncode == 1 and "fork" in forked.stderr and "--replace-parent" in forked.stderr, forked.stderr
    [child] = json.loads(pair.ok("district", "status", "--json"))["peers"]  # the restored district is told too
    assert child["last_error"].startswith("restored: street says it holds ") and "older copy" in child["last_error"]
    assert "restored from an older copy" in pair.ok("district", "status")
    with pair.open("street") as s:
        write_notes(s, [("分叉后写的", "sx/yc/fs")])  # what a street would otherwise type again in a new home

    pair.init("district-new", "sx/yc")
    pair.serve("district-new")
    invite = ("invite", "--scope", "sx/yc/fs", "--name", "府山街道", "--url", pair.servers["district-new"].url)
    token = pair.ok("district-new", *invite).strip()
    plain = pair.hemei("street", "join", token)
    assert plain.returncode == 1 and "--replace-parent" in plain.stderr
    joined = pair.hemei("street", "join", token, "--replace-parent", "--json")
    assert joined.returncode == 0, joined.stderr
    with pair.open("district-new") as new:
        new_id = new.id
    [parent] = json.loads(pair.ok("street", "status", "--json"))["peers"]
    assert parent["node_id"] == new_id == json.loads(joined.stdout)["node_id"]
    pair.sync("street")
    with pair.open("district-new") as new:
        assert {"修复前", "分叉后写的"} <= note_titles(new)  # the street's whole log, nothing typed again
    for name in ("district-new", "street"):
        assert "verified" in pair.ok(name, "audit", "verify").lower()
    kinds = pair.ok("street", "audit", "log", "--kind", "peer", "--json")
    assert [e["kind"] for e in json.loads(kinds)][:2] == ["peer.join", "peer.replace"]  # newest first
    same = pair.hemei("street", "join", pair.ok("district-new", *invite).strip())
    assert same.returncode == 1 and "has joined" in same.stderr


def test_a_fork_of_another_nodes_log_relayed_down_stops_only_that_nodes_entries(tmp_path):
    """Found in review: the restored district synced its second history up to the city before anyone
    noticed; its new node relayed it down, and the street that had moved there by --replace-parent was
    refused on every sync, told to replace the parent it had just joined."""
    t = Tree(tmp_path).build({"city": "sx", "district": "sx/yc", "street": "sx/yc/fs"},
                             serve=("city", "district"), enroll=[("city", "district"), ("district", "street")])
    try:
        with t.open("street") as s:
            write_notes(s, [("修复前", "sx/yc/fs")])
        t.sync("street")
        t.sync("district")
        district = t.servers["district"]
        district.stop()
        shutil.copytree(t.home("district"), tmp_path / "backup")
        t.serve("district", port=district.port)
        with t.open("district") as d:
            write_notes(d, [("区里写的", "sx/yc")])
            old_id = d.id
        t.sync("street")  # the street holds one history of the district's log
        t.servers["district"].stop()
        shutil.rmtree(t.home("district"))
        shutil.copytree(tmp_path / "backup", t.home("district"))
        t.serve("district", port=district.port)
        with t.open("district") as d:
            write_notes(d, [("恢复后写的", "sx/yc"), ("恢复后又写的", "sx/yc")])  # longer than the street's copy
        t.sync("district")  # the city holds the other
        t.ok("city", "nodes", "revoke", old_id)
        t.init("district-new", "sx/yc")
        t.ok("district-new", "join", t.ok("city", "invite", "--scope", "sx/yc", "--name", "越城区", "--url",
                                          t.servers["city"].url).strip())
        t.sync("district-new")
        t.serve("district-new")
        with t.open("district-new") as new:
            write_notes(new, [("新区写的", "sx/yc")])
        t.ok("street", "join", t.ok("district-new", "invite", "--scope", "sx/yc/fs", "--name", "府山街道", "--url",
                                    t.servers["district-new"].url).strip(), "--replace-parent")
        # By USB first: the acknowledgement holds the city's history of the old district; the rest is taken.
        t.ok("street", "bundle", "export", "--out", str(tmp_path / "fs.hemei"))
        t.ok("district-new", "bundle", "import", str(tmp_path / "fs.hemei"))
        acked = t.hemei("street", "bundle", "import", str(tmp_path / "fs.ack.hemei"))
        assert acked.returncode == 0, acked.stderr
        assert f"not taken from the parent: entries of sx/yc ({old_id[:7]})" in acked.stderr
        with t.open("street") as s:
            assert "新区写的" in note_titles(s) and "恢复后写的" not in note_titles(s)
        for _ in range(2):  # and by sync, again and again: the fork is asked for no more
            done = t.hemei("street", "sync", "--json")
            assert done.returncode == 0, done.stderr + done.stdout
            said = " ".join(json.loads(done.stdout)["messages"])
            assert f"not taken from the parent: entries of sx/yc ({old_id[:7]})" in said and "fork" in said
        with t.open("street") as s:
            assert {"新区写的", "区里写的"} <= note_titles(s) and "恢复后写的" not in note_titles(s)
        with t.open("district-new") as new:
            assert "修复前" in note_titles(new)
        [fork] = json.loads(t.ok("street", "status", "--json"))["forks"]
        assert fork["origin"] == old_id
        assert "verified" in t.ok("street", "audit", "verify").lower()
    finally:
        t.stop()


def test_replace_parent_needs_a_parent(tmp_path):
    t = Tree(tmp_path).build({"district": "sx/yc", "street": "sx/yc/fs"})
    token = t.ok("district", "invite", "--scope", "sx/yc/fs", "--name", "street", "--url", "http://127.0.0.1:9").strip()
    alone = t.hemei("street", "join", token, "--replace-parent")
    assert alone.returncode == 1 and "no parent to replace" in alone.stderr  # said before any address is tried
    assert json.loads(t.ok("street", "status", "--json"))["peers"] == []
