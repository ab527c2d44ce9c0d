"""Projection of row changes into state tables under their merge policy.

This is the one code path for every row change: a local write, an entry
received from another node, and a replay by ``hemei rebuild``. Only the
handling of a change that cannot be applied differs: locally it is an error
(nothing is written); from elsewhere it is a refusal, recorded in
``_hemei_conflicts`` while the entry stays in the log.

Convergence rests on each policy being a function of the *set* of changes:

* lww: every versioned column (all but the key, plus ``_deleted``) holds the
  value of the change with the greatest version ``(hlc, origin id)``. Taking
  a maximum is commutative and idempotent, so arrival order cannot matter.
  The row's scope is written by inserts only. ``_hlc``/``_origin`` hold the
  row version (the greatest); ``_colv`` keeps only the columns whose version
  differs from it (NULL in the common case), so the stored form is canonical
  too. An update or delete that arrives before its row's insert waits in
  ``_hemei_waiting`` (the row has no scope yet, so nothing can judge it);
  the insert merges every waiting change in, as if they had come after it.
* append_only: rows are immutable. Rows that share a key or a unique key
  form a group in which, taken in version order, a row wins unless an
  earlier winner holds its key; the losers are conflicts. Re-resolving the
  whole group on every arrival keeps the result independent of order.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Callable, Container, NamedTuple

import orjson

from .errors import Conflict, InvalidInput, NotFound, ScopeViolation
from .schema import APPEND_ONLY, LWW, TableSpec, valid_table_name
from .scope import covers

if TYPE_CHECKING:
    from .versions import TableVersion

Version = tuple  # (hlc, origin node id)


class Change(NamedTuple):
    """One row change, as plugins see it in ``validate_change`` and ``change_applied``.

    ``values`` holds data columns only; ``pk`` and ``scope`` name the row.
    ``local`` is True for a write made on this node in this transaction.
    ``schema`` is the version of the table's module the change was written
    under (see :mod:`hemei.core.versions`); plugins always see their own.
    """

    table: str
    op: str  # "insert" | "update" | "delete"
    pk: str
    scope: str
    values: dict
    hlc: int
    origin: str
    actor: str
    local: bool
    schema: int = 1


Validator = Callable[[Change], "str | None"]

#: ``Change.op`` of an entry whose payload is not a row change this node can read.
UNREADABLE = "unreadable"
#: Conflict kind of a relayed change that reaches a row outside its origin's scope (see Projector.apply).
OUT_OF_SCOPE = "out_of_scope"


def _dumps(obj) -> str:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode()


class Projector:
    """Applies :class:`Change` lists to the state tables of ``specs`` on ``conn``.

    The caller owns the transaction; this class only issues statements.
    """

    def __init__(self, conn: sqlite3.Connection, specs: dict[str, TableSpec],
                 validator: Validator | None = None, versions: dict[str, TableVersion] | None = None):
        self.conn = conn
        self.specs = specs
        self.validator = validator
        self.versions = versions or {}
        #: table -> the schema version this node writes and reads (1 unless its module says otherwise)
        self.current = {table: tv.version for table, tv in self.versions.items()}
        self._reads_older = any(v > 1 for v in self.current.values())
        self._insert_sql = {name: self._fast_insert_sql(spec) for name, spec in specs.items()}
        self._origin_scope: str | None = None
        self._keep_violations = False
        self._judged_tables: Container[str] = specs  # tables whose received inserts are confined too
        self._marked: set[str] = set()  # _hemei_meta marks written in this call (see _unprojected)
        self._released: list[Change] = []

    # -- entry point -----------------------------------------------------
    def apply(self, changes: list[Change], *, local: bool, origin_scope: str | None = None,
              keep_violations: bool = False, judge_inserts: bool | Container[str] = True) -> list[Change]:
        """Apply ``changes`` in order; return those that took effect.

        ``origin_scope`` (received changes, all of one origin): a change that
        reaches a stored row outside that scope (a street editing, deleting
        or re-inserting a sibling's row) raises :class:`ScopeViolation`, or
        with ``keep_violations`` is kept as a conflict of kind
        ``out_of_scope`` and not applied. Only a stored row can be reached,
        so the check runs where the merge reads it anyway; a new key costs
        nothing.

        An update or delete of a row not inserted yet waits for the insert
        (it is returned then, among the changes that insert let through);
        received under ``origin_scope``, it is judged against the scope the
        insert gives the row, and kept as ``out_of_scope`` if outside.
        ``judge_inserts`` False (a rebuild): only updates and deletes are
        confined; whether an insert reached a row outside its origin's scope
        depends on which insert of that key came first, known only at receipt.
        Or the tables whose inserts are judged all the same: those no receipt
        judged, because their module was off (see ``Node._reproject``).
        """
        self._origin_scope = origin_scope
        self._keep_violations = keep_violations
        self._judged_tables = self.specs if judge_inserts is True else judge_inserts or ()
        self._marked = set()
        self._released = []
        try:
            if self._reads_older and not local:
                changes = self._upgraded(changes)
            applied = self._apply(changes, local)
            applied.extend(self._released)
            return applied
        finally:
            self._origin_scope = None
            self._released = []

    def _guard(self, spec: TableSpec, change: Change, row_scope: str | None) -> bool:
        """False (or :class:`ScopeViolation`) for a received change to a stored row outside its origin's scope.

        ``row_scope`` None: a row not inserted yet, which no scope owns.
        """
        return self._confined(spec, change, row_scope, self._origin_scope, self._keep_violations)

    def _confined(self, spec: TableSpec, change: Change, row_scope: str | None, origin_scope: str | None,
                  keep: bool) -> bool:
        if origin_scope is None or row_scope is None or covers(origin_scope, row_scope) \
                or (change.op == "insert" and change.table not in self._judged_tables):
            return True
        reason = (f"an entry of {change.origin} changes {spec.name} {change.pk}, "
                  f"a row of {row_scope}, outside {origin_scope}")
        if not keep:
            raise ScopeViolation(reason)
        # Stronger than any other judgment of the change (refused, unreadable): it is the one a rebuild keeps.
        self.conn.execute("DELETE FROM _hemei_conflicts WHERE tbl = ? AND pk = ? AND hlc = ? AND origin = ?",
                          (spec.name, change.pk, change.hlc, change.origin))
        self.record(spec.name, change, OUT_OF_SCOPE, reason)
        return False

    def _guard_stored(self, spec: TableSpec, change: Change) -> bool:
        """:meth:`_guard` against whatever is stored under the change's key: the row, and for an
        append-only table the rows kept as duplicates (a key whose row lost a unique-key clash
        is still its writer's). Runs whether or not the change is admissible, so a refused change
        aimed at a sibling's row does not sit in the log for a later upgrade and rebuild to apply."""
        if self._origin_scope is None:
            return True
        stored = self.conn.execute(f"SELECT [{spec.scope}] FROM [{spec.name}] WHERE [{spec.pk}] = ?",
                                   (change.pk,)).fetchone()
        if not self._guard(spec, change, stored and stored[0]):
            return False
        held = stored is not None
        if spec.policy == APPEND_ONLY:
            for (kept,) in self.conn.execute("SELECT row FROM _hemei_conflicts WHERE tbl = ? AND pk = ?"
                                             " AND kind = 'duplicate'", (spec.name, change.pk)):
                held = True
                if not self._guard(spec, change, orjson.loads(kept).get("scope")):
                    return False
        if not held and change.op != "insert":
            # Nothing to judge it by yet: the insert of its key will (it is not applied either way).
            self._wait(spec, change, judge_only=True)
        return True

    def _upgraded(self, changes: list[Change]) -> list[Change]:
        """Changes written under an older schema of their module, read through its upgrade steps."""
        out = []
        for change in changes:
            tv = self.versions.get(change.table)
            if tv is None or change.op == UNREADABLE or change.schema >= tv.version:
                out.append(change)
                continue
            upgraded = tv.upgrade(change)
            if isinstance(upgraded, str):
                self.record(change.table, change, "unreadable", upgraded)
                self._guard_stored(self.specs[change.table], change)
            else:
                out.append(upgraded)
        return out

    def _apply(self, changes: list[Change], local: bool) -> list[Change]:
        applied: list[Change] = []
        i, n = 0, len(changes)
        while i < n:
            change = changes[i]
            if change.op == UNREADABLE:
                self.record(change.table, change._replace(values={}), "unreadable", change.values["reason"])
                i += 1
                continue
            spec = self.specs.get(change.table)
            if spec is None:
                if local:
                    raise InvalidInput(f"no table {change.table!r}: is its module enabled?")
                # A disabled or unknown module: the entry stays in the log and
                # is projected when the module is enabled (rebuild of its tables).
                self._unprojected(change.table, change.op == "insert" and self._origin_scope is not None)
                i += 1
                continue
            if change.op == "insert":
                j = i + 1
                while j < n and changes[j].op == "insert" and changes[j].table == change.table:
                    j += 1
                applied.extend(self._insert_run(spec, changes[i:j], local))
                i = j
                continue
            if not self._admissible(spec, change, local):
                self._guard_stored(spec, change)  # refused or not, it may not aim at a sibling's row
            elif self._apply_one(spec, change, local):  # guards the row it reads
                applied.append(change)
            i += 1
        return applied

    def _unprojected(self, table: str, judge: bool) -> None:
        """Mark ``table`` in ``_hemei_meta``, in the transaction that logs the change it cannot project:
        ``replay:`` (whichever process next loads a module declaring the table replays it: enabled,
        installed again, or a release that adds the table, even without a new schema version), and with
        ``judge`` (a confined origin's insert) ``judge:`` (that replay judges the table's inserts)."""
        if not valid_table_name(table):
            return  # no module can ever declare it: nothing to replay
        for mark in ("replay", "judge") if judge else ("replay",):
            key = f"{mark}:{table}"
            if key not in self._marked:
                self._marked.add(key)
                self.conn.execute("INSERT OR IGNORE INTO _hemei_meta (key, value) VALUES (?, 1)", (key,))

    # -- checks shared by both paths -------------------------------------
    def _admissible(self, spec: TableSpec, change: Change, local: bool) -> bool:
        if not local:
            if change.schema != self.current.get(spec.name, 1):  # older ones were upgraded: a newer release's
                tv = self.versions.get(spec.name)
                reason = tv.too_new(change) if tv else f"written at schema v{change.schema}; this node reads v1"
                self.record(spec.name, change, "quarantined", reason)
                return False
            problem = spec.value_problem(change.values, insert=change.op == "insert")
            if problem:
                self.record(spec.name, change, "unreadable", problem)
                return False
        if self.validator is not None:
            reason = self.validator(change)
            if reason:
                if local:
                    raise InvalidInput(reason, code="refused")
                self.record(spec.name, change, "refused", reason)
                return False
        return True

    def record(self, table: str, change: Change, kind: str, reason: str, ukey: str | None = None) -> None:
        """Keep a change that was not applied, so that nothing is lost."""
        self.conn.execute(
            "INSERT OR IGNORE INTO _hemei_conflicts (tbl, pk, hlc, origin, kind, reason, row, ukey)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (table, change.pk, change.hlc, change.origin, kind, reason,
             _dumps({"op": change.op, "scope": change.scope, "v": change.values}), ukey),
        )

    # -- inserts: optimistic executemany, exact merge on collision --------
    def _fast_insert_sql(self, spec: TableSpec) -> str:
        cols = [spec.pk, spec.scope, *spec.data_columns, "_hlc", "_origin"]
        if spec.policy == LWW:
            cols += ["_deleted"]
        marks = ", ".join("?" * len(cols))
        names = ", ".join(f"[{c}]" for c in cols)
        return f"INSERT INTO [{spec.name}] ({names}) VALUES ({marks})"

    def _insert_run(self, spec: TableSpec, run: list[Change], local: bool) -> list[Change]:
        if self.validator is not None or not local:
            admitted = []
            for change in run:
                if self._admissible(spec, change, local):
                    admitted.append(change)
                else:
                    self._guard_stored(spec, change)  # refused or not, it may not aim at a sibling's row
            run = admitted
        if spec.policy == APPEND_ONLY and self._has_duplicates(spec):
            # A new row might share a key with a stored loser: only the exact
            # group resolution sees those, so skip the optimistic insert.
            return [c for c in run if self._apply_one(spec, c, local)]
        if waited := self._waited_keys(spec, run):
            # These inserts release changes that came before them: merge (or judge) each exactly.
            fast = self._fast_insert(spec, [c for c in run if c.pk not in waited], local)
            return fast + [c for c in run if c.pk in waited and self._apply_one(spec, c, local)]
        return self._fast_insert(spec, run, local)

    def _fast_insert(self, spec: TableSpec, run: list[Change], local: bool) -> list[Change]:
        data = spec.data_columns
        if spec.policy == LWW:
            rows = [(c.pk, c.scope, *[c.values.get(k) for k in data], c.hlc, c.origin, 0) for c in run]
        else:
            rows = [(c.pk, c.scope, *[c.values.get(k) for k in data], c.hlc, c.origin) for c in run]
        self.conn.execute("SAVEPOINT hemei_fast_insert")
        try:
            self.conn.executemany(self._insert_sql[spec.name], rows)
        except sqlite3.IntegrityError:
            # A key already taken (or taken twice in this run): merge each row exactly.
            self.conn.execute("ROLLBACK TO hemei_fast_insert")
            self.conn.execute("RELEASE hemei_fast_insert")
            return [c for c in run if self._apply_one(spec, c, local)]
        self.conn.execute("RELEASE hemei_fast_insert")
        return run

    def _waited_keys(self, spec: TableSpec, run: list[Change]) -> set[str]:
        """Keys of ``run`` that have changes waiting for their insert (one probe when none wait)."""
        if self.conn.execute("SELECT 1 FROM _hemei_waiting WHERE tbl = ? LIMIT 1", (spec.name,)).fetchone() is None:
            return set()
        keys: set[str] = set()
        for i in range(0, len(run), 500):
            chunk = [c.pk for c in run[i:i + 500]]
            keys.update(r[0] for r in self.conn.execute(
                f"SELECT pk FROM _hemei_waiting WHERE tbl = ? AND pk IN ({', '.join('?' * len(chunk))})",
                [spec.name, *chunk]))
        return keys

    def _wait(self, spec: TableSpec, change: Change, judge_only: bool = False) -> None:
        """Keep a received update or delete of a row not inserted yet, with the scope it was confined to.

        ``judge_only``: a confined change not applied anyway (refused, quarantined), kept only so that
        the insert judges its scope (see :meth:`_guard_stored`).
        """
        self.conn.execute(
            "INSERT OR IGNORE INTO _hemei_waiting (tbl, pk, hlc, origin, op, actor, scope, vals, schema,"
            " confined_to, judge_only) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (spec.name, change.pk, change.hlc, change.origin, change.op, change.actor, change.scope,
             _dumps(change.values), change.schema, self._origin_scope, int(judge_only)))

    def _release(self, spec: TableSpec, insert: Change) -> list[Change]:
        """The changes that waited for ``insert``, forgotten; each judged against the scope it gives the row
        (kept as ``out_of_scope`` if outside). Returns those to merge."""
        rows = self.conn.execute(
            "SELECT op, scope, vals, hlc, origin, actor, schema, confined_to, judge_only FROM _hemei_waiting"
            " WHERE tbl = ? AND pk = ?", (spec.name, insert.pk)).fetchall()
        if not rows:
            return []
        self.conn.execute("DELETE FROM _hemei_waiting WHERE tbl = ? AND pk = ?", (spec.name, insert.pk))
        to_merge = []
        for op, scope, vals, hlc, origin, actor, schema, confined_to, judge_only in rows:
            early = Change(spec.name, op, insert.pk, scope, orjson.loads(vals), hlc, origin, actor, False, schema)
            if self._confined(spec, early, insert.scope, confined_to, keep=True) and not judge_only:
                to_merge.append(early)
        return to_merge

    def _has_duplicates(self, spec: TableSpec) -> bool:
        return self.conn.execute("SELECT 1 FROM _hemei_conflicts WHERE tbl = ? AND kind = 'duplicate' LIMIT 1",
                                 (spec.name,)).fetchone() is not None

    def _apply_one(self, spec: TableSpec, change: Change, local: bool) -> bool:
        if spec.policy == APPEND_ONLY:
            return self._append_only(spec, change, local)
        return self._lww(spec, change, local)

    # -- lww ---------------------------------------------------------------
    def _lww(self, spec: TableSpec, change: Change, local: bool) -> bool:
        cols = list(spec.columns)
        versioned = [c for c in cols if c != spec.pk] + ["_deleted"]
        row = self.conn.execute(
            f"SELECT {', '.join(f'[{c}]' for c in cols)}, _deleted, _hlc, _origin, _colv"
            f" FROM [{spec.name}] WHERE [{spec.pk}] = ?", (change.pk,)).fetchone()
        if row is not None and not self._guard(spec, change, row[cols.index(spec.scope)]):
            return False
        if row is None:
            current: dict = {spec.pk: change.pk, spec.scope: None, "_deleted": None}
            versions: dict = {}
        else:
            current = dict(zip(cols + ["_deleted"], row[:-3]))
            hlc, origin, colv = row[-3:]
            versions = {c: (hlc, origin) for c in versioned}
            if colv is not None:
                for c, v in orjson.loads(colv).items():
                    if v is None:
                        del versions[c]
                    else:
                        versions[c] = tuple(v)
        live = current["_deleted"] == 0
        if local:
            if change.op == "insert" and live:  # over a tombstone it revives the row, as a received one does
                raise Conflict(f"{spec.name} {change.pk} already exists")
            if change.op != "insert" and not live:
                raise NotFound(f"{spec.name} has no row {change.pk}")
        # Beyond the confinement above (a tree edge's rule, see Node.apply_batches),
        # no scope check here: a rule that depended on which insert arrived first
        # would break convergence between replicas that exchange freely.
        if row is None and change.op != "insert":
            # No insert yet, so no scope to judge it by (and the first arrival must
            # not decide the row's scope): it waits, and the insert merges it.
            self._wait(spec, change)
            return False
        won = self._merge_lww(spec, change, current, versions)
        if row is None:  # received before the row had a scope: judged now against the one it gets
            self._released.extend(early for early in self._release(spec, change)
                                  if self._merge_lww(spec, early, current, versions))
        if not won:
            return False
        row_version = max(versions.values())
        # Only the exceptions to the row version are stored (None: never written).
        exceptions = {c: (None if c not in versions else list(versions[c]))
                      for c in versioned if versions.get(c) != row_version}
        colv = _dumps(exceptions) if exceptions else None
        names = cols + ["_deleted", "_hlc", "_origin", "_colv"]
        self.conn.execute(
            f"INSERT OR REPLACE INTO [{spec.name}] ({', '.join(f'[{c}]' for c in names)})"
            f" VALUES ({', '.join('?' * len(names))})",
            [current.get(c) for c in cols] + [current["_deleted"], row_version[0], row_version[1], colv],
        )
        return True

    @staticmethod
    def _merge_lww(spec: TableSpec, change: Change, current: dict, versions: dict) -> bool:
        """Merge ``change`` into a row's columns and column versions; True if any column took its value."""
        if change.op == "insert":
            incoming = {c: change.values.get(c) for c in spec.data_columns}
            incoming[spec.scope] = change.scope
            incoming["_deleted"] = 0
        elif change.op == "update":
            incoming = change.values
        else:
            incoming = {"_deleted": 1}
        version = (change.hlc, change.origin)
        won = False
        for col, value in incoming.items():
            old = versions.get(col)
            if old is None or version > old:
                current[col] = value
                versions[col] = version
                won = True
        return won

    # -- append-only -------------------------------------------------------
    def _append_only(self, spec: TableSpec, change: Change, local: bool) -> bool:
        if not self._guard_stored(spec, change):
            return False
        if change.op != "insert":
            if local:
                raise Conflict(f"{spec.name} is append-only: write a new row that corrects {change.pk}")
            self.record(spec.name, change, "refused", f"{spec.name} is append-only: {change.op} refused")
            return False
        row = {c: change.values.get(c) for c in spec.data_columns}
        row[spec.pk] = change.pk
        row[spec.scope] = change.scope
        version = (change.hlc, change.origin)
        if local:
            self._refuse_local_duplicate(spec, row)
        self._release(spec, change)  # updates and deletes sent before it: refused anyway, judged for scope here
        if self._loses_to_live_rows(spec, row, version):
            return False
        group = self._collision_group(spec, row, version)
        return self._resolve_group(spec, group, version)

    def _loses_to_live_rows(self, spec: TableSpec, row: dict, version: Version) -> bool:
        """The common case in O(1): a row later than every live row holding its key or unique key.

        In the group's version order it comes after those winners, so it
        loses and takes no key, and no other member's outcome changes: record
        it exactly as the full resolution would, without loading the group.
        (A second ballot, however many came before it, costs the same.)
        """
        by_pk = self.conn.execute(f"SELECT _hlc, _origin FROM [{spec.name}] WHERE [{spec.pk}] = ?",
                                  (row[spec.pk],)).fetchone()
        ukey = self._ukey(spec, row)
        holder = None
        if ukey is not None:
            where = " AND ".join(f"[{c}] = ?" for c in spec.unique)
            holder = self.conn.execute(f"SELECT [{spec.pk}], _hlc, _origin FROM [{spec.name}] WHERE {where}",
                                       [row[c] for c in spec.unique]).fetchone()
        if by_pk is None and holder is None:
            return False
        if (by_pk is not None and version < tuple(by_pk)) or (holder is not None and version < tuple(holder[1:])):
            return False
        if by_pk is not None:
            reason = f"key {row[spec.pk]} was written earlier"
        else:
            shown = ", ".join(f"{c}={row[c]}" for c in spec.unique)
            reason = f"{shown} is already held by {holder[0]}"
        self.conn.execute(
            "INSERT OR IGNORE INTO _hemei_conflicts (tbl, pk, hlc, origin, kind, reason, row, ukey)"
            " VALUES (?, ?, ?, ?, 'duplicate', ?, ?, ?)",
            (spec.name, row[spec.pk], version[0], version[1], reason,
             _dumps({"op": "insert", "scope": row[spec.scope], "v": {c: row.get(c) for c in spec.data_columns}}),
             ukey))
        return True

    def _ukey(self, spec: TableSpec, row: dict) -> str | None:
        if not spec.unique:
            return None
        key = [row.get(c) for c in spec.unique]
        return None if any(v is None for v in key) else _dumps(key)

    def _refuse_local_duplicate(self, spec: TableSpec, row: dict) -> None:
        if self.conn.execute(f"SELECT 1 FROM [{spec.name}] WHERE [{spec.pk}] = ?", (row[spec.pk],)).fetchone():
            raise Conflict(f"{spec.name} {row[spec.pk]} already exists")
        if self._ukey(spec, row) is not None:
            where = " AND ".join(f"[{c}] = ?" for c in spec.unique)
            hit = self.conn.execute(f"SELECT [{spec.pk}] FROM [{spec.name}] WHERE {where}",
                                    [row[c] for c in spec.unique]).fetchone()
            if hit:
                shown = ", ".join(f"{c}={row[c]}" for c in spec.unique)
                raise Conflict(f"{spec.name} already has a row with {shown} ({hit[0]})")

    def _collision_group(self, spec: TableSpec, row: dict, version: Version) -> dict[Version, dict]:
        """All rows, live or in conflicts, linked to ``row`` by key or unique key."""
        cols = list(spec.columns)
        select_live = f"SELECT {', '.join(f'[{c}]' for c in cols)}, _hlc, _origin FROM [{spec.name}] WHERE "
        group: dict[Version, dict] = {version: row}
        pending = [row]
        seen_pk: set = set()
        seen_key: set = set()
        while pending:
            item = pending.pop()
            found: list[tuple[dict, Version]] = []
            pk = item[spec.pk]
            if pk not in seen_pk:
                seen_pk.add(pk)
                for r in self.conn.execute(select_live + f"[{spec.pk}] = ?", (pk,)):
                    found.append((dict(zip(cols, r[:-2])), (r[-2], r[-1])))
                found += self._conflict_rows(spec, "pk = ?", pk)
            ukey = self._ukey(spec, item)
            if ukey is not None and ukey not in seen_key:
                seen_key.add(ukey)
                where = " AND ".join(f"[{c}] = ?" for c in spec.unique)
                for r in self.conn.execute(select_live + where, [item[c] for c in spec.unique]):
                    found.append((dict(zip(cols, r[:-2])), (r[-2], r[-1])))
                found += self._conflict_rows(spec, "ukey = ?", ukey)
            for other, other_version in found:
                if other_version not in group:
                    group[other_version] = other
                    pending.append(other)
        return group

    def _conflict_rows(self, spec: TableSpec, where: str, arg) -> list[tuple[dict, Version]]:
        out = []
        for pk, hlc, origin, stored in self.conn.execute(
                f"SELECT pk, hlc, origin, row FROM _hemei_conflicts WHERE tbl = ? AND kind = 'duplicate' AND {where}",
                (spec.name, arg)):
            data = orjson.loads(stored)
            row = dict(data["v"])
            row[spec.pk] = pk
            row[spec.scope] = data["scope"]
            out.append((row, (hlc, origin)))
        return out

    def _resolve_group(self, spec: TableSpec, group: dict[Version, dict], incoming: Version) -> bool:
        taken_pk: dict = {}
        taken_key: dict = {}
        winners, losers = [], []
        for version in sorted(group):
            row = group[version]
            ukey = self._ukey(spec, row)
            if row[spec.pk] in taken_pk:
                losers.append((version, row, ukey, f"key {row[spec.pk]} was written earlier"))
            elif ukey is not None and ukey in taken_key:
                shown = ", ".join(f"{c}={row[c]}" for c in spec.unique)
                losers.append((version, row, ukey, f"{shown} is already held by {taken_key[ukey]}"))
            else:
                taken_pk[row[spec.pk]] = version
                if ukey is not None:
                    taken_key[ukey] = row[spec.pk]
                winners.append((version, row))
        # Rewrite the group: remove every member from both places, then put each back.
        for version, row in group.items():
            self.conn.execute(f"DELETE FROM [{spec.name}] WHERE [{spec.pk}] = ? AND _hlc = ? AND _origin = ?",
                              (row[spec.pk], *version))
            self.conn.execute("DELETE FROM _hemei_conflicts WHERE tbl = ? AND pk = ? AND hlc = ? AND origin = ?",
                              (spec.name, row[spec.pk], *version))
        cols = list(spec.columns)
        sql = (f"INSERT INTO [{spec.name}] ({', '.join(f'[{c}]' for c in cols)}, _hlc, _origin)"
               f" VALUES ({', '.join('?' * (len(cols) + 2))})")
        for version, row in winners:
            self.conn.execute(sql, [row.get(c) for c in cols] + list(version))
        for version, row, ukey, reason in losers:
            values = {c: row.get(c) for c in spec.data_columns}
            self.conn.execute(
                "INSERT INTO _hemei_conflicts (tbl, pk, hlc, origin, kind, reason, row, ukey)"
                " VALUES (?, ?, ?, ?, 'duplicate', ?, ?, ?)",
                (spec.name, row[spec.pk], version[0], version[1], reason,
                 _dumps({"op": "insert", "scope": row[spec.scope], "v": values}), ukey))
        return any(version == incoming for version, _ in winners)
