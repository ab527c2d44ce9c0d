"""hemei (和美): an offline-first sync server for community governance.

The code lives in four sub-packages: ``hemei.core`` (node, log, store, plugin
host), ``hemei.sync`` (enrollment and sync between nodes), ``hemei.plugins``
(program modules) and ``hemei.cli`` (the ``hemei`` command).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hemei")
except PackageNotFoundError:  # running from a checkout that was not installed
    __version__ = "0+unknown"
