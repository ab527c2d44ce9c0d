"""Bundle-only streets, as an operator walkthrough found them: real `hemei` commands on a district and a street.

The street and district of ``pair`` enrolled over HTTP once; everything here
goes by `hemei bundle export` and `hemei bundle import` only.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest

from tree import note_titles, write_notes


def round_trip(pair, tmp_path, n: int) -> dict:
    """The street exports, the district imports, the street imports the ack; the district's import result."""
    out = tmp_path / f"府山 {n}.hemei"
    exported = json.loads(pair.ok("street", "bundle", "export", "--out", str(out), "--json"))
    imported = json.loads(pair.ok("district", "bundle", "import", str(out), "--json"))
    pair.ok("street", "bundle", "import", imported["ack"])
    assert exported["ok"] and imported["ok"]
    # Said alike on both sides: an export counted the one entry it repeats for the chain's continuity.
    assert exported["entries"] == imported["new"], (exported, imported)
    return imported


def test_a_bundle_only_street_gets_past_a_district_restored_from_a_backup(pair, tmp_path):
    """A district restored from last week's backup holds less of the street than the street was told:
    every bundle was refused as a gap, and nothing told the street where the district really was."""
    pair.servers["district"].stop()  # bundles only from here on (and a district backed up while stopped)
    with pair.open("street") as s:
        write_notes(s, [("备份之前", "sx/yc/fs")])
    round_trip(pair, tmp_path, 1)
    shutil.copytree(pair.home("district"), tmp_path / "district backup")
    with pair.open("street") as s:
        write_notes(s, [("备份之后", "sx/yc/fs"), ("备份之后二", "sx/yc/fs"), ("备份之后三", "sx/yc/fs")])
    round_trip(pair, tmp_path, 2)
    shutil.rmtree(pair.home("district"))
    shutil.copytree(tmp_path / "district backup", pair.home("district"))
    with pair.open("street") as s:
        write_notes(s, [("恢复之后", "sx/yc/fs")])
    out = tmp_path / "府山 3.hemei"
    pair.ok("street", "bundle", "export", "--out", str(out))
    refused = pair.hemei("district", "bundle", "import", str(out))
    ack = tmp_path / "府山 3.ack.hemei"
    assert refused.returncode == 1 and "gap" in refused.stderr and "Traceback" not in refused.stderr
    assert f"Wrote {ack}" in refused.stderr and "import it at street, then export again" in refused.stderr
    pair.ok("street", "bundle", "import", str(ack))  # the district's true state: the next export starts there
    round_trip(pair, tmp_path, 4)
    with pair.open("district") as d:
        assert {"备份之前", "备份之后", "备份之后三", "恢复之后"} <= note_titles(d)
    assert "verified" in pair.ok("district", "audit", "verify").lower()
    parent = next(p for p in json.loads(pair.ok("street", "status", "--json"))["peers"] if p["role"] == "parent")
    assert parent["pending_up"] == 0


def test_a_bundle_goes_nowhere_it_would_replace_what_someone_needs(pair, tmp_path):
    """Found by the walkthrough: --out into the home under a module's key-file name broke the module, and
    an acknowledgement could replace the bundle being imported, or another node's bundle."""
    with pair.open("street") as s:
        write_notes(s, [("U盘", "sx/yc/fs")])
    for name in ("volunteer_hours.keys", "node.db-journal", "NODE.DB-JOURNAL", "Volunteer_Hours.KEYS."):
        target = pair.home("street") / name
        done = pair.hemei("street", "bundle", "export", "--out", str(target))
        assert done.returncode == 1 and "one of the node's own files" in done.stderr and not target.exists()
    out = tmp_path / "府山.hemei"
    pair.ok("street", "bundle", "export", "--out", str(out))
    kept = out.read_bytes()
    over = pair.hemei("district", "bundle", "import", str(out), "--ack-out", str(out))
    assert over.returncode == 1 and "is the bundle being imported" in over.stderr and out.read_bytes() == kept
    ack = json.loads(pair.ok("district", "bundle", "import", str(out), "--json"))["ack"]
    replaced = pair.hemei("street", "bundle", "export", "--out", ack)  # the ack, not imported yet
    assert replaced.returncode == 1 and "a bundle another node wrote" in replaced.stderr
    pair.ok("street", "bundle", "export", "--out", str(out))  # its own earlier export: replaced


