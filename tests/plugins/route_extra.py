"""A module adding POST beside the core's GET /api/health, and a literal path after a parameter path of
another method (Starlette must fall through to it): for tests/test_route_table.py."""

from hemei.core import ApiRoute, hookimpl


@hookimpl
def register_routes():
    return [ApiRoute("/api/health", "POST", lambda call: {"from": "route_extra"}, role=None),
            ApiRoute("/api/extra/{item}", "GET", lambda call: {"item": call.path_params["item"]}, role=None),
            ApiRoute("/api/extra/search", "POST", lambda call: {"searched": True}, role=None)]
