"""The ``hemei`` command: a click group whose plugin commands come from the node.

Core commands are registered below; commands of enabled program modules
(``register_commands`` hook) are looked up on the node at ``--home`` when a
name is not a core command. Errors reach the user as one line on stderr,
never as a traceback (set ``HEMEI_DEBUG=1`` to see one for a real bug).
"""

from __future__ import annotations

import difflib
import errno
import json
import os
import sqlite3
import sys
from typing import NoReturn

import click

from hemei.core.cli_support import NodeContext
from hemei.core.errors import HemeiError
from hemei.core.node import HOME_ENV
from hemei.core.plugins import CORE_BUILTINS, get_plugin_manager, merge_named

#: Built-in plugins every node registers: the core's own and the sync transport.
BUILTIN_PLUGINS: tuple[str, ...] = CORE_BUILTINS + ("hemei.sync.plugin",)


def _peek_home(args: list[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg == "--home" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--home="):
            return arg.split("=", 1)[1]
    return None


_BUSY = "the node is busy: another hemei (a server, a sync) is writing to it. Try again in a moment"
#: SQLite's result codes that come from this PC (its disk, its files, another process), and what to do.
#: Matched on the code, not the message: messages name tables and columns, and "database table is
#: locked" (SQLITE_LOCKED) is a bug within one connection, not another process.
_SQLITE_PROBLEMS = {
    "SQLITE_BUSY": _BUSY,
    "SQLITE_CORRUPT": "the node's database (node.db) is damaged: restore the node home from a backup",
    "SQLITE_NOTADB": "node.db is not a hemei database (damaged, or another file): restore it from a backup",
    "SQLITE_READONLY": "cannot write to the node's database: check that this user may write to the node home",
    "SQLITE_IOERR": "the disk could not be read or written (full, or failing): free some space and try again",
    "SQLITE_FULL": "the disk is full: free some space and try again",
    "SQLITE_CANTOPEN": "cannot open the node's database: check the node home and its permissions",
}


def environment_problem(exc: BaseException) -> str | None:
    """What to tell the operator of an error from this PC's disk, files or database, or None for a bug."""
    if isinstance(exc, sqlite3.DatabaseError):
        name = getattr(exc, "sqlite_errorname", None) or ""  # extended codes too: SQLITE_IOERR_WRITE, …
        return next((said for code, said in _SQLITE_PROBLEMS.items() if name == code or name.startswith(code + "_")),
                    None)
    if isinstance(exc, OSError) and exc.errno is not None:
        where = f" {exc.filename}" if exc.filename else ""
        if exc.errno == errno.ENOSPC:
            return f"the disk is full{' at' + where if where else ''}: free some space and try again"
        if isinstance(exc, PermissionError):
            return f"permission denied:{where} (check that this user may read and write it)"
        if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
            return f"no such file or folder:{where} (is the USB stick or drive there?)"
        return f"cannot read or write{where}: {exc.strerror or exc}"
    return None


#: Every write is one transaction, so a command stopped part-way leaves what it finished and nothing half-done.
INTERRUPTED = "interrupted: nothing is half-written (each step is kept whole or not at all)"


class HemeiGroup(click.Group):
    """Core commands, the built-in plugins' commands, and those of the node's enabled modules."""

    _builtin_cache: dict[tuple, dict] = {}

    def _builtin_commands(self, ctx: click.Context) -> dict[str, click.Command]:
        """Commands of built-in plugins (sync): there whether or not a node exists yet."""
        builtins = ctx.ensure_object(NodeContext).builtins
        if builtins not in self._builtin_cache:
            pm = get_plugin_manager((), {}, builtins)
            commands = merge_named(pm.hook.register_commands(), "command", lambda c: c.name)
            self._builtin_cache[builtins] = {c.name: c for c in commands}
        return self._builtin_cache[builtins]

    def _plugin_commands(self, ctx: click.Context) -> dict[str, click.Command]:
        # Runs before the group callback: take --home from the parsed params.
        obj = ctx.ensure_object(NodeContext)
        obj.home = obj.home or ctx.params.get("home")
        node = obj.node()
        commands = merge_named(node.pm.hook.register_commands(), "command", lambda c: c.name)
        return {c.name: c for c in commands if c.name not in self.commands}

    def list_commands(self, ctx: click.Context) -> list[str]:
        try:
            plugin_names = set(self._plugin_commands(ctx))
        except (HemeiError, sqlite3.Error, OSError):  # no node here (or a damaged one): help shows the
            plugin_names = set()                      # core and built-in commands, and the command says why
        return sorted(set(self.commands) | set(self._builtin_commands(ctx)) | plugin_names)

    def get_command(self, ctx: click.Context, name: str):
        if name in self.commands:
            return self.commands[name]
        if name in self._builtin_commands(ctx):
            return self._builtin_commands(ctx)[name]
        try:
            command = self._plugin_commands(ctx).get(name)
        except HemeiError as exc:
            raise click.UsageError(f"no such command {name!r} (module commands come from the node: "
                                   f"{exc.message})", ctx) from None
        if command is None and not ctx.resilient_parsing \
                and not difflib.get_close_matches(name, self.list_commands(ctx)):  # a typo: click suggests
            # Which module a name belongs to is known only by importing it, which a disabled one never is.
            node = ctx.ensure_object(NodeContext).node()
            idle = sorted(set(node.available_modules()) - set(node.enabled_modules()))
            if idle:
                raise click.UsageError(f"no such command {name!r}. Program modules installed but not enabled on "
                                       f"this node: {', '.join(idle)} (hemei modules enable NAME)", ctx)
        return command

    def resolve_command(self, ctx: click.Context, args: list[str]):
        obj = ctx.ensure_object(NodeContext)
        if args and args[0] not in self.commands and args[0] not in self._builtin_commands(ctx):
            obj.home = _peek_home(args[1:]) or obj.home
        if "--json" in args[1:]:  # a usage error found before the command reads its --json is said as JSON too
            obj.failure_as_json = True
        return super().resolve_command(ctx, args)

    @staticmethod
    def _fail(obj: NodeContext | None, error: dict) -> NoReturn:
        """Say why the command failed on stderr; with ``--json`` also on stdout, where a script reads
        the outcome either way."""
        click.echo(f"error: {error['message']}", err=True)
        if obj is not None and obj.failure_as_json:
            click.echo(json.dumps({"ok": False, "error": error}, ensure_ascii=False))
        sys.exit(1)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort as exc:
            # Click turns Ctrl-C into Abort too; a shell and a script tell the two apart by 130.
            if isinstance(exc.__context__, KeyboardInterrupt):
                click.echo(INTERRUPTED, err=True)
                sys.exit(130)
            click.echo("aborted", err=True)
            sys.exit(1)
        except click.ClickException as exc:
            if isinstance(exc, click.NoSuchOption) and exc.option_name == "--home":
                # A module's commands are found through the node's enabled modules, so its home comes first.
                exc.message = "--home goes before the command here: hemei --home DIR COMMAND …"
                exc.possibilities = []
            exc.show()
            obj = extra.get("obj")
            if obj is not None and obj.failure_as_json:
                click.echo(json.dumps({"ok": False, "error": {"code": "usage_error", "message": exc.format_message()}},
                                      ensure_ascii=False))
            sys.exit(exc.exit_code)
        except HemeiError as exc:
            self._fail(extra.get("obj"), exc.to_json()["error"])
        except (KeyboardInterrupt, EOFError):
            click.echo(INTERRUPTED, err=True)
            sys.exit(130)
        except BrokenPipeError:
            sys.exit(1)
        except SystemExit:
            raise
        except Exception as exc:  # a bug: one line for the user, the traceback on request
            if os.environ.get("HEMEI_DEBUG"):
                raise
            if (problem := environment_problem(exc)) is not None:  # the PC's trouble, not a bug
                self._fail(extra.get("obj"), {"code": "environment", "message": problem})
            message = (f"internal error ({type(exc).__name__}: {exc}); run again with HEMEI_DEBUG=1 to see the "
                       "traceback and report it")
            click.echo(f"error: {message}", err=True)
            obj = extra.get("obj")
            if obj is not None and obj.failure_as_json:  # a script reads the outcome on stdout, bug or not
                click.echo(json.dumps({"ok": False, "error": {"code": "internal", "message": message}},
                                      ensure_ascii=False))
            sys.exit(70)


@click.group(cls=HemeiGroup)
# Eager, so that `hemei --home DIR --help` knows the node whose modules' commands it lists.
@click.option("--home", envvar=HOME_ENV, type=click.Path(file_okay=False), is_eager=True,
              help=f"Node home directory [env {HOME_ENV}; default ./hemei-node].")
@click.option("--actor", envvar="HEMEI_ACTOR", help="Name your changes are logged under [default: login name].")
@click.version_option(package_name="hemei")
@click.pass_context
def cli(ctx: click.Context, home: str | None, actor: str | None) -> None:
    """hemei (和美): offline-first sync server for street offices and their district.

    Every change is recorded in a hash-chained, signed log that is both the
    audit trail and what syncs up to the district.

    Example:

        hemei --home ./fushan init --name 府山街道 --scope yuecheng/fushan
    """
    obj = ctx.ensure_object(NodeContext)
    obj.home = home or obj.home
    obj.actor = actor or obj.actor
    if not obj.builtins or obj.builtins == CORE_BUILTINS:
        obj.builtins = BUILTIN_PLUGINS
    ctx.call_on_close(obj.close)


from . import admin_commands, audit_commands, node_commands  # noqa: E402  (register commands)

for module in (node_commands, admin_commands, audit_commands):
    for command in module.COMMANDS:
        cli.add_command(command)


def main() -> None:
    cli.main(prog_name="hemei", obj=NodeContext(builtins=BUILTIN_PLUGINS))
