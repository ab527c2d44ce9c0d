"""The node's HTTP API: a Starlette app declared as data.

Routes come from plugins (``register_routes``), the core's own included, as
:class:`ApiRoute` values. Every route goes through one wrapper that enforces
the body size limit, parses JSON, authenticates the bearer token and checks
the role, runs the handler in a worker thread with a
:class:`~hemei.core.node.Node` lent from a small pool, and
turns :class:`~hemei.core.errors.HemeiError` into a JSON error. Errors
always have the shape ``{"error": {"code": str, "message": str}}``. The
route table follows modules enabled or disabled while the server runs
(:class:`RouteTable`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sqlite3
import threading
import time
import urllib.parse
from operator import attrgetter
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route, Router

from .checkpoint import Checkpointer, checkpoint_at_commit, defer_checkpoints
from .errors import ClockNotSet, HemeiError, InvalidInput, NodeStateError
from .modules import NEWER_RELEASE, restart_needed, stored_module_settings
from .node import DB_NAME, Node
from .plugins import CORE_BUILTINS, Available, merge_named
from .routes import ApiCall, ApiRoute
from .slow_links import request_base_s, seconds_left, too_slow
from .users import authenticate, require_role

logger = logging.getLogger("hemei.api")
_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 413: "body_too_large", 415: "unsupported_media_type"}


class NodePool:
    """A few open :class:`Node` objects on one home, lent to worker threads one at a time.

    SQLite connections must not be shared by two threads at once, and each
    holds its own page cache: a small fixed pool (not one node per worker
    thread, of which Starlette may run dozens) keeps memory bounded.
    """

    def __init__(self, home, available: Available | None, builtins: tuple[str, ...], size: int = 4):
        self.home, self.available, self.builtins = home, available, builtins
        self._free: list[Node] = []
        self._all: list[Node] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(size)
        self._checkpointer: Checkpointer | None = None
        self._deferred: set[Node] = set()  # nodes whose commits leave the WAL to it

    def _open(self) -> Node:
        try:
            return Node.open(self.home, available=self.available, builtins=self.builtins)
        except NodeStateError as exc:
            if self._all and exc.code == NEWER_RELEASE:  # upgraded since this server opened its first node
                raise restart_needed(exc) from None
            raise

    def start_checkpointer(self) -> Checkpointer:
        """From now on the nodes this pool lends commit without checkpointing; the returned thread does it."""
        path = self.get().home / DB_NAME
        with self._lock:
            self._checkpointer = Checkpointer(path).start()
            return self._checkpointer

    def _checkpoint_mode(self, node: Node) -> None:
        """Defer checkpoints while the checkpointer runs; give SQLite's default back if it ended."""
        running = self._checkpointer is not None and self._checkpointer.is_alive()
        if running and node not in self._deferred:
            defer_checkpoints(node.conn)
            self._deferred.add(node)
        elif not running and node in self._deferred:
            logger.error("the WAL checkpoint thread has stopped: connections checkpoint at commit again")
            checkpoint_at_commit(node.conn)
            self._deferred.discard(node)

    def get(self) -> Node:
        """The pool's first node, for setup before serving (it is also lent out like the others later)."""
        with self._lock:
            if not self._all:
                node = self._open()
                self._all.append(node)
                self._free.append(node)
            return self._all[0]

    @contextlib.contextmanager
    def lend(self):
        self._slots.acquire()
        try:
            with self._lock:
                node = self._free.pop() if self._free else None
            if node is None:
                node = self._open()
                with self._lock:
                    self._all.append(node)
            self._checkpoint_mode(node)  # the node is this thread's until it goes back
            try:
                node.follow_modules()  # `hemei modules enable` or an upgrade beside the server
                yield node
            finally:
                if node.conn.in_transaction:  # a handler that failed mid-transaction
                    node.conn.execute("ROLLBACK")
                with self._lock:
                    self._free.append(node)
        finally:
            self._slots.release()

    def close(self) -> None:
        with self._lock:
            for node in self._all:
                node.close()
            self._all.clear()
            self._free.clear()


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _too_large(limit: int) -> HemeiError:
    return HemeiError(f"request body is larger than {limit} bytes", code="body_too_large", status=413)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, up to ``limit`` bytes, within the time core/slow_links.py gives a request: a caller that
    drips it, or whose PC went off mid-upload, no longer holds what came so far (up to ``limit``) and a
    socket for ever."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    base_s, started = request_base_s(), time.monotonic()
    arriving = request.stream().__aiter__()
    while True:
        left = seconds_left(time.monotonic() - started, size, base_s)
        try:
            chunk = await asyncio.wait_for(arriving.__anext__(), max(left, 0))
        except StopAsyncIteration:
            return b"".join(chunks)
        except asyncio.TimeoutError:
            raise HemeiError(f"the request's body came too slowly ({too_slow(time.monotonic() - started, size, base_s)})"
                             ": nothing of it was taken; send it again", code="request_timeout", status=408) from None
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)


