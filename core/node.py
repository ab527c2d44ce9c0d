"""A node: one home directory, one SQLite file, one key, one log.

:class:`Node` ties the parts together: it opens the database, builds the
plugin manager for the modules this node enabled, creates their tables,
and offers the write API (:meth:`Node.writer`), the receive path
(:meth:`Node.apply_batches`; the verification is in :mod:`hemei.core.receipt`)
and the read path for sync (:meth:`Node.read_batch`). Local writes and received entries end in the
same :meth:`Node._ingest`: append to the log, project through the same
:class:`~hemei.core.merge.Projector`.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import sys
import unicodedata
from contextlib import contextmanager, suppress
from itertools import groupby
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Callable, Iterable, Iterator

import pluggy
import sqlite_utils

from .chain import GENESIS, REDACTED, entry_leaf
from .clock import DEFAULT_MAX_AHEAD_MS, HybridClock
from .errors import HemeiError, InvalidInput, NodeStateError
from .gc_pause import cyclic_gc_paused
from .identity import node_id_from_public_key, parse_node_id, public_key_raw, read_private_key, write_private_key
from .ids import new_id
from .merge import OUT_OF_SCOPE, Change, Projector
from .plugins import (CORE_BUILTINS, Available, available_modules, get_plugin_manager, merge_named,
                      tables_by_plugin, validators_by_table)
from .schema import LWW, MIGRATIONS_TABLE, TableSpec, core_migrations, create_or_extend_table
from .receipt import Batch, Check, apply_verified, changes_of, check_batch_shape
from .scope import parse_scope
from .versions import by_table, module_schemas
from .writer import Writer, check_actor

HOME_ENV = "HEMEI_HOME"
MAX_AHEAD_ENV = "HEMEI_MAX_CLOCK_AHEAD"
DEFAULT_HOME = "hemei-node"
DB_NAME = "node.db"
KEY_NAME = "node.key"
SYSTEM_ACTOR = "system"
#: SQLite page cache per connection; the default 2 MB makes large batches re-read pages.
CACHE_KIB = 8 * 1024
#: How long a write waits for another process's (the CLI beside a server), in ms.
BUSY_TIMEOUT_MS = 10_000
logger = logging.getLogger("hemei.node")


def stored_module_settings(conn: sqlite3.Connection) -> tuple:
    """A home's module settings, ``(name, enabled, schema version)`` by name, read on ``conn``."""
    return tuple(conn.execute("SELECT name, enabled, coalesce(schema_version, 1) FROM _hemei_modules ORDER BY name"))


def max_ahead_ms() -> int:
    """How far ahead of this node's clock received entries may be stamped (``HEMEI_MAX_CLOCK_AHEAD``, s)."""
    value = os.environ.get(MAX_AHEAD_ENV)
    if value is None:
        return DEFAULT_MAX_AHEAD_MS
    if not (value.isascii() and value.isdigit()):
        raise NodeStateError(f"{MAX_AHEAD_ENV} must be a whole number of seconds, not {value!r}")
    return int(value) * 1000


def restart_needed(exc: NodeStateError) -> NodeStateError:
    """What a running process says when the home changed under it (a newer release upgraded it)."""
    return NodeStateError(f"{exc.message} (this process loaded the node before it was upgraded; restart it "
                          "with the new release)", code="restart_needed", status=503)


def _described(exc: BaseException) -> str:
    return exc.message if isinstance(exc, HemeiError) else f"{type(exc).__name__}: {exc}"


def resolve_home(home: str | os.PathLike | None) -> Path:
    return Path(home or os.environ.get(HOME_ENV) or DEFAULT_HOME)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        raise InvalidInput("node name must be 1 to 100 characters")
    if any(unicodedata.category(ch)[0] == "C" for ch in name):
        raise InvalidInput("node name must not contain control characters")
    return unicodedata.normalize("NFC", name.strip())


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    return conn


