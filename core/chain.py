"""The log entry and its hash chain.

An entry is ``(origin, seq, hlc, actor, kind, scope, payload, salt)``. Its
*leaf* digest and its chain hash are

    leaf = SHA-256( salt || UTF-8(origin \\n seq \\n hlc \\n actor \\n kind \\n scope \\n) || UTF-8(payload) )
    hash = SHA-256( prev_hash || leaf )

with ``prev_hash`` the previous entry's hash (32 zero bytes before seq 1),
``seq`` and ``hlc`` in decimal, and ``payload`` the JSON text exactly as the
origin wrote it. None of the header fields may contain a newline, which keeps
the encoding unambiguous without escaping. The payload is hashed as stored,
so no canonical JSON is needed and entries are forwarded byte for byte.

Splitting leaf from link is what lets a parent send a child an origin's
chain with the entries the child must not see *redacted*: a redacted entry
travels as ``(seq, leaf)`` only, and the child can still verify every link
and the origin's signature without learning anything about it. The 16
random bytes of ``salt`` make sure of that last part: without them a
predictable entry (``user.add`` of a likely name) could be recovered from
its leaf by guessing.

:func:`verify_segment` is the check every receiver runs (sync, bundles):
contiguous seqs, recomputed links, and a head equal to the one the origin
signed.
"""

from __future__ import annotations

import hashlib
import re
from typing import Sequence

from .errors import ChainError, InvalidInput
from .scope import parse_scope

GENESIS = bytes(32)
_sha256 = hashlib.sha256

#: Kinds of entries that change rows of synced tables.
ROW_KINDS = ("row.insert", "row.update", "row.delete")
#: Kind stored for an entry this node holds only as its leaf digest.
REDACTED = "redacted"
#: Kinds no write may use directly: row kinds come from insert/update/delete only.
RESERVED_KINDS = frozenset(ROW_KINDS) | {REDACTED}
SALT_BYTES = 16
MAX_HLC = 1 << 63
#: A full entry on the wire: (seq, hlc, actor, kind, scope, payload, salt); a redacted one: (seq, leaf).
FULL, REDACTED_LEN = 7, 2


def entry_leaf(origin: str, seq: int, hlc: int, actor: str, kind: str, scope: str,
               payload: str | bytes, salt: bytes) -> bytes:
    """The digest of one entry's content; ``payload`` as text, or as its UTF-8 bytes."""
    if isinstance(payload, str):
        payload = payload.encode()
    return _sha256(salt + f"{origin}\n{seq}\n{hlc}\n{actor}\n{kind}\n{scope}\n".encode() + payload).digest()


def link(prev: bytes, leaf: bytes) -> bytes:
    return _sha256(prev + leaf).digest()


def entry_hash(prev: bytes, origin: str, seq: int, hlc: int, actor: str, kind: str,
               scope: str, payload: str | bytes, salt: bytes) -> bytes:
    """The chain hash of one full entry."""
    return _sha256(prev + entry_leaf(origin, seq, hlc, actor, kind, scope, payload, salt)).digest()


def check_header_text(name: str, value: str) -> None:
    if not isinstance(value, str) or "\n" in value or "\r" in value:
        raise ChainError(f"entry {name} must be text without line breaks")


def _refuse_header(origin: str, seq: int, hlc: int, actor: str, kind: str, scope: str, salt: bytes):
    """Say which rule a full entry's header breaks (the checks themselves are inlined, on the hot path)."""
    if len(salt) != SALT_BYTES or kind == REDACTED:
        raise ChainError(f"entry {origin}#{seq}: needs a {SALT_BYTES}-byte salt and a kind other than "
                         f"{REDACTED!r}")
    if not 0 <= hlc < MAX_HLC or not 0 < len(actor) <= 64 or not actor.isprintable():
        raise ChainError(f"entry {origin}#{seq}: clock value or actor out of range")
    raise ChainError(f"entry {origin}#{seq}: header field contains a line break")


#: The grammar of an entry's kind (docs/protocol.md, "Entries").
_KIND = re.compile(r"[a-z0-9._-]+")