class _MethodRoute(Route):
    """A route that does not claim a request of another method (Starlette's answer is 405 at once), so the
    router tries the routes after it, and then :func:`create_app`'s ``no_route``: a module enabled since
    may serve that method.

    Nor does a route with parameters claim a path that another route spells out (``GET /people/search``
    is not the person ``search``; it is a method ``/people/search`` does not serve: 405).
    """

    def __init__(self, *args, spelled_out: frozenset[str] = frozenset(), **kwargs):
        super().__init__(*args, **kwargs)
        self.spelled_out = spelled_out if self.param_convertors else frozenset()

    def matches(self, scope):
        match, child_scope = super().matches(scope)
        if match is Match.PARTIAL or (match is Match.FULL and scope["path"] in self.spelled_out):
            return Match.NONE, {}
        return match, child_scope


class RouteTable:
    """The app's routes: the core's and the enabled modules', built again when the node's modules change.

    Which :class:`ApiRoute` answers a routed request is looked up here again
    in the worker thread, after its node has followed the home, so a request
    never runs the handler of a module disabled since it was routed. A
    module enabled beside a running server (``hemei modules enable``) is
    served from the first request that finds no route for its path or
    method; a disabled module's routes answer 404 (405 if the path has other
    methods) from the first request that reaches one. Requests that find
    their route cost nothing more: every lent node follows the home's
    modules anyway (:meth:`NodePool.lend`). One that finds none costs a read
    of the home's module settings, and a lend only when they changed.
    """

    def __init__(self, pool: NodePool, router: Router):
        self.pool, self.router = pool, router
        self.api_routes: list[ApiRoute] = []
        self.document: dict = {}
        self._by_key: dict[tuple[str, str], ApiRoute] = {}
        self._settings: tuple | None = None
        self._unservable: tuple | None = None  # module settings whose routes clash: logged once, not retried
        self._lock = threading.Lock()
        self._watch: sqlite3.Connection | None = None  # reads the home's module settings: see current()
        self._watch_lock = threading.Lock()

    def build(self, node: Node) -> None:
        api_routes: list[ApiRoute] = merge_named(node.pm.hook.register_routes(), "route", attrgetter("key"))
        self.document, self.api_routes = openapi_document(node, api_routes), api_routes
        self._by_key = {r.key: r for r in api_routes}
        # Replaced whole, never changed in place: a request being routed keeps the list it started with.
        spelled_out = frozenset(r.path for r in api_routes if "{" not in r.path)
        self.router.routes = [_MethodRoute(r.path, _endpoint(r.key, self), methods=[r.key[0]], spelled_out=spelled_out)
                              for r in api_routes]
        self._settings = node.module_settings

    def find(self, key: tuple[str, str]) -> ApiRoute | None:
        return self._by_key.get(key)

    def no_route(self, scope) -> HemeiError:
        """The error for a request no route serves (now): 405 if its path has routes of other methods."""
        if any(Route.matches(route, scope)[0] is Match.PARTIAL for route in self.router.routes):
            return HemeiError(f"{scope['method']} is not served at {scope['path']}", code="method_not_allowed",
                              status=405)
        return HemeiError(f"no route {scope['path']}: is its module enabled?", code="not_found", status=404)

    def follow(self, node: Node) -> bool:
        """Build again if ``node`` (lent, so it follows the home) loaded other modules; True if built."""
        if node.module_settings in (self._settings, self._unservable):
            return False
        with self._lock:
            node.follow_modules()  # the latest: two nodes lent at once must not swap the table back and forth
            if node.module_settings in (self._settings, self._unservable):
                return False
            try:
                self.build(node)
            except HemeiError as exc:  # `hemei modules enable` refuses this; an older release may not have
                self._unservable = node.module_settings
                logger.error("the enabled modules' routes cannot be served together (%s): still serving the "
                             "routes of before; disable one of those modules", exc.message)
                return False
            return True

    def follow_lent(self) -> None:
        with self.pool.lend() as node:
            self.follow(node)

    def current(self) -> bool:
        """True while the home's module settings are the ones this table was built for (or could not be).

        Read on a connection of its own, not a node from the pool: a request
        that no route serves (a scanner's, say) neither waits for a node nor
        holds one that a push needs; only a change of modules costs a lend.
        """
        with self._watch_lock:
            try:
                if self._watch is None:
                    self._watch = sqlite3.connect(self.pool.get().home / DB_NAME, check_same_thread=False)
                settings = stored_module_settings(self._watch)
            except sqlite3.Error as exc:  # the caller still asked for a path nobody serves: its 404 stands
                logger.warning("could not read the enabled modules to route a request (%s): answered 404", exc)
                if self._watch is not None:
                    self._watch.close()
                    self._watch = None
                return True
        return settings in (self._settings, self._unservable)

    def close(self) -> None:
        with self._watch_lock:
            if self._watch is not None:
                self._watch.close()
                self._watch = None