def test_bundle_refusals_say_what_the_file_is_and_what_to_do(pair, tmp_path):
    with pair.open("street") as s:
        write_notes(s, [("消息", "sx/yc/fs")])
    out = tmp_path / "府山.hemei"
    pair.ok("street", "bundle", "export", "--out", str(out))
    own = pair.hemei("street", "bundle", "import", str(out))
    assert own.returncode == 1 and "a bundle this node wrote for district" in own.stderr
    assert ".ack.hemei" in own.stderr
    data = bytearray(out.read_bytes())
    data[len(b"HEMEI-BUNDLE-1\n") + 8 + 4] ^= 1  # inside the header frame, read before the signature
    damaged = tmp_path / "坏.hemei"
    damaged.write_bytes(bytes(data))
    said = pair.hemei("district", "bundle", "import", str(damaged), "--json")
    assert said.returncode == 1 and "bundle is damaged" in said.stderr and "copy it again" in said.stderr
    assert json.loads(said.stdout)["ok"] is False  # --json: a script reads the outcome on stdout either way
    assert json.loads(said.stdout)["error"]["code"] == "bad_bundle"


def test_an_older_acknowledgement_is_taken_and_said(pair, tmp_path):
    """Found in an operator walkthrough: importing last week's ack after a newer one was silent, and the
    street's status then showed entries to send that the district holds."""
    with pair.open("street") as s:
        write_notes(s, [("第一周", "sx/yc/fs")])
    first = round_trip(pair, tmp_path, 1)
    with pair.open("street") as s:
        write_notes(s, [("第二周", "sx/yc/fs")])
    second = round_trip(pair, tmp_path, 2)
    assert first["ack"] != second["ack"]
    old = pair.hemei("street", "bundle", "import", first["ack"])
    assert old.returncode == 0 and "this acknowledgement is older than what this node last heard" in old.stderr
    fresh = pair.hemei("street", "bundle", "import", second["ack"])
    assert fresh.returncode == 0 and "older" not in fresh.stderr


def test_a_revoked_street_exporting_is_told_the_district_will_refuse_it(pair, tmp_path):
    with pair.open("street") as s:
        street_id = s.id
        write_notes(s, [("撤销之后", "sx/yc/fs")])
    plain = pair.hemei("street", "bundle", "export", "--out", str(tmp_path / "before.hemei"))
    assert plain.returncode == 0 and "revoked" not in plain.stderr
    pair.ok("district", "nodes", "revoke", street_id)
    assert pair.hemei("street", "sync").returncode == 1
    late = pair.hemei("street", "bundle", "export", "--out", str(tmp_path / "after.hemei"))
    assert late.returncode == 0 and "refused this node as revoked at the last sync" in late.stderr
    refused = pair.hemei("district", "bundle", "import", str(tmp_path / "after.hemei"))
    assert refused.returncode == 1 and "revoked" in refused.stderr


@pytest.mark.skipif(not hasattr(time, "tzset"), reason="a subprocess's time zone is set through TZ (POSIX)")
def test_a_bundle_only_street_on_another_time_zone_is_told_so_on_both_sides(pair, tmp_path):
    """As `hemei sync` says it: a street that never syncs over a link hears of its PC's time zone too."""
    pair.servers["district"].stop()
    utc, china = dict(pair.env, TZ="UTC0"), dict(pair.env, TZ="CST-8")
    out = tmp_path / "府山.hemei"
    pair.ok("street", "bundle", "export", "--out", str(out), env=utc)
    imported = pair.hemei("district", "bundle", "import", str(out), env=china)
    assert imported.returncode == 0 and "note: street: time zone UTC+00:00 there, UTC+08:00 on this PC" in \
        imported.stderr, imported.stderr
    acked = json.loads(pair.ok("street", "bundle", "import", str(tmp_path / "府山.ack.hemei"), "--json", env=utc))
    assert "time zone UTC+08:00 there, UTC+00:00 on this PC" in acked["time_zone_warning"]
    [parent] = json.loads(pair.ok("street", "status", "--json", env=utc))["peers"]
    assert parent["utc_offset_min"] == 480
    [street] = json.loads(pair.ok("district", "status", "--json", env=china))["peers"]
    assert street["utc_offset_min"] == 0 and street["time_zone_warning"] is not None
    # On one time zone, nothing is said.
    again = tmp_path / "府山 2.hemei"
    pair.ok("street", "bundle", "export", "--out", str(again), env=china)
    assert json.loads(pair.ok("district", "bundle", "import", str(again), "--json", env=china))[
        "time_zone_warning"] is None
