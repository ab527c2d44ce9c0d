"""Offline bundles: the same batches on a USB stick, signed, verified whole.

File layout (binary)::

    b"HEMEI-BUNDLE-1\\n"
    frame*            each: 8-byte big-endian length, then zlib(JSON message)
    8 zero bytes      end of frames
    64-byte Ed25519 signature by the sender over SHA-256 of everything before it

The first frame is the header ``{"id", "kind": "push"|"ack", "from", "to",
"vv"}``; the others carry ``{"batches": [...]}``. A file that is truncated,
altered, or not signed by the pinned peer is refused before anything is
applied, and all its batches are applied in one transaction, which commits
only if the file read to apply them is still the one that verified.

A child exports what its parent lacks, as far as the last sync or
acknowledgement told it (an export alone does not move that point); the
parent imports it through the same checks as a push, and writes
an *ack* bundle: its version vector and the entries of the child's branch
that the child lacks. The child imports the ack like a pull.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO, Iterator

from cryptography.exceptions import InvalidSignature

from hemei.core.clock import utc_offset_min
from hemei.core.errors import ChainGap, Conflict, Forbidden, HemeiError, InvalidInput
from hemei.core.files import atomic_file, export_target
from hemei.core.identity import load_public_key, parse_node_id
from hemei.core.ids import new_id
from hemei.core.node import Node

from . import engine, wire
from .peers import (get_peer, now_ms, parent_of, record_fork, record_refusal, record_utc_offset, time_zone_warning,
                    touch)

MAGIC = b"HEMEI-BUNDLE-1\n"
END = bytes(8)
MAX_FRAME = wire.MAX_ANSWER_COMPRESSED


class BadBundle(InvalidInput):
    code = "bad_bundle"


class NotAsVerified(BadBundle):
    """The read that applies a bundle did not give the file that verified: nobody's refusal."""


CHANGED = "the bundle changed while it was being imported: nothing was imported; copy it again"


#: Entries read into a batch (more when the origin signed further apart: batches end at its signatures).
BATCH_ENTRIES = 2000


class NoPlaceToWrite(HemeiError):
    """A bundle cannot be written where asked: this side's trouble (5xx), never a refusal of the sender."""
    code = "no_place_to_write"
    status = 507


class AckNotWritten(NoPlaceToWrite):
    """The bundle was imported; only its acknowledgement could not be written."""
    code = "ack_not_written"


def check_target(node: Node, path: Path, reading: Path | None = None) -> Path:
    """A file a bundle may be written to: in a folder that is there, never one of the node's own files,
    and replacing nothing but a bundle this node wrote (not a document, nor another node's bundle or an
    acknowledgement not imported yet, on a stick several offices share). ``reading``: the bundle being
    imported, which its acknowledgement must not replace."""
    path = Path(path)
    if not path.name or path.is_dir():
        raise NoPlaceToWrite(f"{path} is a folder: give a file name, e.g. E:\\fushan.hemei")
    if not path.parent.is_dir():
        raise NoPlaceToWrite(f"there is no folder {path.parent}: is the USB stick plugged in?")
    try:
        export_target(path, node.home)
    except InvalidInput as exc:
        raise NoPlaceToWrite(exc.message) from None
    if reading is not None and path.exists() and path.resolve() == Path(reading).resolve():
        raise NoPlaceToWrite(f"{path} is the bundle being imported: write its acknowledgement to another file")
    if path.exists():
        writer = _writer_of(path)
        if writer is None:
            raise NoPlaceToWrite(f"{path} is there already and is not a hemei bundle: give another file name "
                                 "(it was left as it is)")
        if writer != node.id:
            raise NoPlaceToWrite(f"{path} is a bundle another node wrote, not imported here perhaps: give another "
                                 "file name (it was left as it is)")
    return path


def ack_path_for(bundle: Path) -> Path:
    """Where an import writes the acknowledgement when not told: beside the bundle, ``NAME.ack.hemei``."""
    return bundle.with_name(bundle.stem + ".ack.hemei")


