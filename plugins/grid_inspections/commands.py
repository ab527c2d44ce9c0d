"""The `hemei grids` and `hemei cases` command groups: a thin layer over grids, cases and metrics."""

from __future__ import annotations

import click

from hemei.core import cli_actor, cli_node, emit, json_option
from hemei.core.cli_support import named, percent, table

from . import cases as case_ops
from . import grids as grid_ops
from . import metrics
from .machine import LEVELS, RATINGS


def with_street(rows: list[dict], columns: list[str], node_scope: str) -> list[str]:
    """``columns`` with a street column after the first, when ``rows`` come from more than one street (a
    district's lists): named below this node, as an operator says it (府山街道, not 越城区/府山街道)."""
    if len({r.get("street") for r in rows}) < 2:
        return columns
    for r in rows:
        r["street"] = (r.get("street") or "").removeprefix(node_scope + "/")
    return [columns[0], "street", *columns[1:]]


# -- hemei grids -------------------------------------------------------------------

@click.group()
def grids():
    """Grids and micro-grids, their staff (1+1+N) and patrols (网格 / 巡查).

    Example:

        hemei grids add FS-03 府山第三网格 --community 西小河社区 --households 420
    """


@grids.command("add")
@click.argument("code")
@click.argument("name")
@click.option("--community", help="The community (社区) the grid is in; not needed for a micro-grid.")
@click.option("--parent", help="Make a micro-grid inside this grid (code, path or id).")
@click.option("--street", help="At a district: the street, by name or full path [default: this node's scope].")
@click.option("--households", type=int, help="Households the grid covers.")
@click.option("--patrols-per-day", type=int, help="Patrol plan [default: 2 for a grid, 0 for a micro-grid].")
@click.option("--established", help="First day of the patrol plan, YYYY-MM-DD [default: today].")
@click.option("--new-street", is_flag=True, help="At a district: --street is not enrolled here yet.")
@json_option
def grids_add(code, name, community, parent, street, households, patrols_per_day, established, new_street,
              as_json):
    """Define a grid (or, with --parent, a micro-grid); defining one again in the same community updates it.

    Example:

        hemei grids add FS-03 府山第三网格 --community 西小河社区 --households 420
    """
    row = grid_ops.add_grid(cli_node(), cli_actor(), code=code, name=name, community=community, parent=parent,
                            street=street, households=households, patrols_per_day=patrols_per_day,
                            established=established, new_street=new_street)
    emit(row, as_json, lambda r: click.echo(f"{r['id']}  {r['scope']}"))


@grids.command("list")
@click.option("--street", help="Only this street (name or path).")
@json_option
def grids_list(street, as_json):
    """List grids with their households, patrol plan and staff counts.

    Example:

        hemei grids list --street 府山街道 --json
    """
    rows = grid_ops.list_grids(cli_node(), street)

    def human(rs):
        for r in rs:
            r["leader/instr/members"] = "{leader}/{instructor}/{member}".format(**r["staff"])
        table(rs, ["code", "name", "community", "households", "patrols_per_day", "leader/instr/members", "scope"])
        for warning in (w for r in rs for w in r["warnings"]):
            click.echo(f"note: {warning}", err=True)

    emit(rows, as_json, human if rows else lambda _: click.echo("no grids yet: add one with `hemei grids add`"))


@grids.command("remove")
@click.argument("grid")
@json_option
def grids_remove(grid, as_json):
    """Remove a grid defined wrongly (a wrong street, community or code), with its staff.

    Its cases keep their history and still count for their street and
    community; its patrols are kept but no longer count toward coverage.
    To move a grid, define it where it belongs (`hemei grids add`), then
    remove the wrong one. A grid with micro-grids: remove those first.

    Example:

        hemei grids remove 西小河社区/FS-03
    """
    row = grid_ops.remove_grid(cli_node(), cli_actor(), grid)

    def human(r):
        kept = [f"{r['cases']} case{'' if r['cases'] == 1 else 's'} keep it in their history"] if r["cases"] else []
        if r["patrols"]:
            kept.append(f"{r['patrols']} patrol{'' if r['patrols'] == 1 else 's'} no longer count toward coverage")
        click.echo(f"removed grid {r['code']} at {r['scope']}"
                   + (f" and {r['staff_removed']} staff" if r["staff_removed"] else "")
                   + (f" ({'; '.join(kept)})" if kept else ""))

    emit(row, as_json, human)


