"""A module claiming the core's own GET /api/openapi.json: for tests/test_route_table.py."""

from hemei.core import ApiRoute, hookimpl


@hookimpl
def register_routes():
    return [ApiRoute("/api/openapi.json", "GET", lambda call: {"from": "route_openapi"}, role=None)]
