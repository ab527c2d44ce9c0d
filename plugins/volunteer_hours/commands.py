"""The `hemei volunteers` command group: a thin layer over registry, ledger and rollup."""

from __future__ import annotations

import csv
import sys

import click

from hemei.core import InvalidInput, cli_actor, cli_node, emit, json_option
from hemei.core.cli_support import is_rate, named, percent, shown, table
from hemei.core.files import atomic_file, text_export_target, text_writer

from . import keys, ledger, registry, rollup


def _id_number(value: str | None) -> str | None:
    """``-`` reads the ID number from stdin, so it stays out of shell history and the process list."""
    if value == "-":
        try:
            line = sys.stdin.readline().strip()
            line.encode("utf-8")  # bytes that were not UTF-8 come through as lone surrogates, or raise
        except UnicodeError:
            line = "\x00"
        if "\x00" in line:  # UTF-16 (a PowerShell redirect writes it) puts a NUL beside every digit
            raise InvalidInput("the ID number on stdin is not UTF-8 text (PowerShell's > writes UTF-16): save it "
                               "as UTF-8, or type it after --id-number")
        return line
    return value


def _person(volunteer, id_number):
    return registry.resolve_person(cli_node(), cli_actor(), volunteer=volunteer, id_number=_id_number(id_number))


person_options = [
    click.option("--volunteer", help="Volunteer id (as printed by add or find)."),
    click.option("--id-number", help="Resident ID number; '-' reads it from stdin."),
]


def with_person(fn):
    for option in reversed(person_options):
        fn = option(fn)
    return fn


@click.group()
def volunteers():
    """Volunteers, activities, hours and the time bank (志愿服务 / 时间银行).

    Example:

        hemei volunteers add --name 王丽 --id-number 330602199001011231 --phone 13805751234
    """


@volunteers.command("add")
@click.option("--name", required=True, help="Real name.")
@click.option("--id-number", required=True, help="Resident ID number (18 characters); '-' reads it from stdin.")
@click.option("--phone", help="Phone number (stored encrypted).")
@click.option("--party-member", is_flag=True, help="The volunteer is a party member.")
@click.option("--skills", help="Skills, free text.")
@click.option("--team", help="Team id or name.")
@click.option("--scope", help="Org path inside this node's scope, e.g. a community [default: the node's].")
@json_option
def add(name, id_number, phone, party_member, skills, team, scope, as_json):
    """Register a volunteer. The ID number and phone are never stored in clear.

    Example:

        hemei volunteers add --name 王丽 --id-number 330602199001011231 --phone 13805751234 --team 老吴热线
    """
    row = registry.add_volunteer(cli_node(), cli_actor(), name=name, id_number=_id_number(id_number), phone=phone,
                                 party_member=party_member, skills=skills, team=team, scope=scope)
    emit(row, as_json, lambda r: click.echo(r["id"]))


@volunteers.command("find")
@click.argument("query")
@json_option
def find(query, as_json):
    """Find volunteers by part of a name, a phone number or an ID number.

    Example:

        hemei volunteers find 王丽
    """
    rows = registry.find_volunteers(cli_node(), cli_actor(), query)
    emit(rows, as_json, lambda rs: table([{**r, "team": r["team_name"] or r["team"]} for r in rs],
                                         ["id", "name", "phone", "scope", "team"]) if rs
         else click.echo("no volunteer found"))


# -- teams and categories ---------------------------------------------------------

@volunteers.group("team")
def team():
    """Volunteer teams (服务队).

    Example:

        hemei volunteers team add 老吴热线 --leader 吴师傅
    """


@team.command("add")
@click.argument("name")
@click.option("--leader", help="Team leader's name.")
@click.option("--note", help="What the team does.")
@click.option("--scope", help="Org path inside this node's scope [default: the node's].")
@json_option
def team_add(name, leader, note, scope, as_json):
    """Add a team.

    Example:

        hemei volunteers team add 老吴热线 --leader 吴师傅
    """
    row = registry.add_team(cli_node(), cli_actor(), name=name, leader=leader, note=note, scope=scope)
    emit(row, as_json, lambda r: click.echo(r["id"]))


