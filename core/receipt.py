"""Receiving another node's entries: shape, chain, checkpoint, forks, parsing, confinement.

:meth:`Node.apply_batches <hemei.core.node.Node.apply_batches>` owns the
transaction; each batch in it goes through :func:`check_batch_shape` and
:func:`apply_verified`, which verifies the batch against what the node holds
and ingests its new entries (log rows and projection) like a local write.
:func:`changes_of` parses row entries into changes, for receipt and replay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, NamedTuple

import orjson

from .chain import FULL, GENESIS, REDACTED, REDACTED_LEN, ROW_KINDS, check_stamps_rise, verify_segment
from .clock import hlc_to_iso, wait_text
from .errors import ChainError, ChainGap, ClockSkew, Conflict, HemeiError, InvalidInput, ScopeViolation
from .identity import node_id_from_public_key, parse_node_id, verify_checkpoint
from .merge import UNREADABLE, Change
from .scope import covers, parse_scope

if TYPE_CHECKING:
    from .node import Node


class Batch(NamedTuple):
    """A signed run of one origin's entries: the unit of sync and of bundles.

    ``entries`` are ``(seq, hlc, actor, kind, scope, payload, salt)``, or
    ``(seq, leaf)`` when redacted, with contiguous seqs; ``signature`` is the origin's checkpoint signature over
    the last one (node id, size = last seq, head = its hash).
    """

    origin: str
    public_key: bytes
    entries: list
    signature: bytes


#: Row kinds of the log and the change operation each stands for.
ROW_OPS = {kind: kind[4:] for kind in ROW_KINDS}

#: A receiver's own rules for a verified batch: ``check(batch_of_new_entries, their_row_changes)``.
Check = Callable[[Batch, list[Change]], None]


def relayed_skew(node: Node, origin: str, known, entries, skew: ClockSkew) -> ClockSkew:
    """A relayed entry stamped ahead: said of the node that wrote it, with when it will pass.

    The child took it in by its own clock (and its clock then moved up to the stamp, as a hybrid clock
    does), so blaming the sender's PC would send its operator to a clock that may be right.
    """
    scope = declared_scope(origin, entries) if known is None else node.origin_scope(origin)
    writer = f"the node of {scope}" if scope else f"node {origin}"
    if skew.wait_ms > 86_400_000:
        relayed = ClockSkew(f"relayed entry of {writer} stamped {hlc_to_iso(skew.stamp)} is more than a day "
                            "ahead of the receiving node's clock: that node's PC clock is wrong; have it set, and "
                            "check the receiving node's date and time")
    else:
        relayed = ClockSkew(f"relayed entry of {writer} stamped {hlc_to_iso(skew.stamp)} is "
                            f"{(skew.wait_ms + node.clock.max_ahead_ms) // 1000} s ahead of the receiving node's "
                            f"clock, taken in {wait_text(skew.wait_ms)} (sync or import again then): that "
                            "node's PC clock is fast; have it set, nothing is lost")
    relayed.writer = origin
    return relayed


def declared_scope(origin: str, entries) -> str | None:
    """The scope in an origin's ``node.init`` entry when ``entries`` start with it (seq 1)."""
    first = entries[0]
    if first[0] != 1 or len(first) != FULL or first[3] != "node.init":
        return None
    try:
        body = orjson.loads(first[5])
        return parse_scope(body["scope"], received=True) if body.get("node_id") == origin else None
    except (ValueError, KeyError, TypeError, HemeiError):
        return None


def check_batch_shape(node: Node, batch: Batch) -> None:
    """What can be checked of a batch before anything is read: origin, key, signature type, first seq."""
    origin = parse_node_id(batch.origin)
    if origin == node.id:
        raise InvalidInput("a node does not receive its own entries")
    if not batch.entries:
        raise InvalidInput("empty batch")
    if not isinstance(batch.public_key, bytes) or node_id_from_public_key(batch.public_key) != origin:
        raise ChainError(f"public key does not belong to node {origin}")
    if not isinstance(batch.signature, bytes):
        raise ChainError("batch signature must be bytes")
    first = batch.entries[0][0] if isinstance(batch.entries[0], (tuple, list)) and batch.entries[0] else None
    if not isinstance(first, int) or first < 1:
        raise ChainError("entry seqs are integers starting at 1")


