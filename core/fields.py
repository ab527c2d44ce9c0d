"""Checks for values that come from users, and small query helpers, shared by program modules.

Each check returns the canonical value or raises :class:`InvalidInput` with a
message an operator can act on; modules call them before writing anything,
so a refused request writes nothing.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Callable

from .errors import InvalidInput
from .scope import MAX_SCOPE_LENGTH, covers, parse_scope

if TYPE_CHECKING:
    from .node import Node


#: Characters no field takes: C0 and C1 controls (a NUL, a carriage return that forges a line in a
#: printed table) and the bidirectional overrides and isolates that make text read other than it is
#: stored. ``lines`` fields (notes, descriptions) take line breaks and tabs.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_LINE_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
#: Invisible on their own: a name of nothing but these is empty.
_INVISIBLE = re.compile("[\\s\u200b-\u200d\u2060\ufeff]+")


def text(value, field: str, *, required: bool = True, limit: int = 200, lines: bool = False) -> str | None:
    """Trimmed text of at most ``limit`` characters; ``None`` when optional and empty.

    One line, unless ``lines``: then line breaks (``\r\n`` and ``\r`` stored as ``\n``) and tabs are kept.
    """
    if value is None or (isinstance(value, str) and not _INVISIBLE.sub("", value)):
        if required:
            raise InvalidInput(f"{field} is required")
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be text")
    value = value.strip()
    if lines:
        value = value.replace("\r\n", "\n").replace("\r", "\n")
    bad = (_LINE_CONTROLS if lines else _CONTROLS).search(value)
    if bad:
        what = "a line break" if bad.group() in "\r\n" else f"the control character U+{ord(bad.group()):04X}"
        raise InvalidInput(f"{field} may not contain {what}")
    if len(value) > limit:
        raise InvalidInput(f"{field} is longer than {limit} characters")
    return value


def flag(value, field: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{field} must be true or false")
    return value


def query_flag(value: str | None, field: str) -> bool:
    """A yes/no query parameter: ``1`` or ``true``, ``0`` or ``false``, absent for no. Anything else is
    refused rather than read as no (``?open=yes`` listed every case)."""
    if value is None:
        return False
    if value.lower() in ("1", "true"):
        return True
    if value.lower() in ("0", "false", ""):
        return False
    raise InvalidInput(f"{field} must be 1 or 0, not {value!r}")


#: A whole number as typed: ASCII digits only (``str.isdigit`` also takes '²' and '١٢'), short enough
#: that ``int()`` never meets its 4,300-digit limit.
_TYPED_NUMBER = re.compile(r"-?[0-9]{1,18}")


def whole_number(value, field: str, *, low: int = 0, high: int = 10**9) -> int:
    """An integer in [low, high]; digits in a string are accepted (CLI and form input), fractions are not."""
    if isinstance(value, str) and _TYPED_NUMBER.fullmatch(value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{field} must be a whole number from {low} to {high}")
    return value


#: Dates and times recorded by people lie in these years; other nodes refuse any other (module validators).
FIRST_YEAR, LAST_YEAR = 2000, 2999


def iso_date(value, field: str = "date") -> str:
    if type(value) is dt.date:
        value = value.isoformat()
    if not isinstance(value, str):  # a JSON number 20261121 is not a date someone wrote
        raise InvalidInput(f"{field} {value!r} is not a date: use YYYY-MM-DD")
    try:
        day = dt.date.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput(f"{field} {value!r} is not a date: use YYYY-MM-DD") from None
    if not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise InvalidInput(f"{field} {value!r} is not between the years {FIRST_YEAR} and {LAST_YEAR}")
    return day.isoformat()


def since_date(value, field: str = "since") -> str | None:
    """The first day a query looks at, or None for no bound.

    Any valid date: unlike a recorded date it is compared, never stored,
    so ``--since 1999-12-31`` simply means "everything".
    """
    if value is None or value == "":
        return None
    try:
        return dt.date.fromisoformat(str(value)).isoformat()
    except ValueError:
        raise InvalidInput(f"{field} {value!r} is not a date: use YYYY-MM-DD") from None


def local_time(value, field: str = "time") -> str:
    """A local wall-clock time as ``YYYY-MM-DDTHH:MM:SS`` (the form every node stores and compares).

    Offices record in local time and a deployment sits in one time zone
    (China Standard Time has no daylight saving), so times carry no offset;
    one given with an offset is converted to this machine's local time.
    """
    if isinstance(value, dt.datetime):
        moment = value
    elif not isinstance(value, str):
        raise InvalidInput(f"{field} {value!r} is not a time: use YYYY-MM-DD HH:MM")
    else:
        try:
            moment = dt.datetime.fromisoformat(str(value).strip().replace(" ", "T", 1))
        except ValueError:
            raise InvalidInput(f"{field} {value!r} is not a time: use YYYY-MM-DD HH:MM") from None
    try:
        if moment.tzinfo is not None:
            moment = moment.astimezone().replace(tzinfo=None)
    except OverflowError:  # year 1 or 9999 moved past the calendar's end by its offset
        moment = dt.datetime.min
    if not FIRST_YEAR <= moment.year <= LAST_YEAR:
        raise InvalidInput(f"{field} {value!r} is not between the years {FIRST_YEAR} and {LAST_YEAR}")
    return moment.replace(microsecond=0).isoformat()


def now_local() -> str:
    return local_time(dt.datetime.now())


#: How far ahead of this PC's clock a recorded time may be (a phone a little ahead, say).
FUTURE_SLACK = dt.timedelta(minutes=5)


def ahead_of_this_pc(moment: str) -> bool:
    """Whether a local time (as :func:`local_time` writes it) is later than this PC could have recorded
    now: past its clock and the slack :func:`past_time` allows."""
    return moment > local_time(dt.datetime.now() + FUTURE_SLACK)


def past_time(value, field: str = "time") -> str:
    """:func:`local_time` of ``value`` (now when ``None``), refused if it is ahead of the clock."""
    moment = now_local() if value is None else local_time(value, field)
    if ahead_of_this_pc(moment):
        raise InvalidInput(f"{field} {moment} is in the future: check the date, or this PC's clock")
    return moment


def row_scope(node: Node, scope: str | None) -> str:
    """A scope for a new row: the node's own by default, or a place inside it (a community) as an operator
    types it (:func:`place_path`: ``西小河社区`` on the street 越城区/府山街道 is 越城区/府山街道/西小河社区)."""
    if scope is None:
        return node.scope
    path = place_path(node, text(scope, "scope", limit=MAX_SCOPE_LENGTH))
    if not covers(node.scope, path):
        raise InvalidInput(f"scope {scope} is outside this node's scope {node.scope}")
    return path


def place_path(node: Node, value: str) -> str:
    """A place at or below this node's, as an operator types it: this node's name for its scope, a full
    path inside it, a path relative to it, or one relative to its parent, as its district writes it
    (``府山街道`` or ``府山街道/西小河社区`` on the street 越城区/府山街道)."""
    if value == node.name:
        return node.scope
    head, slash, below = value.partition("/")
    if head == node.name:
        return parse_scope(node.scope + slash + below)
    scope = parse_scope(value)
    if covers(node.scope, scope):
        return scope
    if scope.partition("/")[0] == node.scope.partition("/")[0]:  # a full path, of a place elsewhere
        raise InvalidInput(f"{value} is outside this node's scope {node.scope}")
    above, _, last = node.scope.rpartition("/")
    if above and (scope == last or scope.startswith(last + "/")):
        return parse_scope(f"{above}/{scope}")
    return parse_scope(f"{node.scope}/{scope}")


def named_places(node: Node) -> dict[str, str]:
    """Scope by name of the nodes this one knows: the names plugins give (``place_names``: the sync
    transport's, each enrolled child by the name this node invited it as, its operator's word), then the
    names nodes whose log it holds gave themselves; a name that means two scopes means neither."""
    scopes: dict[str, set[str]] = {}
    for given in node.pm.hook.place_names(node=node):
        for name, scope in given or ():
            scopes.setdefault(name, set()).add(scope)
    given_here = set(scopes)
    for name, scope in node.declared_names():
        if name not in given_here:
            scopes.setdefault(name, set()).add(scope)
    return {name: held.pop() for name, held in scopes.items() if len(held) == 1}


def place_names_by_scope(node: Node) -> dict[str, str]:
    """The name to show beside a scope: the name this node invited that node as (``place_names``), else
    the name the node there gave itself; none where two names are equally good (two PCs enrolled under
    one scope by different names)."""
    names: dict[str, str | None] = {}
    for name, scope in node.declared_names():
        names[scope] = name if names.get(scope, name) == name else None
    given: dict[str, str | None] = {}
    for group in node.pm.hook.place_names(node=node):
        for name, scope in group or ():
            given[scope] = name if given.get(scope, name) == name else None
    names.update(given)
    return {scope: name for scope, name in names.items() if name is not None}


def place_scope(node: Node, value, field: str, held: Callable[[str], bool]) -> str:
    """A place at or below this node's as an operator types it (:func:`place_path`), or by the name of a
    node below it, where no place ``held`` here is meant (``hemei nodes list`` shows 府山街道 for
    yuecheng/fushan; ``府山街道/西小河社区`` is a place inside it)."""
    value = text(value, field, limit=MAX_SCOPE_LENGTH)
    try:
        path = place_path(node, value)
    except InvalidInput:
        path = None
    # A path to a place held here first: a node's name is its own choice (a street named after another's
    # path segment, or after this node's, must not take over what the operator typed; found in review).
    if path is not None and held(path):
        return path
    head, slash, below = value.partition("/")
    named = named_places(node).get(head)
    if named is not None and covers(node.scope, named):
        return parse_scope(named + slash + below)
    return path if path is not None else place_path(node, value)  # (raises, saying why)


def filter_scope(node: Node, scope: str | None, tables: tuple[str, ...]) -> str:
    """A place to report on: this node's scope by default, or a place inside it as :func:`place_scope`
    reads it (full, relative, or by a node's name: ``fushan/xihu`` or ``府山街道`` on 越城区 ... ``yuecheng``),
    where something is held: a node that synced here, or a row of ``tables``. A mistyped place would
    otherwise read as zeros, as if all were well there."""
    if not scope:
        return node.scope

    def held(place: str) -> bool:
        if place == node.scope or any(s and covers(place, s) for s in map(node.origin_scope, node.version_vector())):
            return True
        return any(node.conn.execute(f"SELECT 1 FROM [{table}] WHERE {in_subtree_sql()} LIMIT 1",
                                     subtree_params(place)).fetchone() for table in tables)

    parsed = place_scope(node, scope, "scope", held)
    if held(parsed):
        return parsed
    raise InvalidInput(f"nothing is held at {parsed} on this node (no node there synced here, no records there): "
                       f"check the place ({scope!r} was read as that, inside this node's {node.scope})")


def in_subtree_sql(column: str = "scope") -> str:
    """SQL that holds when ``column`` is the given scope or inside it (parameters: :func:`subtree_params`).

    Written as a range, so an index on the column is scanned only over the
    subtree: '0' is the character after '/', and the last clause drops
    siblings such as ``a-b`` that sort between ``a`` and ``a/``.
    """
    return f"([{column}] >= ? AND [{column}] < ? AND ([{column}] = ? OR [{column}] > ?))"


def subtree_params(scope: str) -> tuple:
    return scope, scope + "0", scope, scope + "/"


def one(node: Node, sql: str, params=()) -> dict | None:
    """The first row of a query as a dict, or ``None``."""
    rows = list(node.db.query(sql, params))
    return rows[0] if rows else None


def is_scoped_key(change, column: str) -> bool:
    """Whether ``change`` names its row by ``<the row's scope>|<value of column>``, a key anyone can
    compute (one row per node and code). Insert entries carry the value to compare; an honest update or
    delete carries its row's scope (:meth:`hemei.core.writer.Writer.update`), which is what is compared."""
    scope, _, value = change.pk.rpartition("|")
    return scope == change.scope and (change.op != "insert" or value == change.values.get(column))
