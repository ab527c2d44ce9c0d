"""The plugin host: builds a pluggy manager for one node.

There is no global manager. :func:`get_plugin_manager` registers the
built-in plugins the caller names (the core's own, and the sync transport,
which the CLI passes in: core must not import it), then the program modules
the node has enabled, then checks that every hook implementation matches a
spec. Program modules shipped with hemei and external ones are found the
same way, through the ``hemei`` entry-point group, and an installed module
is imported only when a node enables it.
"""

from __future__ import annotations

import importlib
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Callable, Iterable, Mapping

import pluggy

from . import hookspecs
from .errors import HemeiError, InvalidInput


class PluginError(HemeiError):
    """A plugin that cannot be loaded: fails the node's start, not a request."""

    code = "plugin_invalid"
    status = 500

hookimpl = pluggy.HookimplMarker("hemei")

ENTRY_POINT_GROUP = "hemei"
CORE_BUILTINS: tuple[str, ...] = ("hemei.core.builtin",)

#: name -> an EntryPoint (not yet loaded), a module object, or a module path.
Available = Mapping[str, "EntryPoint | ModuleType | object | str"]


def available_modules(extra: Available | None = None) -> dict:
    """Program modules that can be enabled: the entry-point group plus ``extra``."""
    found: dict = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if extra:
        found.update(extra)
    return found


def _load(name: str, source) -> object:
    if isinstance(source, EntryPoint):
        return source.load()
    if isinstance(source, str):
        return importlib.import_module(source)
    return source


def get_plugin_manager(enabled: Iterable[str] = (), available: Available | None = None,
                       builtins: Iterable[str] = CORE_BUILTINS) -> pluggy.PluginManager:
    """A fresh manager with ``builtins`` and the ``enabled`` program modules registered.

    ``available`` is what :func:`available_modules` returns (looked up when None).

    An enabled name that is not installed is skipped and listed in
    ``pm.missing_modules`` (its entries wait in the log). Raises
    :class:`PluginError` for a hook implementation that matches no spec: a
    misspelt hook fails at start, not silently.
    """
    pm = pluggy.PluginManager("hemei")
    pm.add_hookspecs(hookspecs)
    for path in builtins:
        pm.register(importlib.import_module(path), name=path)
    modules = available_modules() if available is None else available
    pm.missing_modules = []  # enabled here but not installed: the node still opens
    for name in enabled:
        if name not in modules:
            pm.missing_modules.append(name)
            continue
        try:
            pm.register(_load(name, modules[name]), name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"module {name} cannot be loaded: {exc}") from None
        except ImportError as exc:
            raise PluginError(f"module {name} cannot be imported: {exc}") from None
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a plugin implements a hook that does not exist (misspelt?): {exc}") from None
    return pm


def merge_named(results: list[list], what: str, key) -> list:
    """Flatten ``register_*`` results and fail loudly on a duplicate name."""
    merged, seen = [], {}
    for items in results:
        for item in items or ():
            name = key(item)
            if name in seen:
                raise InvalidInput(f"two plugins register the {what} {name!r}")
            seen[name] = item
            merged.append(item)
    return merged


def tables_by_plugin(pm: pluggy.PluginManager) -> list[tuple[object, list]]:
    """Each plugin's ``register_tables`` answer, in hook-call order: the tables a plugin *owns*."""
    return [(impl.plugin, impl.function() or []) for impl in reversed(pm.hook.register_tables.get_hookimpls())]


def validators_by_table(pm: pluggy.PluginManager, owned: list[tuple[object, list]]) -> dict[str, Callable]:
    """For each table whose owner implements ``validate_change``, a hook caller of that plugin alone.

    A change is validated by the module that declared its table, not by
    every module: with two modules enabled, asking both about every row
    cost ~2.8 µs a change on the receive path, most of it pluggy's call.
    """
    validating = {id(impl.plugin) for impl in pm.hook.validate_change.get_hookimpls()}
    callers: dict[int, Callable] = {}
    by_table = {}
    for plugin, specs in owned:
        if id(plugin) not in validating:
            continue
        if id(plugin) not in callers:
            others = [p for p in pm.get_plugins() if p is not plugin]
            callers[id(plugin)] = pm.subset_hook_caller("validate_change", remove_plugins=others)
        for spec in specs:
            by_table[spec.name] = callers[id(plugin)]
    return by_table
