"""The core's own built-in plugin: health, status, audit, conflict and OpenAPI routes.

Registered like any program module (by :func:`get_plugin_manager`), so the
core's features reach the app through the same hooks as everyone's.
"""

from __future__ import annotations

import time

from .routes import ApiCall, ApiRoute
from .audit import audit_log, list_conflicts, verify_log
from .errors import InvalidInput
from .plugins import hookimpl
from .users import ROLE_RANK


def health(call: ApiCall) -> dict:
    # The time lets a peer with a wrong clock sign requests with this node's time.
    return {"ok": True, "node_id": call.node.id, "name": call.node.name, "time_ms": time.time_ns() // 1_000_000}


def status(call: ApiCall) -> dict:
    return call.node.status(admin=ROLE_RANK[call.user["role"]] >= ROLE_RANK["admin"])


def conflicts(call: ApiCall) -> list:
    return list_conflicts(call.node, call.query.get("table"))


def log(call: ApiCall) -> list:
    limit = call.query.get("limit", "50")
    if not (limit.isascii() and limit.isdigit()) or len(limit) > 9:
        raise InvalidInput("limit must be a whole number")
    return audit_log(call.node, actor=call.query.get("actor"), kind=call.query.get("kind"),
                     table=call.query.get("table"), since=call.query.get("since"), limit=int(limit))


def verify(call: ApiCall) -> dict:
    return verify_log(call.node)


def openapi(call: ApiCall) -> dict:
    # Registered here like every route, so a module that claims this path is refused as a clash.
    return call.request.app.state.routes.document


@hookimpl
def register_routes() -> list[ApiRoute]:
    return [
        ApiRoute("/api/health", "GET", health, role=None, summary="Liveness and node id", tags=("core",)),
        ApiRoute("/api/status", "GET", status, summary="Node id, scope, modules, log size and head", tags=("core",)),
        ApiRoute("/api/conflicts", "GET", conflicts, summary="Changes kept but not applied, with reasons",
                 tags=("core",)),
        ApiRoute("/api/audit/log", "GET", log, role="admin", summary="Who did what, newest first", tags=("audit",)),
        ApiRoute("/api/audit/verify", "GET", verify, role="admin", summary="Re-check every chain and checkpoint",
                 tags=("audit",)),
        ApiRoute("/api/openapi.json", "GET", openapi, role=None, summary="This document", tags=("core",)),
    ]
