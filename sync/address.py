"""A node's address as operators type it (`hemei invite --url`, `hemei sync --url`, a token's URL):
checked, and spelt one way, before it is used, kept or put in a token."""

from __future__ import annotations

from hemei.core.errors import InvalidInput


def node_address(url: str) -> str:
    """``url`` as ``scheme://host[:port][/path]`` (scheme and host in lower case, no trailing ``/``), or
    :class:`InvalidInput` saying what is wrong with it."""
    import httpx  # the HTTP client is imported by the commands that use it, not by every command

    try:
        if "：" in url:  # typed with a Chinese input method on
            raise ValueError("it has a full-width colon ：, type the ASCII colon : instead")
        url = url.strip()
        if url.endswith("#"):  # an empty fragment: nothing is sent for it (and 0.1.0 took it), dropped
            url = url[:-1]
        if "?" in url or "#" in url:  # even a bare ?: httpx would send the path after it as a query
            raise ValueError("put no ? or # part in it")
        address = httpx.URL(url)
        if address.scheme not in ("http", "https") or not address.host:
            raise ValueError("it must start with http:// or https:// and name a host")
        if address.userinfo:  # it would be stored and shown with the peers
            raise ValueError("put no user name or password in it")
        if address.port is not None and not 0 < address.port < 65536:
            raise ValueError("a port is a number from 1 to 65535")
    except (httpx.InvalidURL, ValueError) as exc:
        raise InvalidInput(f"{url!r} is not an address such as http://district.example:8340 ({exc})") from None
    return str(address).rstrip("/")
