"""What to send and what to accept, the same at every tier and for every transport.

* Up: a child sends the origins of its own subtree (declared scope inside the
  child's scope: itself, and for a district its streets) from where the
  parent's version vector ends. The first batch repeats the parent's last
  held entry, so a history that contradicts the parent's is caught as a fork
  at the first batch.
* Down: a parent sends a child the origins above it (whose scope covers the
  child's) with every entry outside the child's branch redacted, and the
  origins inside the child's branch in full; never a sibling's origin.
* Checks: a parent accepts from a child only origins inside the child's
  scope, entries inside their origin's declared scope, and updates or
  deletes of rows inside it; a child accepts from its parent only entries on
  its own branch.
"""

from __future__ import annotations

import re
from typing import Callable, Iterator

from hemei.core.chain import FULL, ROW_KINDS
from hemei.core.errors import ChainGap, Conflict, InvalidInput, ScopeViolation
from hemei.core.identity import verify_checkpoint
from hemei.core.merge import Change
from hemei.core.node import Node
from hemei.core.receipt import Batch, Check, declared_scope
from hemei.core.scope import covers, related


def origin_scopes(node: Node) -> dict[str, tuple[str | None, int]]:
    return {r[0]: (r[1], r[2]) for r in node.conn.execute("SELECT node_id, scope, size FROM _hemei_origins")}


def subtree_origins(node: Node, scope: str) -> dict[str, int]:
    """Origins whose declared scope lies inside ``scope``, with their sizes here."""
    return {o: size for o, (decl, size) in origin_scopes(node).items() if decl and covers(scope, decl)}


def own_checkpoint(node: Node, upto: int | None = None) -> dict | None:
    """This node's latest signed checkpoint of its own log (at most ``upto`` entries long).

    Only checkpoints its writer signed (at the end of a transaction, and
    every 1,000 entries or 1 MiB within one): never one signed on a peer's
    request, which would let that peer cut a transaction anywhere and have
    the first part accepted. A healthy node holds a
    signed checkpoint at every size a peer holds of its log, since batches
    end only at those; one restored from a backup may not, and the earlier
    checkpoint it shows instead is shorter than what the peer holds: a fork.
    """
    row = node.conn.execute(
        "SELECT l.seq, l.hash, l.sig FROM _hemei_log l JOIN _hemei_origins o ON o.ix = l.origin"
        " WHERE o.node_id = ? AND l.sig IS NOT NULL AND l.seq <= ? ORDER BY l.seq DESC LIMIT 1",
        (node.id, (1 << 63) - 1 if upto is None else upto)).fetchone()
    return None if row is None else {"size": row[0], "head": row[1].hex(), "signature": row[2].hex()}


_HEX_HEAD = re.compile("[0-9a-fA-F]{64}")  # SHA-256
_HEX_SIGNATURE = re.compile("[0-9a-fA-F]{128}")  # Ed25519


def check_history(node: Node, peer: dict, checkpoint) -> None:
    """Compare a peer's signed checkpoint of its own log with the copy held here.

    Shorter than what is held, or a different head at that size: its log
    was restored from a backup or rewritten. That is a fork: refused, and
    both checkpoints go with the error as evidence. A checkpoint shown at
    the size the peer was told this node holds carries that size as ``at``:
    it is shorter only if shorter than ``at`` (this node may hold more by
    now: another sync of the same peer pushed or pulled meanwhile).
    """
    try:
        if not (_HEX_HEAD.fullmatch(checkpoint["head"]) and _HEX_SIGNATURE.fullmatch(checkpoint["signature"])):
            raise ValueError  # fromhex alone would skip spaces, and a short head is no checkpoint
        size, head = checkpoint["size"], bytes.fromhex(checkpoint["head"])
        signature = bytes.fromhex(checkpoint["signature"])
        at = checkpoint.get("at")
        if type(size) is not int or not 1 <= size < 2 ** 63 or (
                at is not None and (type(at) is not int or not 0 <= at < 2 ** 63)):
            raise ValueError
    except (KeyError, TypeError, ValueError, AttributeError):
        raise InvalidInput("checkpoint needs size, head and signature (hex), and at most an integer at",
                           code="malformed_batch") from None
    verify_checkpoint(peer["public_key"], peer["node_id"], size, head, signature)
    row = node.conn.execute("SELECT ix, size, head FROM _hemei_origins WHERE node_id = ?",
                            (peer["node_id"],)).fetchone()
    if row is None or size > row[1]:
        return  # nothing held to compare with, or ahead: the overlapping batch checks the rest
    held = node.conn.execute("SELECT hash FROM _hemei_log WHERE origin = ? AND seq = ?", (row[0], size)).fetchone()
    if size < (row[1] if at is None else min(at, row[1])) or held is None or held[0] != head:
        held_then = size < (row[1] if at is None else min(at, row[1]))
        # Named, not "this node": the message is read on the other side too (the child prints the parent's).
        differs = (f"presents {size} entries of its own log, but {node.name} holds {row[1]} of them" if held_then
                   else f"presents entries 1-{size} of its own log that differ from the {size} {node.name} holds")
        fork = Conflict(fork_said(peer["name"], differs, node.name), code="fork")
        fork.evidence = {"origin": peer["node_id"], "held_size": row[1], "held_head": row[2],
                         "presented_size": size, "presented_head": head, "presented_signature": signature}
        raise fork


