"""Signed requests between nodes: a profile of RFC 9421 HTTP Message Signatures.

Every request a child sends its parent carries

    Content-Digest: sha-256=:<base64 SHA-256 of the body>:          (RFC 9530)
    Signature-Input: hemei=("@method" "@path" "@query" "content-digest");created=<unix s>;expires=<unix s>;nonce="<random>";keyid="<node id>";alg="ed25519"
    Signature: hemei=:<base64 Ed25519 signature over the signature base>:

with the signature base of RFC 9421 §2.5: one line per covered component,
``"<name>": <value>``, then ``"@signature-params": <the Signature-Input
value after "hemei=">``, joined by ``\\n``. ``@query`` is ``?`` plus the raw
query string (just ``?`` when there is none).

The verifier accepts only this profile (one signature labelled ``hemei``,
these four components, Ed25519), a ``created`` no more than
:data:`WINDOW_S` seconds old by *its* clock (the client signs with the
server's time, learnt from ``/api/health``, so a wrong street clock does not
lock it out), and a nonce it has not seen before.

The answer to a request whose signature verified and was fresh (refusals
included), or that names a node the parent does not know, is signed by the
parent in turn (RFC 9421 §2.4, a response signature bound to its request):

    Content-Digest: sha-256=:<base64 SHA-256 of the answer's body>:
    Signature-Input: hemei=("@status" "content-digest" "signature";req;key="hemei" "signature-input";req;key="hemei");created=<unix s>;keyid="<parent id>";alg="ed25519"
    Signature: hemei=:<base64 Ed25519 signature over the signature base>:

where ``"signature";req;key="hemei"`` is the request's own signature
(``:<base64>:``) and ``"signature-input";req;key="hemei"`` its parameters,
key id and fresh nonce included, so an answer cannot be replayed to another
request nor a refusal of an altered request pass for one of the original;
the child checks it with the key it pinned at join: what a server in the
middle says is never taken as the parent's word. (docs/protocol.md, Signed
answers.)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hemei.core.errors import InvalidInput, Unauthorized
from hemei.core.identity import load_public_key, parse_node_id

LABEL = "hemei"
COMPONENTS = ("@method", "@path", "@query", "content-digest")
WINDOW_S = 120
_PARAMS = re.compile(
    r'^hemei=\("@method" "@path" "@query" "content-digest"\)'
    r';created=(?P<created>\d{1,12});expires=(?P<expires>\d{1,12})'
    r';nonce="(?P<nonce>[A-Za-z0-9_-]{16,64})";keyid="(?P<keyid>[A-Z2-7-]{56,63})";alg="ed25519"$')


_SIGNATURE = re.compile(r"hemei=(:[A-Za-z0-9+/=]{80,100}:)")
ANSWER_COMPONENTS = '("@status" "content-digest" "signature";req;key="hemei" "signature-input";req;key="hemei")'
_ANSWER_PARAMS = re.compile(r'^hemei=\("@status" "content-digest" "signature";req;key="hemei"'
                            r' "signature-input";req;key="hemei"\)'
                            r';created=\d{1,12};keyid="(?P<keyid>[A-Z2-7-]{56,63})";alg="ed25519"$')


def content_digest(body: bytes) -> str:
    return f"sha-256=:{base64.b64encode(hashlib.sha256(body).digest()).decode()}:"


def _base(method: str, path: str, query: str, digest: str, params: str) -> bytes:
    lines = [f'"@method": {method.upper()}', f'"@path": {path}', f'"@query": ?{query}',
             f'"content-digest": {digest}', f'"@signature-params": {params}']
    return "\n".join(lines).encode()


def sign_request(key: Ed25519PrivateKey, node_id: str, method: str, path: str, query: str, body: bytes,
                 now_s: int) -> dict[str, str]:
    """Headers that sign a request; ``now_s`` is the *server's* time in seconds."""
    digest = content_digest(body)
    nonce = secrets.token_urlsafe(18)
    params = (f'("@method" "@path" "@query" "content-digest");created={now_s};expires={now_s + WINDOW_S}'
              f';nonce="{nonce}";keyid="{node_id}";alg="ed25519"')
    signature = key.sign(_base(method, path, query, digest, params))
    return {"Content-Digest": digest, "Signature-Input": f"{LABEL}={params}",
            "Signature": f"{LABEL}=:{base64.b64encode(signature).decode()}:"}


@dataclass
class SignedRequest:
    node_id: str
    nonce: str
    expires_s: int


