"""``python -m hemei.cli`` runs the ``hemei`` command."""

from .main import main

main()
