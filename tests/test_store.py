"""The write API and the merge policies, local and remote, on real SQLite files."""

from __future__ import annotations

import orjson
import pytest

from conftest import log_size
from hemei.core import receipt
from hemei.core.clock import HybridClock
from hemei.core.errors import ChainError, ClockSkew, Conflict, HemeiError, InvalidInput, NotFound
from hemei.core.node import Batch, Node


def send_all(src: Node, dst: Node, confine: bool = False) -> list[dict]:
    """Everything ``src`` holds that ``dst`` lacks, one origin's batches at a time (``confine``: as a push)."""
    results = []
    have = dst.version_vector()
    for origin in src.version_vector():
        if origin == dst.id:
            continue
        after = have.get(origin, 0)
        while (batch := src.read_batch(origin, after)) is not None:
            results.append(dst.apply_batch(batch, confine=confine))
            after = batch.entries[-1][0]
    return results


def live_notes(node: Node) -> dict:
    return {r[0]: r[1:] for r in node.conn.execute("SELECT id, title, body, n FROM notes WHERE _deleted = 0")}


def test_a_write_stamps_logs_and_applies_in_one_transaction(node):
    before = log_size(node)
    with node.writer("王丽") as w:
        pk = w.insert("notes", {"title": "楼道粉刷", "n": 1})
    row = node.conn.execute("SELECT title, _hlc, _origin, _deleted FROM notes WHERE id = ?", (pk,)).fetchone()
    assert row[0] == "楼道粉刷" and row[2] == node.id and row[3] == 0
    entry = node.conn.execute("SELECT actor, kind, hlc, payload, sig FROM _hemei_log ORDER BY seq DESC LIMIT 1").fetchone()
    assert entry[:2] == ("王丽", "row.insert") and entry[2] == row[1]
    # "s": hook_probe is at schema version 2 (see hemei.core.versions)
    assert orjson.loads(entry[3]) == {"t": "notes", "pk": pk, "v": {"title": "楼道粉刷", "n": 1}, "s": 2}
    assert entry[4] is not None  # the transaction ends with a signed checkpoint
    assert log_size(node) == before + 1


def test_a_failed_write_leaves_nothing_behind(node):
    before = (log_size(node), node.status()["log"]["head"])
    with pytest.raises(InvalidInput):
        with node.writer("w") as w:
            w.insert("notes", {"title": "ok"})
            w.insert("notes", {"title": "bad", "n": "not a number"})
    with pytest.raises(Conflict):
        with node.writer("w") as w:
            w.insert("notes", {"id": "same", "title": "a"})
            w.insert("notes", {"id": "same", "title": "b"})
    assert (log_size(node), node.status()["log"]["head"]) == before
    assert live_notes(node) == {}
    with node.writer("w") as w:  # the chain continues from the old head
        w.insert("notes", {"title": "after"})
    from hemei.core.audit import verify_log
    assert verify_log(node)["ok"]


@pytest.mark.parametrize("call, error", [
    (lambda w: w.insert("nope", {"title": "x"}), "no table"),
    (lambda w: w.insert("notes", {"title": "x", "colour": None}), "no data column 'colour'"),
    (lambda w: w.insert("notes", {"title": "x", "n": 2 ** 63}), "does not fit in 64 bits"),
    (lambda w: w.insert("notes", {"title": "x", "n": True}), "must be integer"),
    (lambda w: w.insert("notes", {"title": "x\ud800"}), "cannot be recorded"),
    (lambda w: w.insert("notes", {"id": "", "title": "x"}), "non-empty text"),
    (lambda w: w.event("redacted", {}), "reserved"),
    (lambda w: w.event("row.insert", {"t": "notes", "pk": "ghost", "v": {}}), "reserved"),
    (lambda w: w.insert("notes", {"body": "no title"}), "title required"),
    (lambda w: w.insert("notes", {"title": "x", "colour": "red"}), "no data column"),
    (lambda w: w.insert("notes", {"title": "x", "scope": "yuecheng/beihai"}), "outside this node's scope"),
    (lambda w: w.insert("notes", {"title": "x", "scope": "a//b"}), "empty segment"),
    (lambda w: w.update("notes", "missing", {"title": "x"}), "no row missing"),
    (lambda w: w.delete("notes", "missing"), "no row missing"),
    (lambda w: w.update("ballots", "any", {"choice": "B"}), "append-only"),
    (lambda w: w.event("Bad Kind!", {}), "entry kind"),
])
def test_bad_writes_get_clear_errors(node, call, error):
    with pytest.raises(HemeiError, match=error):
        with node.writer("w") as w:
            call(w)


