"""Declared tables, merge policies and migrations.

A plugin declares each synced table as a :class:`TableSpec`; the core
creates it (and adds columns that a newer declaration adds), with a few
hidden columns that carry the merge metadata. Anything else a schema needs
over time (indexes, local-only tables, data moves) is a step in the plugin's
own :class:`MigrationSet`, recorded in ``_hemei_migrations``.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import sqlite3
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import sqlite_utils

from .errors import InvalidInput

LWW = "lww"
APPEND_ONLY = "append_only"
POLICIES = (LWW, APPEND_ONLY)

COLUMN_TYPES = {"text": "TEXT", "integer": "INTEGER", "real": "REAL", "blob": "BLOB"}
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

# Exact Python types a column accepts: bool is not an integer here, an int is a real.
_PY_TYPES = {"text": (str,), "integer": (int,), "real": (float, int), "blob": (bytes,)}

#: Hidden columns of every synced table: the version (HLC, origin) of the row.
VERSION_COLUMNS = ("_hlc", "_origin")
#: Extra hidden columns of lww tables: tombstone flag and per-column versions.
LWW_COLUMNS = ("_deleted", "_colv")


def valid_table_name(name: str) -> bool:
    """Whether a :class:`TableSpec` may have this name."""
    return bool(_NAME.match(name)) and not name.startswith("_hemei")


@dataclass(frozen=True)
class TableSpec:
    """A synced table owned by a plugin.

    ``columns`` maps column name to one of ``text``, ``integer``, ``real``,
    ``blob``; it must include ``pk`` and ``scope`` (the org path of the row,
    text). ``required`` columns must be given on insert. ``unique`` names
    columns of an append-only table that no two rows may share: the earliest
    row (by HLC, then origin id) wins and the others become conflicts.
    ``indexes`` are tuples of column names.

    In lww tables a deleted row stays as a tombstone with ``_deleted = 1``:
    query live rows with ``WHERE _deleted = 0``. (An update that arrives
    before its row's insert waits in ``_hemei_waiting``, not in the table.)
    """

    name: str
    columns: dict[str, str]
    policy: str = LWW
    pk: str = "id"
    scope: str = "scope"
    required: tuple[str, ...] = ()
    unique: tuple[str, ...] = ()
    indexes: tuple[tuple[str, ...], ...] = ()
    _accepted: dict = field(default=None, init=False, repr=False, compare=False)
    _required_data: tuple = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self):
        if not valid_table_name(self.name):
            raise ValueError(f"table name {self.name!r}: use lower_snake_case, not starting with _")
        if self.policy not in POLICIES:
            raise ValueError(f"table {self.name}: unknown merge policy {self.policy!r}")
        for col, typ in self.columns.items():
            if not _NAME.match(col):
                raise ValueError(f"table {self.name}: column {col!r} must be lower_snake_case, not starting with _")
            if typ not in COLUMN_TYPES:
                raise ValueError(f"table {self.name}: column {col} has unknown type {typ!r}")
        for col in (self.pk, self.scope, *self.required, *self.unique, *(c for ix in self.indexes for c in ix)):
            if col not in self.columns:
                raise ValueError(f"table {self.name}: {col!r} is not a declared column")
        if self.columns[self.pk] != "text" or self.columns[self.scope] != "text":
            raise ValueError(f"table {self.name}: pk and scope columns must be text")
        if self.unique and self.policy != APPEND_ONLY:
            raise ValueError(f"table {self.name}: unique keys are for append_only tables")
        object.__setattr__(self, "_accepted", {c: _PY_TYPES[t] for c, t in self.columns.items()
                                               if c not in (self.pk, self.scope)})
        object.__setattr__(self, "_required_data", tuple(c for c in self.required if c not in (self.pk, self.scope)))

    @property
    def data_columns(self) -> tuple[str, ...]:
        """Columns an entry's ``v`` carries: all but the key and the scope (both in the header)."""
        return tuple(c for c in self.columns if c not in (self.pk, self.scope))

    def check_values(self, values: dict, *, insert: bool) -> None:
        """Raise :class:`InvalidInput` unless ``values`` fit the declared columns (a local write)."""
        problem = self.value_problem(values, insert=insert)
        if problem:
            raise InvalidInput(problem)

    def value_problem(self, values, *, insert: bool) -> str | None:
        """Why ``values`` cannot be data columns of this table, or None (shared by writes and receipt).

        Required columns must be given by an insert and cannot be emptied by
        an update, so code reading the table can trust them whoever wrote the
        row. Also for a change written under an older schema of the module,
        after its upgrade steps: a sender can claim any version, so a column
        required since then is the upgrade step's to fill (docs/plugins.md).
        """
        if not isinstance(values, dict):
            return f"{self.name}: values must be an object"
        needed = self._required_data
        if insert and (missing := [c for c in needed if values.get(c) is None]):
            return f"{self.name}: {', '.join(missing)} required"
        accepted = self._accepted  # data columns only
        for col, value in values.items():
            if value is None:
                if col not in accepted:
                    return f"{self.name} has no data column {col!r}"
                if col in needed:
                    return f"{self.name}: {col} cannot be emptied"
                continue
            kind = type(value)
            if kind not in accepted.get(col, ()):
                if col not in accepted:
                    return f"{self.name} has no data column {col!r}"
                return f"{self.name}.{col} must be {self.columns[col]}, got {kind.__name__}"
            if kind is int and not -(2 ** 63) <= value < 2 ** 63:
                return f"{self.name}.{col}: {value} does not fit in 64 bits"
            if kind is float and not math.isfinite(value):
                return f"{self.name}.{col}: {value} is not a finite number"
        return None


def create_or_extend_table(conn: sqlite3.Connection, spec: TableSpec) -> bool:
    """Create the table of ``spec``, or add the columns a newer declaration adds; True if it created it."""
    existing = [row[1] for row in conn.execute(f"PRAGMA table_info([{spec.name}])")]
    hidden = {"_hlc": "INTEGER", "_origin": "TEXT"}
    if spec.policy == LWW:
        hidden.update({"_deleted": "INTEGER", "_colv": "TEXT"})
    if not existing:
        cols = [f"[{c}] {COLUMN_TYPES[t]}" + (" PRIMARY KEY" if c == spec.pk else "")
                for c, t in spec.columns.items()]
        cols += [f"[{c}] {t}" for c, t in hidden.items()]
        conn.execute(f"CREATE TABLE [{spec.name}] ({', '.join(cols)})")
    else:
        for col, typ in {**{c: COLUMN_TYPES[t] for c, t in spec.columns.items()}, **hidden}.items():
            if col not in existing:
                conn.execute(f"ALTER TABLE [{spec.name}] ADD COLUMN [{col}] {typ}")
    if spec.unique:
        cols = ", ".join(f"[{c}]" for c in spec.unique)
        conn.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS [ux_{spec.name}_{'_'.join(spec.unique)}] "
                     f"ON [{spec.name}] ({cols})")
    for index in spec.indexes:
        cols = ", ".join(f"[{c}]" for c in index)
        conn.execute(f"CREATE INDEX IF NOT EXISTS [ix_{spec.name}_{'_'.join(index)}] ON [{spec.name}] ({cols})")
    return not existing


