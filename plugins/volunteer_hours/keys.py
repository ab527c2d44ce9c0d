"""Which volunteer key a node uses, and how the district's key reaches its streets.

1. The district runs ``hemei volunteers key create``: a 32-byte secret is
   written to ``volunteer_hours.keys`` in the node home (owner-only, never
   in the database or the log).
2. A street that needs the key (first registration, search, …) records a
   key request: its X25519 public key, in a row of its own scope, which sync
   carries up. Its private half stays in the street's key file.
3. When the district applies a request from inside its scope (or creates
   its key while requests wait), it writes a grant: the secret sealed to that
   public key, in the street's scope, which sync carries down. Relays and
   the city see only the sealed box.
4. The street opens the grant with its private key. Where several ancestors
   granted keys, the nearest one (longest scope) is used, so every node of a
   district pseudonymises alike.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import weakref
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from hemei.core import Conflict, HemeiError, Node
from hemei.core.files import atomic_file
from hemei.core.scope import covers

from . import pii

KEYRING_NAME = "volunteer_hours.keys"
_active: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class KeyMissing(HemeiError):
    code = "volunteer_key_missing"
    status = 409


# -- the key file -------------------------------------------------------------

def keyring_path(node: Node) -> Path:
    return Path(node.home) / KEYRING_NAME


def _load(node: Node) -> dict:
    try:
        data = json.loads(keyring_path(node).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"box": None, "secrets": []}
    except ValueError:  # cut short or overwritten: without it no name or phone here can be read
        data = None
    if not isinstance(data, dict):
        raise KeyMissing(f"{keyring_path(node)} is damaged: restore it from the node home's backup (it holds the "
                         "key the volunteers here are registered under)", code="keyring_damaged")
    return data


def _save(node: Node, data: dict) -> None:
    """Replace the key file atomically; the new file is owner-only from its first byte."""
    with atomic_file(keyring_path(node)) as out:
        out.write(json.dumps(data).encode("utf-8"))


def _box_key(node: Node, create: bool) -> X25519PrivateKey | None:
    data = _load(node)
    if data.get("box"):
        return X25519PrivateKey.from_private_bytes(base64.b64decode(data["box"]))
    if not create:
        return None
    private = pii.new_box_key()
    data["box"] = base64.b64encode(pii.box_private_bytes(private)).decode()
    _save(node, data)
    return private


# -- choosing the key ---------------------------------------------------------

def _context(request: str, key_id: str) -> str:
    return f"{request}\n{key_id}"


def active_key(node: Node) -> pii.VolunteerKey | None:
    """The key this node pseudonymises and encrypts with: its own, or the nearest ancestor's grant."""
    cached = _active.get(node)
    if cached is not None:
        return cached
    data = _load(node)
    candidates = [pii.VolunteerKey(base64.b64decode(s["secret"]), s["scope"]) for s in data.get("secrets", [])]
    if data.get("box"):
        box = X25519PrivateKey.from_private_bytes(base64.b64decode(data["box"]))
        for key_id, grantor_scope, sealed in node.conn.execute(
                "SELECT key_id, grantor_scope, sealed FROM volunteer_key_grants WHERE request = ?", (node.id,)):
            # Only an ancestor's key (validate_change ties grantor_scope to the writer's declared scope).
            if not grantor_scope or grantor_scope == node.scope or not covers(grantor_scope, node.scope):
                continue
            secret = pii.unseal(sealed, box, _context(node.id, key_id))
            if secret is not None and len(secret) == pii.SECRET_BYTES:
                key = pii.VolunteerKey(secret, grantor_scope)
                if key.key_id == key_id:
                    candidates.append(key)
    if not candidates:
        return None
    best = max(candidates, key=lambda k: (len(k.scope), k.key_id))
    _active[node] = best
    return best


def forget_cached(node: Node) -> None:
    _active.pop(node, None)


#: How a request reaches the district and its key comes back, for streets with a link and without one.
REACH_PARENT = ("run `hemei sync` (with no link: `hemei bundle export`, `hemei bundle import` of it at the "
                "district, and `hemei bundle import` of its acknowledgement here)")


def require_key(node: Node, actor: str) -> pii.VolunteerKey:
    """The active key, or a clear error after recording a request for one."""
    key = active_key(node)
    if key is not None:
        return key
    request_key(node, actor)
    raise KeyMissing("this node has no volunteer key yet. A key request is recorded: once the district has "
                     f"run `hemei volunteers key create`, {REACH_PARENT}, then try again (a district or a node "
                     "without a parent creates its own key)")


# -- requests and grants ------------------------------------------------------

def request_key(node: Node, actor: str) -> str:
    """Record (or refresh) this node's key request; returns its public key."""
    public = pii.box_public(_box_key(node, create=True))
    row = node.conn.execute("SELECT public_key, _deleted FROM volunteer_key_requests WHERE id = ?",
                            (node.id,)).fetchone()
    if row is not None and row[0] == public and row[1] == 0:
        return public
    with node.writer(actor) as w:
        if row is not None and row[1] == 0:
            w.update("volunteer_key_requests", node.id, {"public_key": public})
        else:
            w.insert("volunteer_key_requests", {"id": node.id, "public_key": public})
    return public