@grids.command("plan")
@click.argument("grid")
@click.argument("patrols_per_day", type=int)
@click.option("--from", "from_day", help="First day of the new plan, YYYY-MM-DD [default: today].")
@json_option
def grids_plan(grid, patrols_per_day, from_day, as_json):
    """Set how many patrols a day a grid's plan asks for, from a day on.

    The days before keep the plan they had: their coverage does not change.

    Example:

        hemei grids plan FS-03 3 --from 2026-11-01
    """
    row = grid_ops.set_plan(cli_node(), cli_actor(), grid, patrols_per_day, from_day=from_day)

    def human(r):
        click.echo(f"{r['code']}: {r['patrols_per_day']} patrol{'' if r['patrols_per_day'] == 1 else 's'} a day")
        if from_day and r["plan_from"] != from_day:
            click.echo(f"from {r['plan_from']}, the grid's start day ({from_day} is before it)")
        if not r["changed"]:
            click.echo(f"unchanged: that plan was in effect from {r['plan_from']} already")
        if len(r["plan_changes"]) > 1:
            click.echo("plan: " + ", ".join(f"{c['patrols_per_day']} from "
                                            f"{'the start' if c['from'] == grid_ops.PLAN_START else c['from']}"
                                            for c in r["plan_changes"]))

    emit(row, as_json, human)


@grids.group("staff")
def staff():
    """Grid staff: a leader (网格长), an instructor (网格指导员) and part-time members (兼职网格员).

    Example:

        hemei grids staff add FS-03 李娟 --role leader
    """


@staff.command("add")
@click.argument("grid")
@click.argument("name")
@click.option("--role", type=click.Choice(grid_ops.ROLES), required=True, help="leader, instructor or member.")
@json_option
def staff_add(grid, name, role, as_json):
    """Add a person to a grid's staff; a grid has one leader and one instructor.

    Example:

        hemei grids staff add FS-03 李娟 --role leader
    """
    emit(grid_ops.add_staff(cli_node(), cli_actor(), grid, name=name, role=role), as_json,
         lambda r: click.echo(r["id"]))


@staff.command("list")
@click.argument("grid")
@json_option
def staff_list(grid, as_json):
    """List a grid's staff.

    Example:

        hemei grids staff list FS-03
    """
    row = grid_ops.find_grid(cli_node(), grid)
    staff = grid_ops.staff_of(cli_node(), row["id"])

    def human(rs):
        table(rs, ["id", "role", "name"])
        for warning in grid_ops.staff_warnings(row["code"], rs):
            click.echo(f"note: {warning}", err=True)

    emit(staff, as_json, human)


@staff.command("remove")
@click.argument("staff_id")
@json_option
def staff_remove(staff_id, as_json):
    """Remove a person from a grid's staff (by the id `staff list` prints).

    Example:

        hemei grids staff remove 0193f1c2-7d4e-7a10-9b2c-5e8f0a1b2c3d
    """
    emit(grid_ops.remove_staff(cli_node(), cli_actor(), staff_id), as_json,
         lambda r: click.echo(f"removed {r['name']} ({r['role']})"))


@grids.command("patrol")
@click.argument("grid")
@click.option("--worker", required=True, help="Who patrolled.")
@click.option("--at", help="When, 'YYYY-MM-DD HH:MM' local time [default: now].")
@click.option("--note", help="What was seen.")
@json_option
def grids_patrol(grid, worker, at, note, as_json):
    """Check in a patrol of a grid.

    Example:

        hemei grids patrol FS-03 --worker 李娟 --at "2026-11-21 08:30" --note 楼道堆物两处
    """
    row = grid_ops.check_in(cli_node(), cli_actor(), grid, worker=worker, at=at, note=note)
    if not row["counted"]:
        click.echo(f"note: {row['not_counted']}", err=True)
    emit(row, as_json, lambda r: click.echo(r["id"]))


