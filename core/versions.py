"""Schema versions of program modules: nodes of one tree running different releases.

A street PC is upgraded when someone gets to it, so a district may receive
changes written by an older *or* a newer release of a module than its own.
Each module declares one schema version (:class:`ModuleSchema`, from its
``module_schema`` hook; 1 when it declares none), and every row change it
writes above version 1 carries that number in its payload (``"s"``), inside
the signed entry, so that a relay, a bundle and a rebuild all read it the
same way. A receiver then:

* reads a change of its own version as it is;
* reads an older one through the module's upgrade steps (``upgrades[k]``
  turns a change written at version ``k`` into one of version ``k + 1``; a
  missing step means nothing changed shape, e.g. a column was added);
* keeps a newer one as a conflict of kind ``quarantined``: it stays in the
  log, is forwarded unchanged, and is applied when this node's module is
  upgraded (opening a node whose module version rose replays that module's
  tables, see :meth:`hemei.core.node.Node.open`).

Nothing is refused for its version, and nothing is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import pluggy

from .merge import Change
from .plugins import PluginError



@dataclass(frozen=True)
class ModuleSchema:
    """A module's schema version and the steps that read changes written under older ones.

    Raise ``version`` whenever a change written by the new release could not
    be read by the old one: a new column, a renamed or re-encoded one, a new
    meaning. ``upgrades[k]`` takes a :class:`Change` written at version ``k``
    and returns it as version ``k + 1`` would have written it: its values and
    op may change; its table, key, scope, clock and origin stay. Raise
    :class:`hemei.core.InvalidInput` for a change that cannot be upgraded: it
    is kept as a conflict, not applied (so is one whose step fails otherwise).
    """

    version: int = 1
    upgrades: Mapping[int, Callable[[Change], Change]] = field(default_factory=dict)

    def __post_init__(self):
        if type(self.version) is not int or self.version < 1:
            raise ValueError(f"schema version must be an integer from 1, not {self.version!r}")
        for step, fn in self.upgrades.items():
            if type(step) is not int or not 1 <= step < self.version:
                raise ValueError(f"upgrade step {step!r}: steps go from 1 to version - 1 ({self.version - 1})")
            if not callable(fn):
                raise ValueError(f"upgrade step {step} is not callable")


@dataclass(frozen=True)
class TableVersion:
    """What a receiver needs to read a change to one table: its module, version and upgrades."""

    module: str
    schema: ModuleSchema
    tables: frozenset

    @property
    def version(self) -> int:
        return self.schema.version

    def upgrade(self, change: Change) -> Change | str:
        """``change`` (written at an older version) as the current version reads it, or why not."""
        for step in range(change.schema, self.version):
            fn = self.schema.upgrades.get(step)
            if fn is None:
                change = change._replace(schema=step + 1)
                continue
            try:
                upgraded = fn(change)
            except Exception as exc:  # plugin code on a received change: a bug must not refuse the whole push
                return f"{self.module} cannot read a change written at schema v{step}: {type(exc).__name__}: {exc}"
            # A table rename or split would need the old names mapped and rebuilds of both: not supported.
            if not isinstance(upgraded, Change) or (upgraded.table, upgraded.pk, upgraded.scope, upgraded.hlc,
                                                    upgraded.origin) != (change.table, change.pk, change.scope,
                                                                         change.hlc, change.origin):
                return (f"{self.module}'s upgrade from schema v{step} returned {type(upgraded).__name__}, not the "
                        f"same change (table, key, scope, clock and origin must stay)")
            change = upgraded._replace(schema=step + 1)
        return change

    def too_new(self, change: Change) -> str:
        return (f"written by {self.module} schema v{change.schema}; this node reads up to v{self.version}: "
                f"upgrade hemei on this node and the change is applied then")


def module_schemas(pm: pluggy.PluginManager, owned: list[tuple[object, list]]) -> dict[str, TableVersion]:
    """Module name -> its :class:`TableVersion`, for every plugin that owns tables."""
    declared = {id(impl.plugin): impl.function() for impl in pm.hook.module_schema.get_hookimpls()}
    modules = {}
    for plugin, specs in owned:
        name = pm.get_name(plugin)
        schema = declared.get(id(plugin)) or ModuleSchema()
        if not isinstance(schema, ModuleSchema):
            raise PluginError(f"module {name}: module_schema must return a hemei.core.ModuleSchema")
        modules[name] = TableVersion(name, schema, frozenset(s.name for s in specs))
    return modules


def by_table(modules: dict[str, TableVersion]) -> dict[str, TableVersion]:
    return {table: tv for tv in modules.values() for table in tv.tables}
