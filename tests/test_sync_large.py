"""Entries near the payload limit travel by every transport: messages are cut by bytes as well as entries.

A parent takes at most ``wire.MAX_DECOMPRESSED`` of JSON in one request (it
bounds what parsing a body costs it), so every sender keeps under it,
however large the entries: a push, a pull answer and a bundle frame (a
child and a bundle import take more, for what hemei 0.1.0 sent, but this
release sends no more than a parent takes).
"""

from __future__ import annotations

import json
import zlib

import pytest

from conftest import PROBE
from hemei.cli.main import BUILTIN_PLUGINS
from hemei.core.node import BATCH_CHARS, Node
from hemei.core.writer import MAX_PAYLOAD, SIGN_BYTES
from hemei.sync import bundles, wire
from hemei.sync.client import ParentLink
from tree import Tree, note_titles

#: Characters of one note's body: 3 bytes each in UTF-8, so about 200 KiB of payload.
BODY_CHARS = 200 * 1024 // 3
#: Enough large notes for several receivers' limits in one transaction.
NOTES = 1 + wire.MAX_DECOMPRESSED // (BODY_CHARS * 3)


def write_large_notes(node: Node, tag: str, scope: str, count: int = NOTES, chars: int = BODY_CHARS) -> None:
    with node.writer("tester") as w:
        for i in range(count):
            w.insert("notes", {"title": f"{tag} {i}", "scope": scope, "body": "府" * chars})


def spans(node: Node) -> list[int]:
    """Payload bytes between consecutive signed checkpoints of the node's own log."""
    out, size = [], 0
    for payload, sig in node.conn.execute(
            "SELECT CAST(l.payload AS BLOB), l.sig FROM _hemei_log l JOIN _hemei_origins o ON o.ix = l.origin"
            " WHERE o.node_id = ? ORDER BY l.seq", (node.id,)):
        size += len(payload)
        if sig is not None:
            out.append(size)
            size = 0
    return out


def test_a_transaction_of_large_entries_is_signed_every_mebibyte_and_read_in_bounded_batches(tmp_path):
    node = Node.init(tmp_path / "fs", name="府山街道", scope="sx/yc/fs", actor="setup", available=PROBE,
                     builtins=BUILTIN_PLUGINS)
    node.set_module_enabled("hook_probe", True, "setup")
    write_large_notes(node, "大", "sx/yc/fs")
    assert max(spans(node)) <= SIGN_BYTES + MAX_PAYLOAD, spans(node)
    copy = Node.init(tmp_path / "copy", name="复制", scope="sx/yc/fs", actor="setup", available=PROBE,
                     builtins=BUILTIN_PLUGINS)
    copy.set_module_enabled("hook_probe", True, "setup")
    after, sizes = 0, []
    while (batch := node.read_batch(node.id, after, limit=1000)) is not None:
        sizes.append(sum(len(e[5]) for e in batch.entries if len(e) == 7))
        copy.apply_batch(batch)  # each ends at a checkpoint: verifies on its own
        after = batch.entries[-1][0]
    assert len(sizes) > 1 and max(sizes) <= BATCH_CHARS, sizes
    assert note_titles(copy) == note_titles(node) and len(note_titles(copy)) == NOTES
    node.close()
    copy.close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    t = Tree(tmp_path_factory.mktemp("large")).build({"district": "sx/yc", "street": "sx/yc/fs"},
                                                    serve=["district"], enroll=[("district", "street")])
    yield t
    t.stop()


def inflated_sizes(frames) -> list[int]:
    return [len(zlib.decompress(frame)) for frame in frames]