def test_update_and_delete_are_lww_and_tombstones(node):
    with node.writer("w") as w:
        pk = w.insert("notes", {"title": "a", "n": 1})
    with node.writer("w") as w:
        w.update("notes", pk, {"n": 2})
    assert live_notes(node)[pk] == ("a", None, 2)
    with node.writer("w") as w:
        w.delete("notes", pk)
    assert live_notes(node) == {}
    assert node.conn.execute("SELECT _deleted FROM notes WHERE id = ?", (pk,)).fetchone() == (1,)
    with pytest.raises(NotFound):
        with node.writer("w") as w:
            w.update("notes", pk, {"n": 3})
    with node.writer("w") as w:  # an insert of the key again revives it, whole (keys a module computes)
        w.insert("notes", {"id": pk, "title": "b"})
    assert live_notes(node)[pk] == ("b", None, None)
    with pytest.raises(Conflict, match="already exists"):
        with node.writer("w") as w:
            w.insert("notes", {"id": pk, "title": "c"})


def test_concurrent_updates_resolve_per_column_by_hlc_then_origin(make_node):
    a, b = make_node("a"), make_node("b")
    with a.writer("w") as w:
        pk = w.insert("notes", {"title": "t", "body": "x", "n": 0})
    send_all(a, b)
    with a.writer("w") as w:
        w.update("notes", pk, {"body": "from a"})
    with b.writer("w") as w:
        w.update("notes", pk, {"n": 5})
    with b.writer("w") as w:
        w.update("notes", pk, {"body": "from b, later"})
    send_all(a, b)
    send_all(b, a)
    assert live_notes(a)[pk] == live_notes(b)[pk] == ("t", "from b, later", 5)


def test_append_only_unique_key_keeps_the_earliest_and_lists_the_rest(make_node):
    a, b = make_node("a"), make_node("b")
    with a.writer("w") as w:
        first = w.insert("ballots", {"vote": "v1", "voter": "p1", "choice": "A"})
    with b.writer("w") as w:
        second = w.insert("ballots", {"vote": "v1", "voter": "p1", "choice": "B"})
    version = {pk: n.conn.execute("SELECT _hlc, _origin FROM ballots WHERE id = ?", (pk,)).fetchone()
               for n, pk in ((a, first), (b, second))}
    winner, loser = sorted([first, second], key=version.get)
    send_all(a, b)  # each learns of the other's ballot; the earlier one (HLC, then node id) wins
    send_all(b, a)
    for node in (a, b):
        assert node.conn.execute("SELECT id FROM ballots").fetchall() == [(winner,)]
        conflicts = node.conn.execute("SELECT pk, kind, reason FROM _hemei_conflicts").fetchall()
        assert conflicts == [(loser, "duplicate", f"vote=v1, voter=p1 is already held by {winner}")]


def test_a_local_duplicate_ballot_is_an_error_not_a_conflict(node):
    with node.writer("w") as w:
        w.insert("ballots", {"vote": "v1", "voter": "p1", "choice": "A"})
    with pytest.raises(Conflict, match="vote=v1, voter=p1"):
        with node.writer("w") as w:
            w.insert("ballots", {"vote": "v1", "voter": "p1", "choice": "B"})
    assert node.conn.execute("SELECT count(*) FROM ballots").fetchone() == (1,)
    assert node.conn.execute("SELECT count(*) FROM _hemei_conflicts").fetchone() == (0,)


def _forge(src: Node, dst: Node, payloads: list[tuple[str, dict]]) -> Batch:
    """A correctly signed batch of arbitrary row entries from ``src`` (a buggy or hostile origin).

    ``dst`` first receives everything before it, so the batch continues its chain.
    """
    send_all(src, dst)
    with src.writer("w") as w:
        for kind, payload in payloads:
            w._append(kind, src.scope, payload, None)
    size = src.version_vector()[src.id]
    return src.read_batch(src.id, size - len(payloads), limit=len(payloads))


def test_remote_update_of_append_only_row_is_refused_but_kept(make_node):
    a, b = make_node("a"), make_node("b")
    with a.writer("w") as w:
        pk = w.insert("ballots", {"vote": "v1", "voter": "p1", "choice": "A"})
    send_all(a, b)
    batch = _forge(a, b, [("row.update", {"t": "ballots", "pk": pk, "v": {"choice": "B"}})])
    result = b.apply_batch(batch)
    assert result["new"] == 1 and result["refused"] == 1
    assert b.conn.execute("SELECT choice FROM ballots").fetchall() == [("A",)]
    assert b.conn.execute("SELECT kind, reason FROM _hemei_conflicts").fetchall() == [
        ("refused", "ballots is append-only: update refused")]
    assert b.version_vector()[a.id] == a.version_vector()[a.id]  # the entry is in the log