@dataclass
class MigrationSet:
    """A named, ordered set of schema steps owned by one plugin.

    >>> migrations = MigrationSet("volunteer_hours")
    >>> @migrations.step
    ... def add_search_index(db):
    ...     db["volunteers"].create_index(["name"], if_not_exists=True)
    """

    name: str
    steps: list[tuple[str, Callable[[sqlite_utils.Database], None]]] = field(default_factory=list)

    def step(self, fn: Callable[[sqlite_utils.Database], None]):
        if any(name == fn.__name__ for name, _ in self.steps):
            raise ValueError(f"migration set {self.name}: step {fn.__name__} declared twice")
        self.steps.append((fn.__name__, fn))
        return fn

    def apply(self, conn: sqlite3.Connection) -> list[str]:
        """Run the steps not yet recorded, each in its own transaction; return their names.

        The steps are given a ``sqlite_utils.Database`` on ``conn``, made (and sqlite-utils imported)
        only when a step is to run: every command opens its node and applies every set, and the import
        alone is a sixth of a command's start-up."""
        done = {row[0] for row in conn.execute(
            "SELECT step FROM _hemei_migrations WHERE set_name = ?", [self.name])}
        pending = [(name, fn) for name, fn in self.steps if name not in done]
        if not pending:
            return []
        from sqlite_utils import Database

        applied = []
        for name, fn in pending:
            conn.execute("BEGIN IMMEDIATE")
            try:
                fn(Database(conn))
                conn.execute(
                    "INSERT INTO _hemei_migrations (set_name, step, applied_at) VALUES (?, ?, ?)",
                    [self.name, name, _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")],
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            applied.append(name)
        return applied


MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS _hemei_migrations (
    set_name TEXT NOT NULL, step TEXT NOT NULL, applied_at TEXT NOT NULL,
    PRIMARY KEY (set_name, step))"""

CORE_SCHEMA = """
CREATE TABLE IF NOT EXISTS _hemei_meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS _hemei_origins (
    ix INTEGER PRIMARY KEY,
    node_id TEXT NOT NULL UNIQUE,
    public_key BLOB NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    head BLOB NOT NULL,
    scope TEXT);
CREATE TABLE IF NOT EXISTS _hemei_log (
    origin INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    hlc INTEGER NOT NULL,
    actor TEXT NOT NULL,
    kind TEXT NOT NULL,
    scope TEXT NOT NULL,
    payload TEXT NOT NULL,
    hash BLOB NOT NULL,
    sig BLOB,
    salt BLOB,
    leaf BLOB,
    PRIMARY KEY (origin, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _hemei_conflicts (
    tbl TEXT NOT NULL, pk TEXT NOT NULL, hlc INTEGER NOT NULL, origin TEXT NOT NULL,
    kind TEXT NOT NULL, reason TEXT NOT NULL, row TEXT NOT NULL, ukey TEXT,
    PRIMARY KEY (tbl, pk, hlc, origin)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS _hemei_conflicts_ukey ON _hemei_conflicts (tbl, ukey);
CREATE TABLE IF NOT EXISTS _hemei_modules (
    name TEXT PRIMARY KEY, enabled INTEGER NOT NULL, changed_hlc INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS _hemei_users (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, password_hash TEXT NOT NULL,
    created_hlc INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS _hemei_tokens (
    token_hash BLOB PRIMARY KEY, user TEXT NOT NULL, created_hlc INTEGER NOT NULL,
    expires_ms INTEGER, revoked INTEGER NOT NULL DEFAULT 0);
"""

core_migrations = MigrationSet("hemei.core")


@core_migrations.step
def core_0001_initial(db: sqlite_utils.Database) -> None:
    for statement in CORE_SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)


@core_migrations.step
def core_0002_module_schema_version(db: sqlite_utils.Database) -> None:
    # The schema version each enabled module's tables were last built at (NULL: 1, before versions existed).
    db.execute("ALTER TABLE _hemei_modules ADD COLUMN schema_version INTEGER")


@core_migrations.step
def core_0003_waiting_changes(db: sqlite_utils.Database) -> None:
    # Updates and deletes received before their row's insert (see hemei.core.merge); judge_only: one
    # not applied anyway (refused, quarantined), kept only so the insert can judge its scope. Before
    # this table they made a row with no scope; the node replays its lww tables once to move them here.
    db.execute("""CREATE TABLE _hemei_waiting (
        tbl TEXT NOT NULL, pk TEXT NOT NULL, hlc INTEGER NOT NULL, origin TEXT NOT NULL,
        op TEXT NOT NULL, actor TEXT NOT NULL, scope TEXT NOT NULL, vals TEXT NOT NULL,
        schema INTEGER NOT NULL, confined_to TEXT, judge_only INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (tbl, pk, hlc, origin)) WITHOUT ROWID""")
    db.execute("INSERT OR REPLACE INTO _hemei_meta (key, value) VALUES ('reproject_unscoped', 1)")
    # Origins whose changes this node confines to their declared scope (see Node.apply_batches), so a
    # rebuild judges them as receipt did. Until now that was every origin below this node: its children
    # and theirs, whose pushes were confined.
    db.execute("ALTER TABLE _hemei_origins ADD COLUMN confined INTEGER NOT NULL DEFAULT 0")
    db.execute("UPDATE _hemei_origins SET confined = 1 WHERE substr(scope, 1, length((SELECT value FROM"
               " _hemei_meta WHERE key = 'scope')) + 1) = (SELECT value FROM _hemei_meta WHERE key = 'scope') || '/'")