def test_large_entries_sync_up_and_down_over_http(pair):
    with pair.open("street") as street:
        write_large_notes(street, "街道", "sx/yc/fs")
    with pair.open("district") as district:
        write_large_notes(district, "区里", "sx/yc")  # the street's branch: it gets them in full
    with pair.open("street") as street, ParentLink(street, pair.servers["district"].url) as link:
        link.learn_time()
        answer = link._send("POST", "/api/sync/pull", wire.encode({"vv": street.version_vector()}))
        first = wire.decode(answer.content, wire.MAX_ANSWER_INFLATED, wire.MAX_ANSWER_COMPRESSED)
        assert first["more"] and inflated_sizes([answer.content])[0] <= wire.MAX_DECOMPRESSED
    done = pair.sync("street")
    assert done["ok"] and done["pushed"] >= NOTES and done["pulled"] >= NOTES, done
    with pair.open("street") as street, pair.open("district") as district:
        assert note_titles(street) == note_titles(district)
        assert len(note_titles(district)) == 2 * NOTES


def test_large_entries_travel_in_a_bundle(pair, tmp_path):
    with pair.open("street") as street:
        write_large_notes(street, "捎带", "sx/yc/fs")
    out = tmp_path / "府山.hemei"
    pair.ok("street", "bundle", "export", "--out", str(out))
    data, frames, at = out.read_bytes(), [], len(bundles.MAGIC)
    while size := int.from_bytes(data[at:at + 8], "big"):
        frames.append(data[at + 8:at + 8 + size])
        at += 8 + size
    assert len(frames) > 2 and max(inflated_sizes(frames)) <= wire.MAX_DECOMPRESSED
    imported = json.loads(pair.ok("district", "bundle", "import", str(out), "--json"))
    assert imported["new"] == NOTES, imported
    with pair.open("district") as district:
        assert {f"捎带 {i}" for i in range(NOTES)} <= note_titles(district)


def test_messages_as_0_1_0_cut_them_by_entries_alone_are_still_taken(pair, tmp_path, monkeypatch):
    """Found in review: 0.1.0 pushes 2,000 entries a message and writes 10,000 a bundle frame, whatever
    their size, so a parent of this release taking 8 MiB refused an old street's backlog of long case
    descriptions."""
    pair.sync("street")  # the district holds all of the street: the old-style message follows on
    with pair.open("street") as street:
        held = street.version_vector()[street.id]
        write_large_notes(street, "旧版推送", "sx/yc/fs", count=2000, chars=1700)  # about 10 MB
        batch = street.read_batch(street.id, held - 1, limit=2001, max_chars=1 << 40)
        assert len(batch.entries) == 2001
        message = wire.encode({"batches": [wire.batch_to_json(batch)]})
        assert wire.MESSAGE_BYTES < len(zlib.decompress(message)) <= wire.MAX_DECOMPRESSED
        with ParentLink(street, pair.servers["district"].url) as link:
            link.learn_time()
            pushed = link.call_raw("/api/sync/push", message)
        assert pushed["results"][0]["new"] == 2000, pushed  # the first repeats the last the district held
        write_large_notes(street, "旧版捎带", "sx/yc/fs", count=10_000, chars=700)
        monkeypatch.setattr(wire, "MESSAGE_BYTES", 1 << 40)  # bundle frames of 10,000 entries, as 0.1.0 wrote
        out = tmp_path / "旧版.hemei"
        bundles.export_push(street, out)
    imported = json.loads(pair.ok("district", "bundle", "import", str(out), "--json"))
    assert imported["new"] == 10_000, imported


def test_a_full_message_is_sent_without_reading_a_batch_more(tmp_path):
    """Found in review: a pull answer read (and serialised, and for a child hashed) a batch it then left
    for the next answer."""
    node = Node.init(tmp_path / "fs", name="府山街道", scope="sx/yc/fs", actor="setup", available=PROBE,
                     builtins=BUILTIN_PLUGINS)
    node.set_module_enabled("hook_probe", True, "setup")
    for tag in "甲乙丙":
        with node.writer("tester") as w:
            for i in range(1000):
                w.insert("notes", {"title": f"{tag} {i}", "scope": "sx/yc/fs"})
    read = []

    def batches():
        after = node.version_vector()[node.id] - 3000
        while (batch := node.read_batch(node.id, after, limit=1000)) is not None:
            read.append(batch)
            yield batch
            after = batch.entries[-1][0]

    parts, taken = next(wire.messages(batches(), max_entries=2000))
    assert sum(len(b.entries) for b in taken) == 2000 and len(read) == len(taken) == 2
    node.close()
