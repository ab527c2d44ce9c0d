"""The parent signs every answer (docs/protocol.md, Signed answers): what a server in the middle says is
not taken as the parent's word, at the address the street keeps for it as at any other.

The street talks to a real `hemei serve`; the man in the middle is an httpx transport that forwards every
request to it over loopback and changes the answers a test names.
"""

from __future__ import annotations

import json
import os
import re
import time

import httpx
import pytest

from hemei.core.identity import node_id_from_public_key
from hemei.sync import client, peers, signing, wire
from tree import Tree, note_titles, write_notes

SIGNATURE_HEADERS = ("signature", "signature-input", "content-digest")


class Middle(httpx.BaseTransport):
    """Forwards to the real parent; ``change(request, response)`` may answer something else instead,
    ``block(request)`` may answer before forwarding anything, and ``alter(request)`` may forward another
    request (or a list of them, the answer to the last one going back)."""

    def __init__(self, change=lambda request, response: response, block=lambda request: None,
                 alter=lambda request: request):
        self.inner = httpx.HTTPTransport()
        self.change, self.block, self.alter = change, block, alter
        self.answers: list[httpx.Response] = []
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        blocked = self.block(request)
        if blocked is not None:
            return blocked
        request.read()
        sent = self.alter(request)
        for one in sent if isinstance(sent, list) else [sent]:
            response = self.inner.handle_request(one)
            response.read()
        self.answers.append(response)
        self.paths.append(request.url.path)
        return self.change(request, response)

    def close(self) -> None:
        self.inner.close()


def answer(status: int, headers, content: bytes) -> httpx.Response:
    kept = {k: v for k, v in headers.items() if k.lower() not in ("content-length", "transfer-encoding")}
    return httpx.Response(status, headers=kept, content=content)


def unsigned(response: httpx.Response) -> httpx.Response:
    return answer(response.status_code, {k: v for k, v in response.headers.items()
                                         if k.lower() not in SIGNATURE_HEADERS}, response.content)


def forged_refusal(code: str) -> httpx.Response:
    return httpx.Response(403, json={"error": {"code": code, "message": f"FORGED {code}"}})


def resent(request: httpx.Request, headers: dict | None = None, content: bytes | None = None) -> httpx.Request:
    kept = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
    return httpx.Request(request.method, request.url, headers={**kept, **(headers or {})},
                         content=request.content if content is None else content)


def refusals_of(node) -> list[str]:
    return [json.loads(p)["code"] for (p,) in node.conn.execute(
        "SELECT payload FROM _hemei_log WHERE kind = 'sync.refused'")]


def test_a_joined_street_expects_signed_answers_and_the_district_signs_refusals_too(pair):
    with pair.open("street") as s:
        parent = peers.parent_of(s)
        assert parent["signs_answers"] == 1  # the join's acceptance was signed with the key the token names
        with client.ParentLink(s, parent["url"]) as link:
            body = wire.encode({"vv": "not a version vector"})
            headers = httpx.Headers(signing.sign_request(s.key, s.id, "POST", "/api/sync/hello", "", body,
                                                         int(time.time())))
            refused = link.http.post("/api/sync/hello", content=body, headers=headers)
    assert refused.status_code == 400
    assert signing.answer_signed(parent["public_key"], parent["node_id"], 400, refused.headers, refused.content,
                                 signing.request_binding(headers))
    # Bound to its request: the same answer does not verify as the answer to another one.
    other = httpx.Headers(signing.sign_request(s.key, s.id, "POST", "/api/sync/hello", "", body, int(time.time())))
    assert not signing.answer_signed(parent["public_key"], parent["node_id"], 400, refused.headers,
                                     refused.content, signing.request_binding(other))


def test_a_forged_refusal_at_the_kept_address_is_not_taken_and_a_watch_goes_on(pair):
    """Before: a refusal at the parent's kept address was taken on its word, so anything on the path could
    answer a push with `revoked`: the street signed it into its log as the district's refusal, and
    `sync --watch` stopped, telling the operator to join again from a new home."""
    with pair.open("street") as s:
        write_notes(s, [("中间人拦下的", "sx/yc/fs")])
        middle = Middle(block=lambda request: forged_refusal("revoked")
                        if request.url.path == "/api/sync/push" else None)
        with pytest.raises(client.UnsignedAnswer, match="not signed with the key of the parent district"):
            client.sync_once(s, transport=middle)
        assert "revoked" not in refusals_of(s)
        assert peers.parent_of(s)["last_error"].startswith("unsigned_answer: ")

        results: list = []
        middle = Middle(block=lambda request: forged_refusal("revoked")
                        if request.url.path == "/api/sync/push" and not results else None)
        client.sync_watch(s, interval_s=0, batch_size=100, on_result=results.append, sleep=lambda s: None,
                          stop=lambda: len(results) >= 2, transport=middle)
        assert isinstance(results[0], client.UnsignedAnswer) and results[1].pushed > 0  # retried, not stopped
        assert "revoked" not in refusals_of(s)
    with pair.open("district") as d:
        assert "中间人拦下的" in note_titles(d)  # pushed by the watch's retry