def test_remote_change_refused_by_a_plugin_is_kept_with_its_reason(make_node):
    a, b = make_node("a"), make_node("b")
    batch = _forge(a, b, [("row.insert", {"t": "notes", "pk": "n1", "v": {"title": "forbidden"}})])
    assert b.apply_batch(batch)["refused"] == 1
    assert live_notes(b) == {}
    assert b.conn.execute("SELECT kind, reason FROM _hemei_conflicts").fetchall() == [
        ("refused", "title 'forbidden' is refused by hook_probe")]


def test_unreadable_columns_are_kept_as_conflicts(make_node):
    a, b = make_node("a"), make_node("b")
    batch = _forge(a, b, [("row.insert", {"t": "notes", "pk": "n1", "v": {"title": "x", "colour": "red"}})])
    assert b.apply_batch(batch)["refused"] == 1
    assert b.conn.execute("SELECT kind FROM _hemei_conflicts").fetchall() == [("unreadable",)]


def test_a_required_column_missing_from_an_insert_or_emptied_by_an_update_is_kept_as_a_conflict(make_node):
    # Code reading a table trusts its required columns; a modified peer must not leave one empty.
    a, b = make_node("a"), make_node("b")
    with a.writer("w") as w:
        pk = w.insert("notes", {"title": "有标题"})
    send_all(a, b)
    batch = _forge(a, b, [("row.insert", {"t": "notes", "pk": "n2", "v": {"n": 1}}),
                          ("row.insert", {"t": "notes", "pk": "n3", "v": {"title": None}}),
                          ("row.update", {"t": "notes", "pk": pk, "v": {"title": None}})])
    assert b.apply_batch(batch)["refused"] == 3
    assert b.conn.execute("SELECT id, title FROM notes").fetchall() == [(pk, "有标题")]
    assert [(k, r) for k, r in b.conn.execute("SELECT kind, reason FROM _hemei_conflicts ORDER BY hlc")] == [
        ("unreadable", "notes: title required")] * 2 + [("unreadable", "notes: title cannot be emptied")]
    with pytest.raises(InvalidInput, match="title cannot be emptied"):
        with a.writer("w") as w:
            w.update("notes", pk, {"title": None})


def test_update_before_insert_converges_to_the_same_row(make_node):
    a, b, c = make_node("a"), make_node("b"), make_node("c")
    with a.writer("w") as w:
        pk = w.insert("notes", {"title": "t", "n": 1})
    send_all(a, b)
    with b.writer("w") as w:
        w.update("notes", pk, {"n": 2})
    c.apply_batch(b.read_batch(b.id, 0))  # b's update first...
    send_all(a, c)  # ...then a's insert
    assert c.conn.execute("SELECT * FROM notes").fetchall() == b.conn.execute("SELECT * FROM notes").fetchall()


def test_applying_the_same_batch_twice_changes_nothing(make_node):
    a, b = make_node("a"), make_node("b")
    with a.writer("w") as w:
        for i in range(5):
            w.insert("notes", {"title": f"t{i}"})
    batch = a.read_batch(a.id, 0)
    first = b.apply_batch(batch)
    snapshot = (b.conn.execute("SELECT * FROM notes ORDER BY id").fetchall(), log_size(b))
    second = b.apply_batch(batch)
    assert first["new"] == len(batch.entries) and second["new"] == 0
    assert (b.conn.execute("SELECT * FROM notes ORDER BY id").fetchall(), log_size(b)) == snapshot


def test_a_bad_batch_is_refused_whole(make_node):
    a, b = make_node("a"), make_node("b")
    with a.writer("w") as w:
        w.insert("notes", {"title": "t1"})
        w.insert("notes", {"title": "t2"})
    batch = a.read_batch(a.id, 0)
    before = (log_size(b), b.conn.execute("SELECT count(*) FROM notes").fetchone())
    tampered = list(batch.entries)
    i = next(i for i, e in enumerate(tampered) if '"t1"' in e[5])
    tampered[i] = tampered[i][:5] + (tampered[i][5].replace('"t1"', '"t9"'),) + tampered[i][6:]
    with pytest.raises(ChainError, match="signature"):
        b.apply_batch(batch._replace(entries=tampered))
    with pytest.raises(ChainError, match="gap"):
        b.apply_batch(batch._replace(entries=batch.entries[2:]))
    with pytest.raises(ChainError, match="does not belong"):
        b.apply_batch(batch._replace(public_key=b.public_key))
    assert (log_size(b), b.conn.execute("SELECT count(*) FROM notes").fetchone()) == before


