"""The log entry and its hash chain.

An entry is ``(origin, seq, hlc, actor, kind, scope, payload)``; its hash is

    SHA-256( prev_hash || UTF-8(origin \\n seq \\n hlc \\n actor \\n kind \\n scope \\n) || UTF-8(payload) )

with ``prev_hash`` the previous entry's hash (32 zero bytes before seq 1),
``seq`` and ``hlc`` in decimal, and ``payload`` the JSON text exactly as the
origin wrote it. None of the header fields may contain a newline, which keeps
the encoding unambiguous without escaping. The payload is hashed as stored,
so no canonical JSON is needed and entries are forwarded byte for byte.

:func:`verify_segment` is the check every receiver runs (sync, bundles,
``hemei audit verify``): contiguous seqs, recomputed links, and a head equal
to the one the origin signed.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, NamedTuple, Sequence

from .errors import ChainError

GENESIS = bytes(32)
_sha256 = hashlib.sha256

#: Kinds of entries that change rows of synced tables.
ROW_KINDS = ("row.insert", "row.update", "row.delete")


class Entry(NamedTuple):
    origin: str
    seq: int
    hlc: int
    actor: str
    kind: str
    scope: str
    payload: str
    hash: bytes


def entry_hash(prev: bytes, origin: str, seq: int, hlc: int, actor: str, kind: str,
               scope: str, payload: str | bytes) -> bytes:
    """The chain hash of one entry; ``payload`` as text, or as its UTF-8 bytes."""
    if isinstance(payload, str):
        payload = payload.encode()
    return _sha256(b"".join((prev, f"{origin}\n{seq}\n{hlc}\n{actor}\n{kind}\n{scope}\n".encode(), payload))).digest()


def check_header_text(name: str, value: str) -> None:
    if not isinstance(value, str) or "\n" in value or "\r" in value:
        raise ChainError(f"entry {name} must be text without line breaks")


def verify_segment(origin: str, prev_head: bytes, first_seq: int,
                   entries: Sequence[tuple], signed_head: bytes | None = None) -> list[bytes]:
    """Check that ``entries`` continue a chain whose entry ``first_seq - 1`` hashes to ``prev_head``.

    ``entries`` are ``(seq, hlc, actor, kind, scope, payload)`` tuples (an
    :class:`Entry` works too through :func:`as_wire`). Returns the recomputed
    hashes. Raises :class:`ChainError` naming the first entry that breaks
    the chain, or when the last hash differs from ``signed_head``.
    """
    hashes = []
    prev = prev_head
    expected = first_seq
    for seq, hlc, actor, kind, scope, payload in entries:
        if seq != expected:
            raise ChainError(f"entry {origin}#{seq}: expected seq {expected} (gap or reorder)")
        if "\n" in actor or "\n" in kind or "\n" in scope:
            raise ChainError(f"entry {origin}#{seq}: header field contains a line break")
        prev = entry_hash(prev, origin, seq, hlc, actor, kind, scope, payload)
        hashes.append(prev)
        expected += 1
    if signed_head is not None and prev != signed_head:
        raise ChainError(f"entries of {origin} up to #{expected - 1} do not hash to the signed head")
    return hashes


def as_wire(entries: Iterable[Entry]) -> list[tuple]:
    return [(e.seq, e.hlc, e.actor, e.kind, e.scope, e.payload) for e in entries]