@grids.command("coverage")
@click.option("--from", "start", help="First day, YYYY-MM-DD [default: the last 7 days that are over].")
@click.option("--to", "end", help="Last day, YYYY-MM-DD [default: today].")
@click.option("--street", help="Only this street (name or path).")
@json_option
def grids_coverage(start, end, street, as_json):
    """Patrols planned vs done per grid, and every grid-day with a missed patrol.

    Only days that are over are counted: today's patrols so far are shown
    on their own line, never as missed.

    Example:

        hemei grids coverage --from 2026-11-01 --to 2026-11-21
    """
    node = cli_node()
    data = grid_ops.coverage(node, start, end, street)

    def human(d):
        counted = f"{d['from']} to {d['counted_to']}" if d["counted_to"] else "no day that is over"
        click.echo(f"{counted}: {d['done']} of {d['planned']} planned patrols"
                   + (f" ({percent(d['coverage'])})" if d["coverage"] is not None else ""))
        if d["today"]:
            click.echo(f"today ({d['today']['day']}) so far: {d['today']['done']} of {d['today']['planned']}"
                       " planned patrols (counted once the day is over)")
        table(d["grids"], with_street(d["grids"], ["code", "name", "community", "planned", "done", "coverage"]
                                      + (["today"] if d["today"] else []), node.scope))
        if d["missed"]:
            click.echo(f"\nmissed ({len(d['missed'])} grid-days):")
            table(d["missed"], with_street(d["missed"], ["day", "code", "name", "planned", "done"], node.scope))

    emit(data, as_json, human)


# -- hemei cases -------------------------------------------------------------------

@click.group()
def cases():
    """Cases found on patrol or raised by residents, handled as a closed loop and escalated when needed.

    reported -> registered -> dispatched -> in_progress -> handled -> verified -> closed -> evaluated;
    rework sends a handled case back to dispatched; escalate passes it up a level
    (grid -> community -> street -> district).

    Example:

        hemei cases report --grid FS-03 --category environment --description 楼道堆物 --reporter 李娟
    """


def _print_case(case: dict) -> None:
    click.echo(f"{case['id']}  {case['state']} at {case['level']} level (held by {case['held_by']})")
    click.echo(f"  {case['category']} in {case['grid_code'] or case['grid']} {case['community']}: "
               f"{case['description']}")
    click.echo(f"  reported {case['reported_at']} by {case['reporter']}; due {case['due']}")
    for e in case["events"]:
        mark = "" if e["applied"] else f"  [not applied: {e['not_applied_because']}]"
        detail = " ".join(str(e[k]) for k in ("level", "assignee", "rating", "note") if e.get(k))
        who = e["by"] + (f" ({e['acting_scope']})" if e.get("acting_scope") else "")
        click.echo(f"  {e['at']}  {e['kind']:<10} {who}  {detail}{mark}")


@cases.command("report")
@click.option("--grid", required=True, help="Grid code, path or id.")
@click.option("--category", required=True, help="Category code (`hemei cases category list`).")
@click.option("--description", required=True, help="What is wrong.")
@click.option("--reporter", required=True, help="Who reported it: the grid worker, or the resident.")
@click.option("--source", type=click.Choice(case_ops.SOURCES), default="patrol", show_default=True)
@click.option("--place", help="Where exactly (building, stairwell, ...).")
@click.option("--patrol", help="The patrol check-in it was found on.")
@click.option("--at", help="When it was reported, 'YYYY-MM-DD HH:MM' [default: now].")
@click.option("--on-the-spot", metavar="WHAT_WAS_DONE",
              help="Fixed at once: records every step up to closed, with this as the handling.")
