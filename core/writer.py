"""The write API: the one obvious way to change a synced table.

    with node.writer("wang.li") as w:
        vid = w.insert("volunteers", {"name": "王丽", "scope": "yuecheng/fushan"})
        w.update("volunteers", vid, {"phone_enc": ...})

Inside one SQLite transaction each write stamps the hybrid clock, becomes a
log entry (hash-chained to the node's previous one, naming its actor) and is
applied to its table by the same projector that applies entries from other
nodes. Entries are buffered and written with ``executemany``; the buffer is
flushed every ``SIGN_EVERY`` entries or ``SIGN_BYTES`` of payload, before
any read through the writer, and at the end, and the node signs a
checkpoint at each flush.
"""

from __future__ import annotations

import unicodedata
from os import urandom
from typing import TYPE_CHECKING

import orjson

from .chain import RESERVED_KINDS, SALT_BYTES, entry_hash
from .errors import InvalidInput, NotFound
from .identity import sign_checkpoint
from .merge import Change
from .schema import LWW
from .scope import covers, parse_scope

if TYPE_CHECKING:
    from .node import Node

#: Entries per flush, and so at most this many between two signed checkpoints.
SIGN_EVERY = 1000
#: Payload bytes after which the buffer is flushed (and signed) early. A batch of sync ends only at a
#: signed checkpoint, so this bounds the smallest batch a sender can cut: with MAX_PAYLOAD, a stretch
#: between two checkpoints carries at most 1.25 MiB of payload, well inside one sync message.
SIGN_BYTES = 1024 * 1024
#: Largest payload of one entry.
MAX_PAYLOAD = 256 * 1024

_KIND_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789._-")


def check_actor(actor: str) -> str:
    if not isinstance(actor, str) or not actor.strip() or len(actor) > 64:
        raise InvalidInput("actor must be a name of 1 to 64 characters")
    if any(unicodedata.category(ch)[0] == "C" for ch in actor):
        raise InvalidInput(f"actor {actor!r} contains control characters")
    return actor


def check_kind(kind: str) -> str:
    if not kind or len(kind) > 64 or not set(kind) <= _KIND_CHARS:
        raise InvalidInput(f"entry kind {kind!r}: use lower-case letters, digits and '.'")
    if kind in RESERVED_KINDS:
        raise InvalidInput(f"entry kind {kind!r} is reserved: row changes go through insert, update and delete")
    return kind


