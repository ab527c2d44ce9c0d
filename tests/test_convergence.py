"""The core promise, tested as a property: same set of entries, same state.

Three nodes make random inserts, updates and deletes on an lww table and
conflicting inserts on an append-only table with a unique key, and exchange
entries in random orders, random prefixes and with duplicates (resending
what the receiver already holds), relayed through each other. After every
run, any two nodes holding the same entries must hold identical rows
(hidden version columns included) and identical conflict lists; so must a
node after ``rebuild``. Finally everyone exchanges everything and all three
must be identical.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import PROBE
from hemei.cli.main import BUILTIN_PLUGINS
from hemei.core.node import Node

NOTE_KEYS = [f"note-{i}" for i in range(4)]
VOTES = ["v1", "v2"]
VOTERS = ["p1", "p2", "p3"]


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """Three initialised homes, copied for each example (key generation and schema once)."""
    root = tmp_path_factory.mktemp("templates")
    for i, scope in enumerate(["yc/fs/a", "yc/fs/b", "yc"]):
        node = Node.init(root / f"n{i}", name=f"n{i}", scope=scope, actor="t", available=PROBE,
                         builtins=BUILTIN_PLUGINS)
        node.set_module_enabled("hook_probe", True, "t")
        node.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        node.close()
    return root


note_op = st.one_of(
    st.tuples(st.just("insert"), st.sampled_from(NOTE_KEYS), st.sampled_from(["甲", "乙", "丙"]), st.integers(0, 3)),
    st.tuples(st.just("update"), st.sampled_from(NOTE_KEYS), st.sampled_from(["丁", "戊", None]), st.integers(0, 3)),
    st.tuples(st.just("delete"), st.sampled_from(NOTE_KEYS), st.none(), st.none()),
    st.tuples(st.just("ballot"), st.sampled_from(VOTES), st.sampled_from(VOTERS), st.sampled_from("AB")),
)
step = st.one_of(
    st.tuples(st.just("write"), st.integers(0, 2), st.lists(note_op, min_size=1, max_size=4)),
    st.tuples(st.just("send"), st.integers(0, 2), st.integers(0, 2), st.integers(0, 3)),
)


def _write(node: Node, ops) -> None:
    """Apply the ops that are valid locally; a local error would roll the write back."""
    with node.writer("w") as w:
        for op, a, b, c in ops:
            row = node.conn.execute("SELECT _deleted FROM notes WHERE id = ?", (a,)).fetchone()
            if op == "insert" and row is None:
                w.insert("notes", {"id": a, "title": b, "n": c})
            elif op == "update" and row is not None and row[0] == 0:
                w.update("notes", a, {"body": b, "n": c})
            elif op == "delete" and row is not None and row[0] == 0:
                w.delete("notes", a)
            elif op == "ballot":
                taken = node.conn.execute("SELECT 1 FROM ballots WHERE vote = ? AND voter = ?", (a, b)).fetchone()
                if not taken:
                    w.insert("ballots", {"vote": a, "voter": b, "choice": c})
            w.flush()


def _send(src: Node, dst: Node, rewind: int) -> None:
    """Everything ``src`` holds that ``dst`` lacks, starting ``rewind`` entries early (duplicates)."""
    have = dst.version_vector()
    for origin, size in src.version_vector().items():
        if origin == dst.id:
            continue
        after = max(0, have.get(origin, 0) - rewind)
        while (batch := src.read_batch(origin, after, limit=3)) is not None:
            dst.apply_batch(batch)
            after = batch.entries[-1][0]


def _state(node: Node) -> tuple:
    q = node.conn.execute
    return (q("SELECT * FROM notes ORDER BY id").fetchall(),
            q("SELECT * FROM ballots ORDER BY id").fetchall(),
            q("SELECT tbl, pk, hlc, origin, kind, reason, row, ukey FROM _hemei_conflicts ORDER BY 1, 2, 3, 4").fetchall())


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=1, max_size=14))
def test_replicas_with_the_same_entries_are_identical(templates, steps):
    work = Path(tempfile.mkdtemp(prefix="hemei-prop-"))
    nodes: list[Node] = []
    try:
        for i in range(3):
            shutil.copytree(templates / f"n{i}", work / f"n{i}")
            nodes.append(Node.open(work / f"n{i}", available=PROBE, builtins=BUILTIN_PLUGINS))
        for kind, a, b, c in ((s[0], s[1], s[2], s[3] if len(s) > 3 else None) for s in steps):
            if kind == "write":
                _write(nodes[a], b)
            elif a != b:
                _send(nodes[a], nodes[b], c)

        states = [_state(n) for n in nodes]
        vectors = [n.version_vector() for n in nodes]
        for i in range(3):
            for j in range(i + 1, 3):
                if vectors[i] == vectors[j]:
                    assert states[i] == states[j]
        nodes[0].rebuild()
        assert _state(nodes[0]) == states[0]

        for _ in range(2):  # everyone gets everything (two rounds through the relays)
            for i in range(3):
                for j in range(3):
                    if i != j:
                        _send(nodes[i], nodes[j], 0)
        final = [_state(n) for n in nodes]
        assert final[0] == final[1] == final[2]
        assert nodes[0].version_vector() == nodes[1].version_vector() == nodes[2].version_vector()
    finally:
        for n in nodes:
            n.close()
        shutil.rmtree(work, ignore_errors=True)
