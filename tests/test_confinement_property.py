"""A parent's judgment of its children's changes does not depend on arrival order.

Street a inserts and edits its rows; the district edits them too (it may);
street b, holding a's keys by a leak, sends updates and deletes of them
(it may not). A city receives all three origins relayed by the district,
interleaved at random, a few entries at a time, so an update often arrives
before the insert it follows and waits for it. Whatever the order, the city
must hold the same rows, the same conflicts (each of b's changes to a's rows
kept as ``out_of_scope``) and the same waiting changes as a city that got
every insert first; none of b's values may reach a's rows; and a rebuild
must change nothing. A city that had the module off while the entries came
(so nothing was judged at receipt) must hold the same once it enables it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import PROBE, init_templates
from hemei.cli.main import BUILTIN_PLUGINS
from hemei.core.node import Node

KEYS = [f"k{i}" for i in range(3)]
HOMES = {"city": "sx", "district": "sx/yc", "a": "sx/yc/a", "b": "sx/yc/b", "reference": "sx", "late": "sx"}


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    return init_templates(tmp_path_factory.mktemp("confinement"), HOMES)


op = st.one_of(
    st.tuples(st.just("a_insert"), st.sampled_from(KEYS), st.sampled_from(["甲", "乙"])),
    st.tuples(st.just("a_update"), st.sampled_from(KEYS), st.sampled_from(["丙", "丁"])),
    st.tuples(st.just("district_update"), st.sampled_from(KEYS), st.sampled_from(["区改", "区批"])),
    st.tuples(st.just("b_update"), st.sampled_from(KEYS), st.just("HIJACKED")),
    st.tuples(st.just("b_delete"), st.sampled_from(KEYS), st.none()),
    st.tuples(st.just("b_insert"), st.sampled_from(["b0", "b1"]), st.sampled_from(["乙街"])),
)


def _write(nodes: dict[str, Node], kind: str, key: str, value) -> None:
    """One transaction (so one signed batch) per op; ops that make no sense here are skipped."""
    a, b, district = nodes["a"], nodes["b"], nodes["district"]
    if kind.startswith("a_"):
        exists = a.conn.execute("SELECT 1 FROM notes WHERE id = ?", (key,)).fetchone()
        with a.writer("w") as w:
            if kind == "a_insert" and not exists:
                w.insert("notes", {"id": key, "title": value})
            elif kind == "a_update" and exists:
                w.update("notes", key, {"title": value})
    elif kind == "district_update":
        _take(a, district)
        if district.conn.execute("SELECT 1 FROM notes WHERE id = ? AND _deleted = 0", (key,)).fetchone():
            with district.writer("w") as w:
                w.update("notes", key, {"body": value})
    elif kind == "b_insert":
        if not b.conn.execute("SELECT 1 FROM notes WHERE id = ?", (key,)).fetchone():
            with b.writer("w") as w:
                w.insert("notes", {"id": key, "title": value})
    else:  # signed by b, inside b's scope, naming a's row: only a leak of a's keys makes it possible
        for other in (a, district):
            b.clock.observe(other.clock.last)  # later than what it overwrites, or it would lose anyway
        with b.writer("mallory") as w:
            payload = {"t": "notes", "pk": key, "v": {"title": value} if value else {}}
            w._append("row.update" if value else "row.delete", b.scope, payload, None)


def _take(src: Node, dst: Node) -> None:
    """Everything of ``src``'s own chain that ``dst`` lacks, as replicas exchange freely."""
    after = dst.version_vector().get(src.id, 0)
    while (batch := src.read_batch(src.id, after)) is not None:
        dst.apply_batch(batch)
        after = batch.entries[-1][0]


def _relay(district: Node, city: Node, order: list[str], rng) -> None:
    """The district pushes its origins to the city: in ``order``, or interleaved at random if ``rng``."""
    cursors = {origin: city.version_vector().get(origin, 0) for origin in order}
    while cursors:
        origin = rng.choice(sorted(cursors)) if rng else next(iter(cursors))
        batch = district.read_batch(origin, cursors[origin], limit=rng.randint(1, 3) if rng else 1000)
        if batch is None:
            del cursors[origin]
            continue
        city.apply_batches([batch], confine=True, sender=district.id)
        cursors[origin] = batch.entries[-1][0]


def _state(node: Node) -> tuple:
    q = node.conn.execute
    return (q("SELECT * FROM notes ORDER BY id").fetchall(),
            q("SELECT * FROM _hemei_conflicts ORDER BY 1, 2, 3, 4").fetchall(),
            q("SELECT * FROM _hemei_waiting ORDER BY 1, 2, 3, 4").fetchall())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op, min_size=1, max_size=12), rng=st.randoms())
def test_a_parents_judgment_of_relayed_changes_does_not_depend_on_their_order(templates, ops, rng):
    work = Path(tempfile.mkdtemp(prefix="hemei-confine-"))
    nodes: dict[str, Node] = {}
    try:
        for name in HOMES:
            shutil.copytree(templates / name, work / name)
            nodes[name] = Node.open(work / name, available=PROBE, builtins=BUILTIN_PLUGINS)
        a, b, district, city, reference, late = (nodes[n] for n in ("a", "b", "district", "city", "reference",
                                                                    "late"))
        late.set_module_enabled("hook_probe", False, "t")
        for kind, key, value in ops:
            _write(nodes, kind, key, value)
        for street in (a, b):
            _take(street, district)

        _relay(district, reference, [a.id, district.id, b.id], None)  # every insert before what follows it
        _relay(district, city, [a.id, district.id, b.id], rng)
        _relay(district, late, [a.id, district.id, b.id], rng)
        late.set_module_enabled("hook_probe", True, "t")  # judged now, by the replay

        assert _state(late) == _state(reference)

        assert _state(city) == _state(reference)
        notes = city.conn.execute("SELECT id, title FROM notes").fetchall()
        assert not [n for n in notes if n[1] == "HIJACKED"]
        assert not [pk for pk, in city.conn.execute("SELECT id FROM notes WHERE _deleted = 1")]  # only b deletes
        judged = city.conn.execute("SELECT origin, kind FROM _hemei_conflicts").fetchall()
        assert all(origin == b.id and kind == "out_of_scope" for origin, kind in judged)
        held_by_a = {k for k, in a.conn.execute("SELECT id FROM notes")}
        b_changes_to_a_rows = {(kind, key) for kind, key, _ in ops if kind in ("b_update", "b_delete")
                               and key in held_by_a}
        assert bool(judged) == bool(b_changes_to_a_rows)
        before = _state(city)
        city.rebuild()
        assert _state(city) == before
    finally:
        for node in nodes.values():
            node.close()
        shutil.rmtree(work, ignore_errors=True)