def test_a_signed_answer_replayed_to_another_request_or_altered_is_not_taken(pair):
    with pair.open("street") as s:
        recorder = Middle()
        client.sync_once(s, transport=recorder)
        genuine = recorder.answers[1]  # the first hello's: GET /api/health, then POST /api/sync/hello
        assert genuine.status_code == 200 and "signature" in genuine.headers

        replayed = Middle(lambda request, response: answer(200, genuine.headers, genuine.content)
                          if request.url.path == "/api/sync/hello" else response)
        with pytest.raises(client.UnsignedAnswer):
            client.sync_once(s, transport=replayed)

        def altered(request, response):
            if request.url.path != "/api/sync/hello":
                return response
            message = wire.decode(response.content)
            message["vv"] = {}  # as if the district held nothing: the street would push it all again
            return answer(200, response.headers, wire.encode(message))

        with pytest.raises(client.UnsignedAnswer):
            client.sync_once(s, transport=Middle(altered))

        def status_changed(request, response):  # a genuine signed body under another status
            return answer(409, response.headers, response.content) if request.url.path == "/api/sync/hello" \
                else response

        with pytest.raises(client.UnsignedAnswer):
            client.sync_once(s, transport=Middle(status_changed))
        assert refusals_of(s) == []
        assert client.sync_once(s).pushed == 0  # the real district, as before


def test_a_parent_that_never_signed_is_taken_at_its_address_until_it_signs_once(pair):
    """A district still on a release before signed answers (0.1.0) answers unsigned: its street goes on
    syncing with it at the kept address. Once an answer comes signed, an unsigned one is refused: stripping
    the signatures does not take a street back to trusting unsigned answers."""
    with pair.open("street") as s:
        s.conn.execute("UPDATE _hemei_peers SET signs_answers = 0")  # as a street joined to a 0.1.0 district
        write_notes(s, [("旧版区里收到的", "sx/yc/fs")])
        strip = Middle(lambda request, response: unsigned(response))
        assert client.sync_once(s, transport=strip).pushed > 0
        assert peers.parent_of(s)["signs_answers"] == 0
        client.sync_once(s)  # the district upgraded: it signs
        assert peers.parent_of(s)["signs_answers"] == 1
        with pytest.raises(client.UnsignedAnswer):
            client.sync_once(s, transport=Middle(lambda request, response: unsigned(response)))
        moved = Middle(lambda request, response: unsigned(response))
        s.conn.execute("UPDATE _hemei_peers SET signs_answers = 0")
        with pytest.raises(client.WrongParent, match="does not prove it holds the parent's key"):
            # At an address not kept, unsigned answers are nobody's, whatever the parent did before.
            client.sync_once(s, transport=moved, url=peers.parent_of(s)["url"].replace("127.0.0.1", "localhost"))
        assert "/api/sync/push" not in moved.paths
    with pair.open("district") as d:
        assert "旧版区里收到的" in note_titles(d)


def test_a_join_accepted_without_the_tokens_parents_signature_pins_nothing(tmp_path):
    t = Tree(tmp_path).build({"district": "sx/yc", "street": "sx/yc/fs"}, serve=["district"])
    try:
        def token() -> str:
            return t.ok("district", "invite", "--scope", "sx/yc/fs", "--name", "street", "--url",
                        t.servers["district"].url).strip()

        with t.open("street") as s:
            with pytest.raises(client.WrongParent, match="did not sign its answer with the key"):
                client.join(s, token(), "tester", transport=Middle(lambda request, response: unsigned(response)))
            assert s.conn.execute("SELECT count(*) FROM _hemei_peers").fetchone() == (0,)
            assert s.conn.execute("SELECT count(*) FROM _hemei_log WHERE kind = 'peer.join'").fetchone() == (0,)
            # The district pinned it already (two machines cannot commit as one): a new token lets it in.
            client.join(s, token(), "tester")
            assert peers.parent_of(s)["signs_answers"] == 1
    finally:
        t.stop()


def _keyid_swapped(request):
    if request.method != "POST":
        return request
    stranger = node_id_from_public_key(os.urandom(32))  # a node id of the right form, enrolled nowhere
    return resent(request, {"signature-input": re.sub(r'keyid="[^"]+"', f'keyid="{stranger}"',
                                                      request.headers["signature-input"])})


