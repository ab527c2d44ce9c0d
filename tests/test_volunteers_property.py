"""Properties of the time bank across offline streets, tested with hypothesis.

Two streets and their district start from the same registered person.
Random steps: a street confirms hours, corrects its latest entry, tries to
redeem any amount (so does the district), or pushes what it has to the
district, in any order, while the others stay offline. Whatever happens:

* no redemption ever succeeds beyond what its node confirmed itself, so at
  the district every account and the balance stay at or above zero, and the
  balance equals what was confirmed minus what was redeemed (the double
  spend cannot happen);
* a second district copy that receives the same entries in another random
  order computes the same roll-up and the same balance.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import PROBE, nodes_on_a_copy
from test_convergence import _replay
from test_convergence import _send as _send_entries
from hemei.cli.main import BUILTIN_PLUGINS
from hemei.core import HemeiError
from hemei.core.node import Node
from hemei.plugins.volunteer_hours import keys, ledger, pii, registry, rollup

FIRST17 = "33060219760508002"
ID_NUMBER = FIRST17 + pii.id_check_char(FIRST17)
NAMES = ["district", "a", "b", "observer"]
SCOPES = {"district": "越城区", "a": "越城区/府山街道", "b": "越城区/塔山街道", "observer": "越城区"}


def _send(src: Node, dst: Node) -> None:
    _send_entries(src, dst, rewind=0)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """Homes where the district key reached both streets and the person is registered on each."""
    root = tmp_path_factory.mktemp("bank")
    nodes = {}
    for name in NAMES:
        nodes[name] = Node.init(root / name, name=name, scope=SCOPES[name], actor="t", available=PROBE,
                                builtins=BUILTIN_PLUGINS)
        nodes[name].set_module_enabled("volunteer_hours", True, "t")
    keys.create_key(nodes["district"], "t")
    for street in ("a", "b"):
        keys.request_key(nodes[street], "t")
        _send(nodes[street], nodes["district"])  # change_applied writes the grant
        _send(nodes["district"], nodes[street])
        registry.add_volunteer(nodes[street], "t", name="王丽", id_number=ID_NUMBER)
    for node in nodes.values():
        node.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        node.close()
    return root


step = st.one_of(
    st.tuples(st.just("serve"), st.sampled_from("ab"), st.integers(1, 24)),
    st.tuples(st.just("correct"), st.sampled_from("ab"), st.integers(0, 24)),
    st.tuples(st.just("redeem"), st.sampled_from(["a", "b", "district"]), st.integers(1, 40)),
    st.tuples(st.just("push"), st.sampled_from("ab"), st.just(0)),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step, max_size=14), seed=st.integers(0, 2**32 - 1))
def test_offline_streets_never_overdraw_and_every_district_copy_agrees(template, steps, seed):
    with nodes_on_a_copy(template, NAMES) as nodes:
        _run(nodes, steps, random.Random(seed))


def _run(nodes: dict[str, Node], steps, rng: random.Random) -> None:
    person = registry.resolve_person(nodes["a"], "t", id_number=ID_NUMBER)[0]
    confirmed = {"a": 0.0, "b": 0.0}  # the model: what each street's account earned
    redeemed = {"a": 0.0, "b": 0.0, "district": 0.0}
    latest: dict[str, str] = {}
    for day, (op, where, amount) in enumerate(steps, 1):
        node = nodes[where]
        if op == "serve":
            volunteer = registry.resolve_person(node, "t", id_number=ID_NUMBER)[1]
            act = registry.add_activity(node, "t", title=f"服务{day}", category="health", date="2026-11-21")
            latest[where] = ledger.log_hours(node, "t", activity=act["id"], volunteer=volunteer["id"],
                                             hours=amount, confirm=True)["id"]
            confirmed[where] += amount
        elif op == "correct" and where in latest:
            old = ledger.hour_entry(node, latest[where])["hours"]
            try:
                latest[where] = ledger.correct_hours(node, "t", hour=latest[where], hours=amount, reason="改正",
                                                     confirm=True)["id"]
                confirmed[where] += amount - old
            except HemeiError:
                assert confirmed[where] - redeemed[where] + amount - old < 0  # refused only to stay above zero
        elif op == "redeem":
            here = confirmed.get(where, 0.0) - redeemed[where]
            try:
                ledger.redeem(node, "t", person=person, volunteer=None, hours=amount, item="礼遇")
                redeemed[where] += amount
                assert amount <= here + 1e-9
            except HemeiError:
                assert amount > here
        elif op == "push":
            _send(node, nodes["district"])
    for street in ("a", "b"):
        _send(nodes[street], nodes["district"])

    district = ledger.balance(nodes["district"], person)
    assert district["hours"] == pytest.approx(sum(confirmed.values()))
    assert district["balance"] == pytest.approx(sum(confirmed.values()) - sum(redeemed.values()))
    assert district["balance"] >= 0 and all(a["balance"] >= -1e-9 for a in district["accounts"])

    # Another copy of the district receives the same entries, origins interleaved at random.
    observer, source = nodes["observer"], nodes["district"]
    _replay(source, observer, rng)
    assert rollup.rollup(observer, "越城区") == rollup.rollup(source, "越城区")
    assert ledger.balance(observer, person)["accounts"] == district["accounts"]
