"""Pinned peers (parent and children), refusals, fork evidence, per-peer status."""

from __future__ import annotations

import time

import orjson

from hemei.core.clock import hlc_to_iso, span_text, utc_offset_min, utc_offset_text
from hemei.core.errors import NotFound
from hemei.core.node import Node

COLUMNS = ("node_id", "role", "name", "scope", "public_key", "url", "enrolled_ms", "last_contact_ms", "revoked",
           "their_vv", "pending_up", "pending_down", "last_error", "modules", "clock_ahead_ms", "signs_answers",
           "utc_offset_min")
SYNC_ACTOR = "sync"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _row(values) -> dict:
    peer = dict(zip(COLUMNS, values))
    peer["their_vv"] = orjson.loads(peer["their_vv"])
    peer["modules"] = orjson.loads(peer["modules"]) if peer["modules"] else None
    return peer


def get_peer(node: Node, node_id: str) -> dict | None:
    row = node.conn.execute(f"SELECT {', '.join(COLUMNS)} FROM _hemei_peers WHERE node_id = ?", (node_id,)).fetchone()
    return _row(row) if row else None


def parent_of(node: Node) -> dict:
    row = node.conn.execute(f"SELECT {', '.join(COLUMNS)} FROM _hemei_peers WHERE role = 'parent'").fetchone()
    if row is None:
        raise NotFound("this node has no parent to sync with: a node at the top of its tree has none; a street "
                       "or district joins its parent with 'hemei join TOKEN'", code="no_parent")
    return _row(row)


def all_peers(node: Node) -> list[dict]:
    return [_row(r) for r in node.conn.execute(
        f"SELECT {', '.join(COLUMNS)} FROM _hemei_peers ORDER BY role DESC, name")]


def set_url(node: Node, node_id: str, url: str, *, was: str) -> bool:
    """Where a peer is reached from now on: logged, like the address pinned at join (where this node's
    records go is for the audit trail). Only if the address kept is still ``was``: False, and nothing
    written, when another command changed it since it was read."""
    with node.writer(SYNC_ACTOR) as w:
        kept = w.conn.execute("SELECT url FROM _hemei_peers WHERE node_id = ?", (node_id,)).fetchone()
        if kept is None or kept[0] != was:
            return False
        w.event("peer.url", {"node_id": node_id, "url": url})
        w.conn.execute("UPDATE _hemei_peers SET url = ? WHERE node_id = ?", (url, node_id))
    return True


def set_signs_answers(node: Node, node_id: str) -> None:
    """The parent signed an answer: every later one must be signed (local, like the key pinned)."""
    node.conn.execute("UPDATE _hemei_peers SET signs_answers = 1 WHERE node_id = ? AND signs_answers = 0",
                      (node_id,))


def touch(node: Node, node_id: str, *, their_vv: dict | None = None, pending_up: int | None = None,
          pending_down: int | None = None, error: str | None = None, modules: dict | None = None,
          contacted: bool = True) -> None:
    """Record a contact with a peer (local bookkeeping, not logged). ``error`` None clears the last one;
    ``contacted`` False: an attempt that never heard the peer (unreachable, not its answer), which leaves
    the last contact as it was."""
    sets, args = ["last_error = ?"], [error]
    if contacted:
        sets.append("last_contact_ms = ?")
        args.append(now_ms())
    for column, value in (("their_vv", None if their_vv is None else orjson.dumps(their_vv).decode()),
                          ("pending_up", pending_up), ("pending_down", pending_down),
                          ("modules", None if modules is None else orjson.dumps(modules).decode())):
        if value is not None:
            sets.append(f"{column} = ?")
            args.append(value)
    node.conn.execute(f"UPDATE _hemei_peers SET {', '.join(sets)} WHERE node_id = ?", (*args, node_id))


#: A clock further than this from a peer's is not trusted for time-driven work, and named in errors.
CLOCK_TOLERANCE_MS = 5 * 60 * 1000