def _check_kind_and_scope(origin: str, seq: int, kind: str, scope: str) -> None:
    """Refuse a kind outside its grammar, or a scope that is not an org path in its canonical form.

    An entry is relayed unchanged up the tree, so one that breaks the
    written grammar would be taken here and refused above by any node that
    follows it, and that would stop the whole branch's sync at that tier.
    """
    if not _KIND.fullmatch(kind):
        raise ChainError(f"entry {origin}#{seq}: kind {kind[:40]!r} is not of [a-z0-9._-]")
    try:
        canonical = parse_scope(scope, received=True)
    except InvalidInput as exc:
        raise ChainError(f"entry {origin}#{seq}: {exc.message}") from None
    if canonical != scope:
        raise ChainError(f"entry {origin}#{seq}: scope {scope[:60]!r} is not in its canonical (NFC) form")


def verify_segment(origin: str, prev_head: bytes, first_seq: int, entries: Sequence[tuple],
                   signed_head: bytes | None = None) -> list[bytes]:
    """Check that ``entries`` continue a chain whose entry ``first_seq - 1`` hashes to ``prev_head``.

    Each entry is ``(seq, hlc, actor, kind, scope, payload, salt)``, or
    ``(seq, leaf)`` for a redacted one. Returns the recomputed hashes.
    Raises :class:`ChainError` naming the first entry that breaks the
    chain, or when the last hash differs from ``signed_head``.
    """
    hashes = []
    append = hashes.append
    prev = prev_head
    expected = first_seq
    sha256 = _sha256
    grammatical = set()  # (kind, scope) pairs checked: a batch has few, and each entry costs a lookup
    for entry in entries:
        seq = entry[0]
        if seq != expected:
            raise ChainError(f"entry {origin}#{seq}: expected seq {expected} (gap or reorder)")
        if len(entry) == FULL:
            _, hlc, actor, kind, scope, payload, salt = entry
            if not (type(hlc) is int and type(actor) is str and type(kind) is str and type(scope) is str
                    and type(payload) is str and type(salt) is bytes):
                raise ChainError(f"entry {origin}#{seq}: fields have the wrong types")
            # One string for the header and the payload: one encode, one hash update.
            text = f"{origin}\n{seq}\n{hlc}\n{actor}\n{kind}\n{scope}\n{payload}"
            if (len(salt) != SALT_BYTES or kind == REDACTED or not 0 <= hlc < MAX_HLC
                    or not 0 < len(actor) <= 64 or not actor.isprintable()
                    or text.count("\n", 0, len(text) - len(payload)) != 6 or "\r" in actor or "\r" in scope):
                _refuse_header(origin, seq, hlc, actor, kind, scope, salt)
            if (kind, scope) not in grammatical:
                _check_kind_and_scope(origin, seq, kind, scope)
                grammatical.add((kind, scope))
            leaf = sha256(salt + text.encode()).digest()
        elif len(entry) == 2:
            leaf = entry[1]
            if type(leaf) is not bytes or len(leaf) != 32:
                raise ChainError(f"entry {origin}#{seq}: a redacted entry carries a 32-byte digest")
        else:
            raise ChainError(f"entry {origin}#{seq}: expected {FULL} fields (or 2 when redacted)")
        prev = sha256(prev + leaf).digest()
        append(prev)
        expected += 1
    if signed_head is not None and prev != signed_head:
        raise ChainError(f"entries of {origin} up to #{expected - 1} do not hash to the signed head")
    return hashes


def check_stamps_rise(origin: str, entries: Sequence[tuple], prev_hlc: int) -> None:
    """Refuse a full entry stamped no later than the full entry before it (redacted ones have no stamp).

    Every entry is ticked from its origin's clock, which never goes back,
    so a real chain's stamps rise. ``prev_hlc`` is the stamp of the entry
    before ``entries`` (-1: none, or held redacted). A parent holds a
    child's new entries to this: a back-dated entry could otherwise win
    "earliest wins" (an append-only table's unique columns) against a
    sibling's.
    """
    last = prev_hlc
    for entry in entries:
        if len(entry) == FULL:
            if entry[1] <= last:
                raise ChainError(f"entry {origin}#{entry[0]} is stamped no later than the entry before it: its"
                                 " origin's clock went back, or the entry was altered")
            last = entry[1]
