"""A program module at two releases, for tests/test_versions.py: this is release 1.

Release 1 of "notices" keeps a contact phone in ``phone``; release 2
(notices_v2.py) calls it ``contact`` and adds ``urgent``. Both register
under the one module name ``notices``, as a real upgrade would.
"""

from __future__ import annotations

from hemei.core import LWW, TableSpec, hookimpl

NOTICES = TableSpec("notices", {"id": "text", "scope": "text", "title": "text", "phone": "text"},
                    policy=LWW, required=("title",))


@hookimpl
def register_tables():
    return [NOTICES]
