"""Node identity: the Ed25519 key, the node id, signed checkpoints.

Node id (design §5, Syncthing's device-id model): SHA-256 of the raw public
key, base32 without padding (52 characters), cut into four 13-character
chunks, each followed by a Luhn mod-32 check character, shown as eight
groups of seven: ``MFZWI3D-BONSGYC-...``. A mistyped id is caught by the
check characters before any lookup.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shlex
import sys
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import ChainError, InvalidInput, NodeStateError

_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
CHECKPOINT_DOMAIN = b"hemei-checkpoint-v1\n"


def _luhn32(chunk: str) -> str:
    factor, total, n = 1, 0, len(_B32)
    for ch in reversed(chunk):
        addend = factor * _B32.index(ch)
        factor = 2 if factor == 1 else 1
        total += addend // n + addend % n
    return _B32[(n - total % n) % n]


def node_id_from_public_key(public_raw: bytes) -> str:
    digest = base64.b32encode(hashlib.sha256(public_raw).digest()).decode().rstrip("=")
    chunks = [digest[i:i + 13] for i in range(0, 52, 13)]
    full = "".join(c + _luhn32(c) for c in chunks)
    return "-".join(full[i:i + 7] for i in range(0, 56, 7))


def parse_node_id(text: str) -> str:
    """Canonical form of a typed node id; lower case and missing dashes are fine."""
    raw = "".join(ch for ch in text.upper() if ch not in "- ")
    if len(raw) != 56 or any(ch not in _B32 for ch in raw):
        raise InvalidInput(f"{text!r} is not a node id (56 base32 characters in groups of 7)")
    for i in range(4):
        chunk, check = raw[i * 14:i * 14 + 13], raw[i * 14 + 13]
        if _luhn32(chunk) != check:
            raise InvalidInput(f"node id {text!r} has a wrong check character in group {2 * i + 2}: mistyped?")
    return "-".join(raw[i:i + 7] for i in range(0, 56, 7))


def public_key_raw(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def write_private_key(path: Path) -> Ed25519PrivateKey:
    """Create a new key file that only its owner can read (mode 0600 on POSIX).

    The file is created with O_EXCL, so an existing key is never overwritten.
    On Windows the mode bits are ignored; the node home should live in the
    operator's profile, whose ACL already restricts it.
    """
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return key


def read_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NodeStateError(f"no node key at {path}: is this a node home? (run 'hemei init')") from None
    if sys.platform != "win32" and path.stat().st_mode & 0o077:
        raise NodeStateError(
            f"{path} can be read by other users; fix it with: chmod 600 {shlex.quote(str(path))}"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise NodeStateError(f"{path} is damaged or not a private key: restore it from your backup") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise NodeStateError(f"{path} does not hold an Ed25519 key")
    return key


def load_public_key(raw: bytes) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise InvalidInput("public key is not 32 bytes of Ed25519") from None


def checkpoint_message(node_id: str, size: int, head: bytes) -> bytes:
    """The exact bytes a checkpoint signature covers (docs/protocol.md)."""
    return CHECKPOINT_DOMAIN + node_id.encode("ascii") + b"\n" + str(size).encode("ascii") + b"\n" + head


def sign_checkpoint(key: Ed25519PrivateKey, node_id: str, size: int, head: bytes) -> bytes:
    return key.sign(checkpoint_message(node_id, size, head))


def verify_checkpoint(public_raw: bytes, node_id: str, size: int, head: bytes, signature: bytes) -> None:
    """Raise :class:`ChainError` unless ``signature`` is the origin's over (id, size, head)."""
    if node_id_from_public_key(public_raw) != node_id:
        raise ChainError(f"public key does not belong to node {node_id}")
    try:
        load_public_key(public_raw).verify(signature, checkpoint_message(node_id, size, head))
    except InvalidSignature:
        raise ChainError(f"checkpoint of {node_id} at size {size} has a bad signature") from None
