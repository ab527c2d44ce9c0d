"""Durations typed by operators: ``90s``, ``30m``, ``1h``, ``7d``."""

from __future__ import annotations

import re

import click

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Duration(click.ParamType):
    name = "duration"

    def convert(self, value, param, ctx) -> int:
        if isinstance(value, int):
            return value
        match = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", str(value))
        if not match or int(match.group(1)) == 0:
            self.fail(f"{value!r} is not a duration such as 30m, 1h or 7d", param, ctx)
        return int(match.group(1)) * _UNITS[match.group(2)]