def clock_gap(ahead_ms: int) -> str:
    """'3 h 5 min ahead of' for a clock ``ahead_ms`` ahead of another ('behind' when negative; days from two)."""
    return f"{span_text(ahead_ms)} {'ahead of' if ahead_ms > 0 else 'behind'}"


def record_clock(node: Node, node_id: str, ahead_ms: int) -> None:
    """How far a peer's clock read ahead of this node's (local bookkeeping, shown by status)."""
    node.conn.execute("UPDATE _hemei_peers SET clock_ahead_ms = ? WHERE node_id = ?", (ahead_ms, node_id))


def clock_warning(ahead_ms: int | None) -> str | None:
    """What status says of a peer whose clock was out by more than the tolerance (None otherwise)."""
    if ahead_ms is None or abs(ahead_ms) <= CLOCK_TOLERANCE_MS:
        return None
    return (f"clock {clock_gap(ahead_ms)} this PC's at the last contact: set the date, time and time zone of the "
            "one that is wrong")


def record_utc_offset(node: Node, node_id: str, minutes: int | None) -> None:
    """The peer's time zone as it last said (local bookkeeping, shown by status); None: it did not say."""
    if minutes is not None:
        node.conn.execute("UPDATE _hemei_peers SET utc_offset_min = ? WHERE node_id = ?", (minutes, node_id))


def time_zone_warning(theirs: int | None) -> str | None:
    """What status and sync say of a peer whose PC is on another time zone than this one (None otherwise).

    Times of cases and hours are written as each PC's local wall clock, so two PCs on different zones
    read each other's times hours apart: a step taken at the district "before" the street's last one is
    refused, and deadlines fall early or late (found in an operator walkthrough)."""
    ours = utc_offset_min()
    if theirs is None or theirs == ours:
        return None
    return (f"time zone {utc_offset_text(theirs)} there, {utc_offset_text(ours)} on this PC: times of cases and "
            f"hours are each PC's local time, so these two read each other's {span_text(abs(theirs - ours) * 60_000)} "
            "apart; set the time zone of the one that is wrong (China Standard Time is UTC+08:00), then restart "
            "`hemei serve` or `hemei sync --watch` there")


MAX_REASON = 1000  # whole for hemei's own messages (a clock refusal with both sides' view and its cause: 600)
ANONYMOUS_KEPT = 1000


#: A refusal like one logged less than this ago (same peer, code and request) is counted, not logged.
REPEAT_WINDOW_MS = 60 * 60 * 1000


def record_refusal(node: Node, peer: str, code: str, reason: str, what: str, *,
                   contacted: bool = True, **kept) -> None:
    """A refusal of a known peer is a log entry: who was refused, what, and why; and a contact with it,
    unless ``contacted`` is False (an answer that was not the peer's). ``kept``: what else :func:`touch`
    keeps of the contact (what the peer holds, backlogs).

    One like a refusal logged within the last hour (same peer, code and request) is counted instead; once
    that hour is over the count is logged as one entry (``refusals``: how many, with the latest reason),
    by :func:`log_counted_refusals`. A street under ``sync --watch`` whose clock stays wrong, or an enrolled
    node that keeps sending what is refused, would otherwise grow the log, which is relayed up the tree,
    by an entry per attempt: this way at most two of a kind an hour."""
    reason = reason[:MAX_REASON]
    now = now_ms()
    with node.writer(SYNC_ACTOR) as w:
        _log_counted(w, now)
        updated = w.conn.execute("UPDATE _hemei_refusal_repeats SET repeats = repeats + 1, last_reason = ? WHERE"
                                 " peer = ? AND code = ? AND request = ?", (reason, peer, code, what)).rowcount
        if not updated:  # none of its kind this hour: logged, and the hour starts
            w.event("sync.refused", {"peer": peer, "code": code, "reason": reason, "request": what})
            w.conn.execute("INSERT INTO _hemei_refusal_repeats (peer, code, request, logged_ms) VALUES (?, ?, ?, ?)",
                           (peer, code, what, now))
    touch(node, peer, error=f"{code}: {reason}", contacted=contacted, **kept)