_BOM = b"\xef\xbb\xbf"
#: Charsets a JSON body may declare: UTF-8, and ASCII, which is UTF-8.
_UTF8 = ("utf-8", "utf8", "us-ascii", "ascii", "")  # "": said as "charset=", nothing said


def _parsed(route: ApiRoute, raw: bytes, content_type: str | None) -> Any:
    """A JSON route's body, read as JSON in UTF-8 whatever the caller said it was, or refused saying why."""
    if route.raw:
        return None
    # A BOM is what Windows tools (Notepad, PowerShell) put before UTF-8: it says nothing here.
    text = raw[len(_BOM):] if raw.startswith(_BOM) else raw
    if not text.strip():
        return None
    media, *params = (content_type or "").split(";")
    media = media.strip().lower() or "application/json"
    if media != "application/json" and not media.endswith("+json"):
        # A form or text body read as JSON would be a guess; the caller's tool is set up wrong, say how.
        raise HemeiError(f"the request body must be JSON, sent with Content-Type: application/json "
                         f"(it came as {media})", code="unsupported_media_type", status=415)
    charsets = [value.strip().strip('"').lower() for name, _, value in (p.partition("=") for p in params)
                if name.strip().lower() == "charset"]
    if (other := next((charset for charset in charsets if charset not in _UTF8), None)) is not None:
        raise HemeiError(f"the request body must be JSON in UTF-8, Content-Type: application/json; charset=utf-8 "
                         f"(it came as {other})", code="unsupported_media_type", status=415)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if b"\x00" in text[:4] or _utf8_broken(text):
            raise InvalidInput("request body is not UTF-8: send JSON encoded as UTF-8 (GBK and UTF-16 are not read)",
                               code="invalid_json") from None
        raise InvalidInput(f"request body is not valid JSON ({exc})", code="invalid_json") from None