def test_a_different_history_for_held_entries_is_a_fork(make_node, tmp_path):
    a, b = make_node("a"), make_node("b")
    with a.writer("w") as w:
        w.insert("notes", {"title": "original"})
    send_all(a, b)
    # The same key signs a second history of the same length: a rewritten log.
    import shutil
    a.close()
    shutil.copytree(tmp_path / "a", tmp_path / "a2")
    clone = Node.open(tmp_path / "a2", available=a._available, builtins=a._builtins)
    clone.conn.execute("DELETE FROM _hemei_log WHERE seq > 2")
    last = clone.conn.execute("SELECT hash FROM _hemei_log WHERE seq = 2").fetchone()[0]
    clone.conn.execute("UPDATE _hemei_origins SET size = 2, head = ? WHERE node_id = ?", (last, clone.id))
    clone.conn.execute("DELETE FROM notes")
    with clone.writer("w") as w:
        w.insert("notes", {"title": "rewritten"})
    with pytest.raises(Conflict, match="fork") as err:
        b.apply_batch(clone.read_batch(clone.id, 0))
    assert err.value.code == "fork"
    clone.close()


def test_entries_from_the_far_future_are_refused_and_nothing_is_written(make_node):
    a, b = make_node("a"), make_node("b")
    a.clock.last = (a.clock._now() + 3 * 3600 * 1000) << 16  # a PC whose clock is 3 hours fast
    with a.writer("w") as w:
        w.insert("notes", {"title": "from the future"})
    before = log_size(b)
    with pytest.raises(ClockSkew, match="taken in about 2 h 45 min .*clock, or one it took a stamp from, is fast"):
        send_all(a, b)
    assert log_size(b) == before and live_notes(b) == {}
    assert live_notes(a)  # nothing lost on the sender


def test_rebuild_reproduces_every_table_exactly(make_node):
    a, b = make_node("a"), make_node("b")
    with a.writer("w") as w:
        keep = w.insert("notes", {"title": "keep", "n": 1})
        gone = w.insert("notes", {"title": "gone"})
        w.insert("ballots", {"vote": "v", "voter": "p", "choice": "A"})
    with b.writer("w") as w:
        w.insert("ballots", {"vote": "v", "voter": "p", "choice": "B"})
    send_all(a, b)
    with b.writer("w") as w:
        w.update("notes", keep, {"body": "edited at b"})
        w.delete("notes", gone)
    dump = lambda n: [n.conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3").fetchall()
                      for t in ("notes", "ballots", "_hemei_conflicts")]
    before = dump(b)
    b.conn.execute("UPDATE notes SET title = 'vandalised'")
    b.conn.execute("DELETE FROM ballots")
    assert b.rebuild() > 0
    assert dump(b) == before


def test_reactions_see_local_and_remote_changes_once_per_commit(make_node):
    a, b = make_node("a"), make_node("b")
    with a.writer("w") as w:
        pk = w.insert("notes", {"title": "t"})
        w.update("notes", pk, {"n": 1})
    send_all(a, b)
    assert a.conn.execute("SELECT op, local FROM probe_reactions").fetchall() == [("insert", 1), ("update", 1)]
    assert b.conn.execute("SELECT op, local FROM probe_reactions").fetchall() == [("insert", 0), ("update", 0)]
    b.rebuild()  # replay does not react again
    assert b.conn.execute("SELECT count(*) FROM probe_reactions").fetchone() == (2,)


def test_entries_for_a_disabled_module_wait_in_the_log_until_it_is_enabled(make_node):
    a = make_node("a")
    b = make_node("b", modules=())
    with a.writer("w") as w:
        w.insert("notes", {"title": "while b had no module"})
    send_all(a, b)
    assert "notes" not in b.specs
    assert b.set_module_enabled("hook_probe", True, "t") == ["ballots", "notes"]
    assert list(live_notes(b).values()) == [("while b had no module", None, None)]
    b.set_module_enabled("hook_probe", False, "t")
    assert b.conn.execute("SELECT count(*) FROM notes").fetchone() == (1,)  # disabling deletes nothing


def test_the_clock_survives_a_restart_with_the_wall_clock_behind(node):
    with node.writer("w") as w:
        w.insert("notes", {"title": "before"})
    future = (node.clock._now() + 3_600_000) << 16  # the last run happened while the PC clock was an hour fast
    node.conn.execute("UPDATE _hemei_meta SET value = ? WHERE key = 'hlc'", (future,))
    home, available, builtins = node.home, node._available, node._builtins
    node.close()
    reopened = Node.open(home, available=available, builtins=builtins)
    with reopened.writer("w") as w:
        w.insert("notes", {"title": "after restart"})
    last = reopened.conn.execute("SELECT max(hlc) FROM _hemei_log").fetchone()[0]
    assert last > future
    reopened.close()