def fork_said(sender: str, differs: str, holder: str) -> str:
    """How a fork is told, by a hello or a bundle: who, what differs, why it happens, where the evidence is."""
    return (f"{sender} {differs}: a fork (it was restored from a backup, or rewritten). Both checkpoints are "
            f"kept as evidence at {holder}")


def forked_origins(node: Node, peer: str) -> set[str]:
    """Origins whose log is held here in one history and was presented in another, other than this node's
    and ``peer``'s own: their entries are taken from ``peer`` no more, so one fork does not stop the rest
    of the branch (a district restored from a backup whose second history reached the city, seen from a
    street that moved to the district's new node)."""
    held = node.conn.execute("SELECT DISTINCT origin FROM _hemei_forks").fetchall()
    return {origin for (origin,) in held} - {peer, node.id}


def fork_of_another(exc: Conflict, peer: str, node: Node) -> str | None:
    """The origin of a fork found in entries ``peer`` relayed from another node (None: not such a fork)."""
    origin = (getattr(exc, "evidence", None) or {}).get("origin")
    return None if origin in (None, peer, node.id) else origin


def not_taken_said(node: Node, origin: str) -> str:
    return (f"not taken from the parent: entries of {node.origin_scope(origin) or 'node'} ({origin[:7]}), whose "
            "log is held here in another history (a fork: hemei status, forks). That node was restored from a "
            "backup or rewritten; it goes on as a new node")


def branch_vv(node: Node, scope: str) -> dict[str, int]:
    """This node's sizes of the origins on the branch of ``scope`` (ancestors and subtree), nothing else."""
    return {o: size for o, (decl, size) in origin_scopes(node).items() if decl and related(decl, scope)}


def pending(mine: dict[str, int], theirs: dict[str, int]) -> int:
    return sum(max(0, size - theirs.get(origin, 0)) for origin, size in mine.items())


def child_backlog(node: Node, child: dict, child_vv: dict[str, int]) -> tuple[int, int]:
    """(entries the child holds of its branch that this node lacks, entries it should get from here)."""
    scopes = origin_scopes(node)
    mine = {o: size for o, (_, size) in scopes.items()}
    branch = {o: size for o, size in child_vv.items()
              if o == child["node_id"] or o not in scopes or (scopes[o][0] and covers(child["scope"], scopes[o][0]))}
    down = downstream_remaining(node, child["node_id"], child["scope"], child_vv)
    return pending(branch, mine), down


def outgoing(node: Node, scope: str, their_vv: dict[str, int], batch_size: int) -> Iterator[Batch]:
    """Batches of the subtree of ``scope`` that the parent (holding ``their_vv``) lacks."""
    for origin, size in sorted(subtree_origins(node, scope).items()):
        held = their_vv.get(origin, 0)
        if size <= held:
            continue
        after = max(0, held - 1)  # overlap one entry: a contradicting history shows as a fork
        while (batch := node.read_batch(origin, after, limit=batch_size)) is not None:
            yield batch
            after = batch.entries[-1][0]


def redactor(child_scope: str) -> Callable[[str, str], bool]:
    """Entries of an origin above the child that the child must not see."""
    def hide(kind: str, scope: str) -> bool:
        if kind == "node.init":
            return False  # who the origin is and where it sits: needed to check its entries
        return kind not in ROW_KINDS or not related(scope, child_scope)
    return hide


def _down_plan(node: Node, child_id: str, child_scope: str, child_vv: dict[str, int],
               skip: frozenset = frozenset()) -> list[tuple]:
    hide = redactor(child_scope)
    plan = []
    for origin, (decl, size) in sorted(origin_scopes(node).items()):
        if origin == child_id or decl is None or size <= child_vv.get(origin, 0) or origin in skip:
            continue
        if covers(child_scope, decl):
            plan.append((origin, size, None))
        elif covers(decl, child_scope):
            plan.append((origin, size, hide))
    return plan


