"""The HTTP transport of a link to a parent: no request may stall for good.

httpx's timeouts bound each read and each write on the socket, not a
request. Something at the parent's address that drips a byte a second (a
broken proxy, a captive portal, a hostile host) kept ``hemei sync`` waiting
for ever, and ``sync --watch`` with it (found by a fuzzer). Here a request
has the budget of core/slow_links.py: a minute, and a second more for every
KiB it has moved either way. No read or write on its socket waits longer
than what is left, so a request ends within its base time plus what its
bytes earned, however the other side paces them.

Proxies are those of the PC (``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY``,
and on Windows the system's settings, as ``urllib`` reads them), as httpx
would use them; the budget applies to a proxied link too. Looking up the
parent's name is left to the PC's resolver, which bounds it itself.
"""

from __future__ import annotations

import re
import ssl
import time
import urllib.request

import httpcore
import httpx

from hemei.core.errors import InvalidInput
from hemei.core.slow_links import MIN_RATE, request_base_s, seconds_left, too_slow

#: Writes are made in pieces this big so that a slow upload is cut on time too.
WRITE_PIECE = 64 * 1024


class Budget:
    """The time one request has left: restarted by the transport for every request (a link sends one
    request at a time)."""

    def __init__(self, base_s: float, min_rate: float):
        self.base_s = base_s
        self.min_rate = min_rate
        self.start()

    def start(self) -> None:
        self.started = time.monotonic()
        self.moved = 0
        self.ran_out = False  # the request was given up for its budget (not for a socket's own timeout)

    def wait(self, timeout: float | None, out_of_time: type[Exception]) -> float:
        """How long the next read or write may wait: the socket's own timeout, cut to what is left."""
        left = seconds_left(time.monotonic() - self.started, self.moved, self.base_s, self.min_rate)
        if left <= 0:
            raise self.exhausted(out_of_time)
        return left if timeout is None else min(timeout, left)

    def exhausted(self, out_of_time: type[Exception]) -> Exception:
        self.ran_out = True
        return out_of_time(f"too slow: {self.said()}")

    def said(self) -> str:
        return too_slow(time.monotonic() - self.started, self.moved, self.base_s, self.min_rate)


class _BudgetedStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, budget: Budget):
        self._inner = inner
        self._budget = budget

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = self._within(lambda wait: self._inner.read(max_bytes, wait), timeout, httpcore.ReadTimeout)
        self._budget.moved += len(data)
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        for at in range(0, len(buffer), WRITE_PIECE):
            piece = buffer[at:at + WRITE_PIECE]
            self._within(lambda wait: self._inner.write(piece, wait), timeout, httpcore.WriteTimeout)
            self._budget.moved += len(piece)

    def _within(self, operation, timeout: float | None, out_of_time: type[Exception]):
        wait = self._budget.wait(timeout, out_of_time)
        try:
            return operation(wait)
        except httpcore.TimeoutException:
            if timeout is not None and wait >= timeout:
                raise  # the socket's own timeout: nothing came for that long
            raise self._budget.exhausted(out_of_time) from None  # the budget ran out while waiting

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        timeout = self._budget.wait(timeout, httpcore.ConnectTimeout)
        return _BudgetedStream(self._inner.start_tls(ssl_context, server_hostname, timeout), self._budget)

    def get_extra_info(self, info: str):
        return self._inner.get_extra_info(info)


class _BudgetedBackend(httpcore.NetworkBackend):
    def __init__(self, budget: Budget):
        self._budget = budget
        self._backend = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options=None) -> httpcore.NetworkStream:
        timeout = self._budget.wait(timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return _BudgetedStream(stream, self._budget)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options=None) -> httpcore.NetworkStream:  # pragma: no cover - unused
        raise httpcore.UnsupportedProtocol("a link to a parent is TCP")

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


#: httpcore's errors as the httpx ones callers catch, the most specific first.
_ERRORS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


def _raise_as_httpx(exc: Exception) -> None:
    for core_error, httpx_error in _ERRORS:
        if isinstance(exc, core_error):
            raise httpx_error(str(exc)) from exc
    raise exc


class _Body(httpx.SyncByteStream):
    def __init__(self, stream):
        self._stream = stream

    def __iter__(self):
        try:
            yield from self._stream
        except Exception as exc:
            _raise_as_httpx(exc)

    def close(self) -> None:
        self._stream.close()


def proxy_for(url: httpx.URL) -> httpx.Proxy | None:
    """The HTTP proxy this PC sets for ``url``, if any, read as httpx reads it (``host:port`` is
    ``http://host:port``; ``user:password@`` is sent as Proxy-Authorization)."""
    if urllib.request.proxy_bypass(url.host):
        return None
    proxies = urllib.request.getproxies()
    setting = proxies.get(url.scheme) or proxies.get("all")
    if not setting:
        return None
    said = (f"this PC's proxy setting for {url.scheme} ({_without_password(setting)!r}, from HTTP_PROXY, "
            "HTTPS_PROXY or ALL_PROXY, or the system's Internet settings)")
    try:
        proxy = httpx.Proxy(setting if "://" in setting else "http://" + setting)
    except (httpx.InvalidURL, ValueError) as exc:
        raise InvalidInput(f"{said} is not a proxy address such as http://proxy.example:8080 ({exc}): correct it, "
                           "or name the parent's host in NO_PROXY") from None
    if proxy.url.scheme not in ("http", "https"):
        raise InvalidInput(f"{said} is a {proxy.url.scheme} proxy, which hemei does not use: set an HTTP proxy, "
                           "or name the parent's host in NO_PROXY") from None
    return proxy


def _without_password(setting: str) -> str:
    return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", setting)


class LinkTransport(httpx.BaseTransport):
    """Requests to one parent, each within its :class:`Budget`."""

    def __init__(self, url: str, verify: bool | ssl.SSLContext, base_s: float | None = None,
                 min_rate: float = MIN_RATE):
        self.budget = Budget(request_base_s() if base_s is None else base_s, min_rate)
        backend = _BudgetedBackend(self.budget)
        ssl_context = httpx.create_ssl_context(verify=verify)
        proxy = proxy_for(httpx.URL(url))
        if proxy is None:
            self._pool: httpcore.ConnectionPool = httpcore.ConnectionPool(
                ssl_context=ssl_context, network_backend=backend)
        else:
            self._pool = httpcore.HTTPProxy(
                proxy_url=httpcore.URL(scheme=proxy.url.raw_scheme, host=proxy.url.raw_host, port=proxy.url.port,
                                       target=proxy.url.raw_path),
                proxy_auth=proxy.raw_auth, proxy_headers=proxy.headers.raw, ssl_context=ssl_context,
                network_backend=backend)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.budget.start()
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=request.url.raw_scheme, host=request.url.raw_host, port=request.url.port,
                             target=request.url.raw_path),
            headers=request.headers.raw, content=request.stream, extensions=request.extensions)
        try:
            answer = self._pool.handle_request(core_request)
        except Exception as exc:
            _raise_as_httpx(exc)
        return httpx.Response(status_code=answer.status, headers=answer.headers, stream=_Body(answer.stream),
                              extensions=answer.extensions)

    def close(self) -> None:
        self._pool.close()
