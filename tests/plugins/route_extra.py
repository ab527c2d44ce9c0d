"""A module adding POST beside the core's GET /api/health: for tests/test_route_table.py."""

from hemei.core import ApiRoute, hookimpl


@hookimpl
def register_routes():
    return [ApiRoute("/api/health", "POST", lambda call: {"from": "route_extra"}, role=None)]
