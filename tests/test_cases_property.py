"""Concurrent offline work on the same cases converges, tested with hypothesis.

A street and its district each act on two cases while offline, in random
order, with random pushes and pulls between them: any transition, by either
node, at any time (most are refused locally, as they would be for a user;
the ones accepted are what a user could have done). Only one node holds a
case at a time, so the acts that truly race are evaluations, which both may
record (the second test forces that race). After a full sync:

* both nodes hold every event either wrote (nothing lost) and show the same
  state, level and history for every case, including which events did not
  apply and why;
* that state is what an independent model of the rules gives when it
  replays the events in clock order (the order the module promises);
* a third copy that receives the same entries in a random interleaving
  derives the same status table.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import PROBE, nodes_on_a_copy
from test_convergence import _replay
from test_convergence import _send as _send_entries
from hemei.cli.main import BUILTIN_PLUGINS
from hemei.core import HemeiError
from hemei.core.node import Node
from hemei.plugins.grid_inspections import cases, grids

SCOPES = {"district": "越城区", "street": "越城区/府山街道", "observer": "越城区"}
KINDS = ["register", "reject", "dispatch", "start", "handle", "verify", "rework", "close", "evaluate", "escalate"]
EXTRA = {"reject": {"note": "不受理"}, "dispatch": {"assignee": "王强"}, "handle": {"note": "已处理"},
         "rework": {"note": "返工"}}

# The model: the rules as the issue states them, written independently of the module's machine.
MOVES = {"register": ("reported", "registered"), "reject": ("reported", "rejected"),
         "dispatch": ("registered", "dispatched"), "start": ("dispatched", "in_progress"),
         "handle": ("in_progress", "handled"), "verify": ("handled", "verified"),
         "rework": ("handled", "dispatched"), "close": ("verified", "closed"), "evaluate": ("closed", "evaluated")}
OPEN = {"reported", "registered", "dispatched", "in_progress"}
ORDER = ["grid", "community", "street", "district"]


def model(events: list[dict]) -> tuple[str, str]:
    state, level = "reported", "grid"
    for e in sorted(events, key=lambda e: (e["_hlc"], e["_origin"])):
        holder = SCOPES["district"] if level == "district" else SCOPES["street"]
        if e["acting_scope"] != holder and not (e["kind"] == "evaluate" and e["acting_scope"] == SCOPES["street"]):
            continue
        if e["kind"] == "escalate":
            if state in OPEN and ORDER.index(e["level"]) > ORDER.index(level):
                state, level = "registered", e["level"]
        elif MOVES[e["kind"]][0] == state:
            state = MOVES[e["kind"]][1]
    return state, level


def summaries_match_a_recount(node: Node) -> bool:
    """The incrementally kept daily summaries equal a GROUP BY over the status table, from scratch."""
    recount = node.conn.execute("""
        SELECT grid, substr(reported_at, 1, 10), street, community, count(*), sum(responded_at IS NOT NULL),
          sum(state NOT IN ('rejected', 'duplicate')), sum(state IN ('closed', 'evaluated')),
          sum(ifnull(state IN ('closed', 'evaluated') AND handled_at <= due, 0)), sum(handled_at IS NOT NULL OR reworks > 0),
          sum(reworks > 0), sum(rating IS NOT NULL), sum(ifnull(rating IN ('satisfied', 'basically_satisfied'), 0)),
          sum(escalations > 0)
        FROM case_status GROUP BY 1, 2 ORDER BY 1, 2""").fetchall()
    kept = node.conn.execute("SELECT * FROM case_grid_day ORDER BY grid, day").fetchall()
    by_category = node.conn.execute(
        "SELECT street, category, substr(reported_at, 1, 10), count(*), sum(state IN ('closed', 'evaluated'))"
        " FROM case_status GROUP BY 1, 2, 3 ORDER BY 1, 2, 3").fetchall()
    return kept == recount and node.conn.execute(
        "SELECT * FROM case_category_day ORDER BY street, category, day").fetchall() == by_category


def _send(src: Node, dst: Node) -> None:
    _send_entries(src, dst, rewind=0)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A district and its street that both hold one grid and two freshly reported cases."""
    root = tmp_path_factory.mktemp("cases")
    nodes = {}
    for name, scope in SCOPES.items():
        nodes[name] = Node.init(root / name, name=name, scope=scope, actor="t", available=PROBE,
                                builtins=BUILTIN_PLUGINS)
        nodes[name].set_module_enabled("grid_inspections", True, "t")
    grids.add_grid(nodes["street"], "t", code="FS-01", name="西小河一网格", community="西小河社区")
    for n in range(2):
        cases.report(nodes["street"], "t", grid="FS-01", category="safety", description=f"隐患{n}", reporter="李娟")
    _send(nodes["street"], nodes["district"])
    for node in nodes.values():
        node.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        node.close()
    return root