def read_signature(headers, method: str, path: str, query: str,
                   body: bytes | None) -> tuple[SignedRequest, bytes, bytes, int]:
    """Parse and check the digest (not when ``body`` is None: not read yet); returns (request, signature
    base, signature, created). Key check is separate."""
    signature_input = headers.get("signature-input")
    signature = headers.get("signature")
    digest = headers.get("content-digest")
    if not signature_input or not signature or not digest:
        raise Unauthorized("request is not signed (Signature, Signature-Input and Content-Digest needed)",
                           code="unsigned")
    match = _PARAMS.match(signature_input.strip())
    sig = _SIGNATURE.fullmatch(signature.strip())
    if not match or not sig:
        raise Unauthorized("unsupported signature: hemei signs @method @path @query content-digest with ed25519",
                           code="bad_signature")
    if body is not None and digest != content_digest(body):
        raise Unauthorized("Content-Digest does not match the body", code="bad_signature")
    params = signature_input.strip()[len(LABEL) + 1:]
    base = _base(method, path, query, digest, params)
    try:
        request = SignedRequest(parse_node_id(match["keyid"]), match["nonce"], int(match["expires"]))
        signature_bytes = base64.b64decode(sig[1][1:-1], validate=True)
    except (ValueError, binascii.Error, InvalidInput):
        raise Unauthorized("malformed signature or key id", code="bad_signature") from None
    created = int(match["created"])
    if request.expires_s - created > WINDOW_S or request.expires_s < created:
        raise Unauthorized("signature validity window is too long", code="bad_signature")
    return request, base, signature_bytes, created


def check_signature(public_key: bytes, base: bytes, signature: bytes) -> None:
    try:
        load_public_key(public_key).verify(signature, base)
    except InvalidSignature:
        raise Unauthorized("signature does not verify with the node's pinned key", code="bad_signature") from None


def check_window(created_s: int, expires_s: int, now_s: int) -> None:
    if now_s > expires_s or created_s > now_s + 5:
        raise Unauthorized(f"signature is outside its validity window (created {created_s}, now {now_s});"
                           " replayed, or signed with a wrong clock", code="expired_signature")


#: What an answer covers of its request: its signature (``:<base64>:``) and its parameters (the
#: Signature-Input value after ``hemei=``).
Binding = tuple[str, str]


def request_binding(headers) -> Binding | None:
    """The request's signature and parameters as an answer covers them; None when they are not of this
    profile's form (such a request is refused, and its answer is not signed: there is nothing to bind to)."""
    match = _SIGNATURE.fullmatch((headers.get("signature") or "").strip())
    params = (headers.get("signature-input") or "").strip()
    if not match or not params.startswith(LABEL + "="):
        return None
    return match[1], params[len(LABEL) + 1:]


def _answer_base(status: int, digest: str, request: Binding, params: str) -> bytes:
    lines = [f'"@status": {status}', f'"content-digest": {digest}', f'"signature";req;key="hemei": {request[0]}',
             f'"signature-input";req;key="hemei": {request[1]}', f'"@signature-params": {params}']
    return "\n".join(lines).encode()


def sign_answer(key: Ed25519PrivateKey, node_id: str, status: int, body: bytes, request: Binding,
                now_s: int) -> dict[str, str]:
    """Headers that sign an answer to the request bound by ``request`` (:func:`request_binding`)."""
    digest = content_digest(body)
    params = f'{ANSWER_COMPONENTS};created={now_s};keyid="{node_id}";alg="ed25519"'
    signature = key.sign(_answer_base(status, digest, request, params))
    return {"Content-Digest": digest, "Signature-Input": f"{LABEL}={params}",
            "Signature": f"{LABEL}=:{base64.b64encode(signature).decode()}:"}


def answer_signed(public_key: bytes, node_id: str, status: int, headers, body: bytes,
                  request: Binding | None) -> bool:
    """Whether the answer carries a signature of this profile, by ``node_id``'s key ``public_key``, over
    this status and body and bound to this request. ``created`` is not judged: the child's clock may be
    the wrong one, and the binding to the request's fresh nonce already stops a replay."""
    signature_input = (headers.get("signature-input") or "").strip()
    match = _ANSWER_PARAMS.match(signature_input)
    sig = _SIGNATURE.fullmatch((headers.get("signature") or "").strip())
    digest = headers.get("content-digest")
    if request is None or not match or not sig or match["keyid"] != node_id or digest != content_digest(body):
        return False
    try:
        load_public_key(public_key).verify(
            base64.b64decode(sig[1][1:-1], validate=True),
            _answer_base(status, digest, request, signature_input[len(LABEL) + 1:]))
    except (InvalidSignature, binascii.Error, ValueError, InvalidInput):
        return False
    return True