def _utf8_broken(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _endpoint(key: tuple[str, str], table: RouteTable):
    def run(routed: ApiRoute, request: Request, raw: bytes, body: Any):
        with table.pool.lend() as node:
            route = routed
            try:
                table.follow(node)
                route = table.find(key)  # the one served now: its module may have been disabled, or replaced
                if route is None:
                    raise table.no_route(request.scope)
                if route is not routed:  # read by the rules of the route it was routed to: read again by these
                    if len(raw) > route.max_body:
                        refuse(route, node, request, _too_large(route.max_body))
                    body = _parsed(route, raw, request.headers.get("content-type"))
                result = call(route, node, request, raw, body)
            except HemeiError as exc:
                if route is None or route.answered is None:
                    raise
                result = JSONResponse(exc.to_json(), status_code=exc.status)
            if route.answered is None:
                return result
            return route.answered(node, request, result if isinstance(result, Response) else _json(result))

    def refuse(route: ApiRoute, node: Node, request: Request, error: HemeiError):
        if route.refused is not None:
            route.refused(ApiCall(node=node, user=None, body=None, path_params=dict(request.path_params),
                                  query=dict(request.query_params), request=request), error)
        raise error

    def refused_unread(route: ApiRoute, request: Request, error: HemeiError) -> Response:
        with table.pool.lend() as node:
            try:
                refuse(route, node, request, error)
            except HemeiError as exc:
                if route.answered is None:
                    raise
                return route.answered(node, request, JSONResponse(exc.to_json(), status_code=exc.status))

    def call(route: ApiRoute, node: Node, request: Request, raw: bytes, body: Any):
        user = None if route.role is None else _user_of(node, request, route.role)
        call = ApiCall(node=node, user=user, body=body, path_params=dict(request.path_params),
                       query=_single_valued(request.query_params), request=request, raw_body=raw)
        return route.handler(call)

    def prechecked(route: ApiRoute, request: Request) -> Response | None:
        """None if the request may send its body (its token, or the route's precheck, lets it); else the
        answer to its refusal. Nobody unproven makes this node read a body: a request to a route with a role
        is authenticated again when its body has come (:func:`call`, by the route served then)."""
        with table.pool.lend() as node:
            try:
                if route.role is not None:
                    _user_of(node, request, route.role)
                if route.precheck is not None:
                    route.precheck(node, request)
                return None
            except HemeiError as exc:
                refusal = exc
        return refused_unread(route, request, refusal)

    async def endpoint(request: Request) -> Response:
        route = table.find(key)
        if route is None:
            raise table.no_route(request.scope)
        if (route.role is not None or route.precheck is not None) and _may_have_body(request):
            refused = await run_in_threadpool(prechecked, route, request)
            if refused is not None:
                return refused
        try:
            raw = await _read_body(request, route.max_body)
        except ClientDisconnect:  # a link that died mid-upload (a street's, often): nobody left to answer
            return Response(status_code=CLIENT_GONE)
        except HemeiError as exc:
            if route.refused is None and route.answered is None:
                raise
            return await run_in_threadpool(refused_unread, route, request, exc)
        result = await run_in_threadpool(run, route, request, raw,
                                         _parsed(route, raw, request.headers.get("content-type")))
        return result if isinstance(result, Response) else _json(result)

    return endpoint


#: The status the access log shows for a request whose caller went away before its body came (nginx's
#: "client closed request"; never seen by the caller).
CLIENT_GONE = 499


def _may_have_body(request: Request) -> bool:
    """Whether a body may follow the headers: a request without one (a GET) is not checked before its
    (absent) body is read, only once, by its handler."""
    return request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers


def _user_of(node: Node, request: Request, role: str) -> dict:
    """The user whose bearer token the request carries, if they have ``role``."""
    header = request.headers.get("authorization", "")
    user = authenticate(node, header[7:].strip() if header.lower().startswith("bearer ") else None)
    require_role(user, role)
    return user


def _single_valued(params) -> dict:
    """The query's parameters, each given once: of ``?grid=A&grid=B`` a route would read one and ignore
    the other without a word, so the caller hears which it repeated instead."""
    query = dict(params)
    if len(query) != len(params.multi_items()):
        repeated = next(name for name in query if len(params.getlist(name)) > 1)
        raise InvalidInput(f"query parameter {repeated!r} is given more than once: give it once")
    return query


def _json(result: Any) -> Response:
    return Response(orjson.dumps(result), media_type="application/json")


async def _hemei_error(request: Request, exc: HemeiError) -> Response:
    return JSONResponse(exc.to_json(), status_code=exc.status)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    return error_response(exc.status_code, _STATUS_CODES.get(exc.status_code, "http_error"), str(exc.detail))


async def _busy(request: Request, exc: sqlite3.OperationalError) -> Response:
    if "locked" in str(exc) or "busy" in str(exc):
        response = error_response(503, "busy", "the node is busy with a long write; try again shortly")
        response.headers["Retry-After"] = "5"
        return response
    return await _internal_error(request, exc)


async def _internal_error(request: Request, exc: Exception) -> Response:
    return error_response(500, "internal", "internal error; the node operator can find details in the server log")


#: Runs of digits as long as a phone number's or an ID number's core, also written with dashes or spaces
#: (139-0575-6789), masked in a path no route serves.
_LONG_DIGITS = re.compile(r"(?:\d[-\s]?){6,}[\dXx]?")


class RouteNotPath(logging.Filter):
    """Access log lines name each request's route (``/api/volunteers/people/{id}``), not its path and query.

    A caller may put an ID number or a phone in either (by mistake: hemei takes them only in bodies),
    and the server's output must not keep them in clear. A path no route serves is shown with its long
    runs of digits masked, and encoded again: decoded, a ``%0a`` in it would forge a line of the log.
    """

    def __init__(self, routes: RouteTable):
        super().__init__()
        self.routes = routes

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) == 5:  # uvicorn's: client, method, path, version, status
            client, method, logged, version, status = record.args
            record.args = (client, method, self.shown(str(method), str(logged)), version, status)
        return True

    def shown(self, method: str, logged: str) -> str:
        path = urllib.parse.unquote(logged.split("?", 1)[0])
        scope = {"type": "http", "path": path, "method": method}
        for route in self.routes.router.routes:
            if isinstance(route, Route) and route.matches(scope)[0] is not Match.NONE:
                return route.path
        return urllib.parse.quote(_LONG_DIGITS.sub("***", path), safe="/*")


