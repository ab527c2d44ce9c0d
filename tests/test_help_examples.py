"""The examples at the end of every command's help, run as written on a street office's node.

Operators copy them. Those that name an object made first (ACTIVITY_ID, a case's short id) are left to
the module tests, and those that need a parent, a server or a new home are said why; those are parsed
here, at least. All others run, in an order an operator could follow, and must succeed.
"""

from __future__ import annotations

import re
import shlex

import click
import pytest

from hemei.cli.main import cli
from hemei.core.cli_support import NodeContext
from hemei.plugins.volunteer_hours import keys

ACTOR = "wangli"

#: In an order an operator could follow on a street node (a team before a volunteer joins it).
RUNNABLE = [
    "hemei status", "hemei modules list", "hemei modules tables", "hemei users add", "hemei users list", "hemei users token",
    "hemei users revoke", "hemei audit verify",
    "hemei volunteers team add", "hemei volunteers add", "hemei volunteers find", "hemei volunteers team list",
    "hemei volunteers category add", "hemei volunteers category list", "hemei volunteers activity add",
    "hemei volunteers activity list", "hemei volunteers hours pending", "hemei volunteers balance",
    "hemei volunteers export", "hemei volunteers report", "hemei volunteers stars", "hemei volunteers key status",
    "hemei grids add", "hemei grids list", "hemei grids plan", "hemei grids staff add", "hemei grids staff list",
    "hemei grids patrol", "hemei grids coverage", "hemei cases category add", "hemei cases category list",
    "hemei cases report", "hemei cases list", "hemei cases stats", "hemei cases escalate-overdue",
    "hemei grids remove", "hemei audit log", "hemei rebuild", "hemei conflicts",
]

#: A group's example, run in place of the one of RUNNABLE it does the work of (a second run-through).
GROUPS = {
    "hemei users": "hemei users add", "hemei audit": "hemei audit verify",
    "hemei volunteers": "hemei volunteers add", "hemei volunteers team": "hemei volunteers team add",
    "hemei volunteers category": "hemei volunteers category add",
    "hemei volunteers activity": "hemei volunteers activity add", "hemei grids": "hemei grids add",
    "hemei grids staff": "hemei grids staff add", "hemei cases": "hemei cases report",
    "hemei cases category": "hemei cases category add",
}

#: Examples that need something this test does not set up, and why (they are parsed, not run).
ELSEWHERE = {
    "hemei": "init: a new home (tests/test_cli.py)", "hemei init": "a new home (tests/test_cli.py)",
    "hemei serve": "a server (tests/server.py)", "hemei invite": "a served parent (tests/test_sync.py)",
    "hemei join": "a token", "hemei sync": "a parent", "hemei nodes": "children", "hemei nodes list": "children",
    "hemei nodes revoke": "a child's id", "hemei bundle": "a parent", "hemei bundle export": "a parent",
    "hemei bundle import": "a bundle", "hemei modules": "enables a module already enabled here",
    "hemei modules enable": "enables a module already enabled here",
    "hemei modules disable": "would hide the commands run after it",
    "hemei report": "a district",
    "hemei volunteers redeem": "reads id.txt", "hemei volunteers key": "a key exists already here",
    "hemei volunteers key create": "a key exists already here", "hemei volunteers key request": "a parent",
}
#: Words in an example that stand for an object made first: ACTIVITY_ID, a short id with a letter in it
#: (5e8f0a1b), the start of a uuid, an id cut short (0190b6c2-..., hemei1.eyJ1Ijoi...).
PLACEHOLDER = re.compile(r"[A-Z]+_ID\b|\b(?=[0-9]*[a-f])[0-9a-f]{8}\b|[0-9a-f]{8}-[0-9a-f]{4}-|[A-Za-z0-9-]\.\.\.")


def _walk(command: click.Command, path: str):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _walk(sub, f"{path} {name}")


@pytest.fixture
def commands(make_node) -> dict[str, click.Command]:
    """Every command by its path: the core's and those the node's plugins register (sync, modules)."""
    node = make_node("all", modules=["volunteer_hours", "grid_inspections"])
    found = dict(_walk(cli, "hemei"))
    for registered in node.pm.hook.register_commands():
        for command in registered:
            found.update(_walk(command, f"hemei {command.name}"))
    return found


#: What the operator types at the prompt an example leads to.
TYPED = {"hemei users add": "s3cret-pass\ns3cret-pass\n"}


def _example(command: click.Command) -> list[str]:
    """The help's last line as arguments, without `hemei` and a --home the example names."""
    line = command.help.strip().splitlines()[-1].strip()
    words = shlex.split(line, posix="\\" not in line)  # E:\fushan.hemei stays itself
    if "<" in words:  # the shell's redirection, not the command's
        words = words[:words.index("<")]
    assert words[0] == "hemei", line
    words = words[1:]
    if words[0] == "--home":
        words = words[2:]
    return words


@pytest.fixture
def street(make_node, tmp_path, monkeypatch):
    node = make_node("fushan", scope="yuecheng/府山街道", modules=["volunteer_hours", "grid_inspections"])
    keys.create_key(node, ACTOR)
    home = str(node.home)
    node.close()
    monkeypatch.chdir(tmp_path)  # where `export --out 志愿时长.csv` writes
    return home


@pytest.mark.parametrize("groups", [False, True], ids=["commands", "groups"])
def test_every_example_that_names_nothing_runs_as_written(street, run_cli, commands, groups):
    in_place = {leaf: group for group, leaf in GROUPS.items()} if groups else {}
    for path in RUNNABLE:
        path = in_place.get(path, path)
        args = _example(commands[path])
        done = run_cli("--home", street, "--actor", ACTOR, *args, input=TYPED.get(GROUPS.get(path, path)))
        assert done.exit_code == 0, f"{path}: `{shlex.join(args)}` failed: {done.output}"


def test_every_example_is_run_here_or_said_why_not_and_parses(commands):
    unaccounted = []
    for path, command in commands.items():
        line = command.help.strip().splitlines()[-1]
        if path in RUNNABLE or path in GROUPS:
            continue
        if path not in ELSEWHERE and not PLACEHOLDER.search(line):
            unaccounted.append(path)
        else:
            args = _example(command)
            *names, leaf = [commands[" ".join(["hemei", *args[:i]])] for i in range(len(args) + 1)
                            if " ".join(["hemei", *args[:i]]) in commands]
            depth = len(names)
            leaf.make_context(leaf.name, args[depth:], obj=NodeContext())  # raises on an unknown option
    assert not unaccounted, f"run these examples in RUNNABLE, or say in ELSEWHERE why not: {unaccounted}"


def test_every_example_reads_the_same_in_cmd_exe_and_a_posix_shell(commands):
    """A street PC may run Windows: cmd.exe passes single quotes on as text and knows no $(...)."""
    shell_only = re.compile(r"'|\$\(|`|\||\$[A-Z_]")
    found = {path: line for path, command in commands.items()
             if shell_only.search(line := command.help.strip().splitlines()[-1])}
    assert not found, f"write these examples so that cmd.exe reads them as a POSIX shell does: {found}"


def test_a_placeholder_is_an_object_not_any_number_or_ellipsis():
    assert PLACEHOLDER.search("hemei cases show 5e8f0a1b --json")
    assert PLACEHOLDER.search("hemei volunteers activity signup 0190b6c2-... 0190b6c3-...")
    assert not PLACEHOLDER.search("hemei volunteers activity list --since 20261201")
    assert not PLACEHOLDER.search("hemei grids add FS-03 府山第三网格 --households 12000000 --note 等等...")
