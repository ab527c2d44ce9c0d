"""What a plugin declares of its HTTP routes (:class:`ApiRoute`) and what a handler receives (:class:`ApiCall`).

Declarations only: every command loads the plugins that declare routes, and
only ``hemei serve`` needs the web stack that serves them
(:mod:`hemei.core.api`), so Starlette is not imported here (it is about a
third of a command's start-up).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from .errors import HemeiError, InvalidInput
from .node import Node

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

DEFAULT_MAX_BODY = 1024 * 1024


@dataclass
class ApiCall:
    """What a route handler receives."""

    node: Node
    user: dict | None
    body: Any
    path_params: dict
    query: dict
    request: Request
    raw_body: bytes = b""

    @property
    def actor(self) -> str:
        """The name the caller's writes are logged under."""
        return self.user["name"] if self.user else "anonymous"

    def fields(self, allowed: set[str], required: tuple[str, ...] = ()) -> dict:
        """The JSON object body, refusing fields the route does not know and naming missing ones."""
        body = self.body if self.body is not None else {}
        if not isinstance(body, dict):
            raise InvalidInput("the request body must be a JSON object")
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise InvalidInput(f"unknown field(s): {', '.join(unknown)}; "
                               + (f"expected some of {', '.join(sorted(allowed))}" if allowed else
                                  "this route takes no fields (send {} or no body)"))
        missing = [f for f in required if body.get(f) in (None, "")]
        if missing:
            raise InvalidInput(f"missing field(s): {', '.join(missing)}")
        return body


@dataclass
class ApiRoute:
    """One HTTP route contributed by a plugin.

    ``role`` is the least role that may call it (``None``: public). ``body``
    is a JSON schema fragment for the OpenAPI document; ``raw`` hands the
    handler the undecoded body (``call.raw_body``) for non-JSON transports.
    A handler returns a dict or list (sent as JSON) or a starlette Response.
    ``refused(call, error)`` is told of a refusal its handler never saw (a
    body over ``max_body``; ``call.raw_body`` is then empty), for routes
    that record every refusal. ``answered(node, request, response)``
    finishes every answer of the route, refusals as JSON errors included
    (the sync routes sign theirs). ``precheck(node, request)`` runs on the
    request's headers before its body is read; what it refuses (a
    :class:`HemeiError`) is refused without reading the body (the sync
    routes check the signature there).
    """

    path: str
    method: str
    handler: Callable[[ApiCall], Any]
    role: str | None = "viewer"
    summary: str = ""
    body: dict | None = None
    max_body: int = DEFAULT_MAX_BODY
    raw: bool = False
    tags: tuple[str, ...] = field(default_factory=tuple)
    refused: Callable[[ApiCall, HemeiError], None] | None = None
    answered: Callable[[Node, Request, Response], Response] | None = None
    precheck: Callable[[Node, Request], None] | None = None

    @property
    def key(self) -> tuple[str, str]:
        """What two routes may not share: (METHOD, path)."""
        return self.method.upper(), self.path
