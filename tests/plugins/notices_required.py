"""A release 2 of "notices" that makes a new column required with no upgrade step (release 1: notices_v1.py).

Its module forgot to fill ``lang`` for changes release 1 wrote; what release 1
wrote must still be read, not kept as unreadable (found in review).
"""

from __future__ import annotations

from hemei.core import LWW, ModuleSchema, TableSpec, hookimpl

NOTICES = TableSpec("notices", {"id": "text", "scope": "text", "title": "text", "phone": "text", "lang": "text"},
                    policy=LWW, required=("title", "lang"))


@hookimpl
def register_tables():
    return [NOTICES]


@hookimpl
def module_schema():
    return ModuleSchema(version=2)
