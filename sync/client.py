"""The child's side of sync over HTTP: join a parent, then push and pull.

``sync_once`` is one full exchange: hello (version vectors and the child's
latest checkpoint), push of everything the parent lacks of the child's
branch, then pull of everything on the child's branch that it lacks. Each
push or pull message is applied atomically on the receiving side, so a cut
at any moment loses nothing: the next run starts from the sizes the
parent reports.
"""

from __future__ import annotations

import base64
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from queue import Empty, Queue
from typing import Callable, Iterator

import httpx

from hemei.core.clock import hlc_ms, hlc_to_iso, span_text, utc_offset_min
from hemei.core.errors import ClockNotSet, ClockSkew, Conflict, HemeiError, InvalidInput
from hemei.core.gc_pause import cyclic_gc_paused
from hemei.core.identity import node_id_from_public_key
from hemei.core.node import Node

from . import engine, enroll, signing, wire
from .address import node_address
from .peers import (CLOCK_TOLERANCE_MS, clock_gap, log_counted_refusals, parent_of, record_clock, record_fork,
                    record_refusal, record_utc_offset, set_signs_answers, set_url, time_zone_warning, touch)
from .transport import LinkTransport

TIMEOUT = httpx.Timeout(60.0, connect=10.0)


class SyncRefused(HemeiError):
    """The parent answered with an error; code and message are the parent's.

    ``writer``: for ``clock_skew``, the node whose entry was stamped ahead (this node's own, or one
    it relayed), when the parent says.
    """

    writer: str | None = None


#: Refusals no retry can end: an operator must act. ``sync --watch`` stops on them (each retry would be
#: another refusal in both logs) and the message says what to do.
NEEDS_AN_OPERATOR = {
    "revoked": "This node can no longer sync with its parent; if it replaces a node, ask the parent's operator "
               "for a new invite and join with it from a new node home",
    "unknown_node": "The parent does not know this node (was the parent restored from a backup, or this node "
                    "enrolled elsewhere?): a restored parent goes on as a new node (docs/operations.md, A parent "
                    "restored from a backup); join that one with 'hemei join TOKEN --replace-parent'",
    "fork": "Stop writing on this PC and call the parent's operator (docs/operations.md, Forks)",
}


class Unreachable(HemeiError):
    code = "unreachable"
    status = 503


@dataclass
class SyncReport:
    pushed: int = 0
    pulled: int = 0
    refused_changes: int = 0
    pending_up: int = 0
    pending_down: int = 0
    messages: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"pushed": self.pushed, "pulled": self.pulled, "refused_changes": self.refused_changes,
                "pending_up": self.pending_up, "pending_down": self.pending_down, "messages": self.messages}


class WrongParent(InvalidInput):
    """What answers at the parent's address is not the parent: the operator's to check, nobody's refusal."""

    code = "wrong_parent"


class UnsignedAnswer(HemeiError):
    """An answer at the parent's kept address that is not signed with its key, when the parent signs its
    answers: not the parent's word, so not acted on nor recorded as its refusal. Something between this PC
    and the parent changed it (or the parent went back to a release before signed answers); retried like
    a link that is down."""

    code = "unsigned_answer"
    status = 502