def parent_of(node: Node) -> dict | None:
    """The parent this node syncs with (from ``hemei status``'s ``peers``: the sync transport is not
    this module's to import), or None."""
    return next((p for p in node.status().get("peers", []) if p.get("role") == "parent"), None)


def create_key(node: Node, actor: str, *, holder: bool = False) -> tuple[pii.VolunteerKey, int]:
    """Make this node the key holder of its subtree; grants waiting requests. Returns (key, grants written).

    A node with a parent is a street unless its operator says otherwise (``holder``: a district under a
    city): a street's own key would make everyone registered there another person at its district.
    """
    data = _load(node)
    if data.get("secrets"):
        held = pii.VolunteerKey(base64.b64decode(data["secrets"][0]["secret"]), node.scope)
        raise Conflict(f"this node already holds volunteer key {held.key_id}")
    granted = active_key(node)
    if granted is not None:  # an ancestor's: a key of its own would take over and hide who is registered here
        raise Conflict(f"this node uses volunteer key {granted.key_id} of {granted.scope}, which its volunteers "
                       "are registered under: a key of its own would hide them. Only the district (or a node "
                       "without a parent) creates the key")
    if not holder and (parent := parent_of(node)) is not None:
        raise Conflict(f"this node syncs with {parent['name']} ({parent['scope']}) and uses the volunteer key of "
                       "its district, which reaches it through sync (`hemei volunteers key request`, then "
                       f"{REACH_PARENT}): a key of its own would count everyone registered here as other people there. If "
                       "this node holds the key for its subtree (a district under a city), run `hemei volunteers "
                       "key create --holder`")
    key = pii.VolunteerKey(os.urandom(pii.SECRET_BYTES), node.scope)
    data["secrets"] = [{"secret": base64.b64encode(key.secret).decode(), "scope": node.scope}]
    _save(node, data)
    forget_cached(node)
    with node.writer(actor) as w:
        w.event("volunteers.key_created", {"key_id": key.key_id})
    return key, grant_requests(node, actor)


def _own_key(node: Node) -> pii.VolunteerKey | None:
    secrets = _load(node).get("secrets") or []
    return pii.VolunteerKey(base64.b64decode(secrets[0]["secret"]), node.scope) if secrets else None


def grant_requests(node: Node, actor: str, request_ids: list[str] | None = None) -> int:
    """Seal this node's own key to every request from its subtree that lacks a grant for it."""
    key = _own_key(node)
    if key is None:
        return 0
    sql = "SELECT id, scope, public_key, _origin FROM volunteer_key_requests WHERE _deleted = 0 AND id != ?"
    params: list = [node.id]
    if request_ids is not None:
        sql += f" AND id IN ({', '.join('?' * len(request_ids))})"
        params += request_ids
    grants = []
    for request, scope, public, writer in node.conn.execute(sql, params).fetchall():
        # A node asks for itself only, from its own declared scope, strictly inside ours: a relay
        # (or the city above) cannot obtain the secret by writing a request in a street's scope.
        if writer != request or scope is None or scope != node.origin_scope(request):
            continue
        if scope == node.scope or not covers(node.scope, scope) or not public:
            continue
        grant_id = f"{request}:{key.key_id}:{hashlib.sha256(public.encode()).hexdigest()[:12]}"
        # Granted already if this node wrote a row under that id, or (the id having been taken first by
        # another node, which anyone who learnt the request's box key can do) under one derived from it.
        if node.conn.execute("SELECT 1 FROM volunteer_key_grants WHERE (id = ? OR id LIKE ? ESCAPE '\\')"
                             " AND _origin = ?", (grant_id, _like_prefix(grant_id + ":"), node.id)).fetchone():
            continue
        if node.conn.execute("SELECT 1 FROM volunteer_key_grants WHERE id = ?", (grant_id,)).fetchone():
            grant_id = f"{grant_id}:{node.new_id()}"
        try:
            sealed = pii.seal(key.secret, public, _context(request, key.key_id))
        except HemeiError:
            continue  # a malformed request must not keep the key from the others
        grants.append({"id": grant_id, "scope": scope, "request": request, "key_id": key.key_id,
                       "grantor_scope": node.scope, "sealed": sealed})
    if grants:
        with node.writer(actor) as w:
            for grant in grants:
                w.insert("volunteer_key_grants", grant)
    return len(grants)


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def key_status(node: Node) -> dict:
    key = active_key(node)
    requested = node.conn.execute("SELECT 1 FROM volunteer_key_requests WHERE id = ? AND _deleted = 0",
                                  (node.id,)).fetchone() is not None
    own = _own_key(node)
    return {"key_id": key.key_id if key else None, "from_scope": key.scope if key else None,
            "holder": own is not None, "requested": requested,
            "pending_requests": _pending_requests(node, own) if own else 0}


def _pending_requests(node: Node, own: pii.VolunteerKey) -> int:
    """Requests from this node's subtree that hold no grant of its key."""
    rows = node.conn.execute(
        "SELECT r.scope FROM volunteer_key_requests r WHERE r._deleted = 0 AND r.id != ?"
        " AND NOT EXISTS (SELECT 1 FROM volunteer_key_grants g WHERE g.request = r.id AND g.key_id = ?"
        " AND g._origin = ?)", (node.id, own.key_id, node.id))
    return sum(1 for (scope,) in rows if scope and covers(node.scope, scope))
