"""Corrections that could not be confirmed: never written, and a way out for one a later redemption blocked.

Found by an operator walkthrough: a correction taking back hours already
redeemed was written anyway (pending), could never be confirmed, blocked
every new correction of its entry, and the messages sent the operator in a
circle (confirm it → below zero; correct the entry → correct that one;
correct that one → confirm it). It sat in `hours pending` at the street and
the district for ever.
"""

from __future__ import annotations

import csv
import io
import json
import re

import pytest

from hemei.core import Conflict, InvalidInput
from hemei.plugins.volunteer_hours import keys, ledger, pii, registry, rollup
from test_volunteers_property import _send

ACTOR = "organiser"
FIRST17 = "33060219900101123"
ID_NUMBER = FIRST17 + pii.id_check_char(FIRST17)
#: A command a refusal points to, as the operator would copy it (the reason left for them to write).
POINTED = re.compile(r"`hemei (volunteers hours correct \S+ --hours \S+) --reason …`")


@pytest.fixture
def fushan(tmp_path, run_cli):
    """A street home made with real commands, and a `hemei --home ./fushan …` to run more."""
    home = str(tmp_path / "fushan")

    def hemei(*args: str, input: str | None = None):
        return run_cli("--home", home, "--actor", ACTOR, *args, input=input)

    for args in (["init", "--name", "府山街道", "--scope", "越城区/府山街道"],
                 ["modules", "enable", "volunteer_hours"], ["volunteers", "key", "create"]):
        assert hemei(*args).exit_code == 0
    return hemei


def _ok(done) -> str:
    assert done.exit_code == 0, done.output
    return done.stdout.strip()  # what a script reads: notes go to stderr


def _refused(done, *said: str) -> str:
    assert done.exit_code == 1, done.output
    for part in said:
        assert part in done.output, done.output
    return done.output


def _follow(hemei, message: str, *extra: str):
    """Run the command a refusal names, as the operator would: it must not be refused in turn."""
    [pointed] = POINTED.findall(message)
    return _ok(hemei(*pointed.split(), "--reason", "按提示改正", *extra))


def _served(hemei, hours: float) -> tuple[str, str]:
    volunteer = _ok(hemei("volunteers", "add", "--name", "王丽", "--id-number", ID_NUMBER))
    act = _ok(hemei("volunteers", "activity", "add", "--title", "助老理发", "--category", "daily_care",
                    "--date", "2026-11-20"))
    return volunteer, _ok(hemei("volunteers", "hours", "log", act, volunteer, "--hours", str(hours), "--confirm"))


def _redeem(hemei, hours: float) -> None:
    _ok(hemei("volunteers", "redeem", "--id-number", "-", "--hours", str(hours), "--item", "理发券",
              input=ID_NUMBER + "\n"))


def _balance(hemei) -> dict:
    return json.loads(_ok(hemei("volunteers", "balance", "--id-number", "-", "--json", input=ID_NUMBER + "\n")))


def _pending(hemei) -> list[str]:
    return [r["id"] for r in json.loads(_ok(hemei("volunteers", "hours", "pending", "--json")))]


def _export(hemei, tmp_path) -> list[dict]:
    out = tmp_path / "export.csv"
    _ok(hemei("volunteers", "export", "--out", str(out)))
    return list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8-sig"))))


def test_a_correction_that_could_never_be_confirmed_is_not_written_with_or_without_confirm(fushan, tmp_path):
    _, hour = _served(fushan, 2.5)
    _redeem(fushan, 1)
    before = _export(fushan, tmp_path)
    said = {}
    for confirm in ((), ("--confirm",)):
        refused = fushan("volunteers", "hours", "correct", hour, "--hours", "0", "--reason", "未到", *confirm)
        said[confirm] = _refused(refused, "takes 2.5 hours back", "the balance cannot go below zero",
                                 f"correct {hour} to at least 1 hours instead")
    assert said[()] == said[("--confirm",)]  # the same words whether or not it was to be confirmed at once
    assert _export(fushan, tmp_path) == before and _pending(fushan) == []  # nothing written, nothing waits
    # What the refusal says to do is accepted, confirmed, and leaves the balance at zero.
    fixed = _follow(fushan, said[()], "--confirm")
    assert _pending(fushan) == []
    shown = _balance(fushan)
    assert (shown["hours"], shown["redeemed"], shown["balance"]) == (1, 1, 0)
    # With nothing left to take back, it says so, and what makes room.
    refused = _refused(fushan("volunteers", "hours", "correct", fixed, "--hours", "0.5", "--reason", "再改"),
                       "below zero", f"nothing is left here to take back, so {fixed} keeps its 1 hours")
    assert "`hemei" not in refused  # no command is offered that would be refused too


def test_the_account_is_read_inside_the_write_transaction(make_node, monkeypatch):
    """A redemption made by another operator between a check read before the write lock and the write
    would pass that check: the correction is judged under the lock, against the account as it is then."""
    street = make_node("street", scope="越城区/府山街道", modules=["volunteer_hours"])
    keys.create_key(street, ACTOR)
    v = registry.add_volunteer(street, ACTOR, name="王丽", id_number=ID_NUMBER)
    act = registry.add_activity(street, ACTOR, title="助老理发", category="daily_care", date="2026-11-20")
    hour = ledger.log_hours(street, ACTOR, activity=act["id"], volunteer=v["id"], hours=2.5, confirm=True)["id"]
    real = street.writer

    def a_redemption_first(actor):
        monkeypatch.setattr(street, "writer", real)
        ledger.redeem(street, "another operator", person=v["person"], volunteer=v, hours=2, item="理发券")
        return real(actor)

    monkeypatch.setattr(street, "writer", a_redemption_first)
    with pytest.raises(InvalidInput, match="below zero; correct .* to at least 2 hours"):
        ledger.correct_hours(street, ACTOR, hour=hour, hours=1, reason="早退")
    assert ledger.hour_entry(street, hour)["corrected_by"] is None and ledger.pending_hours(street) == []