@json_option
def cases_report(grid, category, description, reporter, source, place, patrol, at, on_the_spot, as_json):
    """Report a case; prints its id alone on stdout (its state on stderr), for a script to keep.

    Example:

        hemei cases report --grid FS-03 --category facilities --description 路灯不亮 --reporter 李娟 --place 3幢
    """
    case = case_ops.report(cli_node(), cli_actor(), grid=grid, category=category, description=description,
                           reporter=reporter, source=source, place=place, patrol=patrol, at=at,
                           on_the_spot=on_the_spot)
    def human(c):
        click.echo(c["id"])
        click.echo(f"case {c['id'][-8:]} {c['state']}", err=True)  # the end: ids made the same minute share the start

    emit(case, as_json, human)


@cases.command("list")
@click.option("--state", help="Only cases in this state.")
@click.option("--level", type=click.Choice(LEVELS), help="Only cases at this level (district: the district queue).")
@click.option("--grid", help="Only this grid.")
@click.option("--street", help="Only this street (name or path).")
@click.option("--open", "open_only", is_flag=True, help="Only cases still being worked on.")
@click.option("--overdue", is_flag=True, help="Only open cases past their level's deadline.")
@click.option("--limit", type=int, default=200, show_default=True)
@json_option
def cases_list(state, level, grid, street, open_only, overdue, limit, as_json):
    """List cases, newest first.

    Example:

        hemei cases list --level district --open
    """
    node = cli_node()
    rows = case_ops.list_cases(node, state=state, level=level, grid=grid, street=street, open_only=open_only,
                               overdue=overdue, limit=limit)

    def human(rs):
        for r in rs:
            r["ref"] = r["id"][-8:]
        table(rs, with_street(rs, ["ref", "state", "level", "category", "grid", "reported_at", "level_due",
                                   "description"], node.scope))

    emit(rows, as_json, human if rows else lambda _: click.echo("no cases"))


@cases.command("show")
@click.argument("case")
@json_option
def cases_show(case, as_json):
    """Show a case: its state, level and every event, including any that did not apply and why.

    Example:

        hemei cases show 5e8f0a1b --json
    """
    emit(case_ops.show(cli_node(), case), as_json, _print_case)


#: kind -> (help, extra options, example arguments)
_TRANSITIONS = {
    "register": ("Register (accept) a reported case.", [], ""),
    "reject": ("Reject a reported case, saying why.", ["note"], " --note 不属于受理范围"),
    "duplicate": ("Mark a case as a duplicate of another.", ["duplicate_of"], " --of 7c1d9e2a"),
    "dispatch": ("Dispatch a registered case to whoever will handle it.", ["assignee"], " --to 王强"),
    "start": ("Record that handling has started.", [], ""),
    "handle": ("Record what was done.", ["note"], " --note 已清理楼道堆物"),
    "verify": ("Verify the handling on site.", ["note"], ""),
    "rework": ("Send a handled case back to be handled again, saying why.", ["note"], " --note 仍有堆物"),
    "close": ("Close a verified case.", ["note"], ""),
    "evaluate": ("Record the resident's evaluation of a closed case.", ["rating", "note"], " --rating satisfied"),
    "escalate": ("Pass an open case up a level (default: the next one).", ["level", "note"],
                 " --to-level district --note 需区级协调"),
}
_OPTIONS = {
    "note": click.option("--note", help="Note: what was done, or why."),
    "assignee": click.option("--to", "assignee", required=True, help="Who handles it."),
    "rating": click.option("--rating", type=click.Choice(RATINGS), required=True),
    "duplicate_of": click.option("--of", "duplicate_of", required=True, help="The case this one repeats."),
    "level": click.option("--to-level", "level", type=click.Choice(LEVELS[1:]), help="Level to pass it to."),
}


