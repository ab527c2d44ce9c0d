"""The parent's side of sync over HTTP: join, hello, push, pull.

Every route authenticates the request signature (sync/signing.py) against
the pinned key of an enrolled, unrevoked child (join: against the key in
the body), every refusal is recorded in the log before the 4xx goes out,
and the answer to a request whose signature verified and was fresh
(refusals included), or that names a node unknown here, is signed with
this node's key and bound to the request it answers.
"""

from __future__ import annotations

import base64
import binascii
import functools
import sqlite3
import threading
import time
from typing import Callable, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from hemei.core.api import ApiCall, ApiRoute
from hemei.core.clock import utc_offset_min
from hemei.core.errors import Forbidden, HemeiError, InvalidInput, Unauthorized
from hemei.core.gc_pause import cyclic_gc_paused
from hemei.core.identity import parse_node_id
from hemei.core.node import Node

from . import engine, enroll, signing, wire
from .engine import own_checkpoint
from .peers import (get_peer, log_counted_refusals, record_anonymous_refusal, record_clock, record_fork, record_refusal,
                    record_utc_offset, touch)

NONCE_TTL_MS = (signing.WINDOW_S + 60) * 1000
MAX_PULL_ENTRIES = 20_000
JOIN_MAX_BODY = 16 * 1024
JOIN_MAX_INFLATED = 64 * 1024
#: hello and pull carry version vectors only.
SMALL_MAX_INFLATED = 8 * 1024 * 1024
T = TypeVar("T")


def _now_s() -> int:
    return int(time.time())


def authenticate(call: ApiCall, public_key: bytes | None = None, node_id: str | None = None) -> dict | None:
    """The enrolled child that signed this request (None for a join by ``node_id``, checked against
    ``public_key``)."""
    signed, peer = _signer(call.node, call.request, call.raw_body, public_key, node_id)
    conn = call.node.conn
    now = time.time_ns() // 1_000_000
    try:
        conn.execute("INSERT INTO _hemei_nonces (nonce, node_id, expires_ms) VALUES (?, ?, ?)",
                     (signed.nonce, signed.node_id, now + NONCE_TTL_MS))
    except sqlite3.IntegrityError:
        # Not the peer's word: anyone who saw its request can send it again, as often as they like, so it
        # is kept with the unauthenticated refusals, which cannot grow the log (found in review: each replay
        # was a log entry, relayed up the tree).
        raise Unauthorized("replayed request (nonce already used)", code="replay") from None
    conn.execute("DELETE FROM _hemei_nonces WHERE expires_ms < ?", (now,))
    if peer is not None:
        call.peer_id = signed.node_id  # from here on, refusals are this peer's
        if peer["revoked"]:
            _answer_signed(call.request)  # true of this node whoever sends its request again
            raise Forbidden(f"node {peer['name']} has been revoked", code="revoked")
    _answer_signed(call.request)
    return peer


def signed_by_a_child(node: Node, request: Request) -> None:
    """Before a body is read: a request that no enrolled child signed is refused without reading it, so
    nobody unproven can make this node hold bodies of up to the sync limit, however many they send. (Its
    digest is checked against the body, and its nonce taken, when the body has come: :func:`authenticate`.)"""
    _signer(node, request, None)


def _signer(node: Node, request: Request, body: bytes | None, public_key: bytes | None = None,
            node_id: str | None = None) -> tuple[signing.SignedRequest, dict | None]:
    """The request's signature, checked (with the body's digest unless ``body`` is None) against the
    pinned key of the child it names, or against ``public_key`` for the join of ``node_id``."""
    signed, base, signature, created = signing.read_signature(
        request.headers, request.method, request.url.path, request.url.query, body)
    signing.check_window(created, signed.expires_s, _now_s())
    if public_key is not None:
        if signed.node_id != node_id:  # the nonce is kept under the signer's id: it must be the joining node's
            raise Unauthorized(f"the join of {node_id} is signed as {signed.node_id}", code="bad_signature")
        signing.check_signature(public_key, base, signature)
        return signed, None
    peer = get_peer(node, signed.node_id)
    if peer is None or peer["role"] != "child":
        # Signed: the answer covers the key id the request named, so a request whose key id was altered
        # on the way gets an answer its sender cannot take (a parent restored from a backup made before
        # the child joined says this, and the child must hear it: it needs a new invite).
        _answer_signed(request)
        raise Unauthorized(f"node {signed.node_id} is not enrolled here", code="unknown_node")
    signing.check_signature(peer["public_key"], base, signature)
    return signed, peer


def _answer_signed(request: Request) -> None:
    """The request is the signer's own and fresh, or names a node unknown here: its answer is signed
    (:func:`sign_answer`). An answer to any other (a signature that does not verify, a replay, an expired
    window) is not: it would be bound to the child's own signature, so whoever altered or resent the
    child's request would get the parent's signed refusal of it to show the child as the parent's word."""
    request.state.answer_signed = True