def clock_moved_by(node: Node) -> str | None:
    """Which received entry moved this node's clock ahead of its PC's, if one did (said when the parent
    refuses this node's own entries as stamped ahead: this PC's clock may be right)."""
    ahead = hlc_ms(node.clock.last) - time.time_ns() // 1_000_000
    if ahead < CLOCK_TOLERANCE_MS:
        return None
    own = node.conn.execute("SELECT ix FROM _hemei_origins WHERE node_id = ?", (node.id,)).fetchone()[0]
    # An origin's stamps rise along its chain (a hybrid clock never goes back), so its last entry holds
    # its latest stamp: one key lookup per origin, not a scan of the whole log.
    # (An entry held redacted has no stamp, hlc 0: the last one that has.)
    row = node.conn.execute("SELECT o.node_id, (SELECT l.hlc FROM _hemei_log l WHERE l.origin = o.ix AND l.hlc > 0"
                            " ORDER BY l.seq DESC LIMIT 1) AS last FROM _hemei_origins o WHERE o.ix != ?"
                            " ORDER BY last DESC LIMIT 1", (own,)).fetchone()
    if row is None or row[1] is None or hlc_ms(row[1]) < hlc_ms(node.clock.last) - CLOCK_TOLERANCE_MS:
        return None
    scope = node.origin_scope(row[0])
    return (f"this node's clock is {clock_gap(ahead)} this PC's: it was moved there by a received entry of "
            f"{f'the node of {scope}' if scope else row[0]} stamped {hlc_to_iso(row[1])}, and this node's "
            "entries since are stamped that far ahead too. That node's PC clock is fast: have it set")


def tls_for(url: str) -> bool | ssl.SSLContext:
    """What the link to ``url`` verifies TLS with: the trusted certificates for an https parent; for an
    http one a context that trusts no certificate, so that it fails closed should TLS ever be asked of it.

    httpx otherwise loads the whole CA bundle for every client (about 35 ms, a sixth of a `hemei sync`
    with nothing to send) for a link that never speaks TLS: the link follows no redirects.
    """
    return True if url.startswith("https://") else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def _bad_address(url: str, exc: Exception) -> InvalidInput:
    return InvalidInput(f"{url!r} is not an address such as http://district.example:8340 ({exc})")


