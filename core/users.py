"""Local users, roles, passwords and API tokens.

Secrets stay on the node: password hashes (scrypt) and token hashes live in
local tables that are never logged or synced. The log records *that* a user
was added or a token issued, with the actor who did it, never the secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import unicodedata
from typing import TYPE_CHECKING

from .errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized

if TYPE_CHECKING:
    from .node import Node

ROLES = ("viewer", "operator", "admin")
ROLE_RANK = {role: rank for rank, role in enumerate(ROLES, start=1)}
MIN_PASSWORD = 8
TOKEN_PREFIX = "hm_"
_SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1, "dklen": 32}


def check_user_name(name: str) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= 64:
        raise InvalidInput("user name must be 1 to 64 characters")
    if any(ch.isspace() or unicodedata.category(ch)[0] == "C" for ch in name):
        raise InvalidInput(f"user name {name!r} must not contain spaces or control characters")
    return unicodedata.normalize("NFC", name)


def check_role(role: str) -> str:
    if role not in ROLE_RANK:
        raise InvalidInput(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    return role


def hash_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise InvalidInput(f"password must have at least {MIN_PASSWORD} characters")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                                dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return scheme == "scrypt" and hmac.compare_digest(actual, expected)


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def add_user(node: Node, name: str, role: str, password: str, actor: str) -> None:
    name, role = check_user_name(name), check_role(role)
    password_hash = hash_password(password)
    with node.writer(actor) as w:
        if w.conn.execute("SELECT 1 FROM _hemei_users WHERE name = ?", (name,)).fetchone():
            raise Conflict(f"user {name} already exists")
        w.event("user.add", {"user": name, "role": role})
        w.conn.execute("INSERT INTO _hemei_users (name, role, password_hash, created_hlc) VALUES (?, ?, ?, ?)",
                       (name, role, password_hash, node.clock.last))


def list_users(node: Node) -> list[dict]:
    now = int(time.time() * 1000)
    return [
        {"name": name, "role": role, "active_tokens": tokens}
        for name, role, tokens in node.conn.execute(
            "SELECT u.name, u.role, (SELECT count(*) FROM _hemei_tokens t WHERE t.user = u.name AND NOT t.revoked"
            " AND (t.expires_ms IS NULL OR t.expires_ms > ?)) FROM _hemei_users u ORDER BY u.name", (now,))
    ]


def check_password(node: Node, name: str, password: str) -> dict:
    row = node.conn.execute("SELECT role, password_hash FROM _hemei_users WHERE name = ?", (name,)).fetchone()
    if row is None or not verify_password(password, row[1]):
        raise Unauthorized("wrong user name or password")
    return {"name": name, "role": row[0]}


def issue_token(node: Node, name: str, actor: str, ttl_seconds: int | None = None) -> str:
    """A new API token for ``name``; shown once, stored only as its hash."""
    if node.conn.execute("SELECT 1 FROM _hemei_users WHERE name = ?", (name,)).fetchone() is None:
        raise NotFound(f"no user {name}")
    if ttl_seconds is not None and ttl_seconds <= 0:
        raise InvalidInput("token lifetime must be positive")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = None if ttl_seconds is None else int(time.time() * 1000) + ttl_seconds * 1000
    with node.writer(actor) as w:
        w.event("token.issue", {"user": name, "expires_ms": expires})
        w.conn.execute("INSERT INTO _hemei_tokens (token_hash, user, created_hlc, expires_ms) VALUES (?, ?, ?, ?)",
                       (_token_hash(token), name, node.clock.last, expires))
    return token


def revoke_tokens(node: Node, name: str, actor: str) -> int:
    with node.writer(actor) as w:
        count = w.conn.execute("UPDATE _hemei_tokens SET revoked = 1 WHERE user = ? AND NOT revoked",
                               (name,)).rowcount
        if not count:
            known = w.conn.execute("SELECT 1 FROM _hemei_users WHERE name = ?", (name,)).fetchone()
            raise NotFound(f"user {name} has no active token" if known else f"no user {name}")
        w.event("token.revoke", {"user": name, "tokens": count})
    return count


def authenticate(node: Node, token: str | None) -> dict:
    """The user behind a bearer token, or :class:`Unauthorized`."""
    if not token:
        raise Unauthorized("this route needs a token: send 'Authorization: Bearer <token>'")
    row = node.conn.execute(
        "SELECT u.name, u.role, t.expires_ms, t.revoked FROM _hemei_tokens t JOIN _hemei_users u ON u.name = t.user"
        " WHERE t.token_hash = ?", (_token_hash(token),)).fetchone()
    if row is None or row[3]:
        raise Unauthorized("unknown or revoked token")
    if row[2] is not None and row[2] <= int(time.time() * 1000):
        raise Unauthorized("token expired: ask an admin for a new one (hemei users token)")
    return {"name": row[0], "role": row[1]}


def require_role(user: dict, role: str) -> None:
    if ROLE_RANK[user["role"]] < ROLE_RANK[role]:
        raise Forbidden(f"this needs the {role} role; {user['name']} is {user['role']}")