def downstream_iter(node: Node, child_id: str, child_scope: str, child_vv: dict[str, int],
                    batch_size: int, skip: frozenset = frozenset()) -> Iterator[Batch]:
    """Every batch the child lacks, read lazily (bundles: memory per batch, not per backlog); none of the
    origins in ``skip`` (the child holds another history of them)."""
    for origin, size, redact in _down_plan(node, child_id, child_scope, child_vv, skip):
        after = max(0, child_vv.get(origin, 0) - 1)  # overlap one entry: a rewritten parent shows as a fork
        while after < size and (batch := node.read_batch(origin, after, limit=batch_size, redact=redact)):
            yield batch
            after = batch.entries[-1][0]


def downstream_remaining(node: Node, child_id: str, child_scope: str, child_vv: dict[str, int],
                         skip: frozenset = frozenset()) -> int:
    """How many entries of its branch the child lacks (none of the origins in ``skip``)."""
    return sum(size - child_vv.get(origin, 0) for origin, size, _ in _down_plan(node, child_id, child_scope,
                                                                                 child_vv, skip))


def _declared(node: Node, batch: Batch) -> str | None:
    return node.origin_scope(batch.origin) or declared_scope(batch.origin, batch.entries)


def push_admit(node: Node, child: dict) -> Callable[[Batch], None]:
    """Refuse a batch whose origin lies outside ``child``'s scope before its chain is looked at.

    Otherwise a batch of a sibling's (copied from its bundle, or made up
    with its id) got an answer that told its size here: a gap error naming
    it, or, with nothing new in it, counts. The scope is what this node
    holds, or what the batch's own first entry claims (unverified here, so
    used only to refuse).
    """
    def admit(batch: Batch) -> None:
        if batch.origin == child["node_id"]:
            return
        origin_scope = _declared(node, batch)
        if origin_scope is None and node.origin_scope(batch.origin) is None and batch.entries[0][0] > 1:
            # Held nowhere here and not from its start (a bundle older than this node's restore, say):
            # a gap, and saying so tells nothing of what is held.
            raise ChainGap(f"entries of {batch.origin} start at #{batch.entries[0][0]} but this node holds "
                             "none of them: gap")
        if origin_scope is None or not covers(child["scope"], origin_scope):
            raise ScopeViolation(f"{child['name']} may only send entries of {child['scope']}; origin "
                                 f"{batch.origin} is not known here as one inside it")
    return admit


def push_check(node: Node, child: dict) -> Check:
    """The parent's rules for a batch pushed by ``child`` (runs before anything is written)."""
    def check(batch: Batch, changes: list[Change]) -> None:
        if batch.origin == child["node_id"]:
            origin_scope = child["scope"]
            first = batch.entries[0]
            if first[0] == 1 and declared_scope(batch.origin, batch.entries) != origin_scope:
                raise ScopeViolation(f"{child['name']}'s first entry must be a node.init whose payload names "
                                     f"this node (node_id {batch.origin}, as written) and its enrolled scope "
                                     f"{origin_scope}")
        else:
            origin_scope = _declared(node, batch)
            if origin_scope is None:
                raise ScopeViolation(f"origin {batch.origin} has not declared its scope (no node.init entry)")
        if not covers(child["scope"], origin_scope):
            raise ScopeViolation(f"{child['name']} may only send entries of {child['scope']}; "
                                 f"origin {batch.origin} belongs to {origin_scope}")
        entries = batch.entries
        redacted = next((e for e in entries if len(e) != FULL), None)
        if redacted is not None:
            raise ScopeViolation(f"entry {batch.origin}#{redacted[0]} is redacted: a child sends its own "
                                 "branch in full")
        for scope in {e[4] for e in entries}:  # a batch names few places: check each once
            if not covers(origin_scope, scope):
                seq = next(e[0] for e in entries if e[4] == scope)
                raise ScopeViolation(f"entry {batch.origin}#{seq} is for {scope}, outside {origin_scope}")
        # Changes that reach a stored row outside origin_scope: refused by the core's projector
        # (apply_batches(confine=True)), which looks the row up only when a change can reach one:
        # an insert of a new key costs no lookup.
    return check


def pull_check(node: Node, parent: dict) -> Check:
    """The child's rules for a batch from its parent: only entries on its own branch."""
    def check(batch: Batch, changes: list[Change]) -> None:
        origin_scope = _declared(node, batch)
        if batch.origin == parent["node_id"]:
            origin_scope = parent["scope"]
        if origin_scope is None or not related(origin_scope, node.scope):
            raise ScopeViolation(f"origin {batch.origin} is not on this node's branch")
        for entry in batch.entries:
            if len(entry) == FULL and entry[3] != "node.init":
                if not related(entry[4], node.scope) or not covers(origin_scope, entry[4]):
                    raise ScopeViolation(f"entry {batch.origin}#{entry[0]} for {entry[4]} does not belong here")
    return check
