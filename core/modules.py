"""The modules a node runs: loading them, building and upgrading their tables, replaying those tables.

:class:`ModuleHost` is the part of :class:`hemei.core.node.Node` that
follows the home's module settings (enabled modules, schema versions)
and keeps each module's tables equal to what the log says, across
modules enabled late, reinstalled, upgraded by a newer release, or
changed by another process on the same home. It is a mixin: it uses the
node's connection, writer and projection (``conn``, ``writer``,
``_reproject``, ``_call_each``), which :class:`~hemei.core.node.Node`
defines.
"""

from __future__ import annotations

import logging
import sqlite3
from contextlib import contextmanager
from operator import attrgetter
from typing import Iterator

import pluggy

from .errors import HemeiError, InvalidInput, NodeStateError
from .gc_pause import cyclic_gc_paused
from .merge import Change, Projector
from .plugins import available_modules, get_plugin_manager, merge_named, tables_by_plugin, validators_by_table
from .schema import LWW, TableSpec, create_or_extend_table
from .versions import by_table, module_schemas

SYSTEM_ACTOR = "system"
#: The code of the refusal to open a home a newer release upgraded (a running process: restart_needed).
NEWER_RELEASE = "newer_release"
#: How long a write waits for another process's (the CLI beside a server), in ms.
BUSY_TIMEOUT_MS = 10_000
logger = logging.getLogger("hemei.node")


def stored_module_settings(conn: sqlite3.Connection) -> tuple:
    """A home's module settings, ``(name, enabled, schema version)`` by name, read on ``conn``."""
    return tuple(conn.execute("SELECT name, enabled, coalesce(schema_version, 1) FROM _hemei_modules ORDER BY name"))


def restart_needed(exc: NodeStateError) -> NodeStateError:
    """What a running process says when the home changed under it (a newer release upgraded it)."""
    return NodeStateError(f"{exc.message} (this process loaded the node before it was upgraded; restart it "
                          "with the new release)", code="restart_needed", status=503)


def _described(exc: BaseException) -> str:
    return exc.message if isinstance(exc, HemeiError) else f"{type(exc).__name__}: {exc}"


