"""Wrongly set PC clocks between real processes: an hours-slow street, and a district whose clock was reset.

Each process's clock is shifted as a whole (``server.wrong_clock_env``), so
what is tested is what an operator meets, with no hook in hemei for it.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from server import wrong_clock_env
from tree import note_titles, write_notes

#: What a flat CMOS battery sets: 2000-01-01 00:00 UTC, as a shift from now.
RESET_TO_2000_S = 946_684_800 - time.time()


def refusals(node) -> list[dict]:
    return [json.loads(p) for (p,) in node.conn.execute(
        "SELECT payload FROM _hemei_log WHERE kind = 'sync.refused' ORDER BY seq")]


def test_a_street_pc_hours_slow_still_pushes_and_is_told_to_set_its_own_clock(pair):
    with pair.open("district") as d:
        write_notes(d, [("区里的通知", "sx/yc")])
    slow = wrong_clock_env(pair.env, pair.root, -8 * 3600)  # the time zone set to UTC instead of UTC+8
    pair.ok("street", "probe", "note", "慢钟写的", env=slow)
    done = pair.hemei("street", "sync", env=slow)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    # Before, the street refused the district's entries and blamed the district's clock.
    assert "this PC's clock is 8 h 0 min behind the parent's" in done.stderr and "time zone" in done.stderr
    with pair.open("district") as d:
        assert "慢钟写的" in note_titles(d)  # what the street wrote went up all the same
    with pair.open("street") as s:
        assert "区里的通知" not in note_titles(s)
        assert refusals(s)[-1]["code"] == "clock_skew" and "8 h 0 min behind" in refusals(s)[-1]["reason"]
    # Both operators see the gap in status, as measured at the last contact, before anyone reads a refusal.
    [parent] = json.loads(pair.ok("street", "status", "--json"))["peers"]
    assert abs(parent["clock_ahead_ms"] - 8 * 3600 * 1000) < 60_000
    with pair.open("street") as s, pair.open("district") as d:  # what went up counted so (found in review)
        assert parent["pending_up"] == s.version_vector()[s.id] - d.version_vector()[s.id] == 1  # the refusal
    [street] = json.loads(pair.ok("district", "status", "--json"))["peers"]
    assert abs(street["clock_ahead_ms"] + 8 * 3600 * 1000) < 60_000
    assert "clock 8 h 0 min behind this PC's" in pair.ok("district", "status")
    assert "clock 8 h 0 min ahead of this PC's" in pair.ok("street", "status")
    pair.sync("street")  # its clock set right
    with pair.open("street") as s:
        assert "区里的通知" in note_titles(s)
    [street] = json.loads(pair.ok("district", "status", "--json"))["peers"]
    assert abs(street["clock_ahead_ms"]) < 60_000 and "clock" not in pair.ok("district", "status")


def test_a_street_whose_clock_was_ahead_and_is_set_right_again_is_told_it_need_set_nothing(pair):
    """Found in review: after one write with the PC clock two days ahead, every later entry is stamped
    after it, the district refuses them all until that day, and the street was told to set a clock that
    was right by then."""
    ahead = wrong_clock_env(pair.env, pair.root, 2 * 86400)
    pair.ok("street", "probe", "note", "钟快之前写的")
    pair.ok("street", "probe", "note", "钟快时写的", env=ahead)
    pair.ok("street", "probe", "note", "钟调好后写的")
    status = json.loads(pair.ok("street", "status", "--json"))
    assert 2 * 86400_000 - 120_000 < status["clock_ahead_of_pc_ms"] <= 2 * 86400_000
    assert "CLOCK:    this node's stamps run 2 days ahead of this PC's clock" in pair.ok("street", "status")
    done = pair.hemei("street", "sync", "--batch-size", "1")
    assert done.returncode == 1 and "more than a day ahead" in done.stderr
    assert "This PC's clock agrees with the parent's now" in done.stderr and "nothing is to be set" in done.stderr
    [parent] = json.loads(pair.ok("street", "status", "--json"))["peers"]
    with pair.open("street") as s, pair.open("district") as d:  # what went up before the refusal counts as sent
        assert "钟快之前写的" in note_titles(d)
        assert parent["pending_up"] == s.version_vector()[s.id] - d.version_vector()[s.id]
    assert json.loads(pair.ok("district", "status", "--json"))["clock_ahead_of_pc_ms"] is None


def test_a_street_pc_reset_to_2000_pushes_what_it_had_and_is_told_its_clock_was_reset(pair):
    with pair.open("street") as s:
        write_notes(s, [("重置前写的", "sx/yc/fs")])
    reset = wrong_clock_env(pair.env, pair.root, RESET_TO_2000_S)
    done = pair.hemei("street", "sync", env=reset)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "this PC's clock reads 2000-01-01" in done.stderr and "Set its date and time" in done.stderr
    with pair.open("district") as d:
        assert "重置前写的" in note_titles(d)
    written = pair.hemei("street", "probe", "note", "重置后写的", env=reset)
    assert written.returncode == 1 and "clock reads 2000-01-01" in written.stderr
    pair.sync("street")
    with pair.open("street") as s:
        assert "重置后写的" not in note_titles(s) and not refusals(s)  # nothing could be stamped in 2000


def test_a_district_whose_clock_was_reset_takes_nothing_and_the_street_is_told_why(pair):
    server = pair.servers["district"]
    server.stop()
    pair.serve("district", env=wrong_clock_env(pair.env, pair.root, RESET_TO_2000_S), port=server.port)
    with pair.open("street") as s:
        write_notes(s, [("区时钟坏了", "sx/yc/fs")])
    done = pair.hemei("street", "sync")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "the parent cannot write anything: this PC's clock reads 2000-01-01" in done.stderr
    with pair.open("district") as d:
        assert "区时钟坏了" not in note_titles(d)
    pair.servers["district"].stop()
    said = pair.servers["district"].output()
    assert "Traceback" not in said and "this server can write nothing: this PC's clock reads 2000-01-01" in said
    pair.serve("district", port=server.port)  # its clock set right
    pair.sync("street")
    with pair.open("district") as d:
        assert "区时钟坏了" in note_titles(d)


def test_a_district_clock_hours_slow_refuses_the_street_and_the_street_hears_both_sides(pair):
    server = pair.servers["district"]
    server.stop()
    pair.serve("district", env=wrong_clock_env(pair.env, pair.root, -8 * 3600), port=server.port)
    with pair.open("street") as s:
        write_notes(s, [("区时钟慢了", "sx/yc/fs")])
    done = pair.hemei("street", "sync")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "the sending PC's clock, or one it took a stamp from, is fast" in done.stderr  # by the district's clock
    assert "taken in about 7 h 45 min" in done.stderr
    assert "(but this PC's clock is 8 h 0 min ahead of the parent's: check which is right)" in done.stderr
    with pair.open("district") as d:
        assert "区时钟慢了" not in note_titles(d)
    with pair.open("street") as s:
        assert refusals(s)[-1]["reason"].endswith("check which is right)")  # recorded whole
    pair.servers["district"].stop()
    pair.serve("district", port=server.port)  # its clock set right
    pair.sync("street")
    with pair.open("district") as d:
        assert "区时钟慢了" in note_titles(d)


def test_a_street_pc_reset_to_2000_cannot_join_and_joins_once_its_clock_is_set(tmp_path):
    """Found in review: the district pinned the street, then the street could not write its own pin; its
    clock set, every new token was refused as 'already enrolled'. Now it is refused before asking."""
    from tree import Tree

    t = Tree(tmp_path).build({"district": "sx/yc", "street": "sx/yc/fs"}, serve=["district"])
    try:
        token = t.ok("district", "invite", "--scope", "sx/yc/fs", "--name", "府山街道", "--url",
                     t.servers["district"].url, "--ttl", "1h").strip()
        refused = t.hemei("street", "join", token, env=wrong_clock_env(t.env, t.root, RESET_TO_2000_S))
        assert refused.returncode == 1 and "clock reads 2000-01-01" in refused.stderr
        assert json.loads(t.ok("district", "nodes", "list", "--json")) == []
        t.ok("street", "join", token)  # the same token: the district never took it
        t.sync("street")
    finally:
        t.stop()


def test_entries_stamped_ahead_below_a_district_are_said_of_the_pc_that_wrote_them(tmp_path):
    """Found in review: a street PC 10 min fast (the district takes that, and its clock moves up to it), a
    district 8 min fast: the city, 18 min behind the street's stamps, blamed the district's PC, whether it
    refused the street's entries the district relays or the district's own, stamped by its moved clock."""
    from tree import Tree

    tree = Tree(tmp_path).build({"city": "sx", "district": "sx/yc", "street": "sx/yc/fs"})
    district_clock = wrong_clock_env(tree.env, tmp_path, 8 * 60)
    street_clock = wrong_clock_env(tree.env, tmp_path, 18 * 60)
    try:
        city = tree.serve("city")
        tree.enroll("city", "district", "sx/yc")
        tree.serve("district", env=district_clock)
        tree.enroll("district", "street", "sx/yc/fs")
        tree.ok("street", "probe", "note", "快钟写的", env=street_clock)
        tree.ok("street", "sync", env=street_clock)  # 10 min ahead of the district: within its 15
        done = tree.hemei("district", "sync", env=district_clock)
        assert done.returncode == 1 and "Traceback" not in done.stderr
        said = " ".join(done.stderr.split())
        assert re.search(r"relayed entry of the node of sx/yc/fs .* taken in about [123] min", said), said
        assert "the sending PC's clock" not in said
        assert "moved there by" not in said  # the city said whose entry it was (`writer`), not the district's
        out = tmp_path / "区 上报.hemei"
        tree.ok("district", "bundle", "export", "--out", str(out), env=district_clock)
        carried = tree.hemei("city", "bundle", "import", str(out))
        # (the district's own record of that refusal is stamped ahead too: either entry may be said first)
        assert carried.returncode == 1 and "(sync or import again then)" in " ".join(carried.stderr.split())
        with tree.open("city") as node:
            assert "快钟写的" not in note_titles(node)
            reasons = [r["reason"] for r in refusals(node) if r["code"] == "clock_skew"]
            assert len(reasons) == 2 and all(re.search("taken in about [123] min", r) for r in reasons)

        # The city takes the street's entries (a wider window for a moment), then the district writes: its
        # clock, moved up to the street's stamps, stamps its own entries as far ahead.
        city.stop()
        tree.serve("city", env=dict(tree.env, HEMEI_MAX_CLOCK_AHEAD="3600"), port=city.port)
        tree.ok("district", "sync", env=district_clock)
        tree.servers["city"].stop()
        tree.serve("city", port=city.port)
        tree.ok("district", "probe", "note", "区里写的", env=district_clock)
        done = tree.hemei("district", "sync", env=district_clock)
        said = " ".join(done.stderr.split())
        assert done.returncode == 1 and "the sending PC's clock, or one it took a stamp from, is fast" in said
        assert re.search(r"this node's clock is (9|10|11) min ahead of this PC's: it was moved there by a "
                         r"received entry of the node of sx/yc/fs", said), said
    finally:
        tree.stop()


def test_the_entry_that_moved_the_clock_is_found_when_its_origin_last_sent_a_redacted_one(make_node):
    """Found in review: the lookup took each origin's last entry, and one held redacted has no stamp."""
    from hemei.core.clock import wall_ms
    from hemei.sync import client, engine

    district, street = make_node("district", scope="sx/yc"), make_node("street", scope="sx/yc/fs")
    district.clock._now = lambda: wall_ms() + 10 * 60_000  # the district's PC is 10 min fast
    write_notes(district, [("给府山的", "sx/yc/fs")])
    write_notes(district, [("给塔山的", "sx/yc/ts")])  # the last entry, redacted for 府山
    street.apply_batches([district.read_batch(district.id, 0, limit=100, redact=engine.redactor("sx/yc/fs"))],
                         tree=True)
    said = client.clock_moved_by(street)
    assert said is not None and "moved there by a received entry of the node of sx/yc" in said


