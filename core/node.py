"""A node: one home directory, one SQLite file, one key, one log.

:class:`Node` ties the parts together: it opens the database, builds the
plugin manager for the modules this node enabled, creates their tables,
and offers the write API (:meth:`Node.writer`), the receive path
(:meth:`Node.apply_batches`; the verification is in :mod:`hemei.core.receipt`)
and the read path for sync (:meth:`Node.read_batch`). Local writes and received entries end in the
same :meth:`Node._ingest`: append to the log, project through the same
:class:`~hemei.core.merge.Projector`. Loading, enabling and upgrading the
node's modules, and replaying their tables, is :mod:`hemei.core.modules`.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import sqlite3
import sys
import unicodedata
from contextlib import contextmanager, suppress
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import orjson

from .chain import GENESIS, REDACTED, entry_leaf
from .clock import DEFAULT_MAX_AHEAD_MS, HybridClock, hlc_ms, wall_ms
from .errors import InvalidInput, NodeStateError
from .gc_pause import cyclic_gc_paused
from .identity import node_id_from_public_key, parse_node_id, public_key_raw, read_private_key, write_private_key
from .ids import new_id
from .merge import OUT_OF_SCOPE, Change
from .modules import BUSY_TIMEOUT_MS, SYSTEM_ACTOR, ModuleHost
from .plugins import CORE_BUILTINS, Available
from .schema import MIGRATIONS_TABLE, core_migrations
from .receipt import Batch, Check, apply_verified, changes_of, check_batch_shape
from .scope import parse_scope
from .writer import Writer, check_actor

if TYPE_CHECKING:
    import sqlite_utils

HOME_ENV = "HEMEI_HOME"
MAX_AHEAD_ENV = "HEMEI_MAX_CLOCK_AHEAD"
DEFAULT_HOME = "hemei-node"
#: About how much entry text (payload, scope, actor) one batch carries: a sync message holds
#: a few such batches (sync/wire.py). A batch of large entries ends at the last checkpoint within it.
BATCH_CHARS = 1024 * 1024
#: What an entry adds to a batch besides its text: seq, stamp, kind, salt and punctuation.
ENTRY_CHARS = 80
DB_NAME = "node.db"
KEY_NAME = "node.key"
#: SQLite page cache per connection; the default 2 MB makes large batches re-read pages.
CACHE_KIB = 8 * 1024


def max_ahead_ms() -> int:
    """How far ahead of this node's clock received entries may be stamped (``HEMEI_MAX_CLOCK_AHEAD``, s)."""
    value = os.environ.get(MAX_AHEAD_ENV)
    if value is None:
        return DEFAULT_MAX_AHEAD_MS
    if not (value.isascii() and value.isdigit()):
        raise NodeStateError(f"{MAX_AHEAD_ENV} must be a whole number of seconds, not {value!r}")
    return int(value) * 1000


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
    # As sqlite-utils sets it on a connection it wraps (node.db, a migration step's): set at open, so a
    # module's DELETE trigger fires on the projector's INSERT OR REPLACE whether or not node.db was made
    # yet in this process (found in review once node.db became lazy).
    conn.execute("PRAGMA recursive_triggers=on")
    return conn


#: A key without its database: the node's records are gone from this folder, not a new node to create.
_DATABASE_LOST = ("{home} holds this node's key ({key}) but not its database ({db}): it was deleted or moved. "
                  "Restore the node home from a backup")
#: A database without its key: the node can sign nothing; the same key, not a new one, continues it.
_KEY_LOST = ("{home} holds this node's database ({db}) but not its key ({key}): it was deleted or moved. "
             "Restore {key} from the node home's backup (a new key would be another node)")