class Writer:
    """Collects changes for one transaction; made by :meth:`Node.writer`."""

    def __init__(self, node: Node, actor: str, origin_ix: int, size: int, head: bytes):
        self.node = node
        self.actor = check_actor(actor)
        self._origin_ix = origin_ix
        self.size = size
        self.head = head
        self._rows: list[list] = []
        self._changes: list[Change] = []
        self.applied: list[Change] = []
        self.entries_written = 0
        self._open = True
        self.failed: BaseException | None = None
        self._salts, self._salt_at = b"", 0
        self._buffered_bytes = 0

    # -- row changes -----------------------------------------------------
    def insert(self, table: str, values: dict) -> str:
        """Insert a row; returns its key (a new UUIDv7 unless ``values`` names one)."""
        spec = self._spec(table)
        values = dict(values)
        pk = values.pop(spec.pk, None)
        if pk is None:
            pk = self.node.new_id()
        elif not isinstance(pk, str) or not pk or len(pk) > 200:
            raise InvalidInput(f"{table}.{spec.pk} must be non-empty text of at most 200 characters")
        scope = self._row_scope(values.pop(spec.scope, None))
        spec.check_values(values, insert=True)
        self._append_row("insert", scope, table, pk, values)
        return pk

    def update(self, table: str, pk: str, values: dict) -> None:
        """Change some columns of a live row (lww tables only)."""
        spec = self._spec(table)
        if spec.pk in values or spec.scope in values:
            raise InvalidInput(f"{table}: the key and the scope of a row cannot change")
        if not values:
            raise InvalidInput(f"{table}: nothing to update")
        spec.check_values(values, insert=False)
        scope = self._live_scope(spec, pk)
        self._append_row("update", scope, table, pk, dict(values))

    def delete(self, table: str, pk: str) -> None:
        """Delete a live row: it stays as a tombstone that syncs like any change."""
        spec = self._spec(table)
        scope = self._live_scope(spec, pk)
        self._append_row("delete", scope, table, pk, {})

    def event(self, kind: str, payload: dict, scope: str | None = None) -> None:
        """Log an administrative event (no table changes): who did what."""
        self._append(check_kind(kind), scope or self.node.scope, payload)

    # -- reads see what this transaction wrote ---------------------------
    def query(self, sql: str, params=()) -> list[dict]:
        self.flush()
        return list(self.node.db.query(sql, params))

    @property
    def conn(self):
        """The transaction's connection, for local-only tables (e.g. users)."""
        self.flush()
        return self.node.conn

    # -- internals -------------------------------------------------------
    def _spec(self, table: str):
        self._usable()

        spec = self.node.specs.get(table)
        if spec is None:
            raise InvalidInput(f"no table {table!r}: is its module enabled?")
        return spec

    def _row_scope(self, scope: str | None) -> str:
        if scope is None or scope == self.node.scope:
            return self.node.scope
        scope = parse_scope(scope)
        if not covers(self.node.scope, scope):
            raise InvalidInput(f"scope {scope} is outside this node's scope {self.node.scope}")
        return scope

    def _live_scope(self, spec, pk: str) -> str:
        self.flush()
        if spec.policy != LWW:
            raise InvalidInput(f"{spec.name} is append-only: write a new row that corrects {pk}")
        row = self.node.conn.execute(
            f"SELECT [{spec.scope}] FROM [{spec.name}] WHERE [{spec.pk}] = ? AND _deleted = 0", (pk,)).fetchone()
        if row is None:
            raise NotFound(f"{spec.name} has no row {pk}")
        if not covers(self.node.scope, row[0]):
            # It came from above; the parent would refuse the change (and everything after it).
            raise InvalidInput(f"{spec.name} {pk} belongs to {row[0]}, outside this node's scope "
                               f"{self.node.scope}: it can only be changed there", code="out_of_scope")
        return row[0]

    def _usable(self) -> None:
        if not self._open:
            raise RuntimeError("writer used after its transaction ended")
        if self.failed is not None:
            raise InvalidInput(f"this transaction failed earlier and will be rolled back: {self.failed}",
                               code="transaction_failed")

    def _append_row(self, op: str, scope: str, table: str, pk: str, values: dict) -> None:
        payload = {"t": table, "pk": pk, "v": values}
        schema = self.node.projector.current.get(table, 1)
        if schema != 1:  # see hemei.core.versions: a reader needs it to upgrade or quarantine the change
            payload["s"] = schema
        self._append(f"row.{op}", scope, payload, Change(table, op, pk, scope, values, 0, "", self.actor, True, schema))

    def _append(self, kind: str, scope: str, payload: dict, change: Change | None = None) -> None:
        self._usable()
        hlc = self.node.clock.tick()
        try:
            raw = orjson.dumps(payload)
        except (TypeError, orjson.JSONEncodeError) as exc:
            raise InvalidInput(f"value cannot be recorded: {exc}") from None
        if len(raw) > MAX_PAYLOAD:
            raise InvalidInput(f"one change may carry at most {MAX_PAYLOAD // 1024} KiB; this one has "
                               f"{len(raw) // 1024} KiB")
        text = raw.decode()
        seq = self.size + 1
        origin = self.node.id
        if self._salt_at >= len(self._salts):  # one getrandom call per 1,024 entries, not per entry
            self._salts, self._salt_at = urandom(SALT_BYTES * 1024), 0
        salt = self._salts[self._salt_at:self._salt_at + SALT_BYTES]
        self._salt_at += SALT_BYTES
        self.head = entry_hash(self.head, origin, seq, hlc, self.actor, kind, scope, raw, salt)
        self.size = seq
        self._rows.append([self._origin_ix, seq, hlc, self.actor, kind, scope, text, self.head, None, salt, None])
        if change is not None:
            self._changes.append(change._replace(hlc=hlc, origin=origin))
        self._buffered_bytes += len(raw)
        if len(self._rows) >= SIGN_EVERY or self._buffered_bytes >= SIGN_BYTES:
            self.flush()

    def flush(self) -> None:
        self._usable()
        if not self._rows:
            return
        last = self._rows[-1]
        last[8] = sign_checkpoint(self.node.key, self.node.id, last[1], last[7])
        rows, changes = self._rows, self._changes
        self._rows, self._changes, self._buffered_bytes = [], [], 0
        try:
            self.applied.extend(self.node._ingest(rows, changes, local=True))
        except BaseException as exc:
            # The log rows may be written and the state not: this transaction
            # can only be rolled back, even if the caller catches the error.
            self.failed = exc
            raise
        self.entries_written += len(rows)