def openapi_document(node: Node, routes: list[ApiRoute]) -> dict:
    paths: dict = {}
    for route in routes:
        op: dict = {"summary": route.summary or route.path, "tags": list(route.tags),
                    "responses": {"200": {"description": "JSON result"},
                                  "4XX": {"description": "error", "content": {"application/json": {
                                      "schema": {"$ref": "#/components/schemas/Error"}}}}}}
        if route.role is not None:
            op["security"] = [{"bearer": []}]
            op["description"] = f"Needs the {route.role} role."
        if route.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": route.body}}}
        params = [seg[1:-1].split(":")[0] for seg in route.path.split("/") if seg.startswith("{")]
        if params:
            op["parameters"] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                                for p in params]
        path = "/".join(seg.split(":")[0] + ("}" if ":" in seg else "") for seg in route.path.split("/"))
        paths.setdefault(path, {})[route.method.lower()] = op
    from hemei import __version__

    return {
        "openapi": "3.1.0",
        "info": {"title": f"hemei node {node.name}", "version": __version__},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}},
        },
    }


def tick_seconds() -> float:
    """Seconds between two ticks of a served node: ``HEMEI_TICK_SECONDS``, 60 by default."""
    try:
        return max(0.2, float(os.environ.get("HEMEI_TICK_SECONDS", "60")))
    except ValueError:
        return 60.0


async def _tick_every(pool: NodePool, seconds: float) -> None:
    """Run the modules' time-driven work (``Node.tick``) on a lent node, forever, logging failures."""
    def tick() -> list[str]:
        with pool.lend() as node:
            return node.tick()

    refused = None
    while True:
        await asyncio.sleep(seconds)
        try:
            for failure in await run_in_threadpool(tick):
                logger.warning("tick failed: %s", failure)
            refused = None
        except HemeiError as exc:  # the node's own state (it needs a restart, say): said once, not every tick
            if exc.message != refused:
                logger.warning("ticks stopped: %s", exc.message)
            refused = exc.message
        except Exception:  # e.g. the pool could not open a node: try again next time
            logger.exception("tick could not run")


def create_app(home=None, *, available: Available | None = None,
               builtins: tuple[str, ...] = CORE_BUILTINS) -> Starlette:
    """The Starlette app of the node at ``home``: core routes plus enabled modules' routes."""
    pool = NodePool(home, available, builtins)
    node = pool.get()  # fail now, not on the first request, if the home is unusable
    try:
        node.clock.set_now()
    except ClockNotSet as exc:  # it still serves reads; every write answers 503 clock_not_set until it is set
        logger.error("this server can write nothing: %s", exc.message)

    async def no_route(scope, receive, send) -> None:
        """No route matched: a module enabled since may have one, so the request is routed once more."""
        if scope["type"] == "http" and "hemei.rerouted" not in scope and not await run_in_threadpool(table.current):
            await run_in_threadpool(table.follow_lent)
            scope["hemei.rerouted"] = True
            await app.router.app(scope, receive, send)
            return
        if scope["type"] != "http":
            await app.router.not_found(scope, receive, send)
            return
        raise table.no_route(scope)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        checkpointer = pool.start_checkpointer()
        ticking = asyncio.create_task(_tick_every(pool, tick_seconds()))
        try:
            yield
        finally:
            ticking.cancel()
            # Waits for a tick running in a worker thread to finish before its node is closed.
            await asyncio.gather(ticking, return_exceptions=True)
            checkpointer.stop()
            table.close()
            pool.close()

    app = Starlette(
        exception_handlers={HemeiError: _hemei_error, HTTPException: _http_error, sqlite3.OperationalError: _busy,
                            Exception: _internal_error},
        lifespan=lifespan,
    )
    # A path with a trailing slash is not found, as any other unserved path, rather than redirected to a
    # Location built from the caller's Host header, with an empty body.
    app.router.redirect_slashes = False
    table = RouteTable(pool, app.router)
    table.build(node)
    app.router.default = no_route
    app.state.pool = pool
    app.state.routes = table
    return app
