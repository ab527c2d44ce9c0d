"""Administration: program modules and users."""

from __future__ import annotations

import sys

import click

from hemei.core import users as user_store
from hemei.core.cli_support import home_option, Duration, cli_actor, cli_node, emit, json_option, table
from hemei.core.errors import InvalidInput



@click.group()
def modules() -> None:
    """List, enable and disable program modules on this node.

    Example:

        hemei --home ./fushan modules enable volunteer_hours
    """


@modules.command("list")
@home_option
@json_option
def modules_list(as_json: bool) -> None:
    """Installed program modules and whether this node has them enabled.

    Example:

        hemei modules list --json
    """
    node = cli_node()
    enabled = set(node.enabled_modules())
    available = node.available_modules()
    versions = node.module_versions  # of enabled modules that own tables: the others are not loaded
    items = [{"name": name, "enabled": name in enabled, "schema_version": versions.get(name),
              "source": getattr(src, "value", getattr(src, "__name__", str(src)))}
             for name, src in sorted(available.items())]
    items += [{"name": n, "enabled": True, "schema_version": None, "source": "(not installed)"}
              for n in sorted(enabled - set(available))]
    emit(items, as_json, lambda rows: table(rows, ["name", "enabled", "schema_version", "source"]) if rows
         else click.echo("no program modules installed"))


@modules.command("tables")
@home_option
@click.argument("name", required=False)
@json_option
def modules_tables(name: str | None, as_json: bool) -> None:
    """The synced tables of the enabled modules: what a row change names and carries.

    Per table: its module and schema version, merge policy, key and scope
    columns, every column with its type, the columns an insert must give,
    and for append-only tables the unique ones. Written from the modules'
    own declarations, so it is what this node accepts (docs/protocol.md,
    "Row payloads").

    Example:

        hemei modules tables volunteer_hours --json
    """
    node = cli_node()
    if name is not None and name not in node.schemas:
        raise InvalidInput(f"module {name!r} is not enabled here or declares no tables (see: hemei modules list)")
    rows = [{"module": module, "schema_version": tv.version, "table": spec.name, "policy": spec.policy,
             "key": spec.pk, "scope": spec.scope, "columns": dict(spec.columns), "required": list(spec.required),
             "unique": list(spec.unique)}
            for module, tv in sorted(node.schemas.items()) if name in (None, module)
            for spec in sorted((node.specs[t] for t in tv.tables if t in node.specs), key=lambda s: s.name)]

    def human(rows: list[dict]) -> None:
        if not rows:
            click.echo("no enabled module declares tables")
        for r in rows:
            unique = f", unique ({', '.join(r['unique'])})" if r["unique"] else ""
            click.echo(f"{r['table']}  ({r['module']} v{r['schema_version']}, {r['policy']}, key {r['key']}{unique})")
            for column, kind in r["columns"].items():
                role = ("key" if column == r["key"] else "scope" if column == r["scope"]
                        else "required" if column in r["required"] else "")
                click.echo(f"    {column:<24}{kind:<9}{role}".rstrip())

    emit(rows, as_json, human)


def _toggle(name: str, enabled: bool, as_json: bool) -> None:
    node = cli_node()
    tables = node.set_module_enabled(name, enabled, cli_actor())
    emit({"ok": True, "module": name, "enabled": enabled, "tables_rebuilt": tables}, as_json,
         lambda r: click.echo(f"module {name} {'enabled' if enabled else 'disabled'}"
                              + (f"; tables ready: {', '.join(tables)}" if tables else "")))


@modules.command("enable")
@home_option
@click.argument("name")
@json_option
def modules_enable(name: str, as_json: bool) -> None:
    """Enable a module: create its tables and apply entries already received for it.

    Example:

        hemei modules enable volunteer_hours
    """
    _toggle(name, True, as_json)


@modules.command("disable")
@home_option
@click.argument("name")
@json_option
def modules_disable(name: str, as_json: bool) -> None:
    """Disable a module: hide its commands and routes; its data is kept.

    Entries for its tables that arrive while it is disabled stay in the log
    and are applied when it is enabled again.

    Example:

        hemei modules disable volunteer_hours
    """
    _toggle(name, False, as_json)


@click.group()
def users() -> None:
    """Local users, roles (admin, operator, viewer) and API tokens.

    Example:

        hemei users add wangli --role operator
    """


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def _read_password(password: str | None) -> str:
    if password is not None:
        return password
    if _stdin_is_terminal():
        return click.prompt("password", hide_input=True, confirmation_prompt=True)
    try:
        line = sys.stdin.readline().rstrip("\r\n")
        line.encode("utf-8")  # bytes that were not UTF-8 come through as lone surrogates
    except UnicodeError:
        raise InvalidInput("the password on stdin is not UTF-8 text: save it as UTF-8, or type it at the prompt") \
            from None
    if not line:
        raise InvalidInput("no password given: use --password, type it at the prompt, or pipe it on stdin")
    return line


@users.command("add")
@home_option
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(user_store.ROLES), help="What the user may do.")
@click.option("--password", help="Password (else prompted on a terminal, or read from stdin).")
@json_option
def users_add(name: str, role: str, password: str | None, as_json: bool) -> None:
    """Add a local user. The log records who added whom, never the password.

    The password is asked twice on a terminal; piped in, one line is read.

    Example:

        hemei users add wangli --role operator
    """
    node = cli_node()
    user_store.check_user_name(name)
    user_store.add_user(node, name, role, _read_password(password), cli_actor())
    emit({"ok": True, "user": name, "role": role}, as_json, lambda r: click.echo(f"user {name} added as {role}"))


@users.command("list")
@home_option
@json_option
def users_list(as_json: bool) -> None:
    """List users with their roles and number of active tokens.

    Example:

        hemei users list --json
    """
    emit(user_store.list_users(cli_node()), as_json,
         lambda rows: table(rows, ["name", "role", "active_tokens"]) if rows else click.echo("no users"))


@users.command("token")
@home_option
@click.argument("name")
@click.option("--ttl", type=Duration(), help="Lifetime such as 30d or 12h [default: no expiry].")
@json_option
def users_token(name: str, ttl: int | None, as_json: bool) -> None:
    """Issue an API token for a user; it is printed once, alone on stdout.

    Example:

        hemei users token wangli --ttl 30d
    """
    token = user_store.issue_token(cli_node(), name, cli_actor(), ttl)
    emit({"ok": True, "user": name, "token": token, "ttl_s": ttl}, as_json, lambda r: click.echo(token))


@users.command("revoke")
@home_option
@click.argument("name")
@json_option
def users_revoke(name: str, as_json: bool) -> None:
    """Revoke every active token of a user.

    Example:

        hemei users revoke wangli
    """
    count = user_store.revoke_tokens(cli_node(), name, cli_actor())
    emit({"ok": True, "user": name, "revoked_tokens": count}, as_json,
         lambda r: click.echo(f"revoked {count} token(s) of {name}"))


COMMANDS = [modules, users]
