"""What CLI commands, the core's and plugins', share: the node context.

The ``hemei`` group (in ``hemei.cli``) puts a :class:`NodeContext` in
``ctx.obj``; a command calls :func:`cli_node` to get the open node and
:func:`cli_actor` for the name its writes are logged under. Kept in core so
that plugins need not import the CLI package.
"""

from __future__ import annotations

import getpass
import json
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import click

from .node import Node
from .plugins import CORE_BUILTINS, Available


@dataclass
class NodeContext:
    home: str | None = None
    actor: str | None = None
    available: Available | None = None
    builtins: tuple[str, ...] = CORE_BUILTINS
    #: Set by ``--json``: the command's failure is also printed on stdout as ``{"ok": false, "error": …}``.
    failure_as_json: bool = False
    _node: Node | None = field(default=None, repr=False)

    def node(self) -> Node:
        if self._node is None:
            self._node = Node.open(self.home, available=self.available, builtins=self.builtins)
        return self._node

    def close(self) -> None:
        if self._node is not None:
            self._node.close()
            self._node = None


def cli_context() -> NodeContext:
    return click.get_current_context().find_object(NodeContext)


def cli_node() -> Node:
    """The node the running ``hemei`` command works on (opened on first use)."""
    return cli_context().node()


def cli_actor() -> str:
    """The actor for log entries: ``--actor``/``HEMEI_ACTOR``, else the OS login name."""
    actor = cli_context().actor
    if actor:
        return actor
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"


def home_option(fn):
    """``--home`` after the command name too: ``hemei init --home DIR ...``."""
    def set_home(ctx: click.Context, param, value):
        if value is not None:
            ctx.find_object(NodeContext).home = value
        return value

    return click.option("--home", type=click.Path(file_okay=False), expose_value=False, callback=set_home,
                        is_eager=True, help="Node home directory (same as the global --home).")(fn)


def json_option(fn: Callable) -> Callable:
    """``--json``: print JSON instead of text, a failure too (on stdout, by the ``hemei`` group)."""
    def note(ctx: click.Context, param, value: bool) -> bool:
        if value and (obj := ctx.find_object(NodeContext)) is not None:
            obj.failure_as_json = True
        return value

    return click.option("--json", "as_json", is_flag=True, callback=note, help="Print JSON instead of text.")(fn)


def emit(data: Any, as_json: bool, human: Callable[[Any], None] | None = None) -> None:
    """Print ``data`` as JSON (Unicode kept as is) or through ``human``."""
    if as_json or human is None:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))
    else:
        human(data)


#: What a cell must not print as is: a line break or carriage return would forge a row of the table,
#: and a bidirectional override make it read other than it is (rows received from other nodes, or
#: written by an older release, were never checked for them).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _one_line(cell: str) -> str:
    return _UNPRINTABLE.sub(lambda m: " " if m.group() in "\n\t" else "\ufffd", cell)


def shown(value) -> str:
    """A figure as text output says it: "-" where there is none (a rate of nobody), never Python's None."""
    return "-" if value is None else str(value)


def is_rate(key: str) -> bool:
    """Whether a figure named ``key`` is a fraction to print as a percentage (the naming every module's
    reports follow: ``no_show_rate``, ``patrol_coverage``)."""
    return key.endswith(("_rate", "coverage"))


def named(rows: list[dict], columns: list[str]) -> list[str]:
    """``columns`` with ``name`` after the first (the rank), when any row has a name to show: a district's
    staff know 府山街道, not yuecheng/fushan."""
    return columns[:1] + ["name"] + columns[1:] if any(r.get("name") for r in rows) else columns


def percent(value) -> str:
    """A rate (a fraction, as JSON gives it) as text output says it: 83.3%, or "-" where there is none."""
    return "-" if value is None else f"{value:.1%}"


#: Text output cuts a cell past this many characters (the last column past MAX_LAST_CELL): every line is
#: padded to its column's widest cell, so one 100,000-character key a rogue node sent made `hemei conflicts`
#: print 221 MB (found by a fuzzer). --json gives every value whole.
MAX_CELL = 80
MAX_LAST_CELL = 2000


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def table(rows: list[dict], columns: list[str]) -> None:
    """Print rows as aligned text columns (East Asian characters count double); a rate's column
    (:func:`is_rate`) as percentages, as the totals beside it are (found in a walkthrough: 0.8333 under 83.3%)."""
    import unicodedata

    def width(text: str) -> int:
        return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)

    def cell(row: dict, column: str) -> str:
        if column not in row:
            return ""
        return percent(row[column]) if is_rate(column) else shown(row[column])

    cells = [[_cut(_one_line(cell(r, c)), MAX_CELL if i < len(columns) - 1 else MAX_LAST_CELL)
              for i, c in enumerate(columns)] for r in rows]
    widths = [max([width(c)] + [width(row[i]) for row in cells]) for i, c in enumerate(columns)]
    for line in [columns] + cells:
        click.echo("  ".join(cell + " " * (w - width(cell)) for cell, w in zip(line, widths)).rstrip())


def progress(total: int, label: str):
    """A progress bar on a terminal; silent when stderr is not a TTY (scripts, pipes)."""
    if sys.stderr.isatty():
        return click.progressbar(length=total, label=label, file=sys.stderr)
    return _Silent()


class _Silent:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n: int) -> None:
        pass


class Duration(click.ParamType):
    """Durations typed by operators: ``90s``, ``30m``, ``1h``, ``7d`` (converted to seconds)."""

    name = "duration"
    _UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    LONGEST = 10 * 366 * 86400  # ten years: longer is a typo, and would overflow a stored expiry

    def convert(self, value, param, ctx) -> int:
        if isinstance(value, int):
            return value
        match = re.fullmatch(r"\s*([0-9]{1,9})\s*([smhd])\s*", str(value))
        if not match or int(match.group(1)) == 0 or int(match.group(1)) * self._UNITS[match.group(2)] > self.LONGEST:
            self.fail(f"{value!r} is not a duration such as 30m, 1h or 7d (at most {self.LONGEST // 86400} days)",
                      param, ctx)
        return int(match.group(1)) * self._UNITS[match.group(2)]
