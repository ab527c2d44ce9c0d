"""Hostile and broken requests to a real `hemei serve`: each refused with the right 4xx, nothing written."""

from __future__ import annotations

import base64
import json
import time
import zlib

import httpx
import pytest

from hemei.core.errors import HemeiError
from hemei.core.identity import node_id_from_public_key, public_key_raw, write_private_key
from hemei.core.node import Node
from hemei.sync import bundles, client, signing, wire
from hemei.sync.client import ParentLink, SyncRefused, read_answer
from test_store import _back_dated
from server import answer_before_body
from tree import Tree, write_notes


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    t = Tree(tmp_path_factory.mktemp("net")).build(
        {"city": "sx", "district": "sx/yc", "fushan": "sx/yc/fs", "beihai": "sx/yc/bh", "stranger": "sx/yc/zz"},
        serve=["city", "district"], enroll=[("district", "fushan"), ("district", "beihai")])
    with t.open("beihai") as b:
        write_notes(b, [("北海的记录", "sx/yc/bh")])
    t.sync("beihai")
    t.sync("fushan")
    yield t
    t.stop()


def district_state(net) -> tuple:
    """Everything a refusal must leave alone (entries of other origins, every state row), and the refusals."""
    with net.open("district") as d:
        vv = {o: s for o, s in d.version_vector().items() if o != d.id}
        notes = d.conn.execute("SELECT * FROM notes ORDER BY id").fetchall()
        peers = d.conn.execute("SELECT node_id, revoked, modules FROM _hemei_peers ORDER BY 1").fetchall()
        # Logged, or counted beside a like one logged within the hour, the count logged once the hour is
        # over (peers.record_refusal).
        logged = d.conn.execute("SELECT coalesce(sum(coalesce(json_extract(payload, '$.refusals'), 1)), 0) FROM"
                                " _hemei_log WHERE kind = 'sync.refused'").fetchone()[0] + \
            d.conn.execute("SELECT coalesce(sum(repeats), 0) FROM _hemei_refusal_repeats").fetchone()[0]
        local = d.conn.execute("SELECT count(*) FROM _hemei_anonymous_refusals").fetchone()[0]
    return (vv, notes, peers), (logged, local)


def refused(net, call, status: int, code: str, signed_by_peer: bool = True, match: str = "") -> None:
    """Run ``call``; it must get ``status``/``code``, write nothing, and leave one refusal on record.

    A request a known peer signed is refused in the log (or counted beside a like one logged within the
    hour); one nobody proved to send, or a replay, goes to the bounded local table (anyone can send those:
    they must not grow the log relayed upwards).
    """
    before, (logged, local) = district_state(net)
    with pytest.raises(SyncRefused) as err:
        call()
    assert (err.value.status, err.value.code) == (status, code), err.value.message
    assert match in err.value.message
    after, counts = district_state(net)
    assert after == before
    assert counts == ((logged + 1, local) if signed_by_peer else (logged, local + 1))


def raw_post(url: str, path: str, body: bytes, headers: dict) -> httpx.Response:
    return httpx.post(url + path, content=body, headers=headers)


def check(reply: httpx.Response) -> None:
    read_answer(reply, raw=True)


def _as_refusal(call) -> None:
    """Run a local call (a bundle import); its refusal raised as a request's would be, for ``refused``."""
    try:
        call()
    except HemeiError as exc:
        raise SyncRefused(exc.message, code=exc.code, status=exc.status) from None


def signed_headers(node: Node, key, path: str, body: bytes) -> dict:
    return signing.sign_request(key, node.id, "POST", path, "", body, int(time.time()))


def test_unsigned_request_is_refused(net):
    url = net.servers["district"].url
    body = wire.encode({"vv": {}})
    refused(net, lambda: check(raw_post(url, "/api/sync/hello", body, {})), 401, "unsigned", signed_by_peer=False)


def test_forged_signature_is_refused(net, tmp_path):
    url = net.servers["district"].url
    other_key = write_private_key(tmp_path / "other.key")
    with net.open("fushan") as fushan:
        body = wire.encode({"vv": {}})
        headers = signed_headers(fushan, other_key, "/api/sync/hello", body)  # fushan's id, someone else's key
    refused(net, lambda: check(raw_post(url, "/api/sync/hello", body, headers)), 401, "bad_signature",
            signed_by_peer=False)


