"""The log read as an audit trail: verification and "who did what".

:func:`verify_log` re-checks every origin's chain in the database against
its stored hashes and signed checkpoints, with the same
:func:`~hemei.core.chain.entry_hash` the receive path uses. It reports the
first bad entry of each origin and never stops at the first origin.

What it proves: nothing in the log was altered, removed, reordered or
inserted since each origin signed it. What it cannot prove on its own
machine: that the owner of the key did not rewrite the whole tail and sign
it again; the checkpoints a parent holds are the evidence for that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from .chain import GENESIS, REDACTED, entry_leaf, link
from .clock import hlc_to_iso, iso_to_hlc
from .errors import ChainError, InvalidInput
from .identity import verify_checkpoint

if TYPE_CHECKING:
    from .node import Node


def verify_log(node: Node, progress=None) -> dict:
    """``{"ok": bool, "origins": {node_id: {"size", "head"}}, "errors": [str]}``."""
    errors: list[str] = []
    origins: dict = {}
    rows = node.conn.execute("SELECT ix, node_id, public_key, size, head FROM _hemei_origins ORDER BY ix").fetchall()
    known_ix = {r[0] for r in rows}
    stray = node.conn.execute(
        f"SELECT DISTINCT origin FROM _hemei_log WHERE origin NOT IN ({','.join('?' * len(known_ix))})",
        sorted(known_ix)).fetchall()
    for (ix,) in stray:
        errors.append(f"log holds entries of an unknown origin (local index {ix}): inserted outside hemei")
    clock = node.conn.execute("SELECT value FROM _hemei_meta WHERE key = 'hlc'").fetchone()
    newest = node.conn.execute("SELECT max(hlc) FROM _hemei_log").fetchone()[0] or 0
    if clock and int(clock[0]) > newest:
        # The clock is persisted with every write: a later stamp than any entry means the tail was cut.
        errors.append(f"the node's clock recorded a write at {hlc_to_iso(int(clock[0]))} but the newest entry is "
                      f"from {hlc_to_iso(newest)}: entries removed at the end")
    for ix, node_id, public_key, size, head in rows:
        error, seen, last_hash = _verify_origin(node, ix, node_id, public_key, progress)
        if error is None and seen != size:
            error = f"{node_id}: log has {seen} entries but the node recorded {size} (entries removed or inserted)"
        if error is None and seen and last_hash != head:
            error = f"{node_id}#{seen}: head differs from the recorded head"
        if error:
            errors.append(error)
        origins[node_id] = {"size": seen, "head": (last_hash or GENESIS).hex()}
    return {"ok": not errors, "origins": origins, "errors": errors}


def _verify_origin(node: Node, ix: int, node_id: str, public_key: bytes, progress):
    prev = GENESIS
    expected = 1
    last_sig_seq = 0
    cursor = node.conn.execute("SELECT seq, hlc, actor, kind, scope, payload, hash, sig, salt, leaf FROM _hemei_log"
                               " WHERE origin = ? ORDER BY seq", (ix,))
    own = node_id == node.id
    while chunk := cursor.fetchmany(5000):
        for seq, hlc, actor, kind, scope, payload, stored, sig, salt, leaf in chunk:
            where = f"{node_id}#{seq}"
            if seq != expected:
                return f"{where}: expected entry #{expected} (entries removed, inserted or reordered)", seq, prev
            try:
                if kind == REDACTED:  # held as its digest only: the link is still checked
                    if own or (hlc, actor, scope, payload, salt) != (0, "", "", "", None):
                        return f"{where}: entry hidden as redacted (altered)", seq, prev
                    computed = link(prev, leaf)
                else:
                    computed = link(prev, entry_leaf(node_id, seq, hlc, actor, kind, scope, payload, salt))
            except (TypeError, AttributeError):
                return f"{where}: entry fields have the wrong types (altered)", seq, prev
            if computed != stored:
                return f"{where}: hash does not match its content and predecessor (altered or reordered)", seq, prev
            if sig is not None:
                try:
                    verify_checkpoint(public_key, node_id, seq, computed, sig)
                except ChainError as exc:
                    return f"{where}: {exc.message}", seq, prev
                last_sig_seq = seq
            prev = computed
            expected += 1
        if progress:
            progress(len(chunk))
    size = expected - 1
    if size and last_sig_seq != size:
        return (f"{node_id}#{last_sig_seq + 1}: entries #{last_sig_seq + 1}..#{size} are not covered by a signed "
                "checkpoint (inserted or truncated)"), size, prev
    return None, size, prev


def audit_log(node: Node, *, actor: str | None = None, kind: str | None = None, table: str | None = None,
              since: str | None = None, origin: str | None = None, limit: int = 50) -> list[dict]:
    """Who did what, newest first. ``since`` is an ISO date or datetime (this PC's local time when naive)."""
    where, params = [], []
    if actor:
        where.append("l.actor = ?")
        params.append(actor)
    if kind:
        where.append("(l.kind = ? OR l.kind LIKE ?)")
        params += [kind, kind + ".%"]
    else:  # entries withheld from this node (another branch's) say nothing but that they exist
        where.append("l.kind != ?")
        params.append(REDACTED)
    if table:
        # json_valid first: a signed entry that is not JSON stays in the log (kept as a conflict), and
        # json_extract would raise on it.
        where.append("l.kind LIKE 'row.%' AND CASE WHEN json_valid(l.payload) THEN json_extract(l.payload, '$.t')"
                     " END = ?")
        params.append(table)
    if since:
        try:
            where.append("l.hlc >= ?")
            params.append(iso_to_hlc(since, local=True))
        except ValueError:
            raise InvalidInput(f"since {since!r} is not a date such as 2026-11-01 or 2026-11-01T08:00") from None
    if origin:
        where.append("o.node_id LIKE ?")
        params.append(origin.upper() + "%")
    if limit < 1:
        raise InvalidInput("limit must be at least 1")
    sql = ("SELECT o.node_id, l.seq, l.hlc, l.actor, l.kind, l.scope, l.payload FROM _hemei_log l"
           " JOIN _hemei_origins o ON o.ix = l.origin"
           + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY l.hlc DESC, o.node_id DESC LIMIT ?")
    out = []
    for node_id, seq, hlc, who, what, scope, payload in node.conn.execute(sql, params + [limit]):
        body = _readable(payload)
        item = {"origin": node_id, "seq": seq, "time": None if what == REDACTED else hlc_to_iso(hlc),
                "hlc": hlc, "actor": who, "kind": what, "scope": scope}
        if body is None:  # signed by its origin as it is, so listed as it is
            item["unreadable"] = payload
        elif what.startswith("row."):
            item.update(table=body.get("t"), pk=body.get("pk"), values=body.get("v"))
        else:
            item["details"] = body
        out.append(item)
    if table and not out and table not in node.specs and not _logged_table(node, table):
        # A typo, not "nobody touched it" (walkthrough); a disabled module's table is in the log all the same.
        raise unknown_table(node, table)
    return out


def unknown_table(node: Node, name: str) -> InvalidInput:
    """The error for a table named in a filter that is not here: a typo, not "nothing happened to it"."""
    return InvalidInput(f"no table {name!r} here (enabled tables: {', '.join(sorted(node.specs)) or 'none'})")


def _logged_table(node: Node, table: str) -> bool:
    """Whether any change to ``table`` is in the log (a scan: for a filter that found nothing)."""
    return node.conn.execute(
        "SELECT 1 FROM _hemei_log WHERE kind LIKE 'row.%' AND CASE WHEN json_valid(payload)"
        " THEN json_extract(payload, '$.t') END = ? LIMIT 1", (table,)).fetchone() is not None


def log_kinds(node: Node) -> list[str]:
    """The kinds of entry this node's log holds (a scan of the log: for a filter that found nothing)."""
    return [kind for (kind,) in node.conn.execute("SELECT DISTINCT kind FROM _hemei_log ORDER BY kind")]


def _readable(payload: str) -> dict | None:
    """An entry's payload as an object; None for one that is not a JSON object (another node's release,
    or a broken or hostile one, wrote it: its origin signed it, and it is kept, not applied)."""
    if not payload:
        return {}  # a redacted entry has no payload here
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def list_conflicts(node: Node, table: str | None = None) -> list[dict]:
    sql = ("SELECT tbl, pk, hlc, origin, kind, reason, row FROM _hemei_conflicts"
           + (" WHERE tbl = ?" if table else "") + " ORDER BY tbl, hlc, origin, pk")
    return [
        {"table": t, "pk": pk, "time": hlc_to_iso(hlc), "hlc": hlc, "origin": origin, "kind": kind,
         "reason": reason, "row": orjson.loads(row)}
        for t, pk, hlc, origin, kind, reason, row in node.conn.execute(sql, [table] if table else [])
    ]