@team.command("list")
@json_option
def team_list(as_json):
    """List teams.

    Example:

        hemei volunteers team list --json
    """
    emit(registry.list_teams(cli_node()), as_json, lambda rs: table(rs, ["id", "name", "leader", "scope"]))


@volunteers.group("category")
def category():
    """The catalogue of activity categories; set at a district, it applies to its streets.

    Example:

        hemei volunteers category add elder_meals 助餐服务
    """


@category.command("add")
@click.argument("code")
@click.argument("name")
@click.option("--retire", is_flag=True, help="Retire the category: no new activities in it.")
@json_option
def category_add(code, name, retire, as_json):
    """Add or rename a category (or retire one with --retire).

    Example:

        hemei volunteers category add elder_meals 助餐服务
    """
    row = registry.set_category(cli_node(), cli_actor(), code=code, name=name, active=not retire)
    emit(row, as_json, lambda r: click.echo(f"{r['code']} {r['name']}"))


@category.command("list")
@json_option
def category_list(as_json):
    """List the categories activities on this node can use.

    Example:

        hemei volunteers category list
    """
    rows = [{"code": c, "name": n} for c, n in registry.categories(cli_node()).items()]
    emit(rows, as_json, lambda rs: table(rs, ["code", "name"]))


# -- activities ------------------------------------------------------------------------

@volunteers.group("activity")
def activity():
    """Activities: add, list, sign volunteers up, mark attendance.

    Example:

        hemei volunteers activity add --title 助老理发 --category daily_care --date 2026-12-05 --capacity 10
    """


@activity.command("add")
@click.option("--title", required=True, help="What the activity is.")
@click.option("--category", required=True, help="Category code (see `category list`).")
@click.option("--date", required=True, help="Date, YYYY-MM-DD.")
@click.option("--place", help="Where.")
@click.option("--capacity", type=int, help="Places available.")
@click.option("--team", help="Organising team id or name.")
@click.option("--scope", help="Org path inside this node's scope [default: the node's].")
@click.option("--another", is_flag=True,
              help="A second activity with the same title, date and place as one held (another session).")
@json_option
def activity_add(title, category, date, place, capacity, team, scope, another, as_json):
    """Add an activity.

    Example:

        hemei volunteers activity add --title 助老理发 --category daily_care --date 2026-12-05 --place 西小河社区
    """
    row = registry.add_activity(cli_node(), cli_actor(), title=title, category=category, date=date, place=place,
                                capacity=capacity, team=team, scope=scope, another=another)
    emit(row, as_json, lambda r: click.echo(r["id"]))


@activity.command("list")
@click.option("--since", help="Only activities on or after this date (YYYY-MM-DD).")
@json_option
def activity_list(since, as_json):
    """List activities.

    Example:

        hemei volunteers activity list --since 2026-12-01
    """
    emit(registry.list_activities(cli_node(), since), as_json,
         lambda rs: table(rs, ["id", "date", "title", "category", "capacity", "signed_up"]))


@activity.command("signup")
@click.argument("activity_id")
@click.argument("volunteer_id")
@json_option
def activity_signup(activity_id, volunteer_id, as_json):
    """Sign a volunteer up for an activity (refused when it is full).

    Example:

        hemei volunteers activity signup 0190b6c2-... 0190b6c3-...
    """
    row = registry.signup(cli_node(), cli_actor(), activity=activity_id, volunteer=volunteer_id)
    emit(row, as_json, lambda r: click.echo(r["id"]))


@activity.command("attend")
@click.argument("activity_id")
@click.argument("volunteer_id")
@click.option("--no-show", is_flag=True, help="Mark the volunteer as not having come.")
@json_option
def activity_attend(activity_id, volunteer_id, no_show, as_json):
    """Mark a volunteer attended (or --no-show); marking again corrects it.

    Example:

        hemei volunteers activity attend 0190b6c2-... 0190b6c3-... --no-show
    """
    row = registry.mark_attendance(cli_node(), cli_actor(), activity=activity_id, volunteer=volunteer_id,
                                   status="no_show" if no_show else "attended")
    emit(row, as_json, lambda r: click.echo(r["status"]))