def test_tampered_body_is_refused(net):
    url = net.servers["district"].url
    with net.open("fushan") as fushan:
        body = wire.encode({"vv": {}})
        headers = signed_headers(fushan, fushan.key, "/api/sync/hello", body)
    refused(net, lambda: check(raw_post(url, "/api/sync/hello", wire.encode({"vv": {"x": 1}}), headers)),
            401, "bad_signature", signed_by_peer=False)


def test_replayed_request_is_refused(net):
    url = net.servers["district"].url
    with net.open("fushan") as fushan:
        body = wire.encode({"vv": fushan.version_vector()})
        headers = signed_headers(fushan, fushan.key, "/api/sync/pull", body)
    assert raw_post(url, "/api/sync/pull", body, headers).status_code == 200
    # Anyone who saw the request can send it again: kept with the unauthenticated refusals, never logged.
    for _ in range(3):
        refused(net, lambda: check(raw_post(url, "/api/sync/pull", body, headers)), 401, "replay",
                signed_by_peer=False)


def test_stale_signature_is_refused(net):
    url = net.servers["district"].url
    with net.open("fushan") as fushan:
        body = wire.encode({"vv": {}})
        headers = signing.sign_request(fushan.key, fushan.id, "POST", "/api/sync/hello", "", body,
                                       int(time.time()) - 3600)
    refused(net, lambda: check(raw_post(url, "/api/sync/hello", body, headers)), 401, "expired_signature",
            signed_by_peer=False)


def test_unknown_node_is_refused(net):
    with net.open("stranger") as stranger:
        with ParentLink(stranger, net.servers["district"].url) as link:
            link.learn_time()
            refused(net, lambda: link.call("/api/sync/hello", {"vv": {}}), 401, "unknown_node", signed_by_peer=False)


def _hostile_push(net, entries_scope: str | None = None, update_pk: str | None = None):
    """fushan signs and pushes an entry it should not write (a buggy or hostile street)."""
    with net.open("fushan") as fushan:
        have = fushan.version_vector()[fushan.id]
        with fushan.writer("mallory") as w:
            if update_pk:
                w._append("row.update", fushan.scope, {"t": "notes", "pk": update_pk, "v": {"title": "改掉"}})
            else:
                w._append("row.insert", entries_scope, {"t": "notes", "pk": fushan.new_id(), "v": {"title": "越界"}})
        batch = fushan.read_batch(fushan.id, have - 1)
        link = ParentLink(fushan, net.servers["district"].url)
        link.learn_time()
        return lambda: link.call("/api/sync/push", {"batches": [wire.batch_to_json(batch)]}), link


def test_out_of_scope_row_is_refused(net):
    push, link = _hostile_push(net, entries_scope="sx/yc/bh")
    with link:
        refused(net, push, 403, "scope_violation")


def test_a_siblings_batch_is_refused_before_anything_of_its_chain_is_told(net):
    """Replayed from the sibling's bundle or made up with its id: either used to answer with the size the
    district holds of the sibling (counts and vv, or a gap error naming it). Found in review."""
    with net.open("beihai") as beihai:
        genuine = beihai.read_batch(beihai.id, 0)  # held by the district already: nothing new in it
        made_up = genuine._replace(entries=[(10 ** 9, bytes(32))], signature=bytes(64))
    with net.open("district") as d:
        held = str(d.version_vector()[beihai.id])
    with net.open("fushan") as fushan, ParentLink(fushan, net.servers["district"].url) as link:
        link.learn_time()
        for batch in (genuine, made_up):
            with pytest.raises(SyncRefused) as err:
                link.call("/api/sync/push", {"batches": [wire.batch_to_json(batch)]})
            assert (err.value.status, err.value.code) == (403, "scope_violation")
            assert "not known here as one inside it" in err.value.message
            assert f"#{held}" not in err.value.message and "holds" not in err.value.message
        # One held nowhere here and not from its start (a bundle older than the district's restore): a gap.
        stranger = write_private_key(net.root / "stranger.key")
        public = public_key_raw(stranger)
        unknown = genuine._replace(origin=node_id_from_public_key(public), public_key=public,
                                   entries=[(5, bytes(32))], signature=bytes(64))
        with pytest.raises(SyncRefused) as err:
            link.call("/api/sync/push", {"batches": [wire.batch_to_json(unknown)]})
        assert err.value.code == "chain_invalid" and "holds none of them: gap" in err.value.message