def log_counted_refusals(node: Node) -> None:
    """Log the refusals counted in hours that are over (any peer's): called on every refusal, and on each
    contact of a peer, so a count does not wait for another refusal of its kind to reach the log (found in
    review: a child could otherwise hide all but its first refusal of a kind from the log above)."""
    if node.conn.execute("SELECT 1 FROM _hemei_refusal_repeats WHERE logged_ms <= ? LIMIT 1",
                         (now_ms() - REPEAT_WINDOW_MS,)).fetchone() is None:
        return  # the usual case: nothing to write, no write transaction
    with node.writer(SYNC_ACTOR) as w:
        _log_counted(w, now_ms())


def _log_counted(w, now: int) -> None:
    over = now - REPEAT_WINDOW_MS
    for peer, code, what, count, reason in w.conn.execute(
            "SELECT peer, code, request, repeats, last_reason FROM _hemei_refusal_repeats WHERE logged_ms <= ?"
            " AND repeats > 0 ORDER BY logged_ms, peer, code, request", (over,)).fetchall():
        w.event("sync.refused", {"peer": peer, "code": code, "reason": reason, "request": what, "refusals": count})
    w.conn.execute("DELETE FROM _hemei_refusal_repeats WHERE logged_ms <= ?", (over,))


def refusals_not_logged(node: Node, peer: str) -> int:
    """Refusals of ``peer`` counted since the last ones logged, not logged themselves (see :func:`record_refusal`)."""
    return node.conn.execute("SELECT coalesce(sum(repeats), 0) FROM _hemei_refusal_repeats WHERE peer = ?",
                             (peer,)).fetchone()[0]


def record_anonymous_refusal(node: Node, code: str, reason: str, what: str, address: str | None) -> None:
    """A refusal of a request nobody proved to have sent: kept locally, the newest 1,000."""
    node.conn.execute("INSERT INTO _hemei_anonymous_refusals (seen_ms, address, code, reason, request)"
                      " VALUES (?, ?, ?, ?, ?)", (now_ms(), address, code, reason[:MAX_REASON], what[:200]))
    node.conn.execute("DELETE FROM _hemei_anonymous_refusals WHERE id <= (SELECT max(id) FROM"
                      " _hemei_anonymous_refusals) - ?", (ANONYMOUS_KEPT,))


def anonymous_refusals(node: Node, limit: int = 5) -> list[dict]:
    return [{"time": hlc_to_iso(t << 16), "address": a, "code": c, "reason": r, "request": q}
            for t, a, c, r, q in node.conn.execute(
                "SELECT seen_ms, address, code, reason, request FROM _hemei_anonymous_refusals"
                " ORDER BY id DESC LIMIT ?", (limit,))]


def record_fork(node: Node, evidence: dict, peer: str) -> None:
    """Keep both checkpoints of a fork: the one held and the contradicting one presented.

    Once per held history: a restored PC retrying its sync presents a new
    checkpoint each time (its own refusal is logged there, and it may go on
    writing), and the first contradiction proves the fork as well as any
    later one (an operator walkthrough found one record per retry)."""
    node.conn.execute(
        "INSERT OR IGNORE INTO _hemei_forks (origin, seq, held_head, presented_size, presented_head,"
        " presented_signature, peer, seen_ms) SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS"
        " (SELECT 1 FROM _hemei_forks WHERE origin = ? AND seq = ? AND held_head IS ?)",
        (evidence["origin"], evidence["held_size"], evidence["held_head"], evidence["presented_size"],
         evidence["presented_head"], evidence["presented_signature"], peer, now_ms(),
         evidence["origin"], evidence["held_size"], evidence["held_head"]))


