"""Scopes: `/`-separated org paths such as ``yuecheng/fushan/xihu``.

A scope names where a row belongs in the tree of offices. Segments are
Unicode (``越城区/府山街道``) so staff can use the names they use every day;
what is refused is what would make paths ambiguous or unsafe to print:
empty segments, surrounding slashes, whitespace, control characters.
"""

from __future__ import annotations

import functools
import unicodedata

from .errors import InvalidInput

MAX_SCOPE_LENGTH = 512
MAX_SEGMENT_LENGTH = 64
_ALLOWED_PUNCTUATION = set("-_.")


def parse_scope(text: str, *, received: bool = False) -> str:
    """Return the canonical (NFC) form of ``text`` or raise :class:`InvalidInput`.

    ``received``: a scope another node wrote, whose Python may know a newer Unicode than this one (3.11
    has Unicode 14, 3.13 has 15.1: a rare character of a village's name is a letter there and unassigned
    here), so a character this Python does not know is taken as the writer's letter.
    """
    if not isinstance(text, str):
        raise InvalidInput("scope must be text: give an org path such as yuecheng/fushan/xihu")
    return _parse_scope(text, received)


@functools.lru_cache(maxsize=4096)  # a node sees few distinct scopes, and writes check one per row
def _parse_scope(text: str, received: bool = False) -> str:
    if not text:
        raise InvalidInput("scope is empty: give an org path such as yuecheng/fushan/xihu")
    scope = unicodedata.normalize("NFC", text)
    if len(scope) > MAX_SCOPE_LENGTH:
        raise InvalidInput(f"scope is longer than {MAX_SCOPE_LENGTH} characters")
    if scope.startswith("/") or scope.endswith("/"):
        raise InvalidInput(f"scope {text!r} must not start or end with '/'")
    for segment in scope.split("/"):
        if not segment:
            raise InvalidInput(f"scope {text!r} has an empty segment ('//')")
        if len(segment) > MAX_SEGMENT_LENGTH:
            raise InvalidInput(f"scope segment {segment!r} is longer than {MAX_SEGMENT_LENGTH} characters")
        if segment in (".", ".."):
            raise InvalidInput(f"scope segment {segment!r} is not allowed")
        for ch in segment:
            if ch in _ALLOWED_PUNCTUATION:
                continue
            category = unicodedata.category(ch)
            if category[0] not in ("L", "N", "M") and not (received and category == "Cn"):
                raise InvalidInput(
                    f"scope {text!r} contains {ch!r}: use letters, digits, '-', '_' or '.' between '/'"
                )
    return scope


def covers(outer: str, inner: str) -> bool:
    """True when ``inner`` is ``outer`` or lies inside it (``a/b`` covers ``a/b/c``)."""
    return inner == outer or inner.startswith(outer + "/")


def related(a: str, b: str) -> bool:
    """True when one scope covers the other: on the same root-to-leaf path."""
    return covers(a, b) or covers(b, a)