def _health_shifted(request, response):
    if request.method != "GET":
        return response
    info = response.json()
    info["time_ms"] += 3_600_000  # the street now signs an hour ahead: the district refuses the window
    return answer(200, response.headers, json.dumps(info).encode())


@pytest.mark.parametrize("tamper", [
    pytest.param({"alter": _keyid_swapped}, id="key id swapped: unknown_node"),
    pytest.param({"alter": lambda r: resent(r, content=r.content + b"x") if r.method == "POST" else r},
                 id="a byte added: bad_signature"),
    pytest.param({"alter": lambda r: [r, r] if r.method == "POST" else r}, id="sent twice: replay"),
    pytest.param({"change": _health_shifted}, id="health time shifted: expired_signature"),
])
def test_the_districts_refusal_of_a_request_altered_on_the_way_is_not_taken(pair, tamper):
    """Found in review: the district signed its refusal of any request carrying a signature, verified or
    not, so whoever altered or resent a street's request got a signed `unknown_node` (which stops a watch
    and sends the operator for a new invite), `bad_signature`, `replay` or `expired_signature` to show the
    street as the district's word. Only a request whose signature verified and was fresh gets a signed
    answer now."""
    with pair.open("street") as s:
        write_notes(s, [("改过的请求", "sx/yc/fs")])
        middle = Middle(**tamper)
        results: list = []
        client.sync_watch(s, interval_s=0, batch_size=100, on_result=results.append, sleep=lambda s: None,
                          stop=lambda: len(results) >= 1, transport=middle)
        [refused] = results
        assert isinstance(refused, client.UnsignedAnswer), refused
        # What it claimed is shown beside the warning.
        assert re.search(r"answered 401 (unknown_node|bad_signature|replay|expired_signature): ", refused.message)
        assert refusals_of(s) == [] and peers.parent_of(s)["signs_answers"] == 1
        assert client.sync_once(s).pushed > 0  # the same street, untouched requests: the district takes them


def test_an_unsigned_5xx_is_said_and_retried_at_any_address_and_a_signed_refusal_is_the_parents(pair):
    """Found in review: a real district's unsigned `503` (busy, or a restart needed: said before the request
    is checked) at a new address was called an impostor, which stops a watch; and its signed refusal there
    was said to come from an address that had not proved it is the parent."""
    busy = httpx.Response(503, json={"error": {"code": "restart_needed", "message": "restart hemei serve"}})
    with pair.open("street") as s:
        kept = peers.parent_of(s)["url"]
        for url in (None, kept.replace("127.0.0.1", "localhost")):
            with pytest.raises(client.Unreachable, match="answered 503 restart_needed: restart hemei serve"):
                client.sync_once(s, url=url, transport=Middle(
                    block=lambda request: busy if request.method == "POST" else None))
        results: list = []
        client.sync_watch(s, interval_s=0, batch_size=100, on_result=results.append, sleep=lambda s: None,
                          stop=lambda: len(results) >= 2, url=kept.replace("127.0.0.1", "localhost"),
                          transport=Middle(block=lambda request: busy if request.method == "POST" and not results
                                           else None))
        assert isinstance(results[0], client.Unreachable) and isinstance(results[1], client.SyncReport)
        assert peers.parent_of(s)["url"] == kept.replace("127.0.0.1", "localhost")
        s.conn.execute("UPDATE _hemei_peers SET signs_answers = 0")  # as if it had never seen a signed answer
    pair.ok("district", "nodes", "revoke", s.id)
    with pair.open("street") as s:
        with pytest.raises(client.SyncRefused, match="has been revoked"):
            client.sync_once(s, url=kept)  # the district's own word, signed: at an address not kept as well
        assert refusals_of(s) == ["revoked"]
        assert peers.parent_of(s)["signs_answers"] == 1  # learnt from the refusal itself
        assert peers.parent_of(s)["url"] == kept  # the parent proved itself there: later syncs hear it too


@pytest.mark.parametrize("health, raised", [
    pytest.param(forged_refusal("revoked"), client.WrongParent, id="403 revoked"),
    pytest.param(httpx.Response(409, json={"error": {"code": "fork", "message": "FORGED fork"}}), client.WrongParent,
                 id="409 fork"),
    pytest.param(httpx.Response(502, text="<html>Bad Gateway</html>"), client.Unreachable, id="502 page"),
])
def test_an_error_answered_to_the_unsigned_health_check_is_nobodys_and_a_watch_goes_on(pair, health, raised):
    """Found in an operator walkthrough: /api/health is asked unsigned, and an error there was taken as the
    district's refusal at the kept address: signed into the street's log (and pushed up), and a forged
    `revoked` or `fork` stopped `sync --watch` telling the operator to start a new node home."""
    with pair.open("street") as s:
        middle = Middle(block=lambda request: health if request.method == "GET" else None)
        with pytest.raises(raised):
            client.sync_once(s, transport=middle)
        assert refusals_of(s) == []
        assert peers.parent_of(s)["last_error"].startswith(raised.code)
        results: list = []
        client.sync_watch(s, interval_s=0, batch_size=100, on_result=results.append, sleep=lambda s: None,
                          stop=lambda: len(results) >= 2,
                          transport=Middle(block=lambda request: health if request.method == "GET" and not results
                                           else None))
        assert isinstance(results[0], raised) and isinstance(results[1], client.SyncReport)  # retried, synced
        assert refusals_of(s) == [] and peers.parent_of(s)["last_error"] is None


