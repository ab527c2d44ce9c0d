"""The log as audit trail: tampering with the SQLite file is found and named."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from hemei.core.audit import audit_log, verify_log
from hemei.core.chain import entry_hash
from hemei.core.errors import InvalidInput


@pytest.fixture
def written(node):
    """A node with a few transactions of notes; returns (node, seq of the first note)."""
    for i in range(6):
        with node.writer("王丽" if i % 2 else "li.ming") as w:
            w.insert("notes", {"title": f"t{i}"})
    first = node.conn.execute("SELECT min(seq) FROM _hemei_log WHERE kind = 'row.insert'").fetchone()[0]
    return node, first


def errors_of(node) -> list[str]:
    result = verify_log(node)
    assert result["ok"] is (not result["errors"])
    return result["errors"]


def test_an_untouched_log_verifies(written):
    node, _ = written
    result = verify_log(node)
    assert result["ok"] and result["origins"][node.id]["size"] == node.status()["log"]["size"]


def test_an_altered_entry_is_named(written):
    node, first = written
    node.conn.execute("UPDATE _hemei_log SET payload = replace(payload, 't2', 'tX') WHERE seq = ?", (first + 2,))
    assert errors_of(node) == [f"{node.id}#{first + 2}: hash does not match its content and predecessor "
                               "(altered or reordered)"]


def test_an_altered_actor_is_named(written):
    node, first = written
    node.conn.execute("UPDATE _hemei_log SET actor = 'someone.else' WHERE seq = ?", (first + 1,))
    assert errors_of(node)[0].startswith(f"{node.id}#{first + 1}: hash does not match")


def test_a_removed_entry_is_named(written):
    node, first = written
    node.conn.execute("DELETE FROM _hemei_log WHERE seq = ?", (first + 1,))
    assert errors_of(node)[0].startswith(f"{node.id}#{first + 2}: expected entry #{first + 1}")


def test_a_removed_last_entry_is_found(written):
    node, _ = written
    size = node.status()["log"]["size"]
    node.conn.execute("DELETE FROM _hemei_log WHERE seq = ?", (size,))
    errors = errors_of(node)
    assert f"{node.id}: log has {size - 1} entries but the node recorded {size} (entries removed or inserted)" in errors
    assert any("entries removed at the end" in e for e in errors)


def test_a_removed_last_transaction_is_found_even_with_the_origin_row_rolled_back(written):
    node, _ = written
    size = node.status()["log"]["size"]
    prev_hash = node.conn.execute("SELECT hash FROM _hemei_log WHERE seq = ?", (size - 1,)).fetchone()[0]
    node.conn.execute("DELETE FROM _hemei_log WHERE seq = ?", (size,))  # the whole last transaction
    node.conn.execute("UPDATE _hemei_origins SET size = ?, head = ? WHERE node_id = ?", (size - 1, prev_hash, node.id))
    assert [e for e in errors_of(node) if "entries removed at the end" in e]


def test_an_own_entry_disguised_as_redacted_is_found(written):
    node, first = written
    seq = first + 1
    hlc, actor, kind, scope, payload, salt = node.conn.execute(
        "SELECT hlc, actor, kind, scope, payload, salt FROM _hemei_log WHERE seq = ?", (seq,)).fetchone()
    from hemei.core.chain import entry_leaf
    leaf = entry_leaf(node.id, seq, hlc, actor, kind, scope, payload, salt)
    node.conn.execute("UPDATE _hemei_log SET kind = 'redacted', hlc = 0, actor = '', scope = '', payload = '',"
                      " salt = NULL, leaf = ? WHERE seq = ?", (leaf, seq))
    assert errors_of(node) == [f"{node.id}#{seq}: entry hidden as redacted (altered)"]


def test_every_entry_has_its_own_random_salt(written):
    node, _ = written
    salts = [r[0] for r in node.conn.execute("SELECT salt FROM _hemei_log")]
    assert all(len(s) == 16 for s in salts) and len(set(salts)) == len(salts)


def test_reordered_entries_are_named(written):
    node, first = written
    a, b = first + 1, first + 2
    rows = {r[0]: r[1:] for r in node.conn.execute(
        "SELECT seq, hlc, actor, payload FROM _hemei_log WHERE seq IN (?, ?)", (a, b))}
    for seq, other in ((a, b), (b, a)):
        node.conn.execute("UPDATE _hemei_log SET hlc = ?, actor = ?, payload = ? WHERE seq = ?", (*rows[other], seq))
    assert errors_of(node)[0].startswith(f"{node.id}#{a}: hash does not match")


def test_an_inserted_entry_is_found_even_with_a_correct_hash(written):
    node, _ = written
    ix, size, head = node.conn.execute("SELECT ix, size, head FROM _hemei_origins WHERE node_id = ?",
                                       (node.id,)).fetchone()
    payload = '{"t":"notes","pk":"forged","v":{"title":"forged"}}'
    salt = bytes(16)
    forged = entry_hash(head, node.id, size + 1, 1, "li.ming", "row.insert", node.scope, payload, salt)
    node.conn.execute("INSERT INTO _hemei_log VALUES (?, ?, 1, 'li.ming', 'row.insert', ?, ?, ?, NULL, ?, NULL)",
                      (ix, size + 1, node.scope, payload, forged, salt))
    expected = [f"{node.id}#{size + 1}: entries #{size + 1}..#{size + 1} are not covered by a "
                "signed checkpoint (inserted or truncated)"]
    assert errors_of(node) == expected
    # Covering the tracks in the origins table does not help: no signature covers it.
    node.conn.execute("UPDATE _hemei_origins SET size = ?, head = ? WHERE ix = ?", (size + 1, forged, ix))
    assert errors_of(node) == expected


def test_an_entry_of_an_unknown_origin_is_found(written):
    node, _ = written
    node.conn.execute("INSERT INTO _hemei_log VALUES (99, 1, 1, 'x', 'row.insert', 'a', '{}', x'00', NULL, NULL, NULL)")
    assert "unknown origin" in errors_of(node)[0]


def test_a_bad_checkpoint_signature_is_named(written):
    node, _ = written
    seq = node.conn.execute("SELECT max(seq) FROM _hemei_log WHERE sig IS NOT NULL").fetchone()[0]
    node.conn.execute("UPDATE _hemei_log SET sig = zeroblob(64) WHERE seq = ?", (seq,))
    assert errors_of(node) == [f"{node.id}#{seq}: checkpoint of {node.id} at size {seq} has a bad signature"]


def test_cli_verify_exits_non_zero_and_prints_json(written, run_cli, tmp_path):
    node, first = written
    home = str(node.home)
    ok = run_cli("--home", home, "audit", "verify", "--json")
    assert ok.exit_code == 0
    data = json.loads(ok.output)
    assert data["ok"] is True and data["errors"] == []
    assert data["origins"][node.id] == {"size": node.status()["log"]["size"], "head": node.status()["log"]["head"]}
    node.conn.execute("UPDATE _hemei_log SET payload = replace(payload, 't1', 'tY') WHERE seq = ?", (first + 1,))
    bad = run_cli("--home", home, "audit", "verify", "--json")
    assert bad.exit_code == 1
    assert json.loads(bad.output)["errors"][0].startswith(f"{node.id}#{first + 1}:")
    text = run_cli("--home", home, "audit", "verify")
    assert text.exit_code == 1 and f"#{first + 1}" in text.output and "FAILED" in text.output


def test_rebuild_refuses_a_log_that_does_not_verify(written, run_cli):
    """Found by an operator walkthrough: rebuild put a tampered entry's text into the table, "repaired"."""
    node, first = written
    home = str(node.home)
    assert "notes: unchanged" in run_cli("--home", home, "rebuild").output
    node.conn.execute("UPDATE _hemei_log SET payload = replace(payload, 't1', '篡改') WHERE seq = ?", (first + 1,))
    refused = run_cli("--home", home, "rebuild")
    assert refused.exit_code == 1 and f"the log does not verify ({node.id}#{first + 1}:" in refused.output
    assert "nothing was rebuilt" in refused.output
    assert [t for (t,) in node.conn.execute("SELECT title FROM notes ORDER BY title")] == [f"t{i}" for i in range(6)]