# -- hours --------------------------------------------------------------------------------

@volunteers.group("hours")
def hours():
    """Hour entries: log, confirm, correct, list what waits for confirmation.

    Example:

        hemei volunteers hours log ACTIVITY_ID VOLUNTEER_ID --sign-in 09:00 --sign-out 11:30
    """


@hours.command("log")
@click.argument("activity_id")
@click.argument("volunteer_id")
@click.option("--hours", "amount", type=float, help="Hours served (or give sign-in and sign-out).")
@click.option("--sign-in", help="HH:MM (on the activity's date) or YYYY-MM-DDTHH:MM.")
@click.option("--sign-out", help="HH:MM or YYYY-MM-DDTHH:MM.")
@click.option("--confirm", is_flag=True, help="Confirm at once (the organiser is entering them).")
@json_option
def hours_log(activity_id, volunteer_id, amount, sign_in, sign_out, confirm, as_json):
    """Record a volunteer's hours at an activity; they count once confirmed.

    Example:

        hemei volunteers hours log ACTIVITY_ID VOLUNTEER_ID --hours 2.5 --confirm
    """
    row = ledger.log_hours(cli_node(), cli_actor(), activity=activity_id, volunteer=volunteer_id, hours=amount,
                           sign_in=sign_in, sign_out=sign_out, confirm=confirm)
    emit(row, as_json, lambda r: click.echo(r["id"]))
    if row["walk_in"] and not as_json:
        click.echo(f"note: volunteer {row['volunteer']} had not signed up for this activity: recorded as a walk-in"
                   " (if they had, check the volunteer id)", err=True)


@hours.command("confirm")
@click.argument("hour_ids", nargs=-1, required=True)
@json_option
def hours_confirm(hour_ids, as_json):
    """Confirm hour entries: all of those given, or, when one cannot be confirmed, none.

    Example:

        hemei volunteers hours confirm HOUR_ID
    """
    rows = ledger.confirm_all(cli_node(), cli_actor(), list(hour_ids))
    emit(rows, as_json, lambda rs: [click.echo(f"{r['id']} confirmed ({r['hours']:g} h)") for r in rs])


@hours.command("correct")
@click.argument("hour_id")
@click.option("--hours", "amount", type=float, required=True, help="The right number of hours.")
@click.option("--reason", required=True, help="Why the entry was wrong.")
@click.option("--confirm", is_flag=True, help="Confirm the correction at once.")
@json_option
def hours_correct(hour_id, amount, reason, confirm, as_json):
    """Correct a confirmed entry: a new entry with the reason; the old one stays in the record.

    A correction not confirmed yet can be corrected in turn: the new one
    replaces it, and the old one is never confirmed (give the hours
    confirmed before to withdraw it). A correction that would take back
    hours already redeemed here is refused, and the refusal says how many
    hours fit.

    Example:

        hemei volunteers hours correct HOUR_ID --hours 2 --reason "签退时间录错" --confirm
    """
    row = ledger.correct_hours(cli_node(), cli_actor(), hour=hour_id, hours=amount, reason=reason, confirm=confirm)
    emit(row, as_json, lambda r: click.echo(r["id"]))


@hours.command("pending")
@json_option
def hours_pending(as_json):
    """List hour entries waiting for confirmation (not a correction replaced by another one).

    Example:

        hemei volunteers hours pending
    """
    emit(ledger.pending_hours(cli_node()), as_json,
         lambda rs: table(rs, ["id", "served_on", "name", "activity", "hours"]))


# -- time bank, balance, certificate, export, report -----------------------------------

@volunteers.command("redeem")
@with_person
@click.option("--hours", "amount", type=float, required=True, help="Hours to spend.")
@click.option("--item", required=True, help="The service or reward (志愿者礼遇) they are spent on.")
@click.option("--note", help="Free text.")
@json_option
def redeem(volunteer, id_number, amount, item, note, as_json):
    """Redeem hours from the time bank; never more than this node can spend.

    Example:

        hemei volunteers redeem --id-number - --hours 10 --item 理发券 < id.txt
    """
    person, registration = _person(volunteer, id_number)
    row = ledger.redeem(cli_node(), cli_actor(), person=person, volunteer=registration, hours=amount, item=item,
                        note=note)
    emit(row, as_json, lambda r: click.echo(f"redeemed {r['hours']:g} h; {r['spendable_here']:g} h left here"))