class Node:
    """An open node. Use :meth:`init` once, then :meth:`open`; one instance per thread."""

    def __init__(self, home: Path, conn: sqlite3.Connection, key, available: Available | None,
                 builtins: tuple[str, ...]):
        self.home = home
        self.conn = conn
        self.db = sqlite_utils.Database(conn)
        self.key = key
        self.public_key = public_key_raw(key)
        self.id = node_id_from_public_key(self.public_key)
        # Not every key: marks of tables no module declares are as many as a peer sent made-up names.
        meta = dict(conn.execute(
            "SELECT key, value FROM _hemei_meta WHERE key IN ('node_id', 'name', 'scope', 'hlc', 'reproject_unscoped')"
            " OR (key >= 'missing:' AND key < 'missing;')"))
        if meta.get("node_id") != self.id:
            raise NodeStateError(f"{home / KEY_NAME} is not the key of the node in {home / DB_NAME}")
        self.name: str = meta["name"]
        self.scope: str = meta["scope"]
        self.clock = HybridClock(int(meta.get("hlc", 0)), max_ahead_ms=max_ahead_ms())
        self._available = available
        self._builtins = builtins
        self._load_modules()
        if meta.get("reproject_unscoped"):
            self._reproject_after_waiting_table()
        self._replay_reinstalled(meta)
        self._replay_marked(quiet=True)  # what an earlier process marked and could not finish

    # -- creating and opening --------------------------------------------
    @classmethod
    def init(cls, home: str | os.PathLike | None, *, name: str, scope: str, actor: str = SYSTEM_ACTOR,
             available: Available | None = None, builtins: tuple[str, ...] = CORE_BUILTINS) -> Node:
        """Create a node home with a new key; refuse if one is there already."""
        name, scope, actor = check_name(name), parse_scope(scope), check_actor(actor)
        HybridClock().set_now()  # a reset PC clock would stamp the whole first session wrong: before any file
        home = resolve_home(home)
        if (home / DB_NAME).exists() or (home / KEY_NAME).exists():
            raise NodeStateError(f"{home} is already a node home: nothing was changed")
        if home.exists() and not home.is_dir():
            raise NodeStateError(f"{home} exists and is not a directory")
        made_home = not home.exists()
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            key = write_private_key(home / KEY_NAME)
            # Owner-only before SQLite opens it: -wal and -shm inherit the mode.
            os.close(os.open(home / DB_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            conn = _connect(home / DB_NAME)
            try:
                cls._create_schema(conn, key, name, scope)
            finally:
                conn.close()
            node = cls.open(home, available=available, builtins=builtins)
        except BaseException:
            for leftover in (KEY_NAME, DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm"):
                (home / leftover).unlink(missing_ok=True)
            if made_home:
                shutil.rmtree(home, ignore_errors=True)
            raise
        with node.writer(actor) as w:
            w.event("node.init", {"node_id": node.id, "name": name, "scope": scope})
        return node

    @staticmethod
    def _create_schema(conn: sqlite3.Connection, key, name: str, scope: str) -> None:
        db = sqlite_utils.Database(conn)
        db.execute(MIGRATIONS_TABLE)
        core_migrations.apply(db)
        public = public_key_raw(key)
        node_id = node_id_from_public_key(public)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO _hemei_meta (key, value) VALUES (?, ?)",
                         [("node_id", node_id), ("name", name), ("scope", scope), ("hlc", 0)])
        conn.execute("INSERT INTO _hemei_origins (node_id, public_key, size, head, scope) VALUES (?, ?, 0, ?, ?)",
                     (node_id, public, GENESIS, scope))
        conn.execute("COMMIT")

    @classmethod
    def open(cls, home: str | os.PathLike | None = None, *, available: Available | None = None,
             builtins: tuple[str, ...] = CORE_BUILTINS) -> Node:
        home = resolve_home(home)
        if not (home / DB_NAME).exists():
            raise NodeStateError(f"{home} is not a node home (no {DB_NAME}); create one with 'hemei init'")
        key = read_private_key(home / KEY_NAME)
        if sys.platform != "win32" and (home / DB_NAME).stat().st_mode & 0o077:
            raise NodeStateError(f"{home / DB_NAME} (password hashes, tokens) can be read by other users; "
                                 f"fix it with: chmod 600 {home / DB_NAME}*")
        conn = _connect(home / DB_NAME)
        try:
            db = sqlite_utils.Database(conn)
            db.execute(MIGRATIONS_TABLE)
            core_migrations.apply(db)
            return cls(home, conn, key, available, builtins)
        except BaseException:
            conn.close()
            raise

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- plugins -----------------------------------------------------------
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
            migration_set.apply(self.db)
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
                                     f"installed {name} reads up to v{version}: install the newer hemei release")
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
        except NodeStateError as exc:  # a newer release upgraded the home: only a restart helps
            raise restart_needed(exc) from None
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
        owned = self.schemas.get
        again = sorted({t for name, _ in failed for t in (owned(name).tables if owned(name) else tables)} & set(tables))
        with self._transaction():
            self._mark("rebuilt", again)
        message = "; ".join(f"{name}: {_described(exc)}" for name, exc in failed)
        if not quiet:
            raise HemeiError(f"after rebuilding {', '.join(tables)}: {message} (asked again at the next start)",
                             code="module_failed", status=500)
        logger.warning("a module failed after its tables were rebuilt, and is asked again at the next start: %s",
                       message)

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

    # -- identity and clock ------------------------------------------------
    def new_id(self) -> str:
        return new_id()

    def _origin_row(self, node_id: str):
        return self.conn.execute(
            "SELECT ix, size, head, public_key FROM _hemei_origins WHERE node_id = ?", (node_id,)).fetchone()

    def _persist_clock(self) -> None:
        self.conn.execute("UPDATE _hemei_meta SET value = ? WHERE key = 'hlc'", (self.clock.last,))

    def _sync_clock(self) -> None:
        """Another connection (the CLI beside a server) may have ticked the clock."""
        stored = self.conn.execute("SELECT value FROM _hemei_meta WHERE key = 'hlc'").fetchone()
        self.clock.observe(int(stored[0]))

    # -- the write API -----------------------------------------------------
    @contextmanager
    def writer(self, actor: str) -> Iterator[Writer]:
        """One transaction of local writes by ``actor``; see :mod:`hemei.core.writer`."""
        check_actor(actor)
        self._begin()
        try:
            self._sync_clock()
            ix, size, head, _ = self._origin_row(self.id)
            w = Writer(self, actor, ix, size, head)
            yield w
            w.flush()
            w._open = False
            if w.failed is not None:
                raise InvalidInput(f"transaction rolled back after an error: {w.failed}", code="transaction_failed")
            if w.entries_written:
                self.conn.execute("UPDATE _hemei_origins SET size = ?, head = ? WHERE ix = ?", (w.size, w.head, ix))
                self._persist_clock()
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        self._react(w.applied)

    def tick(self) -> list[str]:
        """Run every module's time-driven work (the ``tick`` hook); returns what failed, never raises.

        Each implementation runs on its own, so one module's failure does not stop the others.
        """
        return [f"{name}: {type(exc).__name__}: {exc}" for name, exc in self._call_each(self.pm.hook.tick, node=self)]

    def _call_each(self, hook, **kwargs) -> list[tuple[str, BaseException]]:
        """Call every implementation of ``hook`` on its own; returns (module, exception) of those that
        failed, each failure's open transaction rolled back. One module's failure must not stop the others."""
        failed = []
        for impl in reversed(hook.get_hookimpls()):  # pluggy's own order
            try:
                impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
            except (Exception, SystemExit) as exc:  # must not stop the server, the sync or an open
                failed.append((impl.plugin_name, exc))
                with suppress(sqlite3.Error):
                    if self.conn.in_transaction:
                        self.conn.execute("ROLLBACK")
        return failed

    def _react(self, applied: list[Change]) -> None:
        if applied and self.pm.hook.change_applied.get_hookimpls():
            self.pm.hook.change_applied(node=self, changes=applied)

    def _ingest(self, rows: list, changes: list[Change], *, local: bool,
                origin_scope: str | None = None, keep_violations: bool = False) -> list[Change]:
        """Append log rows and project their row changes: shared by writes and receipt.

        ``origin_scope``: received changes may not reach stored rows outside it (see ``confine``).
        """
        self.conn.executemany("INSERT INTO _hemei_log (origin, seq, hlc, actor, kind, scope, payload, hash, sig,"
                              " salt, leaf) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        return self.projector.apply(changes, local=local, origin_scope=origin_scope, keep_violations=keep_violations)

    # -- receiving entries -------------------------------------------------
    def apply_batch(self, batch: Batch, *, check: Check | None = None, confine: bool = False,
                    sender: str | None = None, tree: bool = False) -> dict:
        """Verify and apply one batch from another node; see :meth:`apply_batches`."""
        return self.apply_batches([batch], check=check, confine=confine, sender=sender, tree=tree)[0]

    def apply_batches(self, batches: Iterable[Batch], *, check: Check | None = None,
                      confine: bool = False, sender: str | None = None, tree: bool = False) -> list[dict]:
        """Verify and apply batches from other nodes in one transaction: all or nothing.

        Entries already held are skipped when identical; a different entry
        at a held seq is a fork and refuses everything. ``check(batch,
        changes)`` (the sync layer's scope rules) runs on the new entries of
        each verified batch, with their parsed row changes, before anything
        of it is written. ``confine``: a change that reaches a stored row
        outside its origin's declared scope (a street editing, deleting or
        re-inserting a sibling's row) refuses everything with
        :class:`ScopeViolation`; the rule a parent holds its children to. It
        depends on what is already stored, so it is for a tree's edges, not
        for replicas exchanging freely. With ``sender`` (the child that sent
        the message), only that child's own entries are refused so; the
        entries it relays from below were judged at its own edge, and one it
        judged differently (the rows had arrived in another order) is kept as
        a conflict of kind ``out_of_scope`` instead: refusing it would block
        everything the child sends from then on. ``tree`` (a pull from the
        parent): entries of origins below this node (after a restore from
        backup, its own streets') are confined too, but a violation is kept as
        a conflict: the parent judged them already. An origin confined once
        stays so (``_hemei_origins.confined``), by every route and in every
        rebuild. Returns counts per batch: received, new, applied, refused
        (changes kept as conflicts).
        """
        applied: list[Change] = []
        results = []
        with cyclic_gc_paused():
            self._begin()  # may load modules enabled since: ask who listens after it
            listening = bool(self.pm.hook.change_applied.get_hookimpls())
            try:
                for batch in batches:  # any iterable: a bundle streams its batches through here
                    check_batch_shape(self, batch)
                    origin = parse_node_id(batch.origin)
                    keep = sender is not None and origin != sender
                    result = apply_verified(self, origin, batch, check, confine, keep, tree)
                    changes = result.pop("_applied")
                    if listening:
                        applied.extend(changes)
                    results.append(result)
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
        self._react(applied)
        return results

    def origin_scope(self, node_id: str) -> str | None:
        """The scope an origin declared in its first entry (``node.init``), if held."""
        row = self.conn.execute("SELECT scope FROM _hemei_origins WHERE node_id = ?", (node_id,)).fetchone()
        return row[0] if row else None

    def _refusal_count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM _hemei_conflicts").fetchone()[0]

    # -- reading entries for sync --------------------------------------------
    def version_vector(self) -> dict[str, int]:
        """Origin node id -> highest contiguous seq held."""
        return {r[0]: r[1] for r in self.conn.execute("SELECT node_id, size FROM _hemei_origins WHERE size > 0")}

    def read_batch(self, origin: str, after: int, limit: int = 1000,
                   redact: Callable[[str, str], bool] | None = None) -> Batch | None:
        """Entries of ``origin`` after seq ``after``, ending at a signed checkpoint.

        At most ``limit`` entries unless the first signed checkpoint lies
        further (a node signs at least every 1,000 entries it writes).
        ``redact(kind, scope)`` marks entries the receiver must not see:
        they are sent as ``(seq, leaf)``, enough to verify the chain.
        """
        known = self._origin_row(origin)
        if known is None or known[1] <= after:
            return None
        ix = known[0]
        end = self.conn.execute("SELECT max(seq) FROM _hemei_log WHERE origin = ? AND seq > ? AND seq <= ?"
                                " AND sig IS NOT NULL", (ix, after, after + limit)).fetchone()[0]
        if end is None:
            end = self.conn.execute("SELECT min(seq) FROM _hemei_log WHERE origin = ? AND seq > ? AND sig IS NOT NULL",
                                    (ix, after)).fetchone()[0]
        if end is None:
            return None
        rows = self.conn.execute("SELECT seq, hlc, actor, kind, scope, payload, sig, salt, leaf FROM _hemei_log"
                                 " WHERE origin = ? AND seq > ? AND seq <= ? ORDER BY seq", (ix, after, end)).fetchall()
        entries = []
        for seq, hlc, actor, kind, scope, payload, _, salt, leaf in rows:
            if kind == REDACTED:
                entries.append((seq, leaf))
            elif redact is not None and redact(kind, scope):
                entries.append((seq, entry_leaf(origin, seq, hlc, actor, kind, scope, payload, salt)))
            else:
                entries.append((seq, hlc, actor, kind, scope, payload, salt))
        return Batch(origin, known[3], entries, rows[-1][6])

    # -- projection ----------------------------------------------------------
    def rebuild(self, tables: list[str] | None = None, progress: Callable[[int], None] | None = None) -> int:
        """Recompute state tables (all synced ones by default) from the log; returns entries replayed."""
        names = list(self.specs) if tables is None else tables
        unknown = [t for t in names if t not in self.specs]
        if unknown:
            raise InvalidInput(f"no table {', '.join(unknown)}")
        with cyclic_gc_paused(), self._transaction():
            if gone := [t for t in names if t not in self.specs]:  # disabled by another process meanwhile
                raise InvalidInput(f"no table {', '.join(gone)}: is its module enabled?")
            replayed = self._reproject(names, progress)
        self._announce_rebuilt()
        return replayed

    def _reproject(self, names: list[str], progress: Callable[[int], None] | None) -> int:
        """Empty ``names`` and project every row entry of the log into them again (in the caller's transaction)."""
        chosen = set(names)
        replayed = 0
        # A change kept out of scope at receipt stays out: judged against the rows as they stood then.
        kept_out = set()
        # Tables whose module was off (or missing) while entries came: no receipt judged their inserts.
        unjudged = set(self._marked("judge", chosen))
        self.conn.executemany("DELETE FROM _hemei_meta WHERE key = ?",
                              [(f"{mark}:{name}",) for name in names for mark in ("replay", "judge")])
        self._mark("rebuilt", names)  # cleared when the modules have been told: see _announce_rebuilt
        for name in names:
            self.conn.execute(f"DELETE FROM [{name}]")
            kept_out.update(self.conn.execute("SELECT tbl, pk, hlc, origin FROM _hemei_conflicts"
                                              " WHERE tbl = ? AND kind = ?", (name, OUT_OF_SCOPE)))
            self.conn.execute("DELETE FROM _hemei_conflicts WHERE tbl = ? AND kind != ?", (name, OUT_OF_SCOPE))
            self.conn.execute("DELETE FROM _hemei_waiting WHERE tbl = ?", (name,))
        origins = {ix: (node_id, scope if confined else None) for ix, node_id, scope, confined
                   in self.conn.execute("SELECT ix, node_id, scope, confined FROM _hemei_origins")}
        # By origin, the log's own order, unless inserts are judged: then by stamp, so the earliest insert
        # of a key claims it whichever origin the node heard from first (it does not know the order the
        # entries arrived in). A real origin's stamps rise along its chain, so its own order is kept.
        cursor = self.conn.execute(
            "SELECT origin, seq, hlc, actor, kind, scope, payload, salt FROM _hemei_log"
            " WHERE kind IN ('row.insert', 'row.update', 'row.delete')"
            + (" ORDER BY hlc, origin, seq" if unjudged else " ORDER BY origin, seq"))
        while chunk := cursor.fetchmany(2000):
            for ix, run in groupby(chunk, key=itemgetter(0)):
                node_id, confined_to = origins[ix]
                changes = [c for c in changes_of(node_id, [entry[1:] for entry in run]) if c.table in chosen
                           and (not kept_out or (c.table, c.pk, c.hlc, c.origin) not in kept_out)]
                # Updates and deletes of a confined origin are judged again (a module enabled or upgraded
                # since may see them for the first time); the order they meet their insert in cannot
                # change the outcome. Inserts keep the judgment made at receipt (kept_out), except where
                # none was made: those are judged now.
                self.projector.apply(changes, local=False, origin_scope=confined_to, keep_violations=True,
                                     judge_inserts=unjudged)
            replayed += len(chunk)
            if progress:
                progress(len(chunk))
        return replayed

    # -- status ----------------------------------------------------------------
    def status(self) -> dict:
        _, size, head, _ = self._origin_row(self.id)
        total = self.conn.execute("SELECT coalesce(sum(size), 0) FROM _hemei_origins").fetchone()[0]
        status = {
            "node_id": self.id,
            "name": self.name,
            "scope": self.scope,
            "home": str(self.home),
            "modules": self.enabled_modules(),
            "module_versions": self.module_versions,
            "missing_modules": list(self.pm.missing_modules),
            "log": {"size": size, "head": head.hex(), "entries_all_origins": total,
                    "origins": len(self.version_vector())},
            "conflicts": self._refusal_count(),
            # Updates and deletes received before their row's insert; applied when it comes.
            "waiting": self.conn.execute("SELECT count(*) FROM _hemei_waiting").fetchone()[0],
        }
        for extra in self.pm.hook.node_status(node=self):
            for key, value in (extra or {}).items():
                if key in status:
                    raise InvalidInput(f"two parts of hemei report the status key {key!r}")
                status[key] = value
        return status
