"""Enrollment: a parent invites, a child joins, each pins the other's key.

Token (printed by ``hemei invite``, carried by hand or on a stick)::

    hemei1.<base64url(JSON {"u": parent URL, "p": parent node id, "s": child scope,
                            "n": child name, "e": expiry ms, "k": 16 random bytes,
                            "a": 1, the parent signs its answers})>

(A token without ``"a"`` is from a release before signed answers.)

The parent stores only ``SHA-256(token)``: a token read off its database is
useless, and any alteration of the token misses the stored hash. The child
proves possession of its key by signing the join request with it (the key
travels in the body, and its SHA-256 must give the claimed node id). After
this no secret crosses the wire: every later request is signed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets

import orjson

from hemei.core.errors import Conflict, Forbidden, InvalidInput
from hemei.core.identity import node_id_from_public_key, parse_node_id
from hemei.core.node import Node, check_name
from hemei.core.scope import covers, parse_scope

from .address import node_address
from .peers import get_peer, now_ms

TOKEN_PREFIX = "hemei1."
DEFAULT_TTL_S = 24 * 3600


class InvalidToken(InvalidInput):
    code = "invalid_token"


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.strip().encode()).digest()


def create_invite(node: Node, *, name: str, scope: str, url: str, ttl_s: int, actor: str) -> str:
    name = check_name(name)  # the child's name, as its own init would take it
    scope = parse_scope(scope)
    if scope == node.scope or not covers(node.scope, scope):
        raise InvalidInput(f"a child's scope must lie inside this node's scope {node.scope} (got {scope})")
    url = node_address(url)  # as the child will check it: a typo here would fail every join
    if ttl_s <= 0:
        raise InvalidInput("--ttl must be positive")
    expires = now_ms() + ttl_s * 1000
    body = {"u": url, "p": node.id, "s": scope, "n": name, "e": expires,
            "k": base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("="), "a": 1}
    token = TOKEN_PREFIX + base64.urlsafe_b64encode(orjson.dumps(body)).decode().rstrip("=")
    with node.writer(actor) as w:
        w.event("peer.invite", {"name": name, "scope": scope, "expires_ms": expires}, scope=node.scope)
        w.conn.execute("INSERT INTO _hemei_invites (token_hash, name, scope, expires_ms) VALUES (?, ?, ?, ?)",
                       (_hash(token), name, scope, expires))
    return token


#: What a token picks up on its way through a chat program or a document: quotes or backticks round it,
#: line breaks where it was wrapped, invisible marks (zero-width space, BOM, soft hyphen), a full stop or
#: comma after it. None of these is ever part of a token ("hemei1." and URL-safe base64).
_TOKEN_WRAPPING = re.compile("[\\s\"'`“”‘’「」『』<>《》。，\u200b\u200c\u200d\u2060\ufeff\u00ad]+")


def clean_token(token: str) -> str:
    """The token as the parent printed it, from what the operator pasted."""
    return _TOKEN_WRAPPING.sub("", token).rstrip(".,")  # base64url never ends a token with either


def parse_token(token: str) -> dict:
    token = clean_token(token)
    if not token.startswith(TOKEN_PREFIX):
        raise InvalidToken("this is not a hemei invitation token (they start with 'hemei1.')")
    raw = token[len(TOKEN_PREFIX):]
    try:
        body = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        fields = {"url": body["u"], "parent": parse_node_id(body["p"]), "scope": parse_scope(body["s"]),
                  "name": body["n"], "expires_ms": int(body["e"]), "signs_answers": body.get("a") == 1}
    except (binascii.Error, ValueError, KeyError, TypeError, InvalidInput):
        raise InvalidToken("the invitation token is damaged: copy it again from the parent") from None
    return fields


def accept_join(node: Node, token: str, child_id: str, public_key: bytes, name: str, scope: str) -> dict:
    """Parent side: check the token and pin the child. Raises without writing anything on refusal."""
    if node_id_from_public_key(public_key) != child_id:
        raise Forbidden("public key does not match the node id", code="bad_key")
    with node.writer("sync") as w:  # checks and enrollment in one write transaction: a token works once
        return _enroll(node, w, token, child_id, public_key, scope)


def _enroll(node: Node, w, token: str, child_id: str, public_key: bytes, scope: str) -> dict:
    row = w.conn.execute("SELECT name, scope, expires_ms, used_by FROM _hemei_invites WHERE token_hash = ?",
                         (_hash(token),)).fetchone()
    if row is None:
        raise Forbidden("this node did not issue that token (altered, or issued by another node)",
                        code="invalid_token")
    invite_name, invite_scope, expires, used_by = row
    if used_by is not None:
        raise Forbidden("that token was already used; ask for a new one", code="token_used")
    if expires <= now_ms():
        raise Forbidden("that token has expired; ask for a new one", code="token_expired")
    if scope != invite_scope:
        raise Forbidden(f"the token is for scope {invite_scope}, but the joining node has scope {scope}",
                        code="scope_mismatch")
    existing = get_peer(node, child_id)
    # The same child again, with a new token made for it: its side of an earlier join may have failed
    # after this side's committed (its disk, Ctrl-C), and the two sides cannot commit as one. The same
    # key proves it is the same node; never having synced, it holds nothing this side holds, so it is
    # answered as before instead of being locked out for good. One that synced is not let in again: a
    # restored backup of it would fork its own history (409, as before).
    again = existing is not None and existing["role"] == "child" and not existing["revoked"] \
        and existing["scope"] == scope and existing["public_key"] == public_key \
        and existing["name"] == invite_name and existing["last_contact_ms"] is None
    if existing is not None and not again:
        state = "revoked" if existing["revoked"] else "enrolled"
        raise Conflict(f"node {child_id} is already {state} here as {existing['name']}", code="already_enrolled")
    enrolled = {"node_id": child_id, "name": invite_name, "scope": scope}
    w.event("peer.enroll", {**enrolled, "again": True} if again else enrolled, scope=node.scope)
    taken = w.conn.execute("UPDATE _hemei_invites SET used_by = ?, used_ms = ? WHERE token_hash = ?"
                           " AND used_by IS NULL", (child_id, now_ms(), _hash(token))).rowcount
    if taken != 1:
        raise Forbidden("that token was already used; ask for a new one", code="token_used")
    if not again:
        w.conn.execute("INSERT INTO _hemei_peers (node_id, role, name, scope, public_key, enrolled_ms)"
                       " VALUES (?, 'child', ?, ?, ?, ?)", (child_id, invite_name, scope, public_key, now_ms()))
    return {"node_id": node.id, "public_key": base64.b64encode(node.public_key).decode(), "name": node.name,
            "scope": node.scope}


def pin_parent(node: Node, token: dict, reply: dict, actor: str, *, signs_answers: bool = False,
               replacing: str | None = None) -> dict:
    """Child side: check the parent's answer against the token and pin it (``signs_answers``: its
    answer was signed, and every later one must be). ``replacing``: the parent it takes the place of,
    whose pin goes in the same transaction (the log keeps both joins, and the replacement)."""
    try:
        public_key = base64.b64decode(reply["public_key"], validate=True)
        parent_id = parse_node_id(reply["node_id"])
        parent_scope = parse_scope(reply["scope"])
        parent_name = str(reply["name"])
    except (KeyError, TypeError, ValueError, binascii.Error, InvalidInput):
        raise InvalidToken("the parent's answer is malformed") from None
    if parent_id != token["parent"] or node_id_from_public_key(public_key) != parent_id:
        raise Forbidden("the node at that address is not the one that issued the token (key fingerprint "
                        "differs): nothing was changed", code="wrong_parent")
    if not covers(parent_scope, node.scope) or parent_scope == node.scope:
        raise Forbidden(f"parent scope {parent_scope} does not contain this node's scope {node.scope}",
                        code="scope_mismatch")
    with node.writer(actor) as w:
        if replacing is not None:
            w.event("peer.replace", {"node_id": replacing, "by": parent_id})
            w.conn.execute("DELETE FROM _hemei_peers WHERE node_id = ? AND role = 'parent'", (replacing,))
        w.event("peer.join", {"node_id": parent_id, "name": parent_name, "scope": parent_scope,
                              "url": token["url"]})
        w.conn.execute("INSERT INTO _hemei_peers (node_id, role, name, scope, public_key, url, enrolled_ms,"
                       " signs_answers) VALUES (?, 'parent', ?, ?, ?, ?, ?, ?)",
                       (parent_id, parent_name, parent_scope, public_key, token["url"], now_ms(), int(signs_answers)))
    return {"node_id": parent_id, "name": parent_name, "scope": parent_scope, "url": token["url"]}


def revoke(node: Node, node_id: str, actor: str) -> dict:
    peer = get_peer(node, parse_node_id(node_id))
    if peer is None or peer["role"] != "child":
        raise InvalidInput(f"no enrolled child {node_id} (see 'hemei nodes list')")
    if peer["revoked"]:
        raise InvalidInput(f"node {peer['name']} is already revoked")
    with node.writer(actor) as w:
        w.event("peer.revoke", {"node_id": peer["node_id"], "name": peer["name"]})
        w.conn.execute("UPDATE _hemei_peers SET revoked = 1 WHERE node_id = ?", (peer["node_id"],))
    return peer