def test_a_stripped_answer_after_the_parent_proved_itself_at_a_new_address_is_retried_not_called_an_impostor(pair):
    """Found in review: at an address given with --url, once the hello came signed (and the address was
    kept), a later unsigned answer was said to come from an impostor, "the address is not kept", and the
    watch stopped."""
    with pair.open("street") as s:
        write_notes(s, [("新地址上被剥掉签名", "sx/yc/fs")])
        moved = peers.parent_of(s)["url"].replace("127.0.0.1", "localhost")
        strip_push = Middle(lambda request, response: unsigned(response)
                            if request.url.path == "/api/sync/push" else response)
        results: list = []
        client.sync_watch(s, interval_s=0, batch_size=100, on_result=results.append, sleep=lambda s: None,
                          stop=lambda: len(results) >= 1, url=moved, transport=strip_push)
        assert isinstance(results[0], client.UnsignedAnswer), results[0]
        parent = peers.parent_of(s)
        assert parent["url"] == moved and parent["last_error"].startswith("unsigned_answer: ")
        assert refusals_of(s) == []


def test_a_district_that_does_not_know_the_street_says_so_signed_and_the_watch_stops(pair):
    """A district restored from a backup made before the street joined: its `unknown_node` is its own
    word (signed, bound to the key id the street sent), so the watch stops and says what to do."""
    with pair.open("street") as s:
        street_id = s.id
    with pair.open("district") as d:
        d.conn.execute("DELETE FROM _hemei_peers WHERE node_id = ?", (street_id,))
    with pair.open("street") as s:
        results: list = []
        with pytest.raises(client.SyncRefused, match="goes on as a new node .* --replace-parent"):
            client.sync_watch(s, interval_s=0, batch_size=100, on_result=results.append, sleep=lambda s: None,
                              stop=lambda: len(results) >= 3)
        assert len(results) == 1 and refusals_of(s) == ["unknown_node"]


def test_an_address_kept_as_an_older_release_spelt_it_is_still_the_kept_address(pair):
    """Found in review: 0.1.0 kept the token's address as typed (a Windows PC's name in capitals, an empty
    `#`), and comparing it with the checked spelling made the kept address look new: a 0.1.0 district
    (unsigned) there was called an impostor, and a failure there was not shown in status."""
    with pair.open("street") as s:
        spelt = peers.parent_of(s)["url"].replace("http://127.0.0.1", "HTTP://LOCALHOST") + "/#"
        s.conn.execute("UPDATE _hemei_peers SET url = ?, signs_answers = 0", (spelt,))
        write_notes(s, [("旧拼法的地址", "sx/yc/fs")])
        strip = Middle(lambda request, response: unsigned(response))  # as a 0.1.0 district answers
        assert client.sync_once(s, transport=strip).pushed > 0
        assert peers.parent_of(s)["url"] == spelt  # nothing moved: the same address
    pair.servers["district"].stop()
    with pair.open("street") as s:
        with pytest.raises(client.Unreachable):
            client.sync_once(s)
        assert peers.parent_of(s)["last_error"].startswith("unreachable: ")


def test_a_replayed_request_is_no_contact_of_its_street(pair):
    """Found in review: anyone who saw a street's request could send it again and move the street's
    `last contact` at the district."""
    with pair.open("street") as s:
        street_id = s.id
        seen = Middle()
        sent: list[httpx.Request] = []
        seen.alter = lambda request: sent.append(request) or request
        client.sync_once(s, transport=seen)
    with pair.open("district") as d:
        before = peers.get_peer(d, street_id)["last_contact_ms"]
    hello = next(r for r in sent if r.url.path == "/api/sync/hello")
    time.sleep(0.05)
    again = httpx.post(str(hello.url), headers=resent(hello).headers, content=hello.content)
    assert again.status_code == 401 and again.json()["error"]["code"] == "replay"
    with pair.open("district") as d:
        assert peers.get_peer(d, street_id)["last_contact_ms"] == before
        # Recorded, but with the unauthenticated refusals: it is anyone's, and must not grow the log.
        assert refusals_of(d) == []
        assert [r["code"] for r in peers.anonymous_refusals(d)] == ["replay"]
