"""The sync transport, registered as a built-in plugin like any program module."""

from __future__ import annotations

from hemei.core import hookimpl

from . import commands
from .peers import anonymous_refusals, forks, invited_names, peers_status
from .schema import sync_migrations


@hookimpl
def register_migrations():
    return [sync_migrations]


@hookimpl
def register_routes():
    from . import server  # Starlette: imported by what serves or checks routes, not by every command

    return server.routes()


@hookimpl
def register_commands():
    return list(commands.COMMANDS)


@hookimpl
def place_names(node):
    return invited_names(node)


@hookimpl
def node_status(node, admin):
    status = {"peers": peers_status(node), "forks": forks(node)}
    if admin:  # callers' addresses: for the node's operator, not every API viewer
        status["refused_unauthenticated"] = anonymous_refusals(node)
    return status