def forks(node: Node) -> list[dict]:
    return [{"origin": o, "held_size": s, "held_head": (h or b"").hex(), "presented_size": ps,
             "presented_head": ph.hex(), "peer": p, "seen": hlc_to_iso(t << 16)}
            for o, s, h, ps, ph, p, t in node.conn.execute(
                "SELECT origin, seq, held_head, presented_size, presented_head, peer, seen_ms FROM _hemei_forks"
                " ORDER BY seen_ms")]


def refusals(node: Node, peer: str, limit: int = 5) -> list[dict]:
    """This node's own latest refusals of ``peer``. Only its own: a child's log holds ``sync.refused``
    entries too (its refusals of its parent), which are not this node's word, and a hostile child's
    could say anything (found in review: not even JSON, which broke status)."""
    rows = node.conn.execute(
        "SELECT hlc, payload FROM _hemei_log WHERE origin = (SELECT ix FROM _hemei_origins WHERE node_id = ?)"
        " AND kind = 'sync.refused' AND json_extract(payload, '$.peer') = ? ORDER BY hlc DESC LIMIT ?",
        (node.id, peer, limit))
    return [{"time": hlc_to_iso(hlc), **{k: v for k, v in orjson.loads(p).items() if k != "peer"}}
            for hlc, p in rows]


def version_gaps(node: Node, theirs: dict | None) -> dict[str, dict]:
    """Modules both sides run at different schema versions: {module: {"here": v, "there": v}}.

    Where the peer is ahead, its changes to that module wait here as
    ``quarantined`` conflicts until this node is upgraded; where it is
    behind, this node's changes wait there.
    """
    ours = node.module_versions
    return {name: {"here": ours[name], "there": version} for name, version in sorted((theirs or {}).items())
            if name in ours and ours[name] != version}


def peers_status(node: Node) -> list[dict]:
    """Per peer: contact, backlog both ways (up: computed now; down from a parent: as of last contact)."""
    from .engine import child_backlog, pending, subtree_origins

    out = []
    for peer in all_peers(node):
        if peer["role"] == "parent":
            peer["pending_up"] = pending(subtree_origins(node, node.scope), peer["their_vv"])
        else:
            # Nothing goes to a revoked child again: no backlog to show, however much is written here.
            peer["pending_up"], peer["pending_down"] = (0, 0) if peer["revoked"] else child_backlog(
                node, peer, peer["their_vv"])
        out.append({
            "node_id": peer["node_id"], "role": peer["role"], "name": peer["name"], "scope": peer["scope"],
            "url": peer["url"], "revoked": bool(peer["revoked"]),
            "last_contact": hlc_to_iso(peer["last_contact_ms"] << 16) if peer["last_contact_ms"] else None,
            "pending_up": peer["pending_up"], "pending_down": peer["pending_down"],
            "last_error": peer["last_error"], "refusals": refusals(node, peer["node_id"]),
            "refusals_not_logged": refusals_not_logged(node, peer["node_id"]),
            "modules": peer["modules"], "version_gaps": version_gaps(node, peer["modules"]),
            # Enabled here, not there (as it last said; None from a release that does not say): found in
            # review, a street escalating cases to a district without the module heard nothing of it.
            "modules_not_there": None if peer["modules"] is None else sorted(set(node.module_versions)
                                                                            - set(peer["modules"])),
            "clock_ahead_ms": peer["clock_ahead_ms"], "clock_warning": clock_warning(peer["clock_ahead_ms"]),
            "utc_offset_min": peer["utc_offset_min"], "time_zone_warning": time_zone_warning(peer["utc_offset_min"]),
        })
    return out


def invited_names(node: Node) -> list[tuple[str, str]]:
    """(name, scope) of each enrolled child not revoked, by the name this node invited it as."""
    return node.conn.execute("SELECT name, scope FROM _hemei_peers WHERE role = 'child' AND revoked = 0").fetchall()