def test_changing_a_siblings_row_is_refused(net):
    with net.open("district") as d:
        pk = d.conn.execute("SELECT id FROM notes WHERE title = '北海的记录'").fetchone()[0]
    push, link = _hostile_push(net, update_pk=pk)
    with link:
        refused(net, push, 403, "scope_violation")


def test_malformed_batches_are_refused(net):
    with net.open("beihai") as beihai:
        with ParentLink(beihai, net.servers["district"].url) as link:
            link.learn_time()
            refused(net, lambda: link.call("/api/sync/push", {"batches": [{"origin": 5}]}), 400, "malformed_batch")
            refused(net, lambda: link.call("/api/sync/push", {"batches": "x"}), 400, "malformed_batch")
            for modules in (["hook_probe"], {"hook_probe": 0}, {"hook_probe": "2"}, {"": 1}):
                refused(net, lambda: link.call("/api/sync/hello", {"vv": {}, "modules": modules}), 400,
                        "malformed_batch")
            signed = {"head": "00" * 32, "signature": "00" * 64}
            for size in ("3", " 3 ", 3.0, -2 ** 63, 0, 2 ** 64 - 1):
                refused(net, lambda: link.call("/api/sync/hello", {"vv": {}, "checkpoint": {**signed, "size": size}}),
                        400, "malformed_batch")
            # Found in review: a 1-byte head was a chain error, a spaced one taken; junk vv keys were kept and
            # sizes past 2**63 shown as backlogs.
            for head in ("00", " " + "00" * 32, "00" * 32 + " ", "zz" * 32, None):
                refused(net, lambda: link.call("/api/sync/hello", {"vv": {}, "checkpoint": {
                    **signed, "size": 1, "head": head}}), 400, "malformed_batch")
            for vv in ({"junk": 1}, {beihai.id.lower(): 1}, {beihai.id.replace("-", ""): 1}, {beihai.id: 2 ** 63},
                       {beihai.id: -1}, {beihai.id: True}):
                refused(net, lambda: link.call("/api/sync/hello", {"vv": vv}), 400, "malformed_batch")
            for skip in ("x", 5, {beihai.id: 1}, [beihai.id.lower()], [[beihai.id]]):
                refused(net, lambda: link.call("/api/sync/pull", {"vv": {}, "skip": skip}), 400, "malformed_batch")
            # Counts past any limit are served as the limit (they used to overflow SQLite: a 500).
            reply = link.call("/api/sync/pull", {"vv": {}, "batch_size": 2 ** 64 - 1, "max_entries": 2 ** 63})
            assert reply["batches"] and reply["more"] is False
            # A checkpoint is read for its shape with the body (only checked values outlive a parse).
            # The child's measure of the parent's clock is kept all the same (protocol.md: even when refused).
            for ahead, checkpoint in enumerate(([[]] * 1000, {"size": 1, "head": [[]] * 1000}, {"size": 1, "junk": 1},
                                                {"size": "3", "head": "0" * 64, "signature": "0" * 128}), 111):
                refused(net, lambda: link.call("/api/sync/hello", {"vv": {}, "checkpoint": checkpoint,
                                                                   "parent_clock_ahead_ms": ahead}),
                        400, "malformed_batch")
                with net.open("district") as district:
                    assert district.conn.execute("SELECT clock_ahead_ms FROM _hemei_peers WHERE node_id = ?",
                                                 (beihai.id,)).fetchone()[0] == -ahead
            for offset in ("5", 1.5, True, 2 ** 62):
                refused(net, lambda: link.call("/api/sync/hello", {"vv": {}, "parent_clock_ahead_ms": offset}), 400,
                        "malformed_batch")
            for zone in ("480", 480.0, True, 24 * 60 + 1, -24 * 60 - 1):
                refused(net, lambda: link.call("/api/sync/hello", {"vv": {}, "utc_offset_min": zone}), 400,
                        "malformed_batch")
            refused(net, lambda: link.call("/api/sync/push", {"batches": [{
                "origin": beihai.id, "public_key": base64.b64encode(beihai.public_key).decode(),
                "signature": "AAAA", "entries": [[1, 2]]}]}), 400, "malformed_batch")
            body = wire.encode({"vv": {}}) + b"junk"
            headers = signed_headers(beihai, beihai.key, "/api/sync/hello", body)
            refused(net, lambda: check(raw_post(link.url, "/api/sync/hello", body, headers)), 400, "malformed_batch")
            body = b"not compressed"
            headers = signed_headers(beihai, beihai.key, "/api/sync/push", body)
            refused(net, lambda: check(raw_post(link.url, "/api/sync/push", body, headers)), 400, "malformed_batch")
            bomb = zlib.compress(b"[" * (wire.MAX_DECOMPRESSED + 10), 9)
            headers = signed_headers(beihai, beihai.key, "/api/sync/push", bomb)
            refused(net, lambda: check(raw_post(link.url, "/api/sync/push", bomb, headers)), 400, "malformed_batch")