class ModuleHost:
    """Loading, enabling and upgrading modules, and replaying their tables (mixed into Node)."""

    def enabled_modules(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM _hemei_modules WHERE enabled = 1 ORDER BY name")]

    def available_modules(self) -> dict:
        return available_modules() if self._available is None else dict(self._available)

    def _plugin_setup(self, enabled: list[str]):
        """Manager, tables and migration sets for ``enabled``; raises before anything is written."""
        pm = get_plugin_manager(enabled, self.available_modules(), self._builtins)
        owned = tables_by_plugin(pm)
        specs = merge_named([tables for _, tables in owned], "table", lambda s: s.name)
        migrations = merge_named(pm.hook.register_migrations(), "migration set", lambda m: m.name)
        return pm, owned, specs, migrations

    def _modules_stored(self) -> tuple:
        """The home's module settings, as every process on it must see them (see :meth:`_begin`)."""
        return stored_module_settings(self.conn)

    def _load_modules(self) -> None:
        """Load the enabled modules and upgrade their tables; until both succeed every transaction reloads."""
        self._modules_loaded = None
        self._modules_loaded = self._load_plugins()  # what the upgrade's own transaction checks against
        try:
            upgraded = self._upgrade_schemas()
        except BaseException:
            self._modules_loaded = None  # loaded but not upgraded: never write so
            raise
        if upgraded is not None:
            self._modules_loaded = upgraded

    def _load_plugins(self) -> tuple:
        """Load the enabled modules; returns the module settings it loaded (read before loading)."""
        stored = self._modules_stored()
        pm, owned, specs, migrations = self._plugin_setup(self.enabled_modules())
        schemas = module_schemas(pm, owned)
        # Refuses tables built by a newer release before changing any of them (or this node's state).
        self._stale_schemas({name: tv.version for name, tv in schemas.items()})
        self.schemas = schemas
        self.pm: pluggy.PluginManager = pm
        self.specs: dict[str, TableSpec] = {s.name: s for s in specs}
        self._create_tables(specs)
        for migration_set in migrations:
            migration_set.apply(self.conn)
        validator = None
        if validating := validators_by_table(pm, owned):
            def validator(change: Change, _get=validating.get):
                hook = _get(change.table)
                return None if hook is None else hook(node=self, change=change)
        self.projector = Projector(self.conn, self.specs, validator, by_table(self.schemas))
        return stored

    def _create_tables(self, specs: list[TableSpec]) -> None:
        """Create or extend the loaded modules' tables.

        The log may already hold entries for a table created here (taken in
        before receipt marked tables it could not project, or by a release
        that added the table without raising its schema version): it is
        marked for a replay that judges its inserts, in the transaction that
        creates it, so no failure in between leaves it created, empty and
        never replayed. The write lock is taken only when a table is missing.
        """
        existing = {name for (name,) in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if any(spec.name not in existing for spec in specs):
            own = not self.conn.in_transaction
            if own:
                self.conn.execute("BEGIN IMMEDIATE")
            try:
                created = [spec.name for spec in specs if create_or_extend_table(self.conn, spec)]
                self._mark_unprojected(created)
                if own:
                    self.conn.execute("COMMIT")
            except BaseException:
                if own and self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            return
        for spec in specs:
            create_or_extend_table(self.conn, spec)

    @property
    def module_versions(self) -> dict[str, int]:
        """Schema version of each enabled, installed module that owns tables."""
        return {name: tv.version for name, tv in sorted(self.schemas.items())}

    def _stale_schemas(self, versions: dict[str, int] | None = None) -> dict[str, tuple[int, int]]:
        """Modules whose installed schema version (``versions``, or the loaded ones) is above the one this
        node's tables were built with; raises if one is below."""
        recorded = dict(self.conn.execute("SELECT name, coalesce(schema_version, 1) FROM _hemei_modules"
                                          " WHERE enabled = 1"))
        stale = {}
        for name, version in sorted((self.module_versions if versions is None else versions).items()):
            built = recorded.get(name, 1)
            if built > version:
                raise NodeStateError(f"this node's {name} tables were built at schema v{built}, but the "
                                     f"installed {name} reads up to v{version}: install the newer hemei release",
                                     code=NEWER_RELEASE)
            if built < version:
                stale[name] = (built, version)
        return stale

    def _upgrade_schemas(self) -> tuple | None:
        """Replay the tables of modules whose schema version rose, once, when the node opens.

        Entries written under an older version are read through the module's
        upgrades and ones that were quarantined as too new are applied, so the
        tables are what a node that always ran this release would hold.
        Returns the module settings as this transaction left them, or None if
        there was nothing to upgrade.
        """
        if not self._stale_schemas():
            return None
        with self.writer(SYSTEM_ACTOR) as w:
            stale = self._stale_schemas()  # again under the write lock: another opener may have done it
            tables = sorted(t for name in stale for t in self.schemas[name].tables)
            for name, (built, version) in stale.items():
                w.event("module.upgrade", {"module": name, "from": built, "to": version})
                self.conn.execute("UPDATE _hemei_modules SET schema_version = ? WHERE name = ?", (version, name))
            with cyclic_gc_paused():
                self._reproject(tables, None)
            upgraded = self._modules_stored()  # under the lock: what another process does next is its own
        return upgraded

    def _begin(self) -> None:
        """Start a write transaction with this process's modules the home's.

        Another process on the same home (the CLI beside ``hemei serve``) may
        have enabled, disabled or upgraded a module since this one loaded
        them; writing with the old set would skip the tables of a module
        enabled since, or project changes by an outdated schema. Checked under
        the write lock, so nobody can change them between check and write.
        """
        for _ in range(3):
            self.conn.execute("BEGIN IMMEDIATE")
            if self._modules_stored() == self._modules_loaded:
                return
            self.conn.execute("ROLLBACK")
            self._reload_modules()
        raise NodeStateError("the node's modules keep changing under this process: try again", status=503)

    def follow_modules(self) -> bool:
        """Load the modules again if another process changed them since this one did; True if so.

        For readers (a request a server answers, its routes): a reader that
        kept the old set would show an outdated module's rows, or none of a
        module enabled since. Writers are checked under the write lock
        (:meth:`_begin`).
        """
        if self._modules_stored() == self._modules_loaded:
            return False
        self._reload_modules()
        return True

    @property
    def module_settings(self) -> tuple | None:
        """The module settings (name, enabled, schema version) this process loaded; None while reloading."""
        return self._modules_loaded

    def _reload_modules(self) -> None:
        try:
            self._load_modules()
        except NodeStateError as exc:
            if exc.code != NEWER_RELEASE:
                raise
            raise restart_needed(exc) from None  # a newer release upgraded the home: only a restart helps
        self._replay_marked(quiet=True)  # a module enabled since at an older schema was upgraded, say

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """A write transaction with no log entry of its own (a replay, bookkeeping in ``_hemei_meta``)."""
        self._begin()
        try:
            yield
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    def _mark(self, prefix: str, names) -> None:
        self.conn.executemany("INSERT OR IGNORE INTO _hemei_meta (key, value) VALUES (?, 1)",
                              [(f"{prefix}:{name}",) for name in names])

    def _mark_unprojected(self, tables) -> None:
        """Tables that missed entries while their module was off: replay them, judging their inserts
        (no receipt did; see :meth:`_reproject`)."""
        self._mark("replay", tables)
        self._mark("judge", tables)

    def _marked(self, prefix: str, among=None) -> list[str]:
        """Names marked ``prefix:NAME``; with ``among``, only those (looked up by key: receipt marks
        tables no module declares, as many as a peer sends names)."""
        if among is not None:
            keys = [f"{prefix}:{name}" for name in among]
            return [key.split(":", 1)[1] for i in range(0, len(keys), 500) for (key,) in self.conn.execute(
                f"SELECT key FROM _hemei_meta WHERE key IN ({', '.join('?' * len(keys[i:i + 500]))}) ORDER BY key",
                keys[i:i + 500])]
        return [key.split(":", 1)[1] for (key,) in self.conn.execute(
            "SELECT key FROM _hemei_meta WHERE key >= ? AND key < ? ORDER BY key", (prefix + ":", prefix + ";"))]

    def _replay_marked(self, quiet: bool = False) -> list[str]:
        """Replay the tables marked ``replay:TABLE`` in ``_hemei_meta``, then tell their modules; returns them.

        A step that makes tables stale (enabling their module, a module
        installed again) marks them in its own transaction, and the replay
        clears the marks in its: a process killed in between leaves them to
        the next open, instead of leaving tables that miss what the log holds.
        ``quiet`` (at open): a replay that fails, or would wait for another
        process's write, is logged and left to the next open; the node opens,
        so its operator can still disable a module whose replay fails.
        """
        tables: list[str] = []
        try:
            if self._marked("replay", self.specs):
                with self._short_wait(quiet), cyclic_gc_paused(), self._transaction():
                    # Read again under the lock: the process that marked them may have replayed them meanwhile.
                    tables = self._marked("replay", self.specs)
                    if tables:  # marks of a module disabled since stay: enabling it marks them again anyway
                        self._reproject(tables, None)
            self._announce_rebuilt(quiet)
        except Exception as exc:
            if not quiet:
                raise
            logger.warning("tables marked for a replay were not replayed now (%s); the next start tries again",
                           _described(exc))
        return tables

    @contextmanager
    def _short_wait(self, short: bool) -> Iterator[None]:
        """At open, do not wait seconds for another process's long write (its replay, say): skip instead."""
        if not short:
            yield
            return
        self.conn.execute("PRAGMA busy_timeout=200")
        try:
            yield
        finally:
            self.conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

    def _announce_rebuilt(self, quiet: bool = False) -> None:
        """Call each module's ``tables_rebuilt`` for its tables replayed since it was last told.

        Every replay marks its tables (``rebuilt:TABLE``) in its own
        transaction. One process claims the marks (deletes them under the
        write lock) and calls the hooks, each module on its own: a module
        whose hook fails gets its tables marked again and is asked again at
        the next open or rebuild; the others are told once. ``quiet``: a
        failure is logged, not raised (a node must still open, to let its
        operator fix or disable the module).
        """
        if not self._marked("rebuilt"):
            return
        with self._short_wait(quiet), self._transaction():
            claimed = [key.split(":", 1)[1] for (key,) in self.conn.execute(
                "DELETE FROM _hemei_meta WHERE key >= 'rebuilt:' AND key < 'rebuilt;' RETURNING key")]
        tables = sorted(name for name in claimed if name in self.specs)
        if not tables:
            return
        failed = self._call_each(self.pm.hook.tables_rebuilt, node=self, tables=tables)
        if not failed:
            return
        again = self._tables_of(failed, tables)
        with self._transaction():
            self._mark("rebuilt", again)
        message = "; ".join(f"{name}: {_described(exc)}" for name, exc in failed)
        if not quiet:
            raise HemeiError(f"after rebuilding {', '.join(tables)}: {message} (asked again at the next start)",
                             code="module_failed", status=500)
        logger.warning("a module failed after its tables were rebuilt, and is asked again at the next start: %s",
                       message)

    def _tables_of(self, failed: list[tuple[str, BaseException]], tables: list[str]) -> list[str]:
        """Which of ``tables`` belong to the modules that failed; all of them for a module that owns none of
        them (one reacting to another module's tables is told of those, or it would never be asked again)."""
        again: set[str] = set()
        for name, _ in failed:
            schema = self.schemas.get(name)
            again |= (set(schema.tables) & set(tables) if schema else set()) or set(tables)
        return sorted(again)

    def _ask_again_after(self, failed: list[tuple[str, BaseException]], tables: list[str]) -> None:
        """Mark for ``tables_rebuilt`` the tables whose modules' reaction to changes of them failed."""
        again = self._tables_of(failed, tables)
        message = "; ".join(f"{name}: {_described(exc)}" for name, exc in failed)
        logger.warning("a module failed to react to changes of %s, and is asked again at the next start: %s",
                       ", ".join(tables), message)
        try:
            with self._transaction():
                self._mark("rebuilt", again)
        except sqlite3.Error as exc:  # the changes stand; only the second chance is lost
            logger.warning("could not mark %s to ask again: %s", ", ".join(again), exc)

    def _replay_reinstalled(self, meta: dict) -> None:
        """Replay the tables of enabled modules that were not installed when the node was last opened.

        Their changes received meanwhile wait in the log (nothing could project them); marked in
        ``_hemei_meta`` as ``missing:NAME`` while missing.
        """
        missing = set(self.pm.missing_modules)
        marked = {key.split(":", 1)[1] for key in meta if key.startswith("missing:")}
        self.conn.executemany("INSERT OR IGNORE INTO _hemei_meta (key, value) VALUES (?, 1)",
                              [(f"missing:{name}",) for name in sorted(missing - marked)])
        back = sorted(marked - missing)
        if back:
            with self._transaction():
                self._mark_unprojected(sorted(t for name in back if name in self.schemas
                                              for t in self.schemas[name].tables))
                self.conn.executemany("DELETE FROM _hemei_meta WHERE key = ?", [(f"missing:{name}",) for name in back])

    def _reproject_after_waiting_table(self) -> None:
        """Once, after core migration 0003: rows made by an update before their insert (no scope) become
        waiting changes, and where origins below are confined (a parent) every lww table is replayed, so a
        sibling's edit an older release merged before the row's insert arrived is judged now, not at some
        later rebuild. A disabled module's tables are replayed when it is enabled anyway."""
        confining = self.conn.execute("SELECT 1 FROM _hemei_origins WHERE confined = 1 LIMIT 1").fetchone()
        tables = [name for name, spec in self.specs.items() if spec.policy == LWW and (confining or self.conn.execute(
            f"SELECT 1 FROM [{name}] WHERE [{spec.scope}] IS NULL LIMIT 1").fetchone())]
        with self._transaction():
            self._mark("replay", tables)
            self.conn.execute("DELETE FROM _hemei_meta WHERE key = 'reproject_unscoped'")

    def set_module_enabled(self, name: str, enabled: bool, actor: str) -> list[str]:
        """Enable or disable a program module (recorded in the log); returns tables rebuilt.

        Enabling replays the log into the module's tables, so entries that
        arrived while it was disabled are applied. Disabling deletes nothing.
        """
        available = self.available_modules()
        if name not in available:
            known = ", ".join(sorted(available)) or "none installed"
            raise InvalidInput(f"unknown module {name!r} (available: {known})")
        if (name in self.enabled_modules()) == enabled:
            raise InvalidInput(f"module {name} is already {'enabled' if enabled else 'disabled'}")
        pm, owned, _, _ = self._plugin_setup(sorted(set(self.enabled_modules()) ^ {name}))  # fails if it cannot load
        merge_named(pm.hook.register_routes(), "route", attrgetter("key"))  # a running server must serve them all
        schemas = module_schemas(pm, owned)  # enabling builds the module's tables (below) at this version
        version = schemas[name].version if enabled and name in schemas else None
        with self.writer(actor) as w:
            w.event("module.enable" if enabled else "module.disable", {"module": name})
            w.conn.execute(
                "INSERT INTO _hemei_modules (name, enabled, changed_hlc, schema_version) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET enabled = excluded.enabled, changed_hlc = excluded.changed_hlc,"
                " schema_version = coalesce(excluded.schema_version, schema_version)",
                (name, int(enabled), self.clock.last, version))
            if enabled and name in schemas:  # its tables miss (and never judged) what arrived while it was off
                self._mark_unprojected(schemas[name].tables)
        self._load_modules()
        return self._replay_marked(quiet=not enabled)  # disabling a module whose hook fails must not fail