@volunteers.command("balance")
@with_person
@json_option
def balance(volunteer, id_number, as_json):
    """Hours, balance and star level of a person (on a district: from every street).

    Example:

        hemei volunteers balance --id-number 330602199001011231 --json
    """
    person, _ = _person(volunteer, id_number)
    info = ledger.balance(cli_node(), person)
    emit(info, as_json, lambda i: click.echo(
        f"hours {i['hours']:g}  balance {i['balance']:g}  spendable here {i['spendable_here']:g}  star {i['star']}"))


@volunteers.command("certificate")
@with_person
@click.option("--out", type=click.Path(dir_okay=False), help="Write the certificate to this file.")
@json_option
def certificate(volunteer, id_number, out, as_json):
    """A printable record of a person's confirmed service (谁记录谁证明).

    Example:

        hemei volunteers certificate --volunteer VOLUNTEER_ID --out 王丽-服务证明.txt
    """
    person, _ = _person(volunteer, id_number)
    cert = ledger.certificate(cli_node(), person)
    if as_json:
        emit(cert, True)
        return
    text = render_certificate(cert)
    if out:
        with atomic_file(text_export_target(out, cli_node().home, CERTIFICATE_BEGINS)) as fh:
            fh.write(text.encode("utf-8-sig"))
        click.echo(out)
    else:
        click.echo(text, nl=False)


CERTIFICATE_TITLE = "志愿服务记录证明 / Certificate of volunteer service"
#: How a certificate file begins (and CSV_BEGINS an export): a file so begun is an earlier one, replaced.
CERTIFICATE_BEGINS = CERTIFICATE_TITLE.encode("utf-8-sig")


def render_certificate(cert: dict) -> str:
    lines = [CERTIFICATE_TITLE, "",
             f"志愿者 Volunteer: {'、'.join(cert['names'])}",
             f"累计服务时长 Confirmed hours: {cert['hours']:g}    星级 Star level: {cert['star']}", "",
             "日期 Date    时长 Hours  活动 Activity / 服务队 Team / 记录单位 Recorded at / 确认节点 Confirmed by"]
    for r in cert["records"]:
        lines.append(f"{r['served_on'] or '':<11} {r['hours']:>6g}  {r['activity'] or ''} / {r['team'] or '-'}"
                     f" / {r['scope']} / {r['confirmed_by_name'] or r['confirmed_by'][:7]}")
    lines += ["", f"出具单位 Issued by: {cert['issued_by']} ({cert['issued_scope']})  日期 Date: {cert['issued_on']}",
              "每条记录由记录它的节点签名，可用 `hemei audit verify` 核验。",
              "Each record is signed by the node that recorded it; `hemei audit verify` checks them.", ""]
    return "\n".join(lines)


EXPORT_COLUMNS = ["id", "scope", "name", "activity", "category", "team", "served_on", "hours", "status",
                  "corrects", "reason", "confirmed_by"]
CSV_BEGINS = ",".join(EXPORT_COLUMNS).encode("utf-8-sig")


@volunteers.command("export")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="CSV file to write ('-': stdout).")
@click.option("--scope", help="Only records inside this org path.")
def export(out, scope):
    """Export hour records to CSV (UTF-8 with BOM, so Excel shows the Chinese text); no ID numbers or phones.

    Example:

        hemei volunteers export --out 志愿时长.csv
    """
    rows = ledger.service_records(cli_node(), scope=scope)
    if out == "-":  # the same bytes as a file, whatever the console's code page
        with text_writer(click.get_binary_stream("stdout"), encoding="utf-8-sig", newline="") as fh:
            write_csv(fh, rows)
        return
    with atomic_file(text_export_target(out, cli_node().home, CSV_BEGINS)) as raw, \
            text_writer(raw, encoding="utf-8-sig", newline="") as fh:
        write_csv(fh, rows)
    click.echo(f"{len(rows)} records written to {out}", err=True)