class ParentLink:
    """Signed requests to one parent over one HTTP connection."""

    def __init__(self, node: Node, url: str, transport: httpx.BaseTransport | None = None):
        self.node = node
        self.url = node_address(url)
        try:
            verify = tls_for(self.url)
            self.transport = transport or LinkTransport(self.url, verify)
            self.http = httpx.Client(base_url=self.url, timeout=TIMEOUT, verify=verify,
                                     headers={"Accept-Encoding": "identity"}, transport=self.transport)
        except httpx.InvalidURL as exc:
            raise _bad_address(url, exc) from None
        self.offset_ms = 0
        self.parent: dict | None = None  # the pinned parent whose key must sign the answers (see expect)
        self.signed = False  # an answer on this link bore the parent's signature

    def expect(self, parent: dict) -> None:
        """Check answers against ``parent``'s pinned key. Unsigned ones are taken only from a parent that
        has never signed one, at the address kept for it (a release before signed answers); once one
        answer is signed, all must be."""
        self.parent = parent

    @property
    def at_parent(self) -> bool:
        """This link's address is the parent's: the one kept for it, or one where it proved itself."""
        return self.signed or (self.parent is not None and self.url == self.parent["url"])

    def _unsigned_failure(self, reply: httpx.Response) -> Unreachable:
        """An unsigned 5xx (the parent's own state before it could check anything, its database busy, a
        restart needed, or anyone's page): shown as it says, never recorded nor acted on, and retried like
        a link that is down."""
        return Unreachable(f"{self.url} answered {reply.status_code}{_said(reply)} (unsigned: not taken as the "
                           "parent's word); try again later")

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ParentLink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _send(self, method: str, path: str, content: bytes = b"") -> httpx.Response:
        try:
            if method == "GET":
                request = self.http.build_request("GET", path)
            else:
                now_s = (time.time_ns() // 1_000_000 + self.offset_ms) // 1000
                headers = signing.sign_request(self.node.key, self.node.id, method, path, "", content, now_s)
                headers["Content-Type"] = wire.CONTENT_TYPE
                request = self.http.build_request(method, path, content=content, headers=headers)
            return self._received(self.http.send(request, stream=True))
        except httpx.TransportError as exc:
            if isinstance(self.transport, LinkTransport) and self.transport.budget.ran_out:
                raise Unreachable(f"the link to the parent at {self.url} is too slow ({self.transport.budget.said()})"
                                  ": the request was given up; try again later, and if this goes on, check the "
                                  "network between the two PCs, and that it is the parent that answers at that "
                                  "address") from None
            raise Unreachable(f"cannot reach the parent at {self.url} ({exc or type(exc).__name__}): check that its "
                              "PC is on the network and `hemei serve` runs there; if it moved, give its new "
                              "address with --url") from None
        except httpx.InvalidURL as exc:
            raise _bad_address(self.url, exc) from None

    def _received(self, reply: httpx.Response) -> httpx.Response:
        """``reply`` read whole, if no bigger than any answer of a hemei node: read unbounded, a rogue answer
        could fill the PC's memory. An answer with a Content-Encoding is not read at all: nodes never send
        one, and httpx would inflate it before anything could count it (review: `gzip, gzip` round 1 GiB of
        zeros took 2 GB past the cap; a corrupt one was an internal error)."""
        encoding = reply.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            reply.close()
            raise Unreachable(f"{self.url} answered with Content-Encoding {encoding[:40]!r}, which no hemei node "
                              "sends: it was not read; check the address, and any proxy between the two PCs")
        body = bytearray()
        try:
            for chunk in reply.iter_bytes():
                body += chunk
                if len(body) > wire.MAX_ANSWER_COMPRESSED:
                    raise Unreachable(f"{self.url} sent an answer of more than {wire.MAX_ANSWER_COMPRESSED >> 20} "
                                      "MiB, more than a hemei node ever sends: it was not read; check the address")
        finally:
            reply.close()
        return httpx.Response(reply.status_code, headers=reply.headers.raw, content=bytes(body), request=reply.request)

    def learn_time(self) -> dict:
        """The parent's clock, so a street PC with a wrong clock still signs valid requests."""
        before = time.time_ns() // 1_000_000
        reply = self._send("GET", "/api/health")
        after = time.time_ns() // 1_000_000
        # Unsigned, and asked of anyone: an error here is never the parent's refusal, whatever it claims.
        if reply.status_code >= 500:
            raise self._unsigned_failure(reply)
        try:
            if reply.status_code >= 400:
                raise ValueError(reply.status_code)
            info = reply.json()
            if not isinstance(info, dict) or not isinstance(info.get("node_id"), str):
                raise TypeError(info)
            # Whole ms, as far from this clock as a hello may say (found by a fuzzer: 1e400 and 10**26 crashed).
            if type(info.get("time_ms")) is not int or abs(info["time_ms"] - after) > wire.MAX_CLOCK_OFFSET_MS:
                raise TypeError(info.get("time_ms"))
            self.offset_ms = info["time_ms"] - (before + after) // 2
        except (ValueError, TypeError, KeyError):  # a router's page at an old address, another program
            raise WrongParent(f"no hemei node answers at {self.url}" + (
                f" (it answered {reply.status_code}{_said(reply)})" if reply.status_code >= 400 else "")
                + ": check the address") from None
        return info

    def call(self, path: str, message: dict) -> dict:
        return self.call_raw(path, wire.encode(message))

    def call_raw(self, path: str, body: bytes) -> dict:
        try:
            return self._check(self._send("POST", path, body), raw=True)
        except SyncRefused as exc:
            if exc.code != ClockSkew.code:
                raise
            said = exc.message
            # The parent blames this PC's clock by its own; when the two disagree, say so: either may be wrong.
            if self.offset_ms < -CLOCK_TOLERANCE_MS:
                said += f" (but this PC's clock is {clock_gap(-self.offset_ms)} the parent's: check which is right)"
            own_refused = exc.writer in (None, self.node.id)  # None: a parent from before `writer`
            if own_refused and (moved := clock_moved_by(self.node)) is not None:
                said += f" ({moved})"
            elif own_refused and abs(self.offset_ms) <= CLOCK_TOLERANCE_MS and (
                    ahead := hlc_ms(self.node.clock.last) - time.time_ns() // 1_000_000) > CLOCK_TOLERANCE_MS:
                # Found in review: the PC clock set right again, the operator was told to set it.
                said = (f"{said}. This PC's clock agrees with the parent's now, but this node wrote entries while "
                        f"it was ahead, stamped up to {hlc_to_iso(self.node.clock.last)} ({span_text(ahead)} from "
                        "now); every entry since is stamped after them (a log's stamps never go back), so the parent "
                        "takes them from then on. Nothing is lost; nothing is to be set")
            if said == exc.message:
                raise
            refused = SyncRefused(said, code=exc.code, status=exc.status)
            refused.writer = exc.writer
            raise refused from None

    def _judge_signature(self, reply: httpx.Response) -> None:
        """Take an answer to a signed request only if the parent signed it, or may not sign (see expect)."""
        parent = self.parent
        if parent is not None and signing.answer_signed(
                parent["public_key"], parent["node_id"], reply.status_code, reply.headers, reply.content,
                signing.request_binding(reply.request.headers)):
            if not self.signed and not parent["signs_answers"]:  # kept at once: a refusal may end this sync
                set_signs_answers(self.node, parent["node_id"])
            self.signed = True  # a parent that signs one answer signs them all
            return
        if parent is None or not (self.signed or parent["signs_answers"] or not self.at_parent):
            return  # a parent that never signed, at its kept address (or a join: its key comes in the answer)
        said = _said(reply)
        if reply.status_code >= 500:
            raise self._unsigned_failure(reply)
        if not self.at_parent:  # once it signed here, a stripped answer is something on the path
            raise WrongParent(f"the node at {self.url} claims to be this node's parent {parent['name']} but does "
                              f"not prove it holds the parent's key (it answered {reply.status_code}{said}, not "
                              "signed with that key): none of this node's entries were sent, and the address is "
                              "not kept")
        raise UnsignedAnswer(f"{self.url} answered {reply.status_code}{said}, not signed with the key of the "
                             f"parent {parent['name']}, which signs its answers: it was not taken as the parent's "
                             "word. Something between this PC and the parent changed the request or the answer, "
                             "or the parent runs a hemei release before signed answers again (upgrade it); on an "
                             "untrusted network, serve over HTTPS")

    def _check(self, reply: httpx.Response, raw: bool) -> dict:
        self._judge_signature(reply)
        return read_answer(reply, raw)


#: Control characters, and the marks that reorder or break a line on a terminal (bidi, separators).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _said(reply: httpx.Response) -> str:
    """What an unsigned error answer claims (`` revoked: …``), to show beside the warning that it is
    nobody's word (control characters out: it is shown on terminals and kept in status); empty for
    anything else."""
    try:
        error = reply.json()["error"]
        return _CONTROL.sub(" ", f" {str(error['code'])[:40]}: {str(error['message'])[:300]}")
    except (ValueError, KeyError, TypeError):
        return ""


def read_answer(reply: httpx.Response, raw: bool) -> dict:
    """An answer's message, or its refusal raised as :class:`SyncRefused` (whoever signed it)."""
    if reply.status_code >= 400:
        try:
            error = reply.json()["error"]
            message = error["message"]
            if error["code"] == ClockNotSet.code:  # its message speaks of "this PC": the parent's
                message = f"the parent cannot write anything: {message}"
            if error["code"] in NEEDS_AN_OPERATOR:
                message = f"{message}. {NEEDS_AN_OPERATOR[error['code']]}"
            refused = SyncRefused(message, code=error["code"], status=reply.status_code)
            refused.writer = error.get("writer") if isinstance(error.get("writer"), str) else None
        except (ValueError, KeyError, TypeError, AttributeError):
            raise SyncRefused(f"parent answered {reply.status_code}", code="http_error",
                              status=reply.status_code) from None
        raise refused
    if not raw:
        return reply.json()
    with cyclic_gc_paused():  # a pull's reply is thousands of entries
        return wire.decode(reply.content, wire.MAX_ANSWER_INFLATED, wire.MAX_ANSWER_COMPRESSED)


def join(node: Node, token: str, actor: str, url: str | None = None,
         transport: httpx.BaseTransport | None = None, replace_parent: bool = False) -> dict:
    """Enroll this node as the child of the parent that issued ``token``.

    ``replace_parent``: this node has a parent, which was replaced (a new PC
    after a disk died, or a restored backup that forked and continues as a
    new node): the node that issued ``token`` becomes its parent instead,
    and this node keeps its own log, so nothing it wrote is typed again.
    """
    node.clock.set_now()  # before the parent pins this node: this side's pin is a log entry too
    fields = enroll.parse_token(token)
    if fields["expires_ms"] <= time.time_ns() // 1_000_000:
        raise enroll.InvalidToken("the invitation token has expired; ask the parent for a new one")
    if fields["scope"] != node.scope:
        raise enroll.InvalidToken(f"the token is for scope {fields['scope']}, but this node's scope is "
                                  f"{node.scope}: use a token made for this node")
    existing = node.conn.execute("SELECT node_id, name FROM _hemei_peers WHERE role = 'parent'").fetchone()
    if existing and existing[0] == fields["parent"]:
        # Pinned again, the same node would still contradict the copy of its log held here (a restored
        # parent writes on: the invite is a write): a replaced parent is a new node.
        raise enroll.InvalidToken(f"this node has joined {existing[1]} already, the node that issued this token: it "
                                  "syncs with 'hemei sync'", code="already_joined")
    if existing and not replace_parent:
        raise enroll.InvalidToken(f"this node already has a parent ({existing[1]}): it syncs with 'hemei sync'. If "
                                  "that parent was replaced (a new PC, or a restored copy that forked), join the "
                                  "new one with --replace-parent", code="already_joined")
    if replace_parent and not existing:
        raise enroll.InvalidToken("this node has no parent to replace: join without --replace-parent")
    with ParentLink(node, url or fields["url"], transport) as link:
        link.learn_time()
        # A refusal is said as it comes (the parent's key is not known before its answer; nothing is
        # written here on one); an acceptance must be signed with the key it carries, if the token says so.
        answer = link._send("POST", "/api/sync/join", wire.encode({
            "token": enroll.clean_token(token), "node_id": node.id, "name": node.name, "scope": node.scope,
            "public_key": base64.b64encode(node.public_key).decode()}))
        reply = link._check(answer, raw=True)
        signed = _join_answer_signed(answer, reply, fields["parent"])
        if fields["signs_answers"] and not signed:
            raise WrongParent(f"the node at {link.url} answered the join but did not sign its answer with the key "
                              "of the node that issued the token: nothing was pinned here. Check the address; the "
                              "token may be used up at the parent, so ask its operator for a new one")
    return enroll.pin_parent(node, dict(fields, url=link.url), reply, actor,  # the address that answered
                             signs_answers=signed, replacing=existing[0] if existing else None)


def _join_answer_signed(answer: httpx.Response, reply: dict, parent_id: str) -> bool:
    """Whether the join's acceptance is signed with the key it carries, that key being the token's parent's
    (its fingerprint is the node id)."""
    try:
        public_key = base64.b64decode(reply["public_key"], validate=True)
    except (KeyError, TypeError, ValueError):
        return False
    return node_id_from_public_key(public_key) == parent_id and signing.answer_signed(
        public_key, parent_id, answer.status_code, answer.headers, answer.content,
        signing.request_binding(answer.request.headers))


Progress = Callable[[str, int, int], None]


def sync_once(node: Node, batch_size: int = wire.DEFAULT_BATCH, progress: Progress | None = None,
              transport: httpx.BaseTransport | None = None, url: str | None = None) -> SyncReport:
    """Push what the parent lacks of this node's branch, pull what this node lacks of it.

    ``url``: the parent's address, when it moved; kept for next time once the node there has proved it
    holds the parent's key (it signs its answers with it), before any entry is sent.
    """
    parent = parent_of(node)
    stored = parent["url"]
    parent["url"] = _spelled(stored)  # compared as links spell addresses: an older release kept it as typed
    report = SyncReport()
    link = ParentLink(node, url or stored, transport)  # a malformed address: said, not recorded
    link.expect(parent)
    their_vv = None  # what the parent holds, once its hello said (and as each push answer adds to it)
    try:
        with link:
            answered = link.learn_time()
            if answered["node_id"] != parent["node_id"]:  # a wrong address typed, or another node moved there
                raise WrongParent(f"the node at {link.url} is {answered.get('name')!r} ({answered['node_id']}), "
                                  f"not this node's parent {parent['name']} ({parent['node_id']}): check the address")
            hello = link.call("/api/sync/hello", {"vv": node.version_vector(), "modules": node.module_versions,
                                                  "checkpoint": engine.own_checkpoint(node),
                                                  "parent_clock_ahead_ms": link.offset_ms,
                                                  "utc_offset_min": utc_offset_min()})
            # Its answer is signed with the parent's key (or it is a parent that never signed, at its kept
            # address): only now is the clock that answered the parent's, and may move time-driven work. (The
            # time came unsigned from /api/health, but the parent took a request signed with it, so it is
            # within the signature's window of the parent's own.)
            record_clock(node, parent["node_id"], link.offset_ms)
            _tick(node, link, report)
            if link.url != parent["url"]:
                if set_url(node, parent["node_id"], link.url, was=stored):
                    report.messages.append(f"the parent's address is now {link.url}")
                else:  # another command kept a newer address meanwhile: that one stands
                    report.messages.append(f"synced at {link.url}, but the parent's address was changed meanwhile "
                                           f"to {parent_of(node)['url']}, which is kept")
            their_vv = wire.vv_of(hello.get("vv"))
            touch(node, parent["node_id"], modules=wire.modules_of(hello.get("modules")))
            log_counted_refusals(node)
            record_utc_offset(node, parent["node_id"], zone := wire.utc_offset_of(hello.get("utc_offset_min")))
            if (warning := time_zone_warning(zone)) is not None:
                report.messages.append(f"{parent['name']}: {warning}")
            if hello.get("checkpoint") is not None:
                engine.check_history(node, parent, hello["checkpoint"])
            _show_shared_history(node, link, their_vv)
            _push(node, link, their_vv, batch_size, report, progress)
            _pull(node, link, parent, batch_size, report, progress)
            # Tell the parent what this node now holds, so its status is right until next time.
            link.call("/api/sync/hello", {"vv": node.version_vector()})
    except (WrongParent, UnsignedAnswer) as exc:  # nobody's word: not recorded as a refusal
        if link.at_parent:  # shown with the peer; at an address just typed, said only
            touch(node, parent["node_id"], error=f"{exc.code}: {exc.message}", contacted=False)
        raise
    except SyncRefused as exc:
        # The parent's word: signed with its key (at a new address, or by a parent that signs), or a parent
        # that never signed at its kept address. /api/health is unsigned and never raises this.
        # (An old parent's proxy page, not JSON, is no contact with the parent.)
        record_refusal(node, parent["node_id"], exc.code, exc.message, "sync", contacted=exc.code != "http_error",
                       **_sent_so_far(node, their_vv))
        if link.signed and link.url != parent["url"]:  # it proved it is the parent, there: kept, refusal or not
            set_url(node, parent["node_id"], link.url, was=stored)
        raise
    except Unreachable as exc:
        if link.at_parent:  # a typed address nothing answers at is said only
            touch(node, parent["node_id"], error=f"{exc.code}: {exc.message}", contacted=False)
        raise
    except HemeiError as exc:  # this node refused what the parent sent: recorded like any refusal
        evidence = getattr(exc, "evidence", None)
        if evidence is not None:  # a history the parent sent contradicts the copy held here
            record_fork(node, evidence, parent["node_id"])
        if evidence is not None and evidence["origin"] == parent["node_id"]:  # the parent's own log forked
            exc.message += (f". {parent['name']} must go on as a new node (docs/operations.md, A parent restored "
                            "from a backup); once it has, join it with 'hemei join TOKEN --replace-parent': this "
                            "node keeps its log and sends it all there")
        record_refusal(node, parent["node_id"], exc.code, exc.message, "pull", pending_down=report.pending_down or None,
                       **_sent_so_far(node, their_vv))
        raise
    report.pending_up = engine.pending(engine.subtree_origins(node, node.scope), their_vv)
    touch(node, parent["node_id"], their_vv=their_vv, pending_up=report.pending_up,
          pending_down=report.pending_down)
    return report


def _sent_so_far(node: Node, their_vv: dict | None) -> dict:
    """What the parent holds by its answers so far (nothing, before its hello): a refusal after some
    messages went up leaves them counted as the parent's, not as still to send (found in review)."""
    if their_vv is None:
        return {}
    return {"their_vv": their_vv, "pending_up": engine.pending(engine.subtree_origins(node, node.scope), their_vv)}


def _spelled(url: str) -> str:
    """``url`` as :class:`ParentLink` spells it (:func:`node_address`), or as it is if that refuses it."""
    try:
        return node_address(url)
    except InvalidInput:
        return url


def _tick(node: Node, link: ParentLink, report: SyncReport) -> None:
    """Time-driven work (escalating overdue cases, say) before the push, so what it writes goes up now;
    skipped when the parent says this PC's clock is wrong, since what it writes cannot be undone."""
    if abs(link.offset_ms) > CLOCK_TOLERANCE_MS:
        report.messages.append(f"this PC's clock is {clock_gap(-link.offset_ms)} the parent's: set the date, time "
                               "and time zone of the one that is wrong. Time-driven work (escalating overdue "
                               "cases) is skipped until they agree")
        return
    report.messages.extend(f"tick: {failure}" for failure in node.tick())


def _show_shared_history(node: Node, link: ParentLink, their_vv: dict) -> None:
    """Show the parent this node's signed checkpoint at the size the parent holds, when this node is ahead.

    The first hello's checkpoint (the latest) can only be compared when the
    parent holds that much. A node restored from a backup that then wrote
    past the parent's size would otherwise push from where the histories
    already differ: its first batch would fail its signature
    (``chain_invalid``) instead of showing the parent a fork, with evidence.
    (Restored, it may have no checkpoint at that size: the one below it is
    shorter than what the parent holds, which is a fork too.)
    """
    held, size = their_vv.get(node.id, 0), node.version_vector().get(node.id, 0)
    if 0 < held < size and (checkpoint := engine.own_checkpoint(node, held)) is not None:
        link.call("/api/sync/hello", {"vv": node.version_vector(), "checkpoint": {**checkpoint, "at": held}})


def _messages(node: Node, their_vv: dict, batch_size: int) -> Iterator[bytes]:
    """Encoded push messages of about ``batch_size`` entries each (fewer when entries are large), read
    lazily: memory ~ one message."""
    grouped = wire.messages(engine.outgoing(node, node.scope, their_vv, batch_size), batch_size)
    while True:
        with cyclic_gc_paused():  # not across the yield: the pause covers building one message
            parts = next(grouped, None)
            body = None if parts is None else wire.encode({}, batches=parts[0])
        if body is None:
            return
        yield body


def _prefetched(items: Iterator, depth: int = 2) -> Iterator:
    """Produce ``items`` in a thread, ``depth`` ahead: reading and encoding the next message
    overlaps with the parent applying the current one. The consumer must not use the node's
    connection meanwhile (it only sends HTTP requests)."""
    queue: Queue = Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                queue.put(item)
            queue.put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            queue.put(exc)

    worker = threading.Thread(target=produce, daemon=True)
    worker.start()
    try:
        while (item := queue.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                queue.get_nowait()
            except Empty:
                worker.join(0.05)


def _push(node: Node, link: ParentLink, their_vv: dict, batch_size: int, report: SyncReport,
          progress: Progress | None) -> None:
    total = engine.pending(engine.subtree_origins(node, node.scope), their_vv)
    for body in _prefetched(_messages(node, dict(their_vv), batch_size)):
        reply = link.call_raw("/api/sync/push", body)
        for result in reply.get("results", []):
            report.pushed += result.get("new", 0)
            report.refused_changes += result.get("refused", 0)
        their_vv.update(wire.vv_of(reply.get("vv", {})))
        if progress:
            progress("push", report.pushed, total)


def _pull(node: Node, link: ParentLink, parent: dict, batch_size: int, report: SyncReport,
          progress: Progress | None) -> None:
    check = engine.pull_check(node, parent)
    # Another node's log held here in one history and at the parent in another (a district restored from
    # a backup whose second branch reached the city, seen from its street after moving to the district's
    # new node): kept as evidence and asked for no more, so one fork does not stop the whole branch's sync.
    # The parent's own fork, and this node's, stop it (check_history; a parent never sends this node's).
    skip = engine.forked_origins(node, parent["node_id"])
    while True:
        reply = link.call("/api/sync/pull", {"vv": node.version_vector(), "batch_size": batch_size,
                                             "max_entries": batch_size * 5, **({"skip": sorted(skip)} if skip else {})})
        with cyclic_gc_paused():
            batches = wire.batches_of(reply)
        if batches:
            try:
                results = node.apply_batches(batches, check=check, tree=True)
            except Conflict as exc:
                origin = engine.fork_of_another(exc, parent["node_id"], node)
                if origin is None or origin in skip:  # (a parent that ignores skip)
                    raise
                record_fork(node, exc.evidence, parent["node_id"])
                skip.add(origin)
                continue
            except ClockSkew:
                if link.offset_ms <= CLOCK_TOLERANCE_MS:
                    raise
                # The parent took these in by its own clock: the slow clock is most likely this one.
                raise ClockSkew(f"the parent's entries look stamped in the future because this PC's clock is "
                                f"{clock_gap(-link.offset_ms)} the parent's: if the parent's is right, set this "
                                "PC's date, time and time zone, then sync again (nothing is lost)") from None
            for result in results:
                report.pulled += result["new"]
                report.refused_changes += result["refused"]
        report.pending_down = int(reply.get("remaining", 0))
        if progress:
            progress("pull", report.pulled, report.pulled + report.pending_down)
        if not reply.get("more") or not batches:
            break
    report.messages.extend(engine.not_taken_said(node, origin) for origin in sorted(skip))


def sync_watch(node: Node, *, interval_s: float, batch_size: int, on_result: Callable[[object], None],
               max_backoff_s: float = 300.0, sleep=time.sleep, stop=lambda: False, url: str | None = None,
               transport: httpx.BaseTransport | None = None) -> None:
    """Sync again and again; after a failure wait 2, 4, 8 … seconds (at most ``max_backoff_s``).

    A wrong clock, here or at the parent, is waited out like a link that is
    down: it is set by hand or by the time service some time later, and a
    watch left running unattended should go on by itself then.
    """
    failures = 0
    kept = parent_of(node)["url"]
    while not stop():
        if url is not None and parent_of(node)["url"] != kept:
            # Another command (a later `sync --url`) kept an address while this one was retrying: the
            # operator's latest word stands, and this watch follows it.
            url = None
        try:
            on_result(sync_once(node, batch_size, url=url, transport=transport))
            failures, url = 0, None  # kept as the parent's address from here on
            sleep(interval_s)
        except (Unreachable, UnsignedAnswer, WrongParent, SyncRefused, ClockSkew, ClockNotSet) as exc:
            on_result(exc)
            # Something else at the kept address (another PC given its address for a while, a router's
            # page) may go again; an address the operator just typed is said at once.
            if exc.code in NEEDS_AN_OPERATOR or (isinstance(exc, WrongParent) and url is not None):
                raise
            failures += 1
            sleep(min(max_backoff_s, 2 ** failures))

