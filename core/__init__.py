"""hemei core: node identity, the signed log, merge policies, the plugin host.

Plugins import what they need from here::

    from hemei.core import hookimpl, TableSpec, LWW, APPEND_ONLY, ApiRoute, HemeiError
"""

from .cli_support import cli_actor, cli_node, emit, json_option
from .errors import (ChainError, ClockNotSet, ClockSkew, Conflict, Forbidden, HemeiError, InvalidInput,
                     NodeStateError, NotFound, Unauthorized)
from .merge import Change
from .node import Batch, Node
from .plugins import hookimpl
from .reports import ReportSection
from .routes import ApiCall, ApiRoute
from .schema import APPEND_ONLY, LWW, MigrationSet, TableSpec
from .versions import ModuleSchema

__all__ = [
    "APPEND_ONLY", "LWW", "ApiCall", "ApiRoute", "Batch", "ChainError", "Change", "ClockNotSet", "ClockSkew",
    "Conflict", "Forbidden", "HemeiError", "InvalidInput", "MigrationSet", "ModuleSchema", "Node", "NodeStateError", "NotFound",
    "ReportSection", "TableSpec", "Unauthorized", "cli_actor", "cli_node", "create_app", "emit", "hookimpl",
    "json_option",
]


def __getattr__(name: str):
    # The web stack is imported by what serves (``hemei serve``), not by every command that loads plugins.
    if name == "create_app":
        from .api import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