def test_a_forged_batch_signature_is_refused(net):
    with net.open("beihai") as beihai:
        write_notes(beihai, [("再来一条", "sx/yc/bh")])
        batch = beihai.read_batch(beihai.id, beihai.version_vector()[beihai.id] - 1)
        forged = wire.batch_to_json(batch._replace(signature=bytes(64)))
        with ParentLink(beihai, net.servers["district"].url) as link:
            link.learn_time()
            refused(net, lambda: link.call("/api/sync/push", {"batches": [forged]}), 422, "chain_invalid")


def test_oversized_body_is_refused(net):
    with net.open("beihai") as beihai:
        body = b"x" * (wire.MAX_COMPRESSED + 1)
        headers = signed_headers(beihai, beihai.key, "/api/sync/push", body)
    before, (logged, local) = district_state(net)
    reply = raw_post(net.servers["district"].url, "/api/sync/push", body, headers)
    assert reply.status_code == 413 and reply.json()["error"]["code"] == "body_too_large"
    after, counts = district_state(net)
    assert after == before
    # Refused before its signature could be read (the body never was): recorded as a request nobody proved
    # to send (found by a hostile review: refusals made before the handler ran were not recorded at all).
    assert counts == (logged, local + 1)
    with net.open("district") as d:
        code, where = d.conn.execute("SELECT code, request FROM _hemei_anonymous_refusals"
                                     " ORDER BY id DESC LIMIT 1").fetchone()
    assert (code, where) == ("body_too_large", "/api/sync/push")
    joined = raw_post(net.servers["district"].url, "/api/sync/join", b"x" * 100_000, {})
    assert joined.status_code == 413
    assert district_state(net)[1] == (logged, local + 2)


def test_tokens_reused_altered_expired_or_foreign_are_refused(net):
    district_url = net.servers["district"].url
    token = net.ok("district", "invite", "--scope", "sx/yc/zz", "--name", "stranger", "--ttl", "1h").strip()
    with net.open("stranger") as stranger:
        def join_raw(tok):
            with ParentLink(stranger, district_url) as link:
                link.learn_time()
                return link.call("/api/sync/join", {
                    "token": tok, "node_id": stranger.id, "name": stranger.name, "scope": stranger.scope,
                    "public_key": base64.b64encode(stranger.public_key).decode()})

        altered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
        refused(net, lambda: join_raw(altered), 403, "invalid_token", signed_by_peer=False)
        foreign = net.ok("city", "invite", "--scope", "sx/yc/zz", "--name", "stranger", "--url",
                         net.servers["city"].url).strip()
        refused(net, lambda: join_raw(foreign), 403, "invalid_token", signed_by_peer=False)
        short = net.ok("district", "invite", "--scope", "sx/yc/zz", "--name", "stranger", "--ttl", "1s").strip()
        time.sleep(1.2)
        refused(net, lambda: join_raw(short), 403, "token_expired", signed_by_peer=False)
        with pytest.raises(client.enroll.InvalidToken, match="expired"):
            client.join(stranger, short, "op")  # the child checks before it even asks
        assert client.join(stranger, token, "op")["scope"] == "sx/yc"
    with net.open("stranger") as stranger:
        stranger.conn.execute("DELETE FROM _hemei_peers")  # forget the parent, try the token again
        refused(net, lambda: join_raw(token), 403, "token_used", signed_by_peer=False)
    done = net.hemei("stranger", "join", "hemei1.garbage")
    assert done.returncode == 1 and "damaged" in done.stderr and "Traceback" not in done.stderr