def _transition_command(kind: str) -> click.Command:
    summary, extras, example = _TRANSITIONS[kind]

    def run(case, at, as_json, **extra):
        result = case_ops.transition(cli_node(), cli_actor(), case, kind, at=at, **extra)
        emit(result, as_json, lambda c: click.echo(f"{c['id'][-8:]}  {c['state']} at {c['level']} level"))

    run.__doc__ = f"{summary}\n\n    Example:\n\n        hemei cases {kind} 5e8f0a1b{example}\n    "
    command = json_option(run)
    command = click.option("--at", help="When, 'YYYY-MM-DD HH:MM' local time [default: now].")(command)
    for name in reversed(extras):
        command = _OPTIONS[name](command)
    command = click.argument("case")(command)
    return click.command(kind)(command)


for _kind in _TRANSITIONS:
    cases.add_command(_transition_command(_kind))


@cases.command("escalate-overdue")
@json_option
def cases_escalate_overdue(as_json):
    """Escalate, one level, every open case this node holds that is past its deadline.

    Run it from the task scheduler (cron, Windows Task Scheduler) every hour or so.

    Example:

        hemei cases escalate-overdue
    """
    moved = case_ops.escalate_overdue(cli_node(), cli_actor())

    def human(ms):
        click.echo(f"escalated {len(ms)} case(s)")
        for m in ms:
            click.echo(f"  {m['id'][-8:]}  {m['from']} -> {m['to']}")

    emit(moved, as_json, human)


@cases.command("stats")
@click.option("--from", "start", help="First day of reports, YYYY-MM-DD [default: 1 January].")
@click.option("--to", "end", help="Last day, YYYY-MM-DD [default: today].")
@click.option("--scope", help="Only this part of the tree (street name or path).")
@json_option
def cases_stats(start, end, scope, as_json):
    """Response, resolution, on-time, rework and satisfaction rates and patrol coverage; streets ranked.

    Example:

        hemei cases stats --from 2026-01-01 --json
    """
    data = metrics.stats(cli_node(), start=start, end=end, scope=scope)

    def human(d):
        t = d["totals"]
        click.echo(f"{d['scope']}, cases reported {d['from']} to {d['to']}: {t['cases']}")
        for key in ("response_rate", "resolution_rate", "on_time_rate", "rework_rate", "satisfaction_rate",
                    "patrol_coverage"):
            click.echo(f"  {key:<18} {percent(t[key])}")
        click.echo(f"  open {t['open']}, overdue {t['overdue']}, escalated {t['escalated']}")
        if d["streets"]:
            click.echo("")
            rates = ("response_rate", "resolution_rate", "on_time_rate", "satisfaction_rate", "patrol_coverage")
            table(d["streets"], named(d["streets"], ["rank", "street", "cases", *rates]))

    emit(data, as_json, human)


@cases.group("category")
def category():
    """The case category catalogue, each with its deadline; set at a district, it applies to its streets.

    Example:

        hemei cases category add stairwell 楼道堆物 --deadline-hours 48
    """


@category.command("add")
@click.argument("code")
@click.argument("name")
@click.option("--deadline-hours", type=int, required=True, help="Hours a level has to handle such a case.")
@click.option("--retire", is_flag=True, help="Retire the category: no new cases in it.")
@json_option
def category_add(code, name, deadline_hours, retire, as_json):
    """Add, change or retire a category.

    Example:

        hemei cases category add stairwell 楼道堆物 --deadline-hours 48
    """
    row = case_ops.set_category(cli_node(), cli_actor(), code=code, name=name, deadline_hours=deadline_hours,
                                active=not retire)
    emit(row, as_json, lambda r: click.echo(f"{r['code']}  {r['name']}  {r['deadline_hours']} h"))


@category.command("list")
@json_option
def category_list(as_json):
    """List the categories in force here.

    Example:

        hemei cases category list --json
    """
    rows = [{"code": code, **c} for code, c in case_ops.categories(cli_node()).items()]
    emit(rows, as_json, lambda rs: table(rs, ["code", "name", "deadline_hours"]))
