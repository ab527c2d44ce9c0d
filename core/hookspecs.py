"""The hooks a hemei plugin can implement. This module is their reference.

Implement a hook with ``@hemei.core.hookimpl`` on a function of the same
name in your plugin module; the parameters you name are the ones you get
(pluggy passes only those, always by keyword, and a parameter name means the
same object in every hook). A misspelt hook name fails when the node starts.

Hooks come in three families:

* ``register_*`` hooks return lists that the host merges; two plugins
  contributing the same name (table, route, command) is an error at start.
* ``validate_change`` is *firstresult*: the first reason given refuses.
* ``change_applied`` and ``report_sections`` are called on every plugin.

See ``docs/plugins.md`` for a walk-through and ``tests/plugins/hook_probe.py``
for a plugin that implements every hook.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:  # annotations only: hookspecs import nothing at run time
    import click

    from .routes import ApiRoute
    from .merge import Change
    from .node import Node
    from .reports import ReportSection
    from .schema import MigrationSet, TableSpec
    from .versions import ModuleSchema

hookspec = pluggy.HookspecMarker("hemei")


# ---------------------------------------------------------------------------
# Data: tables, merge policies, migrations
# ---------------------------------------------------------------------------

@hookspec
def register_tables() -> list[TableSpec]:
    """Declare the synced tables this plugin owns, each with its merge policy.

    Called when a node opens or the plugin is enabled. The core creates each
    table (plus hidden version columns) and adds columns that a newer
    declaration adds; rows reach it only through the node's write API and
    sync. Table names are global: two plugins declaring one name fail.

    Return a list of :class:`hemei.core.TableSpec`.
    """


@hookspec
def register_migrations() -> list[MigrationSet]:
    """Return :class:`hemei.core.MigrationSet` objects for schema steps beyond declared tables.

    Indexes, local-only tables, data moves. Each set is named (use the
    plugin's name); steps run once, in order, each in its own transaction,
    after the plugin's tables exist, and are recorded in ``_hemei_migrations``.
    """


@hookspec
def module_schema() -> ModuleSchema:
    """Return this module's :class:`hemei.core.ModuleSchema`: its schema version and upgrade steps.

    Raise the version whenever a change written by a new release could not
    be read by an old one (a new column, a renamed or re-encoded one). Nodes
    of one tree may run different releases: a change written under an older
    version is read through ``upgrades``; one written under a newer version
    is kept as a ``quarantined`` conflict until this node is upgraded, and
    opening a node whose module version rose replays that module's tables.
    A module that does not implement this hook is at version 1.
    """


# ---------------------------------------------------------------------------
# Interfaces: HTTP routes and CLI commands
# ---------------------------------------------------------------------------

@hookspec
def register_routes() -> list[ApiRoute]:
    """Return :class:`hemei.core.ApiRoute` objects to serve under ``hemei serve``.

    Called when the app is built; only enabled plugins contribute. Each
    route names the role it needs (``viewer``, ``operator``, ``admin`` or
    ``None`` for public), a summary for the OpenAPI document, and a handler
    ``handler(call: ApiCall) -> dict | list`` run in a worker thread with a
    node of its own. Raise :class:`hemei.core.HemeiError` for the caller's
    mistakes: they become 4xx JSON errors.
    """


@hookspec
def register_commands() -> list[click.Command]:
    """Return click commands (usually one group) to add to the ``hemei`` command.

    Only enabled plugins contribute. Get the open node inside a command with
    ``hemei.core.cli_node()`` (``ctx.obj``); the help text of every command
    should end with an example.
    """


# ---------------------------------------------------------------------------
# Changes: validation and reactions
# ---------------------------------------------------------------------------

@hookspec(firstresult=True)
def validate_change(node: Node, change: Change) -> str | None:
    """Refuse a row change by returning a reason, or return None to accept it.

    Asked only about changes to the tables this plugin declares in
    :func:`register_tables` (each module judges its own rows). Called inside
    the write transaction, before the change is applied, for
    local writes and for entries from other nodes alike. A refused local
    write raises an error and nothing of the transaction is written. A
    refused remote change stays in the log (the chain must stay whole) and
    is listed by ``hemei conflicts`` with the reason; it is never dropped.

    For replicas to converge, the answer should depend on the change and on
    rows that every replica holding the change also holds; say so in your
    plugin's docs where it cannot.
    """


@hookspec
def change_applied(node: Node, changes: list[Change]) -> None:
    """React to row changes that took effect, once per committed batch.

    Called after the transaction that applied them committed (a local
    ``with node.writer()`` block, or one received batch), never during
    ``hemei rebuild``. Writes made here are new local entries of their own.
    An error raised here is logged and fails nothing (the changes are
    committed): the module is told of its tables through ``tables_rebuilt``
    at the next start or rebuild, to catch up there.
    """


@hookspec
def tick(node: Node) -> None:
    """Do time-driven work: called about once a minute while ``hemei serve``
    runs (``HEMEI_TICK_SECONDS``), and in every ``hemei sync`` round once the
    parent has confirmed this PC's clock (before the push).

    The grid module escalates cases whose deadline passed. Writes made here
    are new local entries. An error raised here is logged and does not stop
    the server or the sync; the next tick tries again.
    """


@hookspec
def tables_rebuilt(node: Node, tables: list[str]) -> None:
    """The named state tables were just recomputed from the log.

    After every replay: ``hemei rebuild``, enabling the module, an upgrade.
    A module that keeps local tables derived from its synced ones (a cache
    of each case's current state, say) recomputes them here, since
    ``change_applied`` is not called during a replay. If this raises, it is
    called again at the next open or rebuild: recompute, do not append.
    """


@hookspec
def place_names(node: Node) -> list[tuple[str, str]]:
    """Names an operator knows places by, as ``(name, scope)`` pairs this plugin holds.

    The sync transport gives the name each enrolled child was invited as
    (``hemei nodes list`` shows 府山街道 for ``yuecheng/fushan``). They come
    before the names nodes gave themselves (``node.init``) where program
    modules read a place an operator typed (:func:`hemei.core.fields.place_scope`).
    """


# ---------------------------------------------------------------------------
# Status and reports
# ---------------------------------------------------------------------------

@hookspec
def node_status(node: Node, admin: bool) -> dict:
    """Add keys to ``hemei status --json`` (and ``GET /api/status``).

    Return a dict whose keys are merged into the status document; the sync
    transport adds ``peers`` and ``forks`` this way. Keys must not clash with
    the core's (``node_id``, ``name``, ``scope``, ``home``, ``modules``,
    ``module_versions``, ``missing_modules``, ``log``, ``conflicts``,
    ``waiting``) or another plugin's. ``admin`` is false when an API caller
    below the admin role reads it: leave out what only the node's operator
    should see (paths on the PC, addresses of callers). Take the argument
    only if you need it.
    """


@hookspec
def report_sections(node: Node, scope: str) -> list[ReportSection]:
    """Contribute sections to ``hemei report`` for the org subtree ``scope``.

    Compute from synced rows only, so that a district gets the same figures
    whichever order its streets synced in. Return a list of
    :class:`hemei.core.ReportSection`.
    """