def test_reinserting_a_siblings_row_is_refused(net, tmp_path):
    with net.open("district") as d:
        pk = d.conn.execute("SELECT id FROM notes WHERE title = '北海的记录'").fetchone()[0]
    other = Tree(tmp_path)
    other.init("hijacker", "sx/yc/hj")
    token = net.ok("district", "invite", "--scope", "sx/yc/hj", "--name", "hijacker", "--ttl", "1h").strip()
    with other.open("hijacker") as street:
        client.join(street, token, "op")
        client.sync_once(street)
        with street.writer("mallory") as w:  # same key, its own scope: would move the row into this street
            w._append("row.insert", street.scope, {"t": "notes", "pk": pk, "v": {"title": "HIJACKED"}})
        batch = street.read_batch(street.id, street.version_vector()[street.id] - 1)
        with ParentLink(street, net.servers["district"].url) as link:
            link.learn_time()
            refused(net, lambda: link.call("/api/sync/push", {"batches": [wire.batch_to_json(batch)]}),
                    403, "scope_violation")
    with net.open("district") as d:
        assert d.conn.execute("SELECT title, scope FROM notes WHERE id = ?", (pk,)).fetchone() == ("北海的记录",
                                                                                                 "sx/yc/bh")


def test_a_child_whose_log_declares_another_scope_is_refused(net, tmp_path):
    liar = Tree(tmp_path)
    liar.init("liar", "sx/yc/bh/x")  # its first entry declares a place inside a sibling
    token = net.ok("district", "invite", "--scope", "sx/yc/ly", "--name", "liar", "--ttl", "1h").strip()
    with liar.open("liar") as node:
        with ParentLink(node, net.servers["district"].url) as link:
            link.learn_time()
            link.call("/api/sync/join", {"token": token, "node_id": node.id, "name": "liar", "scope": "sx/yc/ly",
                                         "public_key": base64.b64encode(node.public_key).decode()})
            batch = node.read_batch(node.id, 0)
            refused(net, lambda: link.call("/api/sync/push", {"batches": [wire.batch_to_json(batch)]}),
                    403, "scope_violation")


def test_join_bodies_stay_small_before_anyone_is_authenticated(net, tmp_path):
    url = net.servers["district"].url
    bomb = zlib.compress(b" " * (1024 * 1024), 9)  # 1 KB that inflates to 1 MB
    assert len(bomb) < 16 * 1024
    refused(net, lambda: check(raw_post(url, "/api/sync/join", bomb, {})), 400, "malformed_batch",
            signed_by_peer=False)
    big = raw_post(url, "/api/sync/join", b"x" * (20 * 1024), {})
    assert big.status_code == 413
    weird = wire.encode({"token": "t", "node_id": 5, "name": "n", "scope": "s", "public_key": "AAAA"})
    refused(net, lambda: check(raw_post(url, "/api/sync/join", weird, {})), 400, "invalid_input",
            signed_by_peer=False)
    # A join must be signed under the joining node's own id (its nonce is kept under that id).
    key = write_private_key(tmp_path / "newcomer.key")
    public = public_key_raw(key)
    body = wire.encode({"token": "t", "node_id": node_id_from_public_key(public), "name": "新来的", "scope": "sx/yc/x",
                        "public_key": base64.b64encode(public).decode()})
    with net.open("beihai") as beihai:
        headers = signing.sign_request(key, beihai.id, "POST", "/api/sync/join", "", body, int(time.time()))
    refused(net, lambda: check(raw_post(url, "/api/sync/join", body, headers)), 401, "bad_signature",
            signed_by_peer=False, match="signed as")


