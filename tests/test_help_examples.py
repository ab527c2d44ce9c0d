"""The examples at the end of every command's help, run as written on a street office's node.

Operators copy them. Those that name an object (ACTIVITY_ID, a case's short id) need one made first, so
they are left to the module tests; all others run here, in an order an operator could follow, and must
succeed.
"""

from __future__ import annotations

import re
import shlex

import click
import pytest

from hemei.cli.main import cli
from hemei.plugins.grid_inspections.commands import cases, grids
from hemei.plugins.volunteer_hours import keys
from hemei.plugins.volunteer_hours.commands import volunteers

ACTOR = "wangli"

#: In an order an operator could follow on a street node (a team before a volunteer joins it).
RUNNABLE = [
    "hemei status", "hemei modules list", "hemei users add", "hemei users list", "hemei audit verify",
    "hemei volunteers team add", "hemei volunteers add", "hemei volunteers find", "hemei volunteers team list",
    "hemei volunteers category add", "hemei volunteers category list", "hemei volunteers activity add",
    "hemei volunteers activity list", "hemei volunteers hours pending", "hemei volunteers balance",
    "hemei volunteers export", "hemei volunteers report", "hemei volunteers stars", "hemei volunteers key status",
    "hemei grids add", "hemei grids list", "hemei grids plan", "hemei grids staff add", "hemei grids staff list",
    "hemei grids patrol", "hemei grids coverage", "hemei cases category add", "hemei cases category list",
    "hemei cases report", "hemei cases list", "hemei cases stats", "hemei cases escalate-overdue",
    "hemei audit log", "hemei rebuild",
]


#: Examples that need something this test does not set up, and why.
ELSEWHERE = {
    "hemei": "init: a new home (tests/test_cli.py)", "hemei init": "a new home (tests/test_cli.py)",
    "hemei serve": "a server (tests/server.py)", "hemei invite": "a served parent (tests/test_sync.py)",
    "hemei join": "a token", "hemei sync": "a parent", "hemei nodes": "children", "hemei nodes list": "children",
    "hemei nodes revoke": "a child's id", "hemei bundle": "a parent", "hemei bundle export": "a parent",
    "hemei bundle import": "a bundle", "hemei modules": "enables a module already enabled here",
    "hemei modules enable": "enables a module already enabled here",
    "hemei modules disable": "would hide the commands run after it", "hemei users": "the same as users add",
    "hemei users token": "shell syntax (TOKEN=$(...))", "hemei users revoke": "after users token",
    "hemei conflicts": "a district's ballots table", "hemei report": "a district",
    "hemei audit": "the same as audit verify", "hemei volunteers": "the same as volunteers add",
    "hemei volunteers team": "the same as team add", "hemei volunteers category": "the same as category add",
    "hemei volunteers activity": "the same as activity add", "hemei volunteers redeem": "reads id.txt",
    "hemei volunteers key": "a key exists already", "hemei volunteers key create": "a key exists already",
    "hemei volunteers key request": "a parent", "hemei grids": "the same as grids add",
    "hemei grids staff": "the same as staff add", "hemei cases": "the same as cases report",
    "hemei cases category": "the same as category add",
}
#: Words in an example that stand for an object made first (left to the module tests).
PLACEHOLDER = re.compile(r"[A-Z]+_ID\b|\.\.\.|\b[0-9a-f]{8}\b|[0-9a-f]{8}-[0-9a-f]{4}-")


def _walk(command: click.Command, path: str):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _walk(sub, f"{path} {name}")


def test_every_example_is_run_here_or_said_why_not():
    from hemei.sync.commands import COMMANDS

    paths = [p for root, name in ((cli, "hemei"), (volunteers, "hemei volunteers"), (grids, "hemei grids"),
                                  (cases, "hemei cases"), *((c, f"hemei {c.name}") for c in COMMANDS))
             for p, _ in _walk(root, name)]
    unaccounted = [p for p in dict.fromkeys(paths) if p not in RUNNABLE and p not in ELSEWHERE
                   and not PLACEHOLDER.search(_command(p).help.strip().splitlines()[-1])]
    assert not unaccounted, f"run these examples in RUNNABLE, or say in ELSEWHERE why not: {unaccounted}"


def _command(path: str) -> click.Command:
    from hemei.sync.commands import COMMANDS

    roots = {"volunteers": volunteers, "grids": grids, "cases": cases, **{c.name: c for c in COMMANDS}}
    words = path.split()[1:]
    if not words:
        return cli
    command = roots.get(words[0], cli)
    for word in words[1 if words[0] in roots else 0:]:
        command = command.commands[word]
    return command


def _example(path: str) -> tuple[list[str], str | None]:
    """The help's last line as arguments, without `hemei` and a --home the example names; and what an
    `echo ... |` before it feeds the command."""
    line = _command(path).help.strip().splitlines()[-1].strip()
    stdin = None
    if line.startswith("echo "):  # echo 'secret' | hemei ...
        echoed, line = line.split("|", 1)
        stdin = shlex.split(echoed)[1] + "\n"
    words = shlex.split(line)
    assert words[0] == "hemei", f"{path}: {line}"
    words = words[1:]
    if words[0] == "--home":
        words = words[2:]
    return words, stdin


@pytest.fixture
def street(make_node, tmp_path, monkeypatch):
    node = make_node("fushan", scope="yuecheng/府山街道", modules=["volunteer_hours", "grid_inspections"])
    keys.create_key(node, ACTOR)
    home = str(node.home)
    node.close()
    monkeypatch.chdir(tmp_path)  # where `export --out 志愿时长.csv` writes
    return home


def test_every_example_that_names_nothing_runs_as_written(street, run_cli):
    for path in RUNNABLE:
        args, stdin = _example(path)
        done = run_cli("--home", street, "--actor", ACTOR, *args, input=stdin)
        assert done.exit_code == 0, f"{path}: `{shlex.join(args)}` failed: {done.output}"
