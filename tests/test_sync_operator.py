"""What a street operator types and reads around sync (found in an operator walkthrough): addresses,
tokens as chat programs pass them on, options that do nothing, and what `hemei status` says after a
failed attempt."""

from __future__ import annotations

import json
import subprocess
import threading

import pytest

from server import hemei_command
from tree import Tree, note_titles, write_notes


@pytest.mark.parametrize("typed, said", [
    ("http://127.0.0.1：8340", "full-width colon"),
    ("http://127.0.0.1:8340#a", "no ? or # part"),
    ("http://127.0.0.1:183420", "from 1 to 65535"),
])
def test_a_mistyped_address_is_refused_before_anything_is_tried_or_kept(pair, typed, said):
    done = pair.hemei("street", "sync", "--url", typed)
    assert done.returncode == 1 and said in done.stderr and "Traceback" not in done.stderr, done.stderr
    [parent] = json.loads(pair.ok("street", "status", "--json"))["peers"]
    assert parent["url"] == pair.servers["district"].url


def test_status_after_a_failed_attempt_says_it_failed_and_keeps_the_last_contact(pair):
    """`last contact` was set to the time of an attempt that reached nobody, and the text status showed
    neither the error nor the address in use."""
    pair.sync("street")
    [before] = json.loads(pair.ok("street", "status", "--json"))["peers"]
    pair.servers["district"].stop()
    failed = pair.hemei("street", "sync")
    assert failed.returncode == 1 and "check that its PC is on the network and `hemei serve` runs there" \
        in failed.stderr and "--url" in failed.stderr
    [after] = json.loads(pair.ok("street", "status", "--json"))["peers"]
    assert after["last_contact"] == before["last_contact"] and after["last_error"].startswith("unreachable: ")
    text = pair.ok("street", "status")
    assert f"at {before['url']}" in text and "last attempt failed: unreachable: cannot reach" in text
    pair.serve("district", port=int(before["url"].rsplit(":", 1)[1]))
    pair.sync("street")
    [synced] = json.loads(pair.ok("street", "status", "--json"))["peers"]
    assert synced["last_error"] is None and synced["last_contact"] > before["last_contact"]
    assert "last attempt failed" not in pair.ok("street", "status")


def test_a_token_wrapped_or_quoted_by_a_chat_program_still_joins(tmp_path):
    t = Tree(tmp_path).build({"district": "sx/yc", "street": "sx/yc/fs"}, serve=["district"])
    try:
        token = t.ok("district", "invite", "--scope", "sx/yc/fs", "--name", "street", "--url",
                     t.servers["district"].url).strip()
        pasted = f"“{token[:40]}\n  {token[40:]}”。"
        joined = t.hemei("street", "join", pasted)
        assert joined.returncode == 0, joined.stderr
        with t.open("street") as s:
            write_notes(s, [("粘贴来的令牌", "sx/yc/fs")])
        assert t.sync("street")["pushed"] > 0
        with t.open("district") as d:
            assert "粘贴来的令牌" in note_titles(d)
    finally:
        t.stop()


def test_an_invite_from_the_remembered_address_says_which_and_options_that_do_nothing_are_refused(pair):
    invited = pair.hemei("district", "invite", "--scope", "sx/yc/bh", "--name", "北海街道")
    assert invited.returncode == 0 and invited.stdout.strip().startswith("hemei1.")
    assert f"the token sends the child to {pair.servers['district'].url}" in invited.stderr
    typo = pair.hemei("district", "invite", "--scope", "sx/yc/bh", "--name", "北海街道", "--url",
                      "http://10.0.0.5：8340")
    assert typo.returncode == 1 and "full-width colon" in typo.stderr and not typo.stdout
    lonely = pair.hemei("street", "sync", "--interval", "5s")
    assert lonely.returncode == 2 and "add --watch" in lonely.stderr


def test_watch_json_lines_say_utc_with_a_z(pair):
    with subprocess.Popen(hemei_command() + ["--home", str(pair.home("street")), "sync", "--watch", "--json",
                                             "--interval", "1h"], env=pair.env, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True, encoding="utf-8") as watch:
        killer = threading.Timer(60, watch.kill)  # a watch that printed nothing must not hang the run
        killer.start()
        try:
            line = json.loads(watch.stdout.readline())
        finally:
            killer.cancel()
            watch.terminate()
    assert line["ok"] is True and line["time"].endswith("Z") and line["time"][10] == "T"


def test_an_empty_or_cut_off_bundle_says_copy_it_again_and_a_second_join_says_what_to_do(pair, tmp_path):
    for size in (0, 5):
        stick = tmp_path / f"府山 {size}.hemei"
        stick.write_bytes(b"HEMEI-BUNDLE-1\n"[:size])
        done = pair.hemei("district", "bundle", "import", str(stick))
        assert done.returncode == 1 and "empty or cut off at its start: copy it again" in done.stderr, done.stderr
    other = tmp_path / "note.txt"
    other.write_text("会议纪要", encoding="utf-8")
    assert "this is not a hemei bundle" in pair.hemei("district", "bundle", "import", str(other)).stderr
    token = pair.ok("district", "invite", "--scope", "sx/yc/fs", "--name", "street").strip()
    twice = pair.hemei("street", "join", token)
    assert twice.returncode == 1 and "has joined district already" in twice.stderr, twice.stderr


def test_status_run_inside_a_node_home_says_to_give_home_dot(pair):
    env = {k: v for k, v in pair.env.items() if k != "HEMEI_HOME"}
    inside = subprocess.run(hemei_command() + ["status"], cwd=pair.home("street"), env=env, capture_output=True,
                            text=True, encoding="utf-8")
    assert inside.returncode == 1 and "this folder is one: give --home . before the command" in inside.stderr
    pair.sync("street")  # it then holds entries of one other node, the district
    text = pair.ok("street", "status")
    assert "from 1 other node\n" in text and " 1 other nodes" not in text