def test_bad_signature_padding_and_absurd_clocks_get_4xx(net):
    url = net.servers["district"].url
    with net.open("beihai") as beihai:
        body = wire.encode({"vv": {}})
        headers = signed_headers(beihai, beihai.key, "/api/sync/hello", body)
        headers["Signature"] = "hemei=:" + "A" * 81 + ":"
        refused(net, lambda: check(raw_post(url, "/api/sync/hello", body, headers)), 401, "bad_signature",
                signed_by_peer=False)
        for hlc in (2 ** 64 - 1, -(2 ** 63)):
            have = beihai.version_vector()[beihai.id]
            with beihai.writer("w") as w:
                w.insert("notes", {"title": "钟", "scope": "sx/yc/bh"})
            batch = beihai.read_batch(beihai.id, have)
            entries = [(*e[:1], hlc, *e[2:]) if e[3].startswith("row.") else e for e in batch.entries]
            forged = wire.batch_to_json(batch._replace(entries=entries))
            with ParentLink(beihai, url) as link:
                link.learn_time()
                refused(net, lambda: link.call("/api/sync/push", {"batches": [forged]}), 422, "chain_invalid")
            forget_since(beihai, have, "钟")


def forget_since(street: Node, have: int, title: str) -> None:
    """Take back a street's entries after #``have`` and the note they wrote: keeps the fixture's street usable."""
    street.conn.execute("DELETE FROM notes WHERE title = ?", (title,))
    street.conn.execute("DELETE FROM _hemei_log WHERE seq > ? AND origin = 1", (have,))
    street.conn.execute("UPDATE _hemei_origins SET size = ?, head = (SELECT hash FROM _hemei_log WHERE"
                        " origin = 1 AND seq = ?) WHERE ix = 1", (have, have))


def test_an_entry_back_dated_behind_what_the_street_sent_is_refused(net):
    """A street cannot stamp a new entry earlier than one it already sent (its clock set back, or hostile).

    "Earliest wins" for an append-only table's unique columns rests on the stamps, so a back-dated row
    could take a value a sibling holds; a real node's stamps only ever rise along its chain.
    """
    with net.open("beihai") as beihai:
        with net.open("district") as district:
            held = district.version_vector()[beihai.id]
        have, clock = beihai.version_vector()[beihai.id], beihai.clock.last
        _back_dated(beihai, "倒填")  # an hour before its last entry, which the district holds or will
        batch = beihai.read_batch(beihai.id, held, limit=10_000)
        try:
            with ParentLink(beihai, net.servers["district"].url) as link:
                link.learn_time()
                push = wire.batch_to_json(batch)
                refused(net, lambda: link.call("/api/sync/push", {"batches": [push]}), 422, "chain_invalid",
                        match="stamped no later than the entry before it")
        finally:
            forget_since(beihai, have, "倒填")
            beihai.conn.execute("UPDATE _hemei_meta SET value = ? WHERE key = 'hlc'", (clock,))


def test_hello_tells_a_street_nothing_about_its_siblings(net):
    with net.open("beihai") as beihai, net.open("fushan") as fushan:
        with ParentLink(beihai, net.servers["district"].url) as link:
            link.learn_time()
            reply = link.call("/api/sync/hello", {"vv": beihai.version_vector()})
        assert beihai.id in reply["vv"] and fushan.id not in reply["vv"]


def test_revoked_node_is_refused(net):
    with net.open("fushan") as fushan:
        fushan_id = fushan.id
    net.ok("district", "nodes", "revoke", fushan_id)
    done = net.hemei("fushan", "sync")
    assert done.returncode == 1 and "revoked" in done.stderr and "ask the parent's operator" in done.stderr
    # Found by an operator walkthrough: a watch retried for ever, each round a refusal in both logs.
    _, (on_record, _) = district_state(net)
    watched = net.hemei("fushan", "sync", "--watch", "--interval", "1s", "--json", timeout=60)
    assert watched.returncode == 1 and "revoked" in watched.stderr and "Traceback" not in watched.stderr
    rounds = [json.loads(line) for line in watched.stdout.splitlines()]
    assert len(rounds) == 1 and rounds[0]["ok"] is False and rounds[0]["error"]["code"] == "revoked"
    assert district_state(net)[1][0] == on_record + 1  # that one refusal, on record (counted: like the last)
    text = net.hemei("fushan", "sync", "--watch", "--interval", "1s", timeout=60)
    assert text.returncode == 1 and text.stderr.count("has been revoked. This node can no longer") == 1, text.stderr
    listed = {c["node_id"]: c["revoked"] for c in json.loads(net.ok("district", "nodes", "list", "--json"))}
    assert listed[fushan_id] is True
    with net.open("fushan") as fushan:
        with ParentLink(fushan, net.servers["district"].url) as link:
            link.learn_time()
            refused(net, lambda: link.call("/api/sync/hello", {"vv": {}}), 403, "revoked")
    assert "Traceback" not in net.servers["district"].output()
    # By USB stick too: refused, and on record like the request (it used to be refused unrecorded).
    stick = net.root / "revoked.hemei"
    with net.open("fushan") as fushan:
        write_notes(fushan, [("撤销后", "sx/yc/fs")])
        bundles.export_push(fushan, stick)
    with net.open("district") as d:
        refused(net, lambda: _as_refusal(lambda: bundles.import_bundle(d, stick)), 403, "revoked")


