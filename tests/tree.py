"""A tree of real nodes for sync tests: homes made in-process, servers and commands as real processes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import PROBE
from hemei.cli.main import BUILTIN_PLUGINS
from hemei.core.node import Node
from server import Server, hemei_command, plugin_env, probe_site


class Tree:
    def __init__(self, root: Path):
        self.root = root
        self.env = plugin_env(probe_site(root))
        self.servers: dict[str, Server] = {}

    def home(self, name: str) -> Path:
        return self.root / name

    def init(self, name: str, scope: str, modules=("hook_probe",)) -> Path:
        node = Node.init(self.home(name), name=name, scope=scope, actor="setup", available=PROBE,
                         builtins=BUILTIN_PLUGINS)
        for module in modules:
            node.set_module_enabled(module, True, "setup")
        node.close()
        return self.home(name)

    def open(self, name: str) -> Node:
        return Node.open(self.home(name), available=PROBE, builtins=BUILTIN_PLUGINS)

    def hemei(self, name: str, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(hemei_command() + ["--home", str(self.home(name)), *args], env=env or self.env,
                              capture_output=True, text=True, encoding="utf-8", timeout=timeout)

    def ok(self, name: str, *args: str, env: dict | None = None) -> str:
        done = self.hemei(name, *args, env=env)
        assert done.returncode == 0, f"hemei {' '.join(args)} failed: {done.stderr}{done.stdout}"
        return done.stdout

    def serve(self, name: str, env: dict | None = None, port: int | None = None) -> Server:
        server = Server(self.home(name), env or self.env, port)
        self.servers[name] = server
        return server

    def served_street(self, modules=("volunteer_hours", "grid_inspections")) -> tuple[Server, str]:
        """A street 府山街道 with ``modules`` (and a volunteer key), served; an admin's API token for it."""
        self.init("fushan", "越城区/府山街道", modules=modules)
        self.ok("fushan", "volunteers", "key", "create")
        self.ok("fushan", "users", "add", "admin1", "--role", "admin", "--password", "a-long-password")
        token = self.ok("fushan", "users", "token", "admin1").strip()
        return self.serve("fushan"), token

    def enroll(self, parent: str, child: str, scope: str) -> None:
        token = self.ok(parent, "invite", "--scope", scope, "--name", child, "--url",
                        self.servers[parent].url, "--ttl", "1h").strip()
        self.ok(child, "join", token)

    def build(self, nodes: dict[str, str], serve=(), enroll=()) -> Tree:
        """Init ``nodes`` (name -> scope), start servers for ``serve``, enroll ``(parent, child)`` pairs."""
        for name, scope in nodes.items():
            self.init(name, scope)
        for name in serve:
            self.serve(name)
        for parent, child in enroll:
            self.enroll(parent, child, nodes[child])
        return self

    def sync(self, name: str) -> dict:
        return json.loads(self.ok(name, "sync", "--json"))

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()


def note_titles(node: Node) -> set[str]:
    return {t for (t,) in node.conn.execute("SELECT title FROM notes WHERE _deleted = 0")}


def write_notes(node: Node, titles_and_scopes) -> None:
    with node.writer("tester") as w:
        for title, scope in titles_and_scopes:
            w.insert("notes", {"title": title, "scope": scope})