def test_a_refusing_check_writes_nothing_of_the_batch(make_node):
    a, b = make_node("a"), make_node("b")
    with a.writer("w") as w:
        w.insert("notes", {"title": "t"})
    before = log_size(b)

    def refuse(batch, changes):
        raise InvalidInput("out of scope", code="scope_violation")

    with pytest.raises(InvalidInput, match="out of scope"):
        b.apply_batch(a.read_batch(a.id, 0), check=refuse)
    assert log_size(b) == before and live_notes(b) == {} and a.id not in b.version_vector()


def test_redacted_entries_verify_relay_and_reveal_nothing(make_node, tmp_path):
    district = make_node("district", scope="yc")
    street_a = make_node("a", scope="yc/a")
    street_b = make_node("b", scope="yc/a")  # a second replica of street a's view
    with district.writer("w") as w:
        w.insert("notes", {"title": "for everyone", "scope": "yc"})
        w.insert("notes", {"title": "for street a", "scope": "yc/a/grid1"})
        w.insert("notes", {"title": "秘密 for street z", "scope": "yc/z"})
    from hemei.core.scope import related

    def hide(kind, scope):
        return kind != "node.init" and not (kind.startswith("row.") and related(scope, "yc/a"))

    batch = district.read_batch(district.id, 0, redact=hide)
    assert sum(1 for e in batch.entries if len(e) == 2) >= 2  # module.enable and the note for z
    street_a.apply_batch(batch)
    assert sorted(t for (t,) in street_a.conn.execute("SELECT title FROM notes")) == ["for everyone", "for street a"]
    assert street_a.origin_scope(district.id) == "yc"
    # Relayed unchanged to another node: the redacted entries stay redacted and still verify.
    street_b.apply_batch(street_a.read_batch(district.id, 0))
    from hemei.core.audit import verify_log
    assert verify_log(street_a)["ok"] and verify_log(street_b)["ok"]
    for node in (street_a, street_b):
        node.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert "秘密".encode() not in (node.home / "node.db").read_bytes()
    # A tampered digest is caught like any altered entry.
    street_a.conn.execute("UPDATE _hemei_log SET leaf = zeroblob(32) WHERE kind = 'redacted'")
    assert not verify_log(street_a)["ok"]


def test_an_error_caught_inside_a_writer_still_rolls_everything_back(node):
    before = (log_size(node), node.status()["log"]["head"])
    with pytest.raises(HemeiError, match="rolled back"):
        with node.writer("w") as w:
            w.insert("notes", {"id": "k", "title": "first"})
            w.insert("notes", {"id": "k", "title": "second"})
            try:
                w.flush()
            except Conflict:
                pass  # a caller that swallows the error cannot commit half a transaction
            w.insert("notes", {"title": "more"})
    assert (log_size(node), node.status()["log"]["head"]) == before and live_notes(node) == {}
    with node.writer("w") as w:
        w.insert("notes", {"title": "next write works"})
    from hemei.core.audit import verify_log
    assert verify_log(node)["ok"]


def test_malformed_signed_payloads_are_kept_as_conflicts_and_the_chain_moves_on(make_node):
    a, b = make_node("a"), make_node("b")
    bad = [
        ("row.insert", {"t": "notes", "pk": "p1", "v": ["not", "an", "object"]}),
        ("row.insert", {"t": "notes", "pk": None, "v": {"title": "x"}}),
        ("row.insert", {"t": "notes", "pk": 7, "v": {"title": "x"}}),
        ("row.insert", {"t": "notes", "pk": "p2", "v": {"title": {"nested": 1}}}),
        ("row.insert", {"t": "notes", "pk": "p3", "v": {"title": "x", "n": "abc"}}),
        ("row.update", {"t": "notes"}),
    ]
    result = b.apply_batch(_forge(a, b, bad))
    assert result["new"] == len(bad) and result["refused"] == len(bad)
    assert b.conn.execute("SELECT count(*) FROM notes").fetchone() == (0,)
    assert {k for (k,) in b.conn.execute("SELECT kind FROM _hemei_conflicts")} == {"unreadable"}
    with a.writer("w") as w:
        w.insert("notes", {"title": "fine again"})
    send_all(a, b)
    assert list(live_notes(b).values()) == [("fine again", None, None)]
    before = b.conn.execute("SELECT * FROM _hemei_conflicts ORDER BY 1, 2, 3, 4").fetchall()
    b.rebuild()
    assert b.conn.execute("SELECT * FROM _hemei_conflicts ORDER BY 1, 2, 3, 4").fetchall() == before