def test_home_after_a_module_command_says_where_it_goes(pair):
    pair.ok("street", "modules", "enable", "grid_inspections")
    late = subprocess.run(hemei_command() + ["--home", str(pair.home("street")), "grids", "list", "--home",
                                             str(pair.home("street"))], env=pair.env, capture_output=True,
                          text=True, encoding="utf-8")
    assert late.returncode == 2 and "--home goes before the command here" in late.stderr, late.stderr


def test_a_refusal_is_a_contact_and_shown_once(pair):
    pair.sync("street")
    [before] = json.loads(pair.ok("street", "status", "--json"))["peers"]
    with pair.open("street") as s:
        pair.ok("district", "nodes", "revoke", s.id)
    assert pair.hemei("street", "sync").returncode == 1
    once = pair.hemei("street", "sync", "--json")
    assert once.returncode == 1 and json.loads(once.stdout)["error"]["code"] == "revoked"
    watched = pair.hemei("street", "sync", "--watch", "--json")  # each attempt a line, the last one too, once
    [line] = watched.stdout.splitlines()
    assert watched.returncode == 1 and json.loads(line)["error"]["code"] == "revoked" and "time" in json.loads(line)
    pair.init("alone", "sx/yc/ts")  # a failure before any attempt is printed too (found in review)
    orphan = pair.hemei("alone", "sync", "--watch", "--json")
    assert orphan.returncode == 1 and json.loads(orphan.stdout)["error"]["code"] == "no_parent"
    [after] = json.loads(pair.ok("street", "status", "--json"))["peers"]
    assert after["last_contact"] > before["last_contact"] and after["last_error"].startswith("revoked: ")
    text = pair.ok("street", "status")
    assert "refused " in text and "revoked" in text and "last attempt failed" not in text


@pytest.mark.parametrize("pasted", ["`{t}`", "{t}.", "{t},", "\ufeff{t}\u200b"])
def test_clean_token_drops_what_chat_programs_add_and_nothing_of_the_token(pasted):
    from hemei.sync.enroll import clean_token

    token = "hemei1.eyJ1IjoiaHR0cDovLzEwLjAuMC41OjgzNDAiLCJwIjoiQUJDIn0"
    assert clean_token(pasted.format(t=token)) == token


def test_unsigned_claims_are_shown_without_terminal_controls():
    import httpx

    from hemei.sync.client import _said

    forged = httpx.Response(403, json={"error": {"code": "revoked", "message": "a\x1b[2Jb\u202ec\nd"}})
    assert _said(forged) == " revoked: a [2Jb c d"


def test_an_empty_fragment_is_dropped_and_a_query_refused():
    from hemei.core.errors import InvalidInput
    from hemei.sync.address import node_address

    assert node_address("HTTP://Desktop-AB12:8340/#") == "http://desktop-ab12:8340"
    with pytest.raises(InvalidInput, match="no \\? or # part"):
        node_address("http://h:8340/?")


def test_small_cli_answers_from_the_walkthrough(pair, tmp_path):
    token = pair.ok("district", "invite", "--scope", "sx/yc/fs", "--name", "street").strip()
    twice = pair.hemei("street", "join", token, "--json")  # a failure as JSON on stdout, as sync --json does
    assert twice.returncode == 1 and json.loads(twice.stdout)["error"]["code"] == "already_joined"
    out = tmp_path / "府山.hemei"
    pair.ok("street", "bundle", "export", "--out", str(out))
    ack = json.loads(pair.ok("district", "bundle", "import", str(out), "--json"))["ack"]
    noted = pair.hemei("street", "bundle", "import", ack, "--ack-out", str(tmp_path / "unused.hemei"))
    assert noted.returncode == 0 and "--ack-out is for a bundle from a child" in noted.stderr
    assert not (tmp_path / "unused.hemei").exists()
    with pair.open("street") as s:
        pair.ok("district", "nodes", "revoke", s.id)
    listed = pair.ok("district", "nodes", "list")
    assert "REVOKED" in listed and "True" not in listed
    with pair.open("district") as d:
        write_notes(d, [("撤销后写的", "sx/yc")])
    [revoked] = json.loads(pair.ok("district", "status", "--json"))["peers"]
    assert revoked["pending_up"] == revoked["pending_down"] == 0  # nothing goes to it again (found in review)
    with pair.open("district") as d:
        d.conn.execute("UPDATE _hemei_meta SET value = 'http://10.0.0.5：8340' WHERE key = 'public_url'")
    stale = pair.hemei("district", "invite", "--scope", "sx/yc/bh", "--name", "北海街道")
    assert stale.returncode == 1 and "the address remembered from the last --url" in stale.stderr


def test_status_says_when_a_module_enabled_here_is_not_enabled_at_the_parent(pair):
    """Found in review: a street escalating cases to a district without the module was told nothing."""
    pair.ok("district", "modules", "disable", "hook_probe")
    pair.sync("street")
    [parent] = json.loads(pair.ok("street", "status", "--json"))["peers"]
    assert parent["modules_not_there"] == ["hook_probe"]
    assert "hook_probe is not enabled there" in pair.ok("street", "status")
    pair.ok("district", "modules", "enable", "hook_probe")
    pair.sync("street")
    [parent] = json.loads(pair.ok("street", "status", "--json"))["peers"]
    assert parent["modules_not_there"] == [] and "not enabled there" not in pair.ok("street", "status")
