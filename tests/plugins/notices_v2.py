"""Release 2 of the "notices" module (release 1: notices_v1.py).

``phone`` became ``contact`` and ``urgent`` was added. A change written by
release 1 is read through :func:`from_v1`; release 1 keeps a change of this
release as a quarantined conflict until it is upgraded.
"""

from __future__ import annotations

from hemei.core import LWW, InvalidInput, ModuleSchema, TableSpec, hookimpl

NOTICES = TableSpec("notices", {"id": "text", "scope": "text", "title": "text", "contact": "text",
                                "urgent": "integer"},
                    policy=LWW, required=("title",))
#: A release-1 phone that this text marks cannot be upgraded (a test's way to make an upgrade fail).
UNREADABLE_PHONE = "不可读"


def from_v1(change):
    values = dict(change.values)
    if "phone" in values:
        if values["phone"] == UNREADABLE_PHONE:
            raise InvalidInput(f"phone {UNREADABLE_PHONE!r} cannot be read")
        values["contact"] = values.pop("phone")
    return change._replace(values=values)


@hookimpl
def register_tables():
    return [NOTICES]


@hookimpl
def module_schema():
    return ModuleSchema(version=2, upgrades={1: from_v1})