def refusals_recorded(handler):
    """Record every refusal, then let the 4xx answer go out.

    A refusal of an authenticated peer is a log entry (who, what, why). One
    of an unauthenticated request goes to a bounded local table instead:
    anyone can send those, and they must not be able to grow the signed log
    that is relayed up the tree.
    """
    @functools.wraps(handler)
    def wrapped(call: ApiCall):
        call.peer_id = None
        try:
            return handler(call)
        except HemeiError as exc:
            record_refused(call, exc)
            raise
    return wrapped


def record_refused(call: ApiCall, exc: HemeiError) -> None:
    """Record one refusal of a request to a sync route (see :func:`refusals_recorded`); the core tells it
    of refusals made before the handler ran too (a body too large)."""
    if exc.status >= 500:  # this node's own state (e.g. it needs a restart), not a refusal of the caller
        return
    peer = getattr(call, "peer_id", None)
    evidence = getattr(exc, "evidence", None)
    if evidence is not None and peer:
        record_fork(call.node, evidence, peer)
    if peer:
        record_refusal(call.node, peer, exc.code, exc.message, call.request.url.path)
    else:
        record_anonymous_refusal(call.node, exc.code, exc.message, call.request.url.path,
                                 call.request.client.host if call.request.client else None)


def sign_answer(node: Node, request: Request, response: Response) -> Response:
    """Sign an answer (any status) to a request whose signature verified and was fresh (see
    :func:`_answer_signed`), for the child to check against the key it pinned."""
    bound = signing.request_binding(request.headers)
    if bound is not None and getattr(request.state, "answer_signed", False):
        response.headers.update(signing.sign_answer(node.key, node.id, response.status_code, response.body,
                                                    bound, _now_s()))
    return response


def _reply(message: dict) -> Response:
    return Response(wire.encode(message), media_type=wire.CONTENT_TYPE)


@refusals_recorded
def join(call: ApiCall) -> Response:
    body = wire.decode(call.raw_body, max_inflated=JOIN_MAX_INFLATED)  # unauthenticated yet: keep it tiny
    try:
        public_key = base64.b64decode(body["public_key"], validate=True)
        child_id, token, name, scope = body["node_id"], body["token"], body["name"], body["scope"]
        if not all(isinstance(x, str) and 0 < len(x) <= 1024 for x in (child_id, token, name, scope)):
            raise TypeError
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise InvalidInput("join needs token, node_id, public_key (base64), name and scope, as text") from None
    child_id = parse_node_id(child_id)  # says which check character is wrong
    authenticate(call, public_key=public_key, node_id=child_id)
    return _reply(enroll.accept_join(call.node, token, child_id, public_key, name, scope))


#: One body is parsed at a time, however many children send at once: parsing JSON can take 30 times
#: the body's inflated size in memory (a body of ``[],[],...``), so this bounds what a node spends on it
#: by one body's worth. Only what a handler read from the body and checked lives on after.
_PARSING = threading.Lock()


def _parse_one_at_a_time(call: ApiCall, read: Callable[[dict], T],
                         max_inflated: int = wire.MAX_DECOMPRESSED) -> T:
    with _PARSING:
        try:
            return read(wire.decode(call.raw_body, max_inflated=max_inflated))
        except HemeiError as exc:
            # Without the frames of the refusal: they hold the parsed body, which would outlive the lock.
            raise exc.with_traceback(None) from None


def _refusal_of(read: Callable[[object], T], value) -> T | HemeiError:
    """``read(value)``, or its refusal to raise later (after what must be kept even when refused)."""
    try:
        return read(value)
    except HemeiError as exc:
        return exc.with_traceback(None)


def _vv_request(call: ApiCall, read: Callable[[dict], tuple]) -> tuple:
    """hello and pull: the signing child, the version vector of the (small) body, and what ``read`` takes
    of it (checked: junk in an unread key is dropped with the body)."""
    child = authenticate(call)
    return (child, *_parse_one_at_a_time(call, lambda body: (wire.vv_of(body.get("vv")), *read(body)),
                                         SMALL_MAX_INFLATED))