def test_an_update_before_its_insert_waits_for_it(make_node):
    a, b, c = make_node("a", scope="yc"), make_node("b", scope="yc"), make_node("c", scope="yc")
    with a.writer("w") as w:
        pk = w.insert("notes", {"title": "t", "scope": "yc/x"})
    send_all(a, b)
    with b.writer("w") as w:
        w.update("notes", pk, {"n": 1})
    result = c.apply_batch(b.read_batch(b.id, 0))
    assert result["applied"] == 0 and result["refused"] == 0
    assert c.conn.execute("SELECT count(*) FROM notes").fetchone() == (0,)  # no row without a scope
    assert c.status()["waiting"] == 1
    send_all(a, c)
    assert c.conn.execute("SELECT scope, n, _deleted FROM notes").fetchall() == [("yc/x", 1, 0)]
    assert c.status()["waiting"] == 0
    stored = c.conn.execute("SELECT * FROM notes").fetchall()
    c.rebuild()  # replayed in origin order, whichever came first
    assert c.conn.execute("SELECT * FROM notes").fetchall() == stored and c.status()["waiting"] == 0


def test_updates_of_one_key_from_two_branches_converge_without_the_inserts(make_node):
    """Two nodes create key k in different scopes; each is updated elsewhere; C and C2 see only the updates."""
    a, d = make_node("a", scope="yc/a"), make_node("d", scope="yc/d")
    b, e = make_node("b", scope="yc"), make_node("e", scope="yc")
    c, c2 = make_node("c", scope="yc"), make_node("c2", scope="yc")
    with a.writer("w") as w:
        w.insert("notes", {"id": "k", "title": "from a"})
    with d.writer("w") as w:
        w.insert("notes", {"id": "k", "title": "from d"})
    send_all(a, b)
    send_all(d, e)
    with b.writer("w") as w:
        w.update("notes", "k", {"n": 1})
    with e.writer("w") as w:
        w.update("notes", "k", {"n": 2})
    for first, second, target in ((b, e, c), (e, b, c2)):
        target.apply_batch(first.read_batch(first.id, 0))
        target.apply_batch(second.read_batch(second.id, 0))
    received = lambda n: {o: size for o, size in n.version_vector().items() if o != n.id}
    assert received(c) == received(c2)
    assert c.conn.execute("SELECT * FROM notes").fetchall() == c2.conn.execute("SELECT * FROM notes").fetchall()


def test_a_row_from_above_cannot_be_changed_below(make_node):
    district, street = make_node("d", scope="yc"), make_node("s", scope="yc/fs")
    with district.writer("w") as w:
        pk = w.insert("notes", {"title": "全区通知", "scope": "yc"})
    send_all(district, street)
    for change in (lambda w: w.update("notes", pk, {"body": "改"}), lambda w: w.delete("notes", pk)):
        with pytest.raises(InvalidInput, match="outside this node's scope") as err:
            with street.writer("w") as w:
                change(w)
        assert err.value.code == "out_of_scope"


def _siblings_with_a_row(make_node, table: str, values: dict):
    """A district holding a row of street a; street b (a sibling) and the district's view of a batch of b."""
    district = make_node("d", scope="yc")
    a, b = make_node("a", scope="yc/a"), make_node("b", scope="yc/b")
    with a.writer("w") as w:
        pk = w.insert(table, values)
    send_all(a, district)
    send_all(b, district)
    return district, b, pk


@pytest.mark.parametrize("table, values, kind, v", [
    ("notes", {"title": "甲街的记录"}, "row.update", {"title": "改掉"}),
    ("notes", {"title": "甲街的记录"}, "row.delete", {}),
    ("notes", {"title": "甲街的记录"}, "row.insert", {"title": "HIJACKED"}),
    ("ballots", {"vote": "v1", "voter": "p1", "choice": "A"}, "row.insert", {"vote": "v9", "voter": "p9",
                                                                            "choice": "B"}),
    # Refused anyway (unknown column, a module's veto), but aimed at a sibling's row: the whole batch
    # goes, or the entry would wait in the log for an upgrade and a rebuild to apply it.
    ("notes", {"title": "甲街的记录"}, "row.update", {"title": "HIJACKED", "not_yet_a_column": "x"}),
    ("notes", {"title": "甲街的记录"}, "row.update", {"title": "forbidden"}),
    ("notes", {"title": "甲街的记录"}, "row.insert", {"title": "forbidden"}),
])
def test_a_confined_receipt_refuses_changes_to_a_siblings_row(make_node, table, values, kind, v):
    district, b, pk = _siblings_with_a_row(make_node, table, values)
    before = district.conn.execute(f"SELECT * FROM {table}").fetchall()
    size = log_size(district)
    with b.writer("mallory") as w:  # signed by b, inside b's scope, but naming a's row
        w._append(kind, b.scope, {"t": table, "pk": pk, "v": v}, None)
    batch = b.read_batch(b.id, b.version_vector()[b.id] - 1)
    with pytest.raises(HemeiError) as err:
        district.apply_batch(batch, confine=True)
    assert err.value.code == "scope_violation" and err.value.status == 403
    assert "outside yc/b" in err.value.message
    assert district.conn.execute(f"SELECT * FROM {table}").fetchall() == before
    assert log_size(district) == size  # the whole batch is refused, log entries included