@pytest.mark.parametrize("redeemed_later, said", [
    (1.5, "to at least 1.5 hours instead"),
    (2.5, "withdraw it: correct {corr} back to 2.5 hours"),
])
def test_a_pending_correction_a_later_redemption_blocked_is_corrected_again(fushan, tmp_path, redeemed_later,
                                                                            said):
    _, hour = _served(fushan, 2.5)
    corr = _ok(fushan("volunteers", "hours", "correct", hour, "--hours", "1", "--reason", "早退"))  # fits: pending
    _redeem(fushan, redeemed_later)  # made after the correction was written: it no longer fits
    said = said.format(corr=corr)
    confirm = _refused(fushan("volunteers", "hours", "confirm", corr), "the balance cannot go below zero", said)
    again = _refused(fushan("volunteers", "hours", "correct", hour, "--hours", "2", "--reason", "改"),
                     f"already corrected by {corr}: {corr} cannot be confirmed", said)
    assert POINTED.findall(confirm) == POINTED.findall(again) == [
        f"volunteers hours correct {corr} --hours {redeemed_later:g}"]
    latest = _follow(fushan, confirm)  # the way out: correct the pending correction
    assert _pending(fushan) == [latest]  # the blocked one waits no more
    _ok(fushan("volunteers", "hours", "confirm", latest))
    assert _pending(fushan) == []
    shown = _balance(fushan)
    assert (shown["hours"], shown["redeemed"], shown["balance"]) == (redeemed_later, redeemed_later, 0)
    statuses = {r["id"]: r["status"] for r in _export(fushan, tmp_path)}
    assert statuses == {hour: "replaced", corr: "withdrawn", latest: "counted"}
    # The withdrawn correction is never confirmed; every refusal names what can be done instead.
    _refused(fushan("volunteers", "hours", "confirm", corr),
             f"{corr} was corrected by {latest} before it was confirmed, so it never counts: correct {latest}")
    _refused(fushan("volunteers", "hours", "correct", corr, "--hours", "2", "--reason", "改"),
             f"already corrected by {latest}: correct {latest}")
    _ok(fushan("volunteers", "hours", "correct", latest, "--hours", f"{redeemed_later:g}", "--reason", "核对",
               "--confirm"))


def test_a_withdrawn_correction_counts_alike_at_the_district(make_node):
    district = make_node("district", scope="越城区", modules=["volunteer_hours"])
    street = make_node("street", scope="越城区/府山街道", modules=["volunteer_hours"])
    keys.create_key(district, ACTOR)
    keys.request_key(street, ACTOR)
    _send(street, district)
    _send(district, street)
    v = registry.add_volunteer(street, ACTOR, name="王丽", id_number=ID_NUMBER)
    act = registry.add_activity(street, ACTOR, title="助老理发", category="daily_care", date="2026-11-20")
    hour = ledger.log_hours(street, ACTOR, activity=act["id"], volunteer=v["id"], hours=2.5, confirm=True)["id"]
    corr = ledger.correct_hours(street, ACTOR, hour=hour, hours=0, reason="未到")["id"]
    _send(street, district)
    assert [r["id"] for r in ledger.pending_hours(district)] == [corr]
    ledger.redeem(street, ACTOR, person=v["person"], volunteer=v, hours=1, item="理发券")
    latest = ledger.correct_hours(street, ACTOR, hour=corr, hours=1.5, reason="改", confirm=True)["id"]
    _send(street, district)

    assert ledger.pending_hours(district) == ledger.pending_hours(street) == []
    assert district.conn.execute("SELECT count(*) FROM _hemei_conflicts").fetchone()[0] == 0
    for node in (street, district):
        shown = ledger.balance(node, v["person"])
        assert (shown["hours"], shown["redeemed"], shown["balance"]) == (1.5, 1, 0.5)
        assert {r["id"]: r["status"] for r in ledger.service_records(node)} == {
            hour: "replaced", corr: "withdrawn", latest: "counted"}
    assert rollup.rollup(district)["totals"]["hours"] == rollup.rollup(street)["totals"]["hours"] == 1.5
    # What this release writes says so (schema v2): a release that reads only v1 keeps it aside
    # (quarantined) instead of judging the chain by the old rule, and applies it when upgraded.
    payloads = [json.loads(p) for (p,) in street.conn.execute("SELECT payload FROM _hemei_log")]
    [written] = [p for p in payloads if p.get("t") == "volunteer_hours" and p["v"].get("corrects") == corr]
    assert written["s"] == 2

    # A modified street that confirms the withdrawn correction as well cannot count it twice.
    before = ledger.balance(district, v["person"])
    with street.writer("mallory") as w:
        w._append("row.insert", street.scope, {"t": "volunteer_confirmations", "pk": "c-twice", "v": {
            "hour": corr, **{k: v2 for k, v2 in ledger.hour_entry(street, corr).items()
                             if k in ledger.CONFIRMATION_COPIES and k != "scope"}, "delta_cents": -250}}, None)
    _send(street, district)
    kept = dict(district.conn.execute("SELECT pk, reason FROM _hemei_conflicts"))
    assert "never counts" in kept["c-twice"]
    assert ledger.balance(district, v["person"]) == before
    with pytest.raises(Conflict, match="never counts"):
        ledger.confirm_hours(street, ACTOR, hour=corr)
