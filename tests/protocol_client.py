"""A second, independent client of the hemei sync protocol, written from docs/protocol.md alone.

It imports nothing from hemei, so when it interoperates with a real
``hemei serve`` the document, not shared code, is what made it agree: a
server that drifts from the document breaks tests/test_protocol_conformance.py.
It does what a street needs to talk to its parent (join, hello, push, pull);
it does not project rows (merge rules) nor read bundles: the test judges
those on the server. Comments name the sections of docs/protocol.md.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import zlib
from dataclasses import dataclass

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

CONTENT_TYPE = "application/vnd.hemei.batches+json"
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
SKEW_MS = 15 * 60 * 1000


class ProtocolError(Exception):
    """What the server answered or sent breaks the document."""


class Refused(Exception):
    """A refusal in the documented form, ``{"error": {"code", "message"}}`` with a 4xx status."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


# --- "Node ids" ----------------------------------------------------------------------------------------------

def luhn32(chunk: str) -> str:
    # The factor starts at 1 on the chunk's rightmost character, as the section says; classic Luhn
    # starts at 2 there, and a client that assumed it would compute ids no hemei node accepts.
    total = 0
    for i, ch in enumerate(reversed(chunk)):
        product = ALPHABET.index(ch) * (1 if i % 2 == 0 else 2)
        total += product // 32 + product % 32
    return ALPHABET[(32 - total % 32) % 32]


def node_id(public_key: bytes) -> str:
    digits = base64.b32encode(hashlib.sha256(public_key).digest()).decode().rstrip("=")
    checked = "".join(digits[i:i + 13] + luhn32(digits[i:i + 13]) for i in range(0, 52, 13))
    return "-".join(checked[i:i + 7] for i in range(0, 56, 7))


def related(a: str, b: str) -> bool:
    """On one root-to-leaf path of the org tree: what "on the child's branch" means for a scope."""
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()  # "HTTP sync": padded standard base64, unlike the token's


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def verify(public_key: bytes, signature: bytes, message: bytes, what: str) -> None:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except InvalidSignature:
        raise ProtocolError(f"{what}: the signature does not verify") from None


# --- "Entries", "Entry hash", "Redacted entries", "Checkpoints" ----------------------------------------------

@dataclass(frozen=True)
class Entry:
    seq: int
    hlc: int = 0
    actor: str = ""
    kind: str = "redacted"  # how a withheld entry is stored: this kind, empty fields
    scope: str = ""
    payload: str = ""  # the exact text the origin hashed: never re-serialised, so no canonical JSON is needed
    salt: bytes = b""
    withheld_leaf: bytes | None = None  # all a withheld entry keeps, and all its chain needs to link it

    @property
    def redacted(self) -> bool:
        return self.withheld_leaf is not None

    def leaf(self, origin: str) -> bytes:
        if self.redacted:
            return self.withheld_leaf
        head = f"{origin}\n{self.seq}\n{self.hlc}\n{self.actor}\n{self.kind}\n{self.scope}\n"
        return hashlib.sha256(self.salt + head.encode() + self.payload.encode()).digest()

    def wire(self) -> list:
        if self.redacted:
            return [self.seq, b64(self.withheld_leaf)]
        return [self.seq, self.hlc, self.actor, self.kind, self.scope, self.payload, b64(self.salt)]

    @classmethod
    def from_wire(cls, item: list) -> Entry:
        if len(item) == 2:
            return cls(seq=item[0], withheld_leaf=unb64(item[1]))
        seq, hlc, actor, kind, scope, payload, salt = item
        if not isinstance(payload, str):  # "HTTP sync": an embedded object would have no defined bytes to hash
            raise ProtocolError(f"entry {seq}: the payload is not a JSON string")
        return cls(seq, hlc, actor, kind, scope, payload, unb64(salt))


def link(prev: bytes, leaf: bytes) -> bytes:
    return hashlib.sha256(prev + leaf).digest()


def checkpoint_message(origin: str, size: int, head: bytes) -> bytes:
    # Origin and size are signed with the head, so a signature holds for one prefix of one chain only.
    return b"hemei-checkpoint-v1\n" + origin.encode("ascii") + b"\n" + str(size).encode("ascii") + b"\n" + head