def test_an_unconfined_receipt_merges_the_same_change(make_node):
    """Replicas that exchange freely (no tree edge between them) merge by the policy instead."""
    district, b, pk = _siblings_with_a_row(make_node, "notes", {"title": "甲街的记录"})
    with b.writer("w") as w:
        w._append("row.update", b.scope, {"t": "notes", "pk": pk, "v": {"title": "改掉"}}, None)
    district.apply_batch(b.read_batch(b.id, b.version_vector()[b.id] - 1))
    assert district.conn.execute("SELECT title FROM notes WHERE id = ?", (pk,)).fetchone() == ("改掉",)


def test_a_confined_receipt_accepts_changes_inside_the_origins_scope(make_node):
    district, street = make_node("d", scope="yc"), make_node("s", scope="yc/a")
    with district.writer("w") as w:  # a row the district placed in the street
        pk = w.insert("notes", {"title": "区里交办", "scope": "yc/a/x"})
    send_all(district, street)
    with street.writer("w") as w:
        w.update("notes", pk, {"body": "已办"})
        new = w.insert("notes", {"title": "新的"})
    street_batch = street.read_batch(street.id, 0)
    result = district.apply_batch(street_batch, confine=True)
    assert result["refused"] == 0
    assert dict(district.conn.execute("SELECT id, coalesce(body, title) FROM notes")) == {pk: "已办", new: "新的"}


def test_a_confined_receipt_refuses_taking_the_key_of_a_siblings_row_kept_as_a_duplicate(make_node):
    """Street b's earlier ballot for the same voter pushes a's into the duplicates; a's key stays a's."""
    district = make_node("d", scope="yc")
    a, b = make_node("a", scope="yc/a"), make_node("b", scope="yc/b")
    with b.writer("w") as w:  # written first: the earlier version wins the (vote, voter) clash
        w.insert("ballots", {"vote": "v1", "voter": "p1", "choice": "B"})
    a.clock.observe(b.clock.last)  # strictly later, even within the same millisecond
    with a.writer("w") as w:
        a_key = w.insert("ballots", {"vote": "v1", "voter": "p1", "choice": "A"})
    send_all(a, district)
    district.apply_batch(b.read_batch(b.id, 0), confine=True)  # the policy at work, not an attack
    assert district.conn.execute("SELECT count(*) FROM _hemei_conflicts WHERE pk = ? AND kind = 'duplicate'",
                                 (a_key,)).fetchone() == (1,)
    with b.writer("mallory") as w:
        w._append("row.insert", b.scope, {"t": "ballots", "pk": a_key, "v": {"vote": "v2", "voter": "p2",
                                                                             "choice": "B"}}, None)
    size = log_size(district)
    with pytest.raises(HemeiError) as err:
        district.apply_batch(b.read_batch(b.id, b.version_vector()[b.id] - 1), confine=True)
    assert err.value.code == "scope_violation" and log_size(district) == size
    assert district.conn.execute("SELECT count(*) FROM ballots WHERE id = ?", (a_key,)).fetchone() == (0,)


def test_a_confined_receipt_refuses_an_origin_whose_scope_is_not_known(make_node):
    district, b = make_node("d", scope="yc"), make_node("b", scope="yc/b")
    send_all(b, district)
    district.conn.execute("UPDATE _hemei_origins SET scope = NULL WHERE node_id = ?", (b.id,))  # e.g. an old copy
    with b.writer("w") as w:
        w.insert("notes", {"title": "新的"})
    size = log_size(district)
    with pytest.raises(HemeiError, match="has not declared its scope") as err:
        district.apply_batch(b.read_batch(b.id, b.version_vector()[b.id] - 1), confine=True)
    assert err.value.code == "scope_violation" and log_size(district) == size


def _push(child: Node, parent: Node, origin: str) -> list[dict]:
    """Everything ``child`` holds of ``origin`` that ``parent`` lacks, as the sync push route applies it."""
    after = parent.version_vector().get(origin, 0)
    batches = []
    while (batch := child.read_batch(origin, after)) is not None:
        batches.append(batch)
        after = batch.entries[-1][0]
    return parent.apply_batches(batches, confine=True, sender=child.id)