def test_audit_log_filters_newest_first(written):
    node, _ = written
    everything = audit_log(node, limit=100)
    assert [e["hlc"] for e in everything] == sorted((e["hlc"] for e in everything), reverse=True)
    by_wang = audit_log(node, actor="王丽", limit=100)
    assert len(by_wang) == 3 and {e["actor"] for e in by_wang} == {"王丽"}
    assert {e["kind"] for e in audit_log(node, kind="row", limit=100)} == {"row.insert"}
    assert {e["kind"] for e in audit_log(node, kind="module", limit=100)} == {"module.enable"}
    assert len(audit_log(node, table="notes", limit=100)) == 6
    assert audit_log(node, since="2999-01-01") == []
    assert len(audit_log(node, limit=2)) == 2


def test_audit_log_cli_rejects_a_bad_date(written, run_cli):
    node, _ = written
    result = run_cli("--home", str(node.home), "audit", "log", "--since", "yesterday")
    assert result.exit_code == 1 and "since 'yesterday' is not a date" in result.output
    assert "--since" not in result.output  # one message for the command and the API, which has no options


def test_audit_log_cli_reads_and_takes_local_time(written, run_cli, china_time):
    """A street office's PC runs on UTC+8: the table shows the time the PC showed, and --since takes
    such a time (the log and --json keep UTC)."""
    node, _ = written
    newest = audit_log(node, limit=1)[0]
    utc = dt.datetime.fromisoformat(newest["time"].split("Z")[0])
    local = utc + dt.timedelta(hours=8)
    shown = run_cli("--home", str(node.home), "audit", "log", "--limit", "1")
    assert shown.exit_code == 0 and local.strftime("%Y-%m-%d %H:%M:%S") in shown.output, shown.output
    assert newest["time"].endswith("Z") or "Z+" in newest["time"]
    minute = dt.timedelta(minutes=1)
    since = run_cli("--home", str(node.home), "audit", "log", "--json", "--since",
                    (local - minute).strftime("%Y-%m-%dT%H:%M"))
    assert newest["seq"] in [e["seq"] for e in json.loads(since.output)]
    later = run_cli("--home", str(node.home), "audit", "log", "--json", "--since",
                    (local + minute).strftime("%Y-%m-%dT%H:%M"))
    assert json.loads(later.output) == []