def test_hello_answers_with_a_checkpoint_the_district_signed_never_one_at_the_size_asked(net):
    """A signature inside one of the district's transactions would let whoever holds it cut that
    transaction in two and have the first half accepted. A child whose vv names such a size gets the
    district's checkpoint below it, one its writer signed (shorter than the child says it holds: a fork
    for an honest child, which holds only sizes the district signed)."""
    with net.open("district") as d:
        with d.writer("t") as w:  # one transaction: both notes or neither
            for title in ("调出", "调入"):
                w.insert("notes", {"title": title, "scope": "sx/yc"})
        size, district_id = d.version_vector()[d.id], d.id
        signed = {seq for (seq,) in d.conn.execute(
            "SELECT l.seq FROM _hemei_log l JOIN _hemei_origins o ON o.ix = l.origin"
            " WHERE o.node_id = ? AND l.sig IS NOT NULL", (d.id,))}
    assert size - 1 not in signed
    with net.open("beihai") as beihai:
        with ParentLink(beihai, net.servers["district"].url) as link:
            link.learn_time()
            reply = link.call("/api/sync/hello", {"vv": {**beihai.version_vector(), district_id: size - 1}})
    assert reply["checkpoint"]["size"] in signed and reply["checkpoint"]["size"] < size - 1


@pytest.mark.parametrize("path", ["/api/sync/push", "/api/sync/hello", "/api/sync/pull"])
def test_a_request_no_enrolled_child_signed_is_refused_before_its_body_is_read(net, tmp_path, path):
    """Found in review: every body was read whole (up to the sync limit) before its signature was looked
    at, so anyone could make a district hold megabytes per connection for nothing."""
    url = net.servers["district"].url
    declared = wire.MAX_COMPRESSED  # a body it would take, if it were signed
    before, (logged, local) = district_state(net)
    assert answer_before_body(url, path, {"Content-Type": wire.CONTENT_TYPE}, declared).startswith(b"HTTP/1.1 401")
    stranger_key = write_private_key(tmp_path / "stranger.key")
    stranger = node_id_from_public_key(public_key_raw(stranger_key))
    headers = signing.sign_request(stranger_key, stranger, "POST", path, "", b"body", int(time.time()))
    answer = answer_before_body(url, path, headers, declared)
    assert answer.startswith(b"HTTP/1.1 401") and b"unknown_node" in answer
    with net.open("fushan") as fushan:  # fushan's id, another key
        headers = signing.sign_request(stranger_key, fushan.id, "POST", path, "", b"body", int(time.time()))
    answer = answer_before_body(url, path, headers, declared)
    assert answer.startswith(b"HTTP/1.1 401") and b"bad_signature" in answer
    after, counts = district_state(net)
    assert after == before and counts == (logged, local + 3)  # each refusal recorded, none in the log


