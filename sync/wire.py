"""Bytes on the wire: batches as gzip-compressed JSON, decoded defensively.

One ``orjson`` call serialises a whole message (design cost rules); binary
fields (keys, signatures, leaf digests) are base64. Decoding checks shapes
and types and turns anything unexpected into :class:`MalformedBatch`, so a
hostile or broken peer gets a 400, never a 500.
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from typing import Iterable, Iterator

import orjson

from hemei.core.chain import FULL, REDACTED_LEN
from hemei.core.errors import InvalidInput
from hemei.core.receipt import Batch

CONTENT_TYPE = "application/vnd.hemei.batches+json"
#: Limits against zlib bombs and runaway messages. Parsing JSON can take 30 times its size in memory
#: (a body of ``[],[],...``), so the inflated limit is what bounds a receiver's memory per message.
#: What a parent takes in one request of a child: a sender of this release cuts its messages at
#: MESSAGE_BYTES; the rest is room for pushes of hemei 0.1.0, which cut by entries alone (2,000).
MAX_COMPRESSED = 16 * 1024 * 1024
MAX_DECOMPRESSED = 16 * 1024 * 1024
#: Entries a sync asks for or sends in one batch unless told (``hemei sync --batch-size``).
DEFAULT_BATCH = 2000
#: What a child takes in an answer of its parent, and an import in a bundle frame: 0.1.0 wrote up to
#: 20,000 entries there. Parsed by a command, one message at a time, from the parent it pinned or a
#: file the operator imports; never by a server that takes requests from many.
MAX_ANSWER_COMPRESSED = 32 * 1024 * 1024
MAX_ANSWER_INFLATED = 128 * 1024 * 1024
MAX_ENTRIES_PER_MESSAGE = 50_000
#: Where a sender cuts a message of batches (JSON bytes before compression): a message holds one
#: batch more only when it holds nothing else (see :func:`messages`).
MESSAGE_BYTES = 4 * 1024 * 1024


class MalformedBatch(InvalidInput):
    code = "malformed_batch"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text, what: str) -> bytes:
    if not isinstance(text, str):
        raise MalformedBatch(f"{what} must be base64 text")
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        raise MalformedBatch(f"{what} is not valid base64") from None


def batch_to_json(batch: Batch) -> dict:
    return {
        "origin": batch.origin,
        "public_key": _b64(batch.public_key),
        "signature": _b64(batch.signature),
        "entries": [[*e[:6], _b64(e[6])] if len(e) == FULL else [e[0], _b64(e[1])] for e in batch.entries],
    }


def batch_from_json(data) -> Batch:
    if not isinstance(data, dict):
        raise MalformedBatch("a batch must be an object")
    try:
        origin, entries = data["origin"], data["entries"]
    except KeyError as exc:
        raise MalformedBatch(f"batch has no {exc.args[0]!r}") from None
    if not isinstance(origin, str) or not isinstance(entries, list) or not entries:
        raise MalformedBatch("batch needs an origin and a non-empty list of entries")
    decoded = []
    append = decoded.append
    a2b = binascii.a2b_base64
    for entry in entries:
        if type(entry) is not list or not entry or type(entry[0]) is not int:
            raise MalformedBatch("each entry is a list starting with its seq")
        if len(entry) == FULL:
            seq, hlc, actor, kind, scope, payload, salt = entry
            if not (type(hlc) is int and type(actor) is str and type(kind) is str and type(scope) is str
                    and type(payload) is str and type(salt) is str):
                raise MalformedBatch(f"entry #{seq}: expected [seq, hlc, actor, kind, scope, payload, salt]")
            try:
                entry[6] = a2b(salt, strict_mode=True)  # the decoded list is ours: reuse it
            except (binascii.Error, ValueError):
                raise MalformedBatch(f"entry #{seq}: salt is not valid base64") from None
            append(entry)
        elif len(entry) == REDACTED_LEN:
            append((entry[0], _unb64(entry[1], f"entry #{entry[0]} digest")))
        else:
            raise MalformedBatch(f"entry #{entry[0]}: expected {FULL} fields, or 2 when redacted")
    return Batch(origin, _unb64(data.get("public_key"), "public_key"), decoded,
                 _unb64(data.get("signature"), "signature"))


def messages(batches: Iterable[Batch], max_entries: int) -> Iterator[tuple[list[bytes], list[Batch]]]:
    """Batches grouped into messages, read lazily: each of at most ``max_entries`` entries and
    :data:`MESSAGE_BYTES` of JSON, unless one batch alone is larger (it then goes alone: a batch ends
    where its origin signed, and is read in bounds, see ``Node.read_batch``). Yields each message's
    serialised batches (for :func:`encode` with ``batches``) and the batches themselves."""
    parts, taken, size, count = [], [], 0, 0
    for batch in batches:
        part = orjson.dumps(batch_to_json(batch))  # one call per batch: its exact size on the wire
        if parts and (size + len(part) > MESSAGE_BYTES or count + len(batch.entries) > max_entries):
            yield parts, taken
            parts, taken, size, count = [], [], 0, 0
        parts.append(part)
        taken.append(batch)
        size += len(part) + 1
        count += len(batch.entries)
        if size >= MESSAGE_BYTES or count >= max_entries:  # full: sent without reading a batch more
            yield parts, taken
            parts, taken, size, count = [], [], 0, 0
    if parts:
        yield parts, taken


def encode(message: dict, batches: list[bytes] | None = None) -> bytes:
    """Serialise with one call, compress fast (level 1: the link is rarely the bottleneck here).
    ``batches``: serialised batches (from :func:`messages`) sent as the message's ``batches``."""
    if batches is not None:
        message = {"batches": [orjson.Fragment(part) for part in batches], **message}
    return zlib.compress(orjson.dumps(message), 1)


