"""Shared fixtures: fresh nodes on real SQLite files, the probe plugin, a CLI runner."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from hemei.cli.main import BUILTIN_PLUGINS, cli
from hemei.core.cli_support import NodeContext
from hemei.core.node import Node

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS / "plugins"))

import hook_probe  # noqa: E402

#: Modules nodes in tests can enable: the probe, and the shipped program modules (imported when enabled).
PROBE = {"hook_probe": hook_probe, "volunteer_hours": "hemei.plugins.volunteer_hours",
         "grid_inspections": "hemei.plugins.grid_inspections"}


@pytest.fixture
def china_time():
    """This process's local time is China Standard Time (UTC+8, no summer time), as on a street office's PC.

    POSIX only (``time.tzset``); a subprocess gets it from ``TZ`` in its environment.
    """
    if not hasattr(time, "tzset"):
        pytest.skip("setting the local time zone needs time.tzset (POSIX)")
    before = os.environ.get("TZ")
    os.environ["TZ"] = "CST-8"
    time.tzset()
    yield "CST-8"
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def init_templates(root: Path, homes: dict[str, str]) -> Path:
    """Initialised homes (name -> scope) with the probe enabled, for property tests to copy per example
    (key generation and schema once)."""
    for name, scope in homes.items():
        node = Node.init(root / name, name=name, scope=scope, actor="t", available=PROBE, builtins=BUILTIN_PLUGINS)
        node.set_module_enabled("hook_probe", True, "t")
        node.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        node.close()
    return root


@pytest.fixture
def make_node(tmp_path):
    """Factory: ``make_node("street1", scope=..., modules=["hook_probe"])`` -> open Node."""
    opened: list[Node] = []

    def make(name: str = "node", scope: str = "yuecheng/fushan", modules=("hook_probe",)) -> Node:
        node = Node.init(tmp_path / name, name=name, scope=scope, actor="tester", available=PROBE,
                         builtins=BUILTIN_PLUGINS)
        for module in modules:
            node.set_module_enabled(module, True, "tester")
        opened.append(node)
        return node

    yield make
    for node in opened:
        node.close()


def log_size(node: Node) -> int:
    """Entries in a node's log: what a refused write must leave as it was."""
    return node.conn.execute("SELECT count(*) FROM _hemei_log").fetchone()[0]


@pytest.fixture
def node(make_node) -> Node:
    return make_node()


@pytest.fixture
def run_cli():
    """Run ``hemei`` in-process with the probe plugin available; returns the click Result."""
    runner = CliRunner()

    def run(*args: str, input: str | None = None, env: dict | None = None):
        obj = NodeContext(available=PROBE, builtins=BUILTIN_PLUGINS)
        return runner.invoke(cli, list(args), input=input, obj=obj, env=env, catch_exceptions=False)

    return run


@pytest.fixture
def pair(tmp_path):
    """A served district with one enrolled street (tests/tree.py), both with the probe plugin."""
    from tree import Tree

    t = Tree(tmp_path).build({"district": "sx/yc", "street": "sx/yc/fs"}, serve=["district"],
                             enroll=[("district", "street")])
    yield t
    t.stop()


@contextlib.contextmanager
def nodes_on_a_copy(template: Path, names):
    """Open nodes on a fresh copy of the homes in ``template``; closed and removed afterwards.

    Property tests build their starting homes once and run each hypothesis
    example on its own copy (a function-scoped tmp_path cannot be used there).
    """
    work = Path(tempfile.mkdtemp(prefix="hemei-copy-"))
    nodes: dict[str, Node] = {}
    try:
        shutil.copytree(template, work, dirs_exist_ok=True)
        for name in names:
            nodes[name] = Node.open(work / name, available=PROBE, builtins=BUILTIN_PLUGINS)
        yield nodes
    finally:
        for node in nodes.values():
            node.close()
        shutil.rmtree(work, ignore_errors=True)