# "next": a step that follows the case's state as the acting node sees it (what a user would try);
# any other kind is tried as is, mostly to be refused.
act = st.tuples(st.just("act"), st.sampled_from(["street", "district"]), st.integers(0, 1),
               st.sampled_from(["next"] * 12 + KINDS), st.sampled_from(ORDER[1:]))
step = st.one_of(
    act, act, act,
    st.tuples(st.just("push"), st.just(""), st.just(0), st.just(""), st.just("")),
    st.tuples(st.just("pull"), st.just(""), st.just(0), st.just(""), st.just("")),
)
NEXT = {"reported": ["register", "register", "escalate"], "registered": ["dispatch", "dispatch", "escalate"],
        "dispatched": ["start"], "in_progress": ["handle", "handle", "escalate"],
        "handled": ["verify", "verify", "rework"], "verified": ["close"], "closed": ["evaluate"]}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step, min_size=20, max_size=80), seed=st.integers(0, 2**32 - 1))
def test_offline_transitions_on_one_case_converge_to_the_clock_order_state(template, steps, seed):
    with nodes_on_a_copy(template, SCOPES) as nodes:
        _run(nodes, steps, random.Random(seed))


def _run(nodes: dict[str, Node], steps, rng: random.Random) -> None:
    street, district = nodes["street"], nodes["district"]
    case_ids = sorted(r[0] for r in street.conn.execute("SELECT id FROM cases"))
    written = 0
    for op, where, which, kind, level in steps:
        if op == "push":
            _send(street, district)
        elif op == "pull":
            _send(district, street)
        else:
            if kind == "next":
                kind = rng.choice(NEXT.get(cases.show(nodes[where], case_ids[which])["state"], KINDS))
            extra = dict(EXTRA.get(kind, {}))
            if kind == "evaluate":
                extra["rating"] = rng.choice(["satisfied", "basically_satisfied", "dissatisfied"])
            if kind == "escalate":
                extra["level"] = rng.choice([level, "district"])
            try:
                cases.transition(nodes[where], "t", case_ids[which], kind, **extra)
                written += 1
            except HemeiError:
                pass  # refused locally: nothing written (checked by the count below)
    for _ in range(2):
        _send(street, district)
        _send(district, street)

    for node in (street, district):
        assert node.conn.execute("SELECT count(*) FROM case_events").fetchone()[0] == written
    for case_id in case_ids:
        at_street, at_district = cases.show(street, case_id), cases.show(district, case_id)
        assert at_street == at_district
        events = list(street.db.query("SELECT * FROM case_events WHERE case_id = ?", (case_id,)))
        assert (at_street["state"], at_street["level"]) == model(events)
        event(f"state {at_street['state']} at {at_street['level']}")
        if not all(e["applied"] for e in at_street["events"]):
            event("a concurrent event did not apply")

    observer = nodes["observer"]
    _replay(district, observer, rng)
    table = "SELECT * FROM case_status ORDER BY case_id"
    assert [tuple(r) for r in observer.conn.execute(table)] == [tuple(r) for r in district.conn.execute(table)] \
        == [tuple(r) for r in street.conn.execute(table)]
    assert all(summaries_match_a_recount(node) for node in (street, district, observer))


def test_both_nodes_recording_the_evaluation_offline_keep_the_first_in_clock_order(template):
    """The one act both nodes may do on a case: the earlier evaluation applies, the other is kept, marked."""
    with nodes_on_a_copy(template, SCOPES) as nodes:
        street, district = nodes["street"], nodes["district"]
        case_id = sorted(r[0] for r in street.conn.execute("SELECT id FROM cases"))[0]
        cases.transition(street, "t", case_id, "register")
        cases.transition(street, "t", case_id, "escalate", level="district")
        _send(street, district)
        for kind, extra in [("dispatch", {"assignee": "区城管"}), ("start", {}), ("handle", {"note": "已修复"}),
                            ("verify", {}), ("close", {})]:
            cases.transition(district, "t", case_id, kind, **extra)
        _send(district, street)
        # Offline from each other, both record what the resident said.
        cases.transition(district, "t", case_id, "evaluate", rating="dissatisfied")
        cases.transition(street, "t", case_id, "evaluate", rating="satisfied")
        _send(street, district)
        _send(district, street)
        shown = cases.show(street, case_id)
        assert shown == cases.show(district, case_id)
        evaluations = [e for e in shown["events"] if e["kind"] == "evaluate"]
        assert [e["applied"] for e in evaluations] == [True, False]
        assert "cannot evaluate a case that is evaluated" in evaluations[1]["not_applied_because"]
        assert shown["state"] == "evaluated" and shown["rating"] == evaluations[0]["rating"]