class Chain:
    """One origin's log as held here: entries, their hashes, and the checkpoint signatures seen."""

    def __init__(self, origin: str, public_key: bytes):
        self.origin, self.public_key = origin, public_key
        self.entries: list[Entry] = []
        self.hashes: list[bytes] = []
        self.signatures: dict[int, bytes] = {}

    @property
    def size(self) -> int:
        return len(self.entries)

    def head(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        return self.hashes[size - 1] if size else bytes(32)

    def append(self, entry: Entry) -> None:
        self.hashes.append(link(self.head(), entry.leaf(self.origin)))
        self.entries.append(entry)

    def copy(self, size: int | None = None) -> Chain:
        """The first ``size`` entries: a draft to write another history on, leaving this one as it was."""
        other = Chain(self.origin, self.public_key)
        other.entries, other.hashes = self.entries[:size], self.hashes[:size]
        other.signatures = {n: s for n, s in self.signatures.items() if n <= other.size}
        return other


# --- the client ----------------------------------------------------------------------------------------------

class ProtocolClient:
    def __init__(self):
        self.key = Ed25519PrivateKey.generate()
        self.public_key = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.id = node_id(self.public_key)
        self.own = Chain(self.id, self.public_key)
        self.chains: dict[str, Chain] = {self.id: self.own}
        self.scopes: dict[str, str] = {}  # declared scope of each origin held
        self.http = httpx.Client(timeout=30)
        self.url = self.name = self.scope = self.parent_id = None
        self.offset_ms = self.last_hlc = 0

    def tick(self) -> int:
        # "Entries": unix_ms << 16 | counter, rising with every entry (a parent refuses stamps that do not).
        self.last_hlc = max(time.time_ns() // 1_000_000 << 16, self.last_hlc + 1)
        return self.last_hlc

    def write(self, kind: str, scope: str, payload: dict, actor: str = "王丽", chain: Chain | None = None,
              hlc: int | None = None) -> Entry:
        """Append to the own log, or to ``chain`` (a draft); ``hlc`` stamps it without moving the clock."""
        chain = chain or self.own
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        entry = Entry(chain.size + 1, self.tick() if hlc is None else hlc, actor, kind, scope, text,
                      secrets.token_bytes(16))
        chain.append(entry)
        return entry

    def commit(self, chain: Chain | None = None) -> None:
        # "Checkpoints": one at the end of every write transaction, the only places a batch may end; and
        # every 1,000 entries and 1 MiB of payload within one, which this client leaves to larger writers.
        chain = chain or self.own
        last = max(chain.signatures, default=0)
        written = chain.entries[last:]
        if len(written) > 1000 or sum(len(e.payload.encode()) for e in written) > 1024 * 1024:
            raise ProtocolError("this client signs at commits only: keep a transaction within 1,000 entries "
                                "and 1 MiB of payload")
        chain.signatures[chain.size] = self.key.sign(checkpoint_message(self.id, chain.size, chain.head()))

    def batch(self, chain: Chain, first: int) -> dict:
        # "Batches": up to the chain's last checkpoint, whose signature covers every entry in it.
        return {"origin": chain.origin, "public_key": b64(chain.public_key),
                "signature": b64(chain.signatures[chain.size]),
                "entries": [e.wire() for e in chain.entries[first - 1:]]}

    # --- "Signed requests", "HTTP sync" ----------------------------------------------------------------------

    def learn_time(self) -> None:
        # Sign with the parent's time, so that a PC whose clock is wrong can still talk to it.
        health = self.http.get(self.url + "/api/health")
        health.raise_for_status()
        self.offset_ms = health.json()["time_ms"] - time.time_ns() // 1_000_000

    def server_now_s(self) -> int:
        return (time.time_ns() // 1_000_000 + self.offset_ms) // 1000

    def signed_headers(self, path: str, body: bytes, *, created: int | None = None, expires: int | None = None,
                       query: str = "") -> dict:
        """The RFC 9421 profile; ``created`` and ``expires`` can be given to build refused requests."""
        digest = f"sha-256=:{b64(hashlib.sha256(body).digest())}:"
        created = self.server_now_s() if created is None else created
        expires = created + 60 if expires is None else expires
        params = (f'("@method" "@path" "@query" "content-digest");created={created};expires={expires}'
                  f';nonce="{secrets.token_urlsafe(24)}";keyid="{self.id}";alg="ed25519"')
        base = "\n".join(['"@method": POST', f'"@path": {path}', f'"@query": ?{query}',
                          f'"content-digest": {digest}', f'"@signature-params": {params}'])
        return {"Content-Type": CONTENT_TYPE, "Content-Digest": digest, "Signature-Input": f"hemei={params}",
                "Signature": f"hemei=:{b64(self.key.sign(base.encode()))}:"}

    @staticmethod
    def encode(message: dict) -> bytes:
        return zlib.compress(json.dumps(message, ensure_ascii=False).encode())

    def post(self, path: str, body: bytes, headers: dict) -> httpx.Response:
        return self.http.post(self.url + path, content=body, headers=headers)

    def check_answer_signed(self, response: httpx.Response, public_key: bytes, signer: str) -> None:
        """"Signed answers": the parent's signature over the status, the body's digest and the request's own
        signature, which binds the answer to this request."""
        params = response.headers.get("signature-input", "")
        expected = '("@status" "content-digest" "signature";req;key="hemei" "signature-input";req;key="hemei");created='
        if not params.startswith("hemei=" + expected) or not params.endswith(f';keyid="{signer}";alg="ed25519"'):
            raise ProtocolError(f"the answer ({response.status_code}) is not signed in the profile: {params!r}")
        digest = f"sha-256=:{b64(hashlib.sha256(response.content).digest())}:"
        if response.headers.get("content-digest") != digest:
            raise ProtocolError("the answer's Content-Digest is not that of its body")
        base = "\n".join([f'"@status": {response.status_code}', f'"content-digest": {digest}',
                          f'"signature";req;key="hemei": {response.request.headers["signature"][len("hemei="):]}',
                          f'"signature-input";req;key="hemei": '
                          f'{response.request.headers["signature-input"][len("hemei="):]}',
                          f'"@signature-params": {params[len("hemei="):]}'])
        verify(public_key, unb64(response.headers.get("signature", "")[len("hemei=:"):-1]), base.encode(),
               "the parent's answer")

    def answer(self, response: httpx.Response, *, signed: bool = True) -> dict:
        """Read an answer, telling a refusal (plain JSON) from a success (zlib JSON) as the document does;
        once the parent is pinned, only one it signed. ``signed=False``: the request was built to fail its
        signature checks (or resent), and "Signed answers" says such a refusal goes unsigned."""
        if self.parent_id is not None and "signature" in response.request.headers:
            if signed:
                self.check_answer_signed(response, self.chains[self.parent_id].public_key, self.parent_id)
            elif "signature" in response.headers:
                raise ProtocolError(f"the refusal ({response.status_code}) of a request whose signature did not "
                                    "verify, or that was resent, is signed: whoever altered it could show it")
        kind = response.headers.get("content-type", "").split(";")[0]
        if response.status_code != 200:
            if kind != "application/json":
                raise ProtocolError(f"{response.status_code} answered as {kind!r}: {response.text[:200]}")
            error = response.json()["error"]
            raise Refused(response.status_code, error["code"], error["message"])
        if kind != CONTENT_TYPE:
            raise ProtocolError(f"a success answered as {kind!r}")
        return json.loads(zlib.decompress(response.content))

    def call(self, path: str, message: dict, *, signed: bool = True, **signing) -> dict:
        body = self.encode(message)
        return self.answer(self.post(path, body, self.signed_headers(path, body, **signing)), signed=signed)

    # --- "Enrollment" ----------------------------------------------------------------------------------------

    @staticmethod
    def read_token(token: str) -> dict:
        if not token.startswith("hemei1."):
            raise ProtocolError("not a hemei1 token")
        text = token[len("hemei1."):]
        return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))

    def join(self, token: str) -> dict:
        fields = self.read_token(token)
        if fields["e"] <= time.time_ns() // 1_000_000:
            raise ProtocolError("the token has expired")
        self.url, self.name, self.scope = fields["u"], fields["n"], fields["s"]
        self.learn_time()
        body = self.encode({"token": token, "node_id": self.id, "public_key": b64(self.public_key),
                            "name": self.name, "scope": self.scope})
        response = self.post("/api/sync/join", body, self.signed_headers("/api/sync/join", body))
        answer = self.answer(response)
        # Pin only the node the token named, proven by its key: whoever answers at the URL may not be it.
        parent_key = unb64(answer["public_key"])
        if answer["node_id"] != fields["p"] or node_id(parent_key) != fields["p"]:
            raise ProtocolError("the parent's key does not give the node id the token names")
        if fields.get("a") == 1:  # a parent that signs its answers: this one too, with the key it carries
            self.check_answer_signed(response, parent_key, fields["p"])
        self.parent_id = answer["node_id"]
        self.chains[self.parent_id] = Chain(self.parent_id, parent_key)
        self.scopes[self.parent_id] = answer["scope"]
        return answer

    # --- "HTTP sync" 1: hello --------------------------------------------------------------------------------

    def vv(self) -> dict:
        return {origin: chain.size for origin, chain in self.chains.items() if chain.size}

    def own_checkpoint(self, upto: int | None = None) -> dict | None:
        """The latest checkpoint signed at the end of a write, at most ``upto`` long: never one made to order."""
        sizes = [n for n in self.own.signatures if upto is None or n <= upto]
        if not sizes:
            return None
        size = max(sizes)
        return {"size": size, "head": self.own.head(size).hex(), "signature": self.own.signatures[size].hex()}

    def hello(self, checkpoint: dict | None = None) -> dict:
        # "modules" is optional, and this client enables none: it projects no tables.
        checkpoint = checkpoint or self.own_checkpoint()
        answer = self.call("/api/sync/hello", {"vv": self.vv(), **({"checkpoint": checkpoint} if checkpoint else {})})
        # The parent's checkpoint is judged as it judges ours, so a parent restored from a backup is a fork here.
        shown, held = answer["checkpoint"], self.chains[self.parent_id]
        size, head = shown["size"], bytes.fromhex(shown["head"])
        verify(held.public_key, bytes.fromhex(shown["signature"]), checkpoint_message(self.parent_id, size, head),
               "the parent's checkpoint")
        if size < (held.size if shown.get("at") is None else min(shown["at"], held.size)) or (
                size <= held.size and held.head(size) != head):
            raise ProtocolError(f"parent fork: it shows {size} entries of its log, {held.size} are held here")
        return answer

    # --- "HTTP sync" 2: push ---------------------------------------------------------------------------------

    def push(self) -> dict:
        held = self.hello()["vv"].get(self.id, 0)
        if 0 < held < self.own.size:  # the first checkpoint was longer than what the parent can compare
            self.hello({**self.own_checkpoint(upto=held), "at": held})
        # From the parent's size, resending the entry it holds last: another history shows as a fork at once.
        # One batch: this client's chains stay far below the 4 MiB at which a sender starts a new message.
        answer = self.call("/api/sync/push", {"batches": [self.batch(self.own, max(held, 1))]})
        self.hello()  # the closing hello: the parent learns what this node holds now
        return answer

    # --- "HTTP sync" 3: pull, and "Receiving a batch" --------------------------------------------------------

    def pull(self, max_entries: int = 20_000, batch_size: int = 2_000) -> list[dict]:
        """Pull while ``more``, then say so in a closing hello; returns the answers as received."""
        answers = [{"more": True}]
        while answers[-1]["more"]:
            answers.append(self.call("/api/sync/pull", {"vv": self.vv(), "max_entries": max_entries,
                                                        "batch_size": batch_size}))
            for batch in answers[-1]["batches"]:
                self.receive(batch)
        self.hello()
        return answers[1:]

    def receive(self, batch: dict) -> int:
        """Verify a batch whole, then keep it; raises ProtocolError on the first thing that does not hold."""
        origin, public_key = batch["origin"], unb64(batch["public_key"])
        if node_id(public_key) != origin:  # step 1
            raise ProtocolError(f"{origin}: the public key does not hash to the origin")
        chain = self.chains.get(origin) or Chain(origin, public_key)
        if chain.public_key != public_key:
            raise ProtocolError(f"{origin}: not the key held for it")
        entries = [Entry.from_wire(item) for item in batch["entries"]]
        first = entries[0].seq
        if first > chain.size + 1:  # step 2
            raise ProtocolError(f"{origin}: gap, the batch starts at {first} but {chain.size} are held")
        prev, hashes = chain.head(first - 1), []
        for offset, entry in enumerate(entries):  # step 3, redacted entries linked by their leaf
            if entry.seq != first + offset:
                raise ProtocolError(f"{origin}: seqs are not contiguous at {entry.seq}")
            prev = link(prev, entry.leaf(origin))
            hashes.append(prev)
        signature, last = unb64(batch["signature"]), entries[-1].seq
        verify(public_key, signature, checkpoint_message(origin, last, prev), f"the batch of {origin}")  # step 4
        new = [(e, h) for e, h in zip(entries, hashes) if e.seq > chain.size]
        if any(chain.hashes[e.seq - 1] != h for e, h in zip(entries, hashes) if e.seq <= chain.size):  # step 5
            raise ProtocolError(f"{origin}: fork, the batch contradicts the entries held")
        if any(not e.redacted and e.hlc > (time.time_ns() // 1_000_000 + SKEW_MS) << 16 for e, _ in new):  # step 6
            raise ProtocolError(f"{origin}: an entry is stamped more than 15 minutes ahead")
        # "HTTP sync" 3: only this node's branch, of origins and of full entries, may come down to it.
        claimed = json.loads(entries[0].payload).get("scope", "") if entries[0].kind == "node.init" else ""
        declared = self.scopes.get(origin) or (claimed if first == 1 else "")
        if not related(declared, self.scope):
            raise ProtocolError(f"{origin} is not an origin of this node's branch")
        off = next((e for e, _ in new if not e.redacted and not related(e.scope, self.scope)), None)
        if off is not None:
            raise ProtocolError(f"{origin}#{off.seq}: {off.scope} is off this node's branch")
        self.chains[origin], self.scopes[origin] = chain, declared
        for entry, digest in new:
            chain.entries.append(entry)
            chain.hashes.append(digest)
        chain.signatures[last] = signature
        return len(new)