def test_a_relayed_change_to_a_siblings_row_is_kept_as_a_conflict_and_the_relay_goes_on(make_node):
    """Street b's update of a's key reached the district before a's insert (a leaked key: nothing is
    stored there yet to judge it against), so the district took it into its log, where it waited for
    the insert. The city got a's insert first and judges it out of scope: it keeps it as a conflict
    instead of refusing the district's push, which would refuse every push of that district from then
    on. Both end with the same row."""
    city, district = make_node("c", scope="sx"), make_node("d", scope="sx/yc")
    a, b = make_node("a", scope="sx/yc/a"), make_node("b", scope="sx/yc/b")
    with a.writer("w") as w:
        pk = w.insert("notes", {"title": "甲街的记录"})
    b.clock.observe(a.clock.last)
    with b.writer("mallory") as w:
        w._append("row.update", b.scope, {"t": "notes", "pk": pk, "v": {"title": "HIJACKED"}}, None)
    _push(b, district, b.id)
    assert district.status()["waiting"] == 1  # no row yet to judge it against
    _push(a, district, a.id)  # a's insert gives the row its scope: b's update is judged then
    assert district.conn.execute("SELECT title FROM notes WHERE id = ?", (pk,)).fetchone() == ("甲街的记录",)
    assert district.conn.execute("SELECT kind FROM _hemei_conflicts").fetchall() == [("out_of_scope",)]
    for origin in (district.id, a.id, b.id):  # the city gets a's insert before b's update
        _push(district, city, origin)
    assert city.conn.execute("SELECT title FROM notes WHERE id = ?", (pk,)).fetchone() == ("甲街的记录",)
    [(kind, reason)] = city.conn.execute("SELECT kind, reason FROM _hemei_conflicts").fetchall()
    assert kind == "out_of_scope" and "a row of sx/yc/a, outside sx/yc/b" in reason
    assert city.version_vector()[b.id] == b.version_vector()[b.id]  # in the log: the chain stays whole

    with a.writer("w") as w:  # and the district's next push goes through
        later = w.insert("notes", {"title": "后来的"})
    _push(a, district, a.id)
    _push(district, city, a.id)
    assert city.conn.execute("SELECT title FROM notes WHERE id = ?", (later,)).fetchone() == ("后来的",)

    city.rebuild()  # a rebuild keeps the judgment made at receipt instead of applying the change
    assert city.conn.execute("SELECT title FROM notes WHERE id = ?", (pk,)).fetchone() == ("甲街的记录",)
    assert city.conn.execute("SELECT kind FROM _hemei_conflicts").fetchall() == [("out_of_scope",)]

    with b.writer("mallory") as w:  # a child's own entries are still refused outright
        w._append("row.update", b.scope, {"t": "notes", "pk": pk, "v": {"title": "又来"}}, None)
    size = log_size(district)
    with pytest.raises(HemeiError) as err:
        _push(b, district, b.id)
    assert err.value.code == "scope_violation" and log_size(district) == size


def _back_dated(street: Node, title: str) -> None:
    """``street`` writes one note stamped an hour before its last entry (its clock set back by hand)."""
    last = street.clock.last
    street.clock = HybridClock(now=lambda: (last >> 16) - 3_600_000)
    street.conn.execute("UPDATE _hemei_meta SET value = 0 WHERE key = 'hlc'")
    with street.writer("w") as w:
        w.insert("notes", {"title": title})


def test_a_childs_entry_stamped_before_what_it_sent_refuses_its_push(make_node):
    district, street = make_node("d", scope="yc"), make_node("a", scope="yc/a")
    with street.writer("w") as w:
        w.insert("notes", {"title": "先"})
    _push(street, district, street.id)
    _back_dated(street, "倒填")
    held = district.version_vector()[street.id]
    with pytest.raises(ChainError, match="stamped no later than the entry before it"):
        _push(street, district, street.id)
    assert district.version_vector()[street.id] == held
    assert district.conn.execute("SELECT title FROM notes").fetchall() == [("先",)]


def test_a_chain_an_older_release_took_in_is_relayed_without_blocking_the_district(make_node, monkeypatch):
    """The rule holds a child's own entries; relayed ones were judged at their own edge, perhaps by an
    older release without it. Refusing them would refuse the district's own entries from then on."""
    city, district, street = make_node("c", scope="sx"), make_node("d", scope="sx/yc"), make_node("b", "sx/yc/b")
    with street.writer("w") as w:
        w.insert("notes", {"title": "先"})
    _back_dated(street, "倒填")
    with monkeypatch.context() as older:  # the district runs the release before the rule
        older.setattr(receipt, "check_stamps_rise", lambda origin, entries, prev_hlc: None)
        _push(street, district, street.id)
    with district.writer("w") as w:
        w.insert("notes", {"title": "区里的"})
    _push(district, city, street.id)
    _push(district, city, district.id)
    held = city.version_vector()
    assert {o: held.get(o) for o in (street.id, district.id)} == {o: district.version_vector()[o]
                                                                 for o in (street.id, district.id)}