class Node(ModuleHost):
    """An open node. Use :meth:`init` once, then :meth:`open`; one instance per thread."""

    def __init__(self, home: Path, conn: sqlite3.Connection, key, available: Available | None,
                 builtins: tuple[str, ...]):
        self.home = home
        self.conn = conn
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
        if (home / KEY_NAME).exists() and not (home / DB_NAME).exists():
            raise NodeStateError(_DATABASE_LOST.format(home=home, db=DB_NAME, key=KEY_NAME)
                                 + "; for a new node, give another folder. Nothing was changed")
        if (home / DB_NAME).exists() and not (home / KEY_NAME).exists():
            raise NodeStateError(_KEY_LOST.format(home=home, db=DB_NAME, key=KEY_NAME)
                                 + "; for a new node, give another folder. Nothing was changed")
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
        conn.execute(MIGRATIONS_TABLE)
        core_migrations.apply(conn)
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
        defaulted = home is None and not os.environ.get(HOME_ENV)
        home = resolve_home(home)
        if not (home / DB_NAME).exists():
            if (home / KEY_NAME).exists():
                raise NodeStateError(_DATABASE_LOST.format(home=home, db=DB_NAME, key=KEY_NAME))
            here = " (this folder is one: give --home . before the command)" if defaulted and Path(
                DB_NAME).exists() else ""
            raise NodeStateError(f"{home} is not a node home (no {DB_NAME}){here}; give the node's folder with "
                                 "--home, or create one with 'hemei init'")
        if not (home / KEY_NAME).exists():
            raise NodeStateError(_KEY_LOST.format(home=home, db=DB_NAME, key=KEY_NAME))
        key = read_private_key(home / KEY_NAME)
        if sys.platform != "win32" and (home / DB_NAME).stat().st_mode & 0o077:
            raise NodeStateError(f"{home / DB_NAME} (password hashes, tokens) can be read by other users; "
                                 f"fix it with: chmod 600 {shlex.quote(str(home))}/{DB_NAME}*")
        conn = _connect(home / DB_NAME)
        try:
            # Before anything is created in it: an emptied node.db (a failed copy, a tool that truncated
            # it) would otherwise get fresh tables and then blame the key for not matching them.
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = '_hemei_meta'").fetchone() is None:
                raise NodeStateError(f"{home / DB_NAME} is empty or not a hemei database: restore the node home "
                                     "from a backup")
            conn.execute(MIGRATIONS_TABLE)
            core_migrations.apply(conn)
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

    # -- identity and clock ------------------------------------------------
    @functools.cached_property
    def db(self) -> sqlite_utils.Database:
        """The connection as sqlite-utils' ``Database``, for queries that want rows as dicts; made (and the
        library imported) on first use: commands that never ask for it start a sixth faster."""
        import sqlite_utils

        return sqlite_utils.Database(self.conn)

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
        """Tell modules what took effect. It is committed: a module that fails here (a bug, or a row no
        check foresaw) must not turn the write or push that succeeded into an error, nor stop the others;
        it is told of its tables through ``tables_rebuilt`` at the next start or rebuild instead."""
        if not applied or not self.pm.hook.change_applied.get_hookimpls():
            return
        failed = self._call_each(self.pm.hook.change_applied, node=self, changes=applied)
        if failed:
            self._ask_again_after(failed, sorted({c.table for c in applied}))

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
                      confine: bool = False, sender: str | None = None, tree: bool = False,
                      admit: Callable[[Batch], None] | None = None) -> list[dict]:
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
        rebuild. ``admit(batch)`` runs on each batch before anything of its
        chain is read or compared (the sync layer refuses origins outside the
        sender's scope there, before an answer could tell it what is held of
        them). Returns counts per batch: received, new, applied, refused
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
                    if admit is not None:
                        admit(batch)
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

    def declared_names(self) -> list[tuple[str, str]]:
        """(name, scope) of each origin held, as it declared them in its ``node.init`` (this node's too)."""
        return [(name, scope) for _, name, scope in self._declared()]

    def origin_names(self) -> dict[str, str]:
        """The name each origin held gave itself in its ``node.init``, by node id (this node's too)."""
        return {node_id: name for node_id, name, _ in self._declared()}

    def _declared(self) -> list[tuple[str, str, str]]:
        named = []
        for node_id, scope, payload in self.conn.execute(
                "SELECT o.node_id, o.scope, l.payload FROM _hemei_origins o JOIN _hemei_log l ON l.origin = o.ix"
                " AND l.seq = 1 WHERE l.kind = 'node.init' AND o.scope IS NOT NULL"):
            try:
                name = orjson.loads(payload)["name"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue  # the scope was read from it, so it is JSON; a name missing is no name
            if isinstance(name, str) and name:
                named.append((node_id, name, scope))
        return named

    def _refusal_count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM _hemei_conflicts").fetchone()[0]

    # -- reading entries for sync --------------------------------------------
    def version_vector(self) -> dict[str, int]:
        """Origin node id -> highest contiguous seq held."""
        return {r[0]: r[1] for r in self.conn.execute("SELECT node_id, size FROM _hemei_origins WHERE size > 0")}

    def read_batch(self, origin: str, after: int, limit: int = 1000,
                   redact: Callable[[str, str], bool] | None = None, max_chars: int = BATCH_CHARS) -> Batch | None:
        """Entries of ``origin`` after seq ``after``, ending at a signed checkpoint.

        At most ``limit`` entries and about ``max_chars`` characters of entry
        text, unless the first signed checkpoint lies further (a node signs
        at least every 1,000 entries and every 1 MiB of payload it writes).
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
        entries, chars, signed_at, signature = [], 0, 0, None
        for seq, hlc, actor, kind, scope, payload, sig, salt, leaf in self.conn.execute(
                "SELECT seq, hlc, actor, kind, scope, payload, sig, salt, leaf FROM _hemei_log"
                " WHERE origin = ? AND seq > ? AND seq <= ? ORDER BY seq", (ix, after, end)):
            chars += ENTRY_CHARS if kind == REDACTED else ENTRY_CHARS + len(payload) + len(scope) + len(actor)
            if chars > max_chars and signed_at:  # large entries: end at the last checkpoint within bounds
                del entries[signed_at:]
                break
            if kind == REDACTED:
                entries.append((seq, leaf))
            elif redact is not None and redact(kind, scope):
                entries.append((seq, entry_leaf(origin, seq, hlc, actor, kind, scope, payload, salt)))
            else:
                entries.append((seq, hlc, actor, kind, scope, payload, salt))
            if sig is not None:
                signed_at, signature = len(entries), sig
        return Batch(origin, known[3], entries, signature)

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
    def _stamps_ahead_ms(self) -> int | None:
        ahead = hlc_ms(self.clock.last) - wall_ms()
        return ahead if ahead > self.clock.max_ahead_ms else None

    def status(self, *, admin: bool = True) -> dict:
        """The node at a glance; without ``admin``, no path on the PC and no addresses of callers."""
        _, size, head, _ = self._origin_row(self.id)
        total = self.conn.execute("SELECT coalesce(sum(size), 0) FROM _hemei_origins").fetchone()[0]
        status = {
            "node_id": self.id,
            "name": self.name,
            "scope": self.scope,
            **({"home": str(self.home)} if admin else {}),
            "modules": self.enabled_modules(),
            "module_versions": self.module_versions,
            "missing_modules": list(self.pm.missing_modules),
            "log": {"size": size, "head": head.hex(), "entries_all_origins": total,
                    "origins": len(self.version_vector())},
            "conflicts": self._refusal_count(),
            # Updates and deletes received before their row's insert; applied when it comes.
            "waiting": self.conn.execute("SELECT count(*) FROM _hemei_waiting").fetchone()[0],
            # How far this node's stamps run ahead of this PC's clock, when a parent would refuse them (set
            # while the PC clock was ahead, or by a received entry): every new entry is stamped after them.
            "clock_ahead_of_pc_ms": self._stamps_ahead_ms(),
        }
        for extra in self.pm.hook.node_status(node=self, admin=admin):
            for key, value in (extra or {}).items():
                if key in status or key == "home":  # the core's even where a reader is not shown it
                    raise InvalidInput(f"two parts of hemei report the status key {key!r}")
                status[key] = value
        return status