@refusals_recorded
def hello(call: ApiCall) -> Response:
    """The child says what it holds and shows its latest checkpoint; the parent answers with its own sizes."""
    child, their_vv, announced, parent_ahead, zone, own = _vv_request(call, lambda body: (
        wire.modules_of(body.get("modules")), wire.clock_offset_of(body.get("parent_clock_ahead_ms")),
        wire.utc_offset_of(body.get("utc_offset_min")), _refusal_of(wire.checkpoint_of, body.get("checkpoint"))))
    node = call.node
    if parent_ahead is not None:  # the child measured this node's clock against its own: kept even if refused
        record_clock(node, child["node_id"], -parent_ahead)
    record_utc_offset(node, child["node_id"], zone)
    if isinstance(own, HemeiError):
        raise own
    if own is not None:
        engine.check_history(node, child, own)
    held, size = their_vv.get(node.id, 0), node.version_vector().get(node.id, 0)
    # A child holding more of this node's own log than this node does: this node's home was restored from
    # an older copy, and the child will refuse it as a fork. Said in status, where the operator looks; not
    # logged, since a write of this node's own is just what makes the restored copy a fork.
    # (The child's word, unproven: said as its claim, never acted on.)
    restored = (f"restored: {child['name']} says it holds {held} entries of this node's own log, this node {size}: "
                "if so, this node's home was restored from an older copy, and its children refuse it as a fork "
                "(docs/operations.md, A parent restored from a backup)") if held > size else None
    touch(node, child["node_id"], their_vv=their_vv, modules=announced, error=restored)
    log_counted_refusals(node)
    # At (or below) the size the child holds of this node's chain when that is shorter: the latest could
    # not be compared there, and a parent restored from a backup that wrote past it would show as a bad
    # batch signature on pull instead of a fork. Only a checkpoint this node's writer signed (see
    # engine.own_checkpoint): never one made at the size a request names.
    # With "at", the size answered: the child may hold more by then (another sync of it pulled meanwhile).
    at = held if 0 < held < size else None
    checkpoint = own_checkpoint(node, at)
    if checkpoint is not None and at is not None:
        checkpoint["at"] = at
    return _reply({"node_id": node.id, "vv": engine.branch_vv(node, child["scope"]), "checkpoint": checkpoint,
                   "modules": node.module_versions, "utc_offset_min": utc_offset_min()})


@refusals_recorded
def push(call: ApiCall) -> Response:
    child = authenticate(call)
    node = call.node
    with cyclic_gc_paused():  # decoding allocates as much as applying (see hemei.core.gc_pause)
        batches = _parse_one_at_a_time(call, wire.batches_of)
        results = node.apply_batches(batches, check=engine.push_check(node, child), confine=True,
                                     sender=child["node_id"], admit=engine.push_admit(node, child))
    touch(node, child["node_id"])
    sizes = node.version_vector()
    return _reply({"results": results, "vv": {b.origin: sizes.get(b.origin, 0) for b in batches}})


@refusals_recorded
def pull(call: ApiCall) -> Response:
    child, child_vv, limit, batch_size, skip = _vv_request(call, lambda body: (
        _positive(body, "max_entries", MAX_PULL_ENTRIES), _positive(body, "batch_size", 2000),
        wire.node_ids_of(body.get("skip"), "skip")))
    node = call.node
    remaining = engine.downstream_remaining(node, child["node_id"], child["scope"], child_vv, skip)
    with cyclic_gc_paused():
        parts, batches = next(wire.messages(
            engine.downstream_iter(node, child["node_id"], child["scope"], child_vv, batch_size, skip), limit),
            ([], []))
    # Entries new to the child (each batch repeats one it holds, to catch a rewritten history).
    new = sum(b.entries[-1][0] - max(child_vv.get(b.origin, 0), b.entries[0][0] - 1) for b in batches)
    touch(node, child["node_id"], their_vv=child_vv)  # what it holds; its closing hello says what it applied
    return Response(wire.encode({"more": new < remaining, "remaining": max(0, remaining - new)}, batches=parts),
                    media_type=wire.CONTENT_TYPE)


def _positive(body: dict, name: str, default: int) -> int:
    """A count the child asks for, at most MAX_PULL_ENTRIES (a larger one is served as that)."""
    value = body.get(name, default)
    if type(value) is not int or value < 1:
        raise wire.MalformedBatch(f"{name} must be a positive integer")
    return min(value, MAX_PULL_ENTRIES)


def routes() -> list[ApiRoute]:
    body_limit = wire.MAX_COMPRESSED
    common = {"role": None, "raw": True, "max_body": body_limit, "tags": ("sync",), "refused": record_refused,
              "answered": sign_answer}
    signed = {**common, "precheck": signed_by_a_child}
    return [
        ApiRoute("/api/sync/join", "POST", join, summary="Enroll a child with an invitation token",
                 **{**common, "max_body": JOIN_MAX_BODY}),
        ApiRoute("/api/sync/hello", "POST", hello, summary="Exchange version vectors; check the child's history",
                 **signed),
        ApiRoute("/api/sync/push", "POST", push, summary="Receive batches of the child's branch", **signed),
        ApiRoute("/api/sync/pull", "POST", pull, summary="Send the child the entries of its branch", **signed),
    ]
