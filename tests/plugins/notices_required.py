"""A release 2 of "notices" that makes a new column required (release 1: notices_v1.py).

Making a column required is a change of shape: its upgrade step fills the
column for changes release 1 wrote, or they would be kept as unreadable.
"""

from __future__ import annotations

from hemei.core import LWW, ModuleSchema, TableSpec, hookimpl

NOTICES = TableSpec("notices", {"id": "text", "scope": "text", "title": "text", "phone": "text", "lang": "text"},
                    policy=LWW, required=("title", "lang"))
#: Set by a test to leave the step out (the mistake the plugin guide warns of).
STEPS = {1: lambda change: change._replace(values={"lang": "zh", **change.values}) if change.op == "insert"
         else change}


@hookimpl
def register_tables():
    return [NOTICES]


@hookimpl
def module_schema():
    return ModuleSchema(version=2, upgrades=dict(STEPS))