def test_a_mistyped_table_is_refused_and_a_kind_not_in_the_log_shown_with_those_that_are(written, run_cli):
    """Found in a walkthrough: `--table grids_typo` and `--kind rows` answered "no entries", which reads as
    "nobody touched it"."""
    node, _ = written
    with pytest.raises(InvalidInput, match="no table 'note' here"):
        audit_log(node, table="note")
    typo = run_cli("--home", str(node.home), "audit", "log", "--table", "note")
    assert typo.exit_code == 1 and "no table 'note' here (enabled tables: " in typo.output
    kind = run_cli("--home", str(node.home), "audit", "log", "--kind", "rows")
    assert kind.exit_code == 0 and "no entries of kind 'rows' (kinds in this log: " in kind.output
    assert "row.insert" in kind.output
    none_yet = run_cli("--home", str(node.home), "audit", "log", "--kind", "Row", "--since", "2999-01-01")
    assert none_yet.output.strip() == "no entries"  # a kind this log holds, none of it in the window
    node.set_module_enabled("hook_probe", False, "t")  # its table's changes stay in the log (review)
    assert audit_log(node, table="notes", since="2999-01-01") == [] and audit_log(node, table="notes")


@pytest.mark.parametrize("filters", [("--actor", "无此人"), ("--since", "2099-01-01"), ("--origin", "ZZZ")])
def test_no_entries_without_a_kind_asked_is_said_plainly(written, run_cli, filters):
    """Found by a fuzzer: with no --kind, "no entries" was an internal error (the kind hint read None)."""
    node, _ = written
    none = run_cli("--home", str(node.home), "audit", "log", *filters)
    assert (none.exit_code, none.output.strip()) == (0, "no entries")


def test_an_internal_error_is_still_answered_as_json_with_json(written, run_cli, monkeypatch):
    """Found by a fuzzer: a bug's failure printed nothing on stdout, where --json promises {"ok": false}."""
    from hemei.core.node import Node

    node, _ = written

    def broken(self, **kwargs):
        raise RuntimeError("故障")

    monkeypatch.setattr(Node, "status", broken)
    done = run_cli("--home", str(node.home), "status", "--json")
    assert done.exit_code == 70
    answer = json.loads(done.stdout)
    assert answer["ok"] is False and answer["error"]["code"] == "internal" and "故障" in answer["error"]["message"]