def decode(body: bytes, max_inflated: int = MAX_DECOMPRESSED, max_compressed: int = MAX_COMPRESSED) -> dict:
    limit = max_inflated
    if len(body) > max_compressed:
        raise MalformedBatch(f"message is larger than {max_compressed} bytes")
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(body, limit)
        if inflater.unconsumed_tail:
            raise MalformedBatch(f"message inflates past {limit} bytes")
        if not inflater.eof:
            raise MalformedBatch("message is truncated")
        if inflater.unused_data:  # signed with the body, so harmless, but not a message a sender writes
            raise MalformedBatch("message has bytes after its end")
        message = orjson.loads(raw)
    except zlib.error:
        raise MalformedBatch("message is not zlib-compressed JSON") from None
    except orjson.JSONDecodeError:
        raise MalformedBatch("message is not valid JSON") from None
    if not isinstance(message, dict):
        raise MalformedBatch("message must be a JSON object")
    return message


def batches_of(message: dict) -> list[Batch]:
    raw = message.get("batches")
    if not isinstance(raw, list):
        raise MalformedBatch("message needs a list of batches")
    batches = [batch_from_json(b) for b in raw]
    if sum(len(b.entries) for b in batches) > MAX_ENTRIES_PER_MESSAGE:
        raise MalformedBatch(f"more than {MAX_ENTRIES_PER_MESSAGE} entries in one message")
    return batches


#: A node id as every node writes it (identity.parse_node_id's canonical form; its check characters are
#: not recomputed here: an id no node holds matches nothing, and this is read once a request).
_NODE_ID = re.compile(r"[A-Z2-7]{7}(?:-[A-Z2-7]{7}){7}")
#: More origins than any tree of street offices holds (a city of 1,000 streets, each replaced a few times).
MAX_VV_ORIGINS = 100_000


def vv_of(value) -> dict[str, int]:
    """A version vector: canonical node ids to sizes (each below 2**63, as a log's seq)."""
    if not isinstance(value, dict) or len(value) > MAX_VV_ORIGINS or not all(
            type(k) is str and _NODE_ID.fullmatch(k) and type(v) is int and 0 <= v < 2 ** 63
            for k, v in value.items()):
        raise MalformedBatch("version vector must map node ids (canonical, with dashes) to sizes")
    return value


def node_ids_of(value, field: str) -> frozenset[str]:
    """A list of canonical node ids (none when absent)."""
    if value is None:
        return frozenset()
    if not isinstance(value, list) or len(value) > MAX_VV_ORIGINS or not all(
            type(k) is str and _NODE_ID.fullmatch(k) for k in value):
        raise MalformedBatch(f"{field} must be a list of node ids (canonical, with dashes)")
    return frozenset(value)


def _signed_within(value, bound: int, said: str) -> int | None:
    """An integer at most ``bound`` either way (not a bool, not a float); None if not sent."""
    if value is None:
        return None
    if type(value) is not int or abs(value) > bound:
        raise MalformedBatch(said)
    return value


#: Larger than any gap between two PC clocks (a clock reset to 1970 is 57 years out).
MAX_CLOCK_OFFSET_MS = 1000 * 365 * 86_400_000
#: Real time zones run from UTC-12:00 to UTC+14:00; a day either way is room enough.
MAX_UTC_OFFSET_MIN = 24 * 60


def clock_offset_of(value) -> int | None:
    """A child's measure of how far the parent's clock reads ahead of its own (ms); None if not sent."""
    return _signed_within(value, MAX_CLOCK_OFFSET_MS, "parent_clock_ahead_ms must be an integer number of milliseconds")


def utc_offset_of(value) -> int | None:
    """A node's time zone as minutes ahead of UTC; None if not sent (a release before it was)."""
    return _signed_within(value, MAX_UTC_OFFSET_MIN,
                          "utc_offset_min must be an integer number of minutes, at most a day either way")


def checkpoint_of(value) -> dict | None:
    """A checkpoint's shape: size, head, signature and at most at, each a number or short text (read
    in full by ``engine.check_history``); None if not sent."""
    if value is None:
        return None
    if not isinstance(value, dict) or not value.keys() <= {"size", "head", "signature", "at"} or not all(
            type(v) is int or (type(v) is str and len(v) <= 128) for v in value.values()):
        raise MalformedBatch("checkpoint needs size, head and signature (hex), and at most an integer at")
    return value


#: At most this many modules in a node's announcement of its schema versions.
MAX_MODULES = 200


def modules_of(value) -> dict[str, int] | None:
    """A peer's announcement ``{module: schema version}``; None from a release that does not send one."""
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > MAX_MODULES or not all(
            isinstance(k, str) and 0 < len(k) <= 100 and type(v) is int and 1 <= v < 2 ** 31
            for k, v in value.items()):
        raise MalformedBatch("modules must map module names to schema versions (integers from 1)")
    return value
