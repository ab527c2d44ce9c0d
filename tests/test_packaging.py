"""Promises about the shape of the project that are cheap to check and easy to break."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"core": "hemei.core", "sync": "hemei.sync", "plugins": "hemei.plugins", "cli": "hemei.cli"}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def python_files(folder: str):
    return sorted((ROOT / folder).rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = PACKAGES[path.relative_to(ROOT).parts[0]]
    sub = ".".join(path.relative_to(ROOT).parts[1:-1])
    here = f"{package}.{sub}" if sub else package
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[: len(here.split(".")) - node.level + 1]
                found.add(".".join(base + ([node.module] if node.module else [])))
            else:
                found.add(node.module)
    return found


def test_every_package_folder_is_installed():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    for folder, package in PACKAGES.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            name = ".".join([package, *parts])
            assert name in listed, f"{name} is missing from [tool.setuptools] packages in pyproject.toml"


@pytest.mark.parametrize("path", python_files("core"), ids=lambda p: p.name)
def test_core_imports_nothing_from_sync_plugins_or_cli(path):
    bad = {m for m in imported_modules(path) if m.startswith(("hemei.sync", "hemei.plugins", "hemei.cli"))}
    assert not bad, f"{path.name} imports {bad}: core must stand alone"


@pytest.mark.parametrize("path", python_files("plugins"), ids=lambda p: str(p.relative_to(ROOT)))
def test_program_modules_never_import_each_other_or_sync(path):
    parts = path.relative_to(ROOT / "plugins").parts
    own = f"hemei.plugins.{parts[0]}" if len(parts) > 1 else "hemei.plugins"
    for module in imported_modules(path):
        assert not module.startswith(("hemei.sync", "hemei.cli")), f"{path}: imports {module}"
        if module.startswith("hemei.plugins.") and len(parts) > 1:
            assert module.startswith(own), f"{path}: imports another module, {module}"


@pytest.mark.parametrize("folder", ["core", "sync", "plugins", "cli", "tests", "bench"])
def test_no_file_grows_past_800_lines(folder):
    for path in python_files(folder):
        lines = path.read_text(encoding="utf-8").count("\n")
        assert lines <= 800, f"{path.relative_to(ROOT)} has {lines} lines: split it"


def test_changelog_names_the_current_version():
    version = PYPROJECT["project"]["version"]
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    first = re.search(r"^## \[?([0-9][^\]\s]*)\]? - (\d{4}-\d{2}-\d{2})", changelog, re.M)
    assert first and first.group(1) == version


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- test-command -->\s*```(?:sh|bash)?\n(.+?)\n```", readme, re.S)
    assert match, "README must show the test command after <!-- test-command -->"
    command = match.group(1).strip()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert command in ci, f".ci/run must run the README's test command: {command}"