#: A text cell Excel or WPS would read as a formula (``=HYPERLINK(…)`` in a name sends the sheet's data
#: away when clicked): written with a leading apostrophe, which the spreadsheet shows as text.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _as_text(value):
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_START) else value


def write_csv(fh, rows: list[dict]) -> None:
    writer = csv.DictWriter(fh, EXPORT_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: _as_text(v) for k, v in row.items()} for row in rows)


@volunteers.command("report")
@click.option("--scope", help="Org subtree to report on [default: the node's scope].")
@click.option("--since", help="Count hours and active volunteers from this date (YYYY-MM-DD).")
@json_option
def report(scope, since, as_json):
    """The roll-up: per street (ranked), team and category; active vs registered; no-shows; stars.

    Example:

        hemei volunteers report --json
    """
    data = rollup.rollup(cli_node(), scope, since)

    def human(d):
        click.echo(", ".join(f"{k} {percent(v) if is_rate(k) else shown(v)}" for k, v in d["totals"].items()))
        table(d["units"], named(d["units"], ["rank", "unit", "hours", "registered", "active", "no_show_rate",
                                              "outstanding"]))
        click.echo("stars: " + ", ".join(f"{k}★ {v}" for k, v in d["stars"]["people"].items()))

    emit(data, as_json, human)


@volunteers.command("stars")
@click.option("--set", "values", help="Five increasing thresholds in hours, e.g. 100,300,600,1000,1500.")
@json_option
def stars(values, as_json):
    """Show (or set, for this node's subtree) the hours needed for 1 to 5 stars.

    Example:

        hemei volunteers stars --set 100,300,600,1000,1500
    """
    node = cli_node()
    thresholds = ledger.set_star_thresholds(node, cli_actor(), values) if values else ledger.star_thresholds(node)
    emit(list(thresholds), as_json, lambda t: click.echo(" ".join(f"{i}★ {v:g}h" for i, v in enumerate(t, 1))))


# -- keys -------------------------------------------------------------------------------

@volunteers.group("key")
def key():
    """The district key behind pseudonyms and encrypted fields.

    Example:

        hemei volunteers key create
    """


@key.command("create")
@click.option("--holder", is_flag=True,
              help="This node has a parent but holds the key for its subtree (a district under a city).")
@json_option
def key_create(holder, as_json):
    """Create the key at the district (or a node without a parent); its streets receive it through sync.

    A street never creates one: it asks its district (`key request`, then
    `hemei sync`). On a node that already syncs with a parent, say
    `--holder` to confirm that it is its subtree's key holder.

    Example:

        hemei --home ./district volunteers key create
    """
    created, granted = keys.create_key(cli_node(), cli_actor(), holder=holder)
    emit({"key_id": created.key_id, "granted": granted}, as_json,
         lambda d: click.echo(f"{d['key_id']} (granted to {d['granted']} waiting node(s))"))


@key.command("request")
@json_option
def key_request(as_json):
    """Ask the district for its key (done automatically on first need); then sync, or carry bundles.

    Example:

        hemei volunteers key request
    """
    node = cli_node()
    if keys.parent_of(node) is None:
        raise InvalidInput("this node has no parent to ask: a district, or a node without a parent, creates "
                           "its own key with `hemei volunteers key create` (a street joins its district "
                           "first: `hemei join TOKEN`)")
    held = keys.key_status(node)
    if held["key_id"] is not None:  # "key requested" would send the operator to sync for nothing (walkthrough)
        emit(held, as_json, lambda d: click.echo(f"this node already uses key {d['key_id']} of {d['from_scope']}: "
                                                 "nothing to request"))
        return
    keys.request_key(node, cli_actor())
    emit(keys.key_status(node), as_json, lambda d: click.echo(f"key requested: {keys.REACH_PARENT}"))


@key.command("status")
@json_option
def key_status(as_json):
    """Which key this node uses, and requests waiting for this node's grant.

    Example:

        hemei volunteers key status --json
    """
    emit(keys.key_status(cli_node()), as_json,
         lambda d: click.echo(d["key_id"] or "no key yet" + (" (requested)" if d["requested"] else "")))