@pytest.mark.skipif(not hasattr(time, "tzset"), reason="a subprocess's time zone is set through TZ (POSIX)")
def test_a_street_pc_on_another_time_zone_than_its_district_is_told_so_and_why_a_step_is_refused(tmp_path):
    """Found in an operator walkthrough: a district PC set to UTC could not act on a UTC+8 street's case for
    eight hours (case times are each PC's local time), and the refusal pointed nowhere."""
    from tree import Tree

    t = Tree(tmp_path)
    t.init("district", "越城区", modules=("grid_inspections",))
    t.init("street", "越城区/府山街道", modules=("grid_inspections",))
    utc, china = dict(t.env, TZ="UTC0"), dict(t.env, TZ="CST-8")
    t.serve("district", env=utc)
    try:
        t.enroll("district", "street", "越城区/府山街道")
        t.ok("district", "grids", "add", "FS-01", "西小河一网格", "--community", "西小河社区", "--street", "府山街道",
             env=utc)
        synced = json.loads(t.ok("street", "sync", "--json", env=china))
        assert any("time zone UTC+00:00 there, UTC+08:00 on this PC" in m and "8 h 0 min apart" in m
                   for m in synced["messages"]), synced["messages"]
        [parent] = json.loads(t.ok("street", "status", "--json", env=china))["peers"]
        assert parent["utc_offset_min"] == 0 and "China Standard Time is UTC+08:00" in parent["time_zone_warning"]
        [street] = json.loads(t.ok("district", "status", "--json", env=utc))["peers"]
        assert street["utc_offset_min"] == 480
        assert "time zone UTC+08:00 there, UTC+00:00 on this PC" in t.ok("district", "status", env=utc)

        case = json.loads(t.ok("street", "cases", "report", "--grid", "FS-01", "--category", "safety",
                               "--description", "井盖缺失", "--reporter", "李娟", "--json", env=china))
        t.ok("street", "cases", "register", case["id"], env=china)
        t.ok("street", "cases", "escalate", case["id"], "--to-level", "district", env=china)
        t.ok("street", "sync", env=china)
        refused = t.hemei("district", "cases", "dispatch", case["id"], "--to", "区城管执法队", env=utc)
        said = " ".join(refused.stderr.split())
        assert refused.returncode == 1 and "Traceback" not in said
        assert "is before the case's last step" in said and "clock or time zone is ahead of this one's" in said, said
        # Its PC set to China's time zone, the district acts on the case; a street on the same zone hears nothing.
        t.ok("district", "cases", "dispatch", case["id"], "--to", "区城管执法队", env=china)
        assert json.loads(t.ok("district", "status", "--json", env=china))["peers"][0]["time_zone_warning"] is None
    finally:
        t.stop()
