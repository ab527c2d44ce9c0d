"""The chain check every receiver runs: the fast path agrees with the rules written out plainly."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hemei.core.chain import GENESIS, MAX_HLC, REDACTED, SALT_BYTES, entry_hash, verify_segment
from hemei.core.errors import ChainError

ORIGIN = "4LO63XV-3FYBPCW-OFO3VQO-2L6SLKQ-3U4SDMS-RBBRZCC-VSLM5LV-ZSGSHAK"


def reference(origin: str, prev: bytes, first: int, entries, prev_hlc: int = -1) -> list[bytes] | None:
    """The rules one by one, as docs/protocol.md states them; None where an entry breaks one."""
    hashes, expected, stamps = [], first, [prev_hlc]
    for entry in entries:
        if entry[0] != expected:
            return None
        if len(entry) == 2:
            if not isinstance(entry[1], bytes) or len(entry[1]) != 32:
                return None
            prev = hashlib.sha256(prev + entry[1]).digest()
        else:
            _, hlc, actor, kind, scope, payload, salt = entry
            if len(salt) != SALT_BYTES or kind == REDACTED or not 0 <= hlc < MAX_HLC:
                return None
            if not 0 < len(actor) <= 64 or not actor.isprintable():
                return None
            if any("\n" in field for field in (actor, kind, scope)) or "\r" in actor or "\r" in scope:
                return None
            if hlc <= max(stamps):  # stamps rise along the chain (redacted entries have none)
                return None
            stamps.append(hlc)
            prev = entry_hash(prev, origin, expected, hlc, actor, kind, scope, payload, salt)
        hashes.append(prev)
        expected += 1
    return hashes


GOOD = {"hlc": [0, 1, 2 ** 62, MAX_HLC - 1], "actor": ["li.ming", "府山", "x" * 64],
        "kind": ["row.insert", "note.add", "a\r"], "scope": ["yc/fs", "府山街道/x", ""],
        "payload": ["{}", '{"t":"notes","v":{"title":"府山\\n"}}', "府\n山\r"],
        "salt": [bytes(SALT_BYTES), bytes(range(SALT_BYTES))]}
BAD = {"hlc": [-1, MAX_HLC], "actor": ["", "x" * 65, "a\n", "a\r", "a\x00", "\t"],
       "kind": ["row\n", REDACTED], "scope": ["yc\n", "yc\r", "\nyc"],
       "salt": [bytes(SALT_BYTES - 1), bytes(SALT_BYTES + 1)]}


@st.composite
def full_entries(draw):
    """A well-formed entry, or one with a single field broken (so that one rule decides)."""
    fields = {name: draw(st.sampled_from(values)) for name, values in GOOD.items()}
    broken = draw(st.sampled_from([None, None, *BAD]))
    if broken:
        fields[broken] = draw(st.sampled_from(BAD[broken]))
    return tuple(fields.values())


redacted_entries = st.one_of(st.binary(min_size=32, max_size=32), st.binary(max_size=40)).map(lambda leaf: (leaf,))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(full_entries(), redacted_entries), min_size=1, max_size=6), st.integers(1, 3),
       st.booleans(), st.sampled_from([-1, 0, 2 ** 62]), st.booleans())
def test_the_fast_check_accepts_and_hashes_exactly_what_the_rules_say(fields, first, skip_one, prev_hlc, rising):
    if rising:  # mostly well-formed chains, or the stamp rule would decide nearly every example
        stamps = iter(sorted(f[0] for f in fields if len(f) > 1))
        fields = [(next(stamps) + i, *f[1:]) if len(f) > 1 else f for i, f in enumerate(fields)]
    entries = [(first + i, *f) for i, f in enumerate(fields)]
    if skip_one and len(entries) > 1:
        entries = [entries[0], *entries[2:]]  # a gap
    expected = reference(ORIGIN, GENESIS, first, entries, prev_hlc)
    if expected is None:
        with pytest.raises(ChainError):
            verify_segment(ORIGIN, GENESIS, first, entries, prev_hlc=prev_hlc)
    else:
        assert verify_segment(ORIGIN, GENESIS, first, entries, prev_hlc=prev_hlc) == expected
        verify_segment(ORIGIN, GENESIS, first, entries, signed_head=expected[-1], prev_hlc=prev_hlc)
        with pytest.raises(ChainError, match="signed head"):
            verify_segment(ORIGIN, GENESIS, first, entries, signed_head=bytes(32), prev_hlc=prev_hlc)


@pytest.mark.parametrize("field, value, message", [
    ("scope", "yc\nfs", "line break"), ("scope", "yc\r", "line break"), ("kind", "row\ninsert", "line break"),
    ("actor", "", "out of range"), ("actor", "li\x07", "out of range"), ("hlc", MAX_HLC, "out of range"),
    ("salt", b"short", "salt"), ("kind", REDACTED, "salt and a kind"), ("hlc", True, "wrong types"),
    ("payload", b"{}", "wrong types"),
])
def test_each_broken_header_rule_is_named(field, value, message):
    entry = {"hlc": 1, "actor": "li.ming", "kind": "row.insert", "scope": "yc/fs", "payload": "{}",
             "salt": bytes(SALT_BYTES), field: value}
    with pytest.raises(ChainError, match=message):
        verify_segment(ORIGIN, GENESIS, 1, [(1, *entry.values())])


def test_stamps_must_rise_along_the_chain_and_after_the_entry_held_before_it():
    def entry(seq, hlc):
        return (seq, hlc, "li.ming", "row.insert", "yc/fs", "{}", bytes(SALT_BYTES))

    verify_segment(ORIGIN, GENESIS, 1, [entry(1, 5), (2, bytes(32)), entry(3, 6)])
    with pytest.raises(ChainError, match="#3 is stamped no later than the entry before it"):
        verify_segment(ORIGIN, GENESIS, 1, [entry(1, 5), (2, bytes(32)), entry(3, 5)])
    with pytest.raises(ChainError, match="#2 is stamped no later"):
        verify_segment(ORIGIN, GENESIS, 1, [entry(1, 5), entry(2, 4)])
    with pytest.raises(ChainError, match="#7 is stamped no later"):
        verify_segment(ORIGIN, GENESIS, 7, [entry(7, 9)], prev_hlc=9)
    verify_segment(ORIGIN, GENESIS, 7, [entry(7, 10)], prev_hlc=9)