def apply_verified(node: Node, origin: str, batch: Batch, check: Check | None, confine: bool,
                   keep_violations: bool, tree: bool) -> dict:
    """Verify one batch against what ``node`` holds and ingest its new entries (in the caller's transaction).

    The flags are :meth:`Node.apply_batches <hemei.core.node.Node.apply_batches>`'s; ``keep_violations``
    is true for entries a child relays from below. Returns the batch's counts, and under ``_applied``
    the changes applied.
    """
    first = batch.entries[0][0]
    known = node._origin_row(origin)
    size = known[1] if known else 0
    if first > size + 1:
        raise ChainGap(f"entries of {origin} start at #{first} but this node holds up to #{size}: gap")
    held = max(0, min(size, first + len(batch.entries) - 1) - first + 1)
    if first > 1:
        prev, prev_hlc, prev_kind = node.conn.execute(
            "SELECT hash, hlc, kind FROM _hemei_log WHERE origin = ? AND seq = ?", (known[0], first - 1)).fetchone()
    else:
        prev, prev_hlc, prev_kind = GENESIS, -1, None
    try:
        hashes = verify_segment(origin, prev, first, batch.entries)
    except ChainError as exc:
        raise ChainError(f"batch from {origin} refused: {exc.message}") from None
    last_seq = first + len(batch.entries) - 1
    verify_checkpoint(batch.public_key, origin, last_seq, hashes[-1], batch.signature)
    if held:
        stored = [r[0] for r in node.conn.execute(
            "SELECT hash FROM _hemei_log WHERE origin = ? AND seq BETWEEN ? AND ? ORDER BY seq",
            (known[0], first, first + held - 1))]
        if stored != hashes[:held]:
            fork = Conflict(f"{origin} sent a history that differs from the one held up to #{size}: a fork",
                            code="fork")
            # Two signed checkpoints that contradict each other: the evidence.
            fork.evidence = {"origin": origin, "held_size": size, "held_head": known[2],
                             "presented_size": last_seq, "presented_head": hashes[-1],
                             "presented_signature": batch.signature}
            raise fork
    new = batch.entries[held:]
    if not new:
        return {"origin": origin, "received": len(batch.entries), "new": 0, "applied": 0, "refused": 0,
                "_applied": []}
    if confine and not keep_violations:
        # The sender's own new entries, after the fork check (a restored street is a fork, not a bad
        # stamp); relayed ones were held to it at their own edge, or taken in by an older release.
        if held:
            before = batch.entries[held - 1]
            prev_hlc = before[1] if len(before) == FULL else -1
        elif prev_kind == REDACTED:
            prev_hlc = -1  # held as its digest only: no stamp
        check_stamps_rise(origin, new, prev_hlc)
    changes = changes_of(origin, new)  # parsed once, for the check and the projection
    if check is not None:
        check(batch._replace(entries=new), changes)
    stamps = [e[1] for e in new if len(e) == FULL]
    if stamps:
        try:
            node.clock.check_plausible(max(stamps))
        except ClockSkew as skew:
            if not keep_violations:
                skew.writer = origin
                raise
            raise relayed_skew(node, origin, known, new, skew) from None
    if known is None:
        origin_scope, confined = declared_scope(origin, new), False
        cur = node.conn.execute(
            "INSERT INTO _hemei_origins (node_id, public_key, size, head, scope) VALUES (?, ?, 0, ?, ?)",
            (origin, batch.public_key, GENESIS, origin_scope))
        ix = cur.lastrowid
    else:
        ix = known[0]
        origin_scope, confined = node.conn.execute("SELECT scope, confined FROM _hemei_origins WHERE ix = ?",
                                                   (ix,)).fetchone()
    rows = [[ix, e[0], 0, "", REDACTED, "", "", h, None, None, e[1]] if len(e) == REDACTED_LEN
            else [ix, *e[:6], h, None, e[6], None] for e, h in zip(new, hashes[held:])]
    rows[-1][8] = batch.signature
    before = node._refusal_count()
    if confine and origin_scope is None:
        raise ScopeViolation(f"origin {origin} has not declared its scope: its changes cannot be confined")
    below = origin_scope is not None and origin_scope != node.scope and covers(node.scope, origin_scope)
    if not confined and (confine or (tree and below)):  # from now on, by every route and in every rebuild
        node.conn.execute("UPDATE _hemei_origins SET confined = 1 WHERE ix = ?", (ix,))
        confined = True
    # An origin once confined stays so when its entries come another way (a pull, after a restore):
    # the parent judged those, so a violation here is kept as a conflict, as for a relayed entry.
    applied = node._ingest(rows, changes, local=False,
                           origin_scope=origin_scope if confined else None,
                           keep_violations=keep_violations or not confine)
    node.conn.execute("UPDATE _hemei_origins SET size = ?, head = ? WHERE ix = ?", (last_seq, hashes[-1], ix))
    if stamps:
        node.clock.observe(max(stamps))
        node._sync_clock()
        node._persist_clock()
    return {"origin": origin, "received": len(batch.entries), "new": len(new), "applied": len(applied),
            "refused": node._refusal_count() - before, "_applied": applied}


def changes_of(origin: str, entries) -> list[Change]:
    """The row changes of ``entries`` (full ones; redacted entries project nothing).

    An entry signed by its origin but not a readable change stays in the log
    and becomes an :data:`~hemei.core.merge.UNREADABLE` change, kept as a conflict.
    """
    changes = []
    append = changes.append
    loads = orjson.loads
    row_op = ROW_OPS.get
    for entry in entries:
        if len(entry) != FULL:
            continue  # redacted: nothing to project
        seq, hlc, actor, kind, scope, payload, _ = entry
        op = row_op(kind)
        if op is not None:
            body = None
            try:
                body = loads(payload)
                table, pk, values, schema = body["t"], body["pk"], body["v"], body.get("s", 1)
                if not (type(table) is str and type(pk) is str and pk and type(values) is dict
                        and type(schema) is int and schema >= 1):
                    raise TypeError
                append(Change(table, op, pk, scope, values, hlc, origin, actor, False, schema))
            except (ValueError, KeyError, TypeError):
                # Signed by its origin, so it stays in the log; kept as a conflict, not applied.
                table = body.get("t") if isinstance(body, dict) and isinstance(body.get("t"), str) else "?"
                changes.append(Change(table, UNREADABLE, f"{origin}#{seq}", scope,
                                      {"reason": f"entry {origin}#{seq} is not a readable row change"},
                                      hlc, origin, actor, False))
    return changes
