"""A module serving hook_probe's listing route (GET /api/probe/notes), public: for tests/test_route_table.py."""

from hemei.core import ApiRoute, hookimpl


@hookimpl
def register_routes():
    return [ApiRoute("/api/probe/notes", "GET", lambda call: {"from": "route_successor"}, role=None)]