def _writer_of(path: Path) -> str | None:
    """The node that wrote the bundle at ``path`` (its header's ``from``), or None if it is not a bundle."""
    try:
        with open(path, "rb") as fh:
            if fh.read(len(MAGIC)) != MAGIC:
                return None
            size = int.from_bytes(fh.read(8), "big")
            header = _decoded(fh.read(size)) if 0 < size <= MAX_FRAME else {}
    except (OSError, HemeiError):
        return None
    return str(header.get("from", "")) if isinstance(header, dict) else ""


def _decoded(frame: bytes) -> dict:
    """A frame's message, within what 0.1.0 wrote in one (up to 20,000 entries: wire.MAX_ANSWER_INFLATED)."""
    return wire.decode(frame, wire.MAX_ANSWER_INFLATED, wire.MAX_ANSWER_COMPRESSED)


def _write(node: Node, path: Path, header: dict, batch_iter, held: dict[str, int] | None = None) -> int:
    """Write frames and the signature; returns the number of entries the recipient lacks (``held``: its
    sizes). Whole or not at all: on any failure (a full stick, Ctrl-C) the target is left as it was."""
    with atomic_file(check_target(node, path)) as out:
        return _write_to(node, out, header, batch_iter, held)


def _write_to(node: Node, out: BinaryIO, header: dict, batch_iter, held: dict[str, int] | None = None) -> int:
    digest = hashlib.sha256()
    count = 0
    held = held or {}

    def put(data: bytes) -> None:
        digest.update(data)
        out.write(data)

    def put_frame(frame: bytes) -> None:
        put(len(frame).to_bytes(8, "big") + frame)

    put(MAGIC)
    put_frame(wire.encode(header))
    # Frames are cut as sync messages are, well inside what a reader takes in one (wire.batches_of):
    # batches end where their signer signed, so a chain relayed from a sync with large batches has
    # large ones.
    for parts, batches in wire.messages(batch_iter, wire.MAX_ENTRIES_PER_MESSAGE // 5):
        put_frame(wire.encode({}, batches=parts))
        for batch in batches:
            known = held.get(batch.origin, 0)  # each origin's first batch repeats the last entry held
            count += sum(1 for entry in batch.entries if entry[0] > known)
    put(END)
    out.write(node.key.sign(digest.digest()))
    return count


def _frames(fh, digest) -> Iterator[bytes]:
    """The frames of an open bundle, one at a time, each added to ``digest`` (with its length) as it is
    read; the end marker too. The file position ends after the end marker."""
    start = fh.read(len(MAGIC))
    if start != MAGIC:
        if MAGIC.startswith(start):  # empty, or cut off within its first bytes (a stick pulled mid-copy)
            raise BadBundle("this bundle is empty or cut off at its start: copy it again from the other node")
        raise BadBundle("this is not a hemei bundle")
    while True:
        length = fh.read(8)
        if len(length) != 8:
            raise BadBundle("bundle is truncated: copy it again")
        digest.update(length)
        size = int.from_bytes(length, "big")
        if size == 0:
            return
        if size > MAX_FRAME:
            raise BadBundle("bundle is damaged: copy it again")
        frame = fh.read(size)
        if len(frame) != size:
            raise BadBundle("bundle is truncated: copy it again")
        digest.update(frame)
        yield frame


def read_bundle(node: Node, path: Path) -> tuple[dict, "SecondRead", dict]:
    """Verify a bundle whole (streaming), then return (header, the read that applies it, sender peer)."""
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise BadBundle(f"cannot read {path}: {exc.strerror}") from None
    with fh:
        digest = hashlib.sha256(MAGIC)
        header_frame = None
        for frame in _frames(fh, digest):
            header_frame = header_frame or frame
        signature = fh.read(65)
        whole = digest.copy()
        whole.update(signature)
        size = fh.tell()
    if len(signature) != 64:
        raise BadBundle("bundle is truncated or damaged (no signature): copy it again")
    if header_frame is None:
        raise BadBundle("bundle has no header")
    try:  # read before its signature can be checked (it names the signer): damage here is damage
        header = _decoded(header_frame)
        sender = parse_node_id(str(header["from"]))
        recipient = parse_node_id(str(header["to"]))
    except (KeyError, TypeError, InvalidInput):
        raise BadBundle("bundle is damaged (its header cannot be read): copy it again") from None
    if recipient != node.id:
        raise BadBundle(misaddressed(node, sender, recipient, header.get("kind")))
    peer = get_peer(node, sender)
    if peer is None:
        raise Forbidden(f"bundle comes from {sender}, which is not a peer of this node", code="unknown_node")
    try:
        load_public_key(peer["public_key"]).verify(signature, digest.digest())
    except InvalidSignature:
        raise BadBundle("bundle signature does not verify: it was altered or not made by "
                        f"{peer['name']}") from None
    if peer["revoked"]:  # after the signature, as for a request: then it is that peer's refusal, on record
        message = f"node {peer['name']} has been revoked"
        record_refusal(node, peer["node_id"], "revoked", message, "bundle import")
        raise Forbidden(message, code="revoked")
    return header, SecondRead(Path(path), whole.digest(), size), peer


def misaddressed(node: Node, sender: str, recipient: str, kind) -> str:
    """Why a bundle for another node is refused here, with the names this node knows."""
    def name(node_id: str) -> str:
        if node_id == node.id:
            return f"this node ({node.name})"
        peer = get_peer(node, node_id)
        return f"{peer['name']} ({node_id[:7]})" if peer else f"node {node_id}"

    if sender == node.id:
        hint = (": import it there; the acknowledgement that comes back ends in .ack.hemei" if kind == "push"
                else ": import it there")
        return f"this is a bundle this node wrote for {name(recipient)}{hint}"
    return f"this bundle is from {name(sender)} for {name(recipient)}, not for this node ({node.name})"


class SecondRead:
    """The read that applies a verified bundle, and whether what it read is the file that verified.

    A bundle may not fit in memory, so it is read again to be applied, and
    hashed again on the way. The transaction that applies the batches ends
    only after the last one, where :meth:`batches` checks the hash, so a
    file changed in between (a truncated copy, the sender's next export
    written over it: signed too, but not what verified) never commits. And
    a refusal found part-way is held against the sender only if the rest of
    the file, read to its end, still hashes to what verified: a read error
    or a changed file is this side's trouble, not the sender's.
    """

    def __init__(self, path: Path, verified: bytes, size: int):
        self.path, self._verified, self._size = path, verified, size
        self._fh = self._frames = None
        self._digest = hashlib.sha256(MAGIC)
        self._ended = False
        self.applied_whole = False

    def batches(self) -> Iterator:
        if self._fh is not None:  # one read, one running hash: a second pass would hash the file twice
            raise RuntimeError("a bundle's second read is read once: batches() before intact()")
        try:
            frames = self._open()
            next(frames, None)  # the header, checked at the first pass (None: a file with no frames now)
            for frame in frames:
                if self._fh.tell() > self._size:
                    break  # longer than what verified: read no further (intact() says no)
                yield from wire.batches_of(_decoded(frame))
        except OSError as exc:  # the stick pulled, a worn stick's read error
            raise self._unreadable(exc) from None
        except BadBundle:  # truncated or damaged since it verified
            raise NotAsVerified(CHANGED) from None
        if not self.intact():
            raise NotAsVerified(CHANGED)
        self.applied_whole = True  # all of it handed over, as verified: what fails from here is not the sender's
        self.close()  # before the ack is written, which may be beside it (Windows locks open files)

    def again(self) -> SecondRead:
        """Another read of the same verified file, from its start."""
        return SecondRead(self.path, self._verified, self._size)

    def intact(self) -> bool:
        """Whether the file, read to its end now if it was not yet, hashes to what verified.

        A read error is neither yes nor no: it raises :class:`NotAsVerified` saying the file cannot
        be read (this side's trouble, held against nobody).
        """
        if self.applied_whole:
            return True  # checked at the end of batches(), and closed since
        try:
            if self._frames is None:
                self._open()
            if self._fh.tell() > self._size:
                return False
            for _ in self._frames:
                if self._fh.tell() > self._size:
                    return False
            if not self._ended:
                self._digest.update(self._fh.read(65))
                self._ended = True
        except OSError as exc:
            raise self._unreadable(exc) from None
        except BadBundle:
            return False
        return self._fh.tell() == self._size and self._digest.digest() == self._verified

    def _unreadable(self, exc: OSError) -> NotAsVerified:  # the stick pulled, a worn stick's read error
        return NotAsVerified(f"cannot read {self.path} any more ({exc.strerror or exc}): nothing was "
                             "imported; copy it again")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()

    def _open(self) -> Iterator[bytes]:
        self._fh = open(self.path, "rb")
        self._frames = _frames(self._fh, self._digest)
        return self._frames


def export_push(node: Node, out: Path) -> dict:
    """Child: write what the parent lacks, as far as the last sync or acknowledgement told."""
    parent = parent_of(node)
    their_vv = parent["their_vv"]
    header = {"id": new_id(), "kind": "push", "from": node.id, "to": parent["node_id"],
              "vv": node.version_vector(), "utc_offset_min": utc_offset_min()}
    count = _write(node, Path(out), header, engine.outgoing(node, node.scope, dict(their_vv), BATCH_ENTRIES), their_vv)
    # Written all the same (the operator may be settling it with the parent), but the parent will refuse it.
    revoked = (parent["last_error"] or "").startswith("revoked:")
    return {"bundle": header["id"], "entries": count, "to": parent["name"], "file": str(out), "revoked": revoked}


def import_bundle(node: Node, path: Path, ack_out: Path | None = None) -> dict:
    """Import a push bundle (parent; writes an ack bundle) or an ack bundle (child).

    A bundle refused after its signature verified is refused of a known
    peer: recorded in the log like a refused request (and a fork's two
    checkpoints kept). One that does not verify names nobody: the operator
    holding it is told, and nothing is recorded. Nor when the read that
    applies it does not give the file that verified (see :class:`SecondRead`).
    """
    header, first, peer = read_bundle(node, Path(path))
    reads = [first]  # an ack read again past a third node's fork (see _apply_ack)
    try:
        return _import_verified(node, path, ack_out, header, reads, peer)
    except NotAsVerified:
        raise
    except HemeiError as exc:
        reading = reads[-1]
        if exc.status >= 500 or reading.applied_whole:  # this node's own trouble, not a refusal of the peer
            raise
        if not reading.intact():
            raise NotAsVerified(CHANGED) from None
        evidence = getattr(exc, "evidence", None)
        if evidence is not None:
            record_fork(node, evidence, peer["node_id"])
            if evidence["origin"] == peer["node_id"]:  # the sender's own history, as sync says it
                exc.message = engine.fork_said(peer["name"], f"sent a history that differs from the "
                                               f"{evidence['held_size']} entries of its log {node.name} holds",
                                               node.name)
                exc.args = (exc.message,)
        record_refusal(node, peer["node_id"], exc.code, exc.message, "bundle import")
        if isinstance(exc, ChainGap) and header.get("kind") == "push" and peer["role"] == "child":
            reading.close()  # before the ack is written, which may be beside it (Windows locks open files)
            raise _answered_with_state(node, Path(path), ack_out, header, peer, exc) from None
        raise
    finally:
        for reading in reads:
            reading.close()


def _answered_with_state(node: Node, path: Path, ack_out: Path | None, header: dict, peer: dict,
                         gap: ChainGap) -> HemeiError:
    """A child's bundle that starts past what this node holds of it: the child was told more was held
    than is (this node was restored from a backup since). No sync answers it with the truth, so an
    acknowledgement of what this node holds is written anyway: imported at the child, its next export
    starts there."""
    ack_path = Path(ack_out) if ack_out else ack_path_for(path)
    try:
        check_target(node, ack_path, reading=path)
        _write_ack(node, ack_path, header, peer, wire.vv_of(header.get("vv", {})))
    except (OSError, HemeiError, InvalidInput) as exc:
        reason = exc.message if isinstance(exc, HemeiError) else (exc.strerror or str(exc))
        gap.message = f"{gap.message} (and no acknowledgement could be written: {reason})"
        gap.args = (gap.message,)
        return gap
    gap.message = (
        f"{gap.message}. {node.name} holds less of {peer['name']} than {peer['name']} was told (restored from "
        f"a backup?): nothing was imported. Wrote {ack_path} with what {node.name} holds: import it at "
        f"{peer['name']}, then export again")
    gap.args = (gap.message,)
    return gap


def _write_ack(node: Node, ack_path: Path, header: dict, peer: dict, their_vv: dict) -> int:
    """Write the acknowledgement of a child's bundle: this node's version vector of the child's branch, and
    the entries of that branch the child lacks. Returns the number of entries."""
    ack = {"id": new_id(), "kind": "ack", "from": node.id, "to": peer["node_id"],
           "vv": engine.branch_vv(node, peer["scope"]), "acknowledges": header.get("id"),
           "utc_offset_min": utc_offset_min()}
    return _write(node, ack_path, ack, engine.downstream_iter(node, peer["node_id"], peer["scope"], their_vv,
                                                              BATCH_ENTRIES), their_vv)


def _apply_ack(node: Node, reads: list[SecondRead], peer: dict) -> tuple[list[dict], set[str]]:
    """Apply an ack bundle but for the entries of nodes whose log is held here in another history, as a
    pull does: one fork relayed down does not refuse the rest of the branch (found in review, the pull
    skipped such origins and the bundle refused whole). A fork first found in the bundle is recorded, and
    the bundle read again without that origin; the transaction that failed applied nothing."""
    skip = engine.forked_origins(node, peer["node_id"])
    while True:
        reading = reads[-1]
        try:
            results = node.apply_batches((b for b in reading.batches() if b.origin not in skip),
                                         check=engine.pull_check(node, peer), tree=True)
            return results, skip
        except Conflict as exc:
            origin = engine.fork_of_another(exc, peer["node_id"], node)
            if origin is None or origin in skip or not reading.intact():
                raise
            record_fork(node, exc.evidence, peer["node_id"])
            skip.add(origin)
            reads.append(reading.again())


def _import_verified(node: Node, path: Path, ack_out: Path | None, header: dict, reads: list[SecondRead],
                     peer: dict) -> dict:
    kind = header.get("kind")
    their_vv = wire.vv_of(header.get("vv", {}))  # before anything is applied: a bad header refuses it all
    zone = wire.utc_offset_of(header.get("utc_offset_min"))  # None from a release before it was written
    if kind == "push":
        if peer["role"] != "child":
            raise Forbidden("push bundles come from children", code="bad_bundle")
        ack_path = check_target(node, Path(ack_out) if ack_out else ack_path_for(Path(path)), reading=Path(path))
        results = node.apply_batches(reads[0].batches(), check=engine.push_check(node, peer), confine=True,
                                     sender=peer["node_id"], admit=engine.push_admit(node, peer))
        touch(node, peer["node_id"], their_vv=their_vv)
        record_utc_offset(node, peer["node_id"], zone)
        first_time = node.conn.execute("INSERT OR IGNORE INTO _hemei_bundle_acks (bundle_id, peer, imported_ms)"
                                       " VALUES (?, ?, ?)", (str(header.get("id")), peer["node_id"], now_ms())
                                       ).rowcount == 1
        new = sum(r["new"] for r in results)
        try:
            sent = _write_ack(node, ack_path, header, peer, their_vv)
        except (OSError, HemeiError) as exc:  # the import stands: say so, and how to get the ack
            reason = exc.message if isinstance(exc, HemeiError) else (exc.strerror or str(exc))
            raise AckNotWritten(f"imported {new} new entries from {peer['name']}, but its acknowledgement could "
                                f"not be written to {ack_path} ({reason}). Import the bundle again to write it: "
                                "nothing is imported twice") from None
        return {"kind": "push", "from": peer["name"], "new": new, "time_zone_warning": time_zone_warning(zone),
                "refused": sum(r["refused"] for r in results), "already_imported": not first_time,
                "ack": str(ack_path), "ack_entries": sent}
    if kind == "ack":
        if peer["role"] != "parent":
            raise Forbidden("ack bundles come from the parent", code="bad_bundle")
        results, skipped = _apply_ack(node, reads, peer)
        # Taken even so (docs/decisions.md, "An imported ack sets what the child records"), but said.
        older = any(their_vv.get(origin, 0) < size for origin, size in peer["their_vv"].items())
        touch(node, peer["node_id"], their_vv=their_vv)
        record_utc_offset(node, peer["node_id"], zone)
        return {"kind": "ack", "from": peer["name"], "new": sum(r["new"] for r in results),
                "time_zone_warning": time_zone_warning(zone),
                "refused": sum(r["refused"] for r in results), "older": older,
                "not_taken": [engine.not_taken_said(node, origin) for origin in sorted(skipped)]}
    raise BadBundle(f"unknown bundle kind {kind!r}")