def _self_signed(tmp_path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 signed by itself: by no one the PC trusts."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "冒充的区")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


def test_an_https_parent_is_reached_only_with_a_certificate_the_pc_trusts(node, tmp_path, monkeypatch):
    """A link to an http parent builds no trust at all (httpx loaded the whole CA bundle for it, a sixth of
    a `hemei sync` with nothing to send); a link to an https parent still checks its certificate, and
    reaches it once the certificate is trusted."""
    import socket
    import ssl
    import threading

    plain = client.tls_for("http://127.0.0.1:8340")
    assert plain.verify_mode == ssl.CERT_REQUIRED and plain.check_hostname
    assert plain.cert_store_stats()["x509_ca"] == 0  # fails closed, should TLS ever be asked of it
    cert, key = _self_signed(tmp_path)
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(cert, key)
    health = json.dumps({"node_id": "冒充的区", "time_ms": time.time_ns() // 1_000_000}).encode()

    def answer(listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # closed: the test is over
                return
            try:
                with served.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(65536)
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                                + str(len(health)).encode() + b"\r\n\r\n" + health)
            except (ssl.SSLError, OSError):
                pass

    with socket.create_server(("127.0.0.1", 0)) as listener:
        threading.Thread(target=answer, args=(listener,), daemon=True).start()
        url = f"https://127.0.0.1:{listener.getsockname()[1]}"
        with ParentLink(node, url) as link, pytest.raises(client.Unreachable, match="certificate verify failed"):
            link.learn_time()
        monkeypatch.setenv("SSL_CERT_FILE", cert)  # the district's certificate, trusted on this PC
        with ParentLink(node, url) as link:
            assert link.learn_time()["node_id"] == "冒充的区"


def test_a_refusal_like_one_logged_within_the_hour_is_counted_and_the_count_logged_when_the_hour_is_over(net):
    """Found in review: every refusal of an enrolled node was a log entry, relayed up the tree, so a
    street under `sync --watch` whose clock stays wrong, or a node that keeps sending what is refused,
    grew every log above it by an entry per attempt. And (a later review) a count that waited for the next
    refusal of its kind would let a child hide all but its first from the log above."""
    def malformed_hello():
        with net.open("beihai") as beihai, ParentLink(beihai, net.servers["district"].url) as link:
            link.learn_time()
            link.call("/api/sync/hello", {"vv": {}, "modules": "不是表"})

    def logged(d) -> list[dict]:
        return [json.loads(p) for (p,) in d.conn.execute(
            "SELECT payload FROM _hemei_log WHERE kind = 'sync.refused' AND json_extract(payload, '$.peer') = ?"
            " AND json_extract(payload, '$.reason') LIKE 'modules must map%' ORDER BY seq", (beihai_id,))]

    def an_hour_on():
        with net.open("district") as d:
            d.conn.execute("UPDATE _hemei_refusal_repeats SET logged_ms = logged_ms - 3600 * 1000 - 1")
            return d.conn.execute("SELECT coalesce(sum(repeats), 0) FROM _hemei_refusal_repeats WHERE peer = ?",
                                  (beihai_id,)).fetchone()[0], len(logged(d))

    with net.open("beihai") as beihai:
        beihai_id = beihai.id
    an_hour_on()
    malformed_hello_refused = lambda: refused(net, malformed_hello, 400, "malformed_batch")  # noqa: E731
    for _ in range(4):
        malformed_hello_refused()
    counted, before = an_hour_on()
    assert counted == 3  # the first logged, three counted
    [street] = [p for p in json.loads(net.ok("district", "status", "--json"))["peers"] if p["node_id"] == beihai_id]
    assert street["refusals_not_logged"] == 3
    assert "3 more refusals like these since, counted" in net.ok("district", "status")
    # The hour over, the count is logged as one entry with the latest reason, then the new one as usual.
    malformed_hello_refused()
    with net.open("district") as d:
        latest = logged(d)
    assert len(latest) == before + 2 and latest[-2]["refusals"] == 3 and "refusals" not in latest[-1]
    [street] = [p for p in json.loads(net.ok("district", "status", "--json"))["peers"] if p["node_id"] == beihai_id]
    assert street["refusals"][1]["refusals"] == 3 and street["refusals_not_logged"] == 0
    # Nor does a count wait for another refusal of its kind: any peer's next contact logs it.
    malformed_hello_refused()
    counted, before = an_hour_on()
    assert counted == 1
    net.sync("beihai")
    with net.open("district") as d:
        latest = logged(d)
    assert len(latest) == before + 1 and latest[-1]["refusals"] == 1
