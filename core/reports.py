"""Report sections contributed by plugins (``report_sections`` hook)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ReportSection:
    """One titled part of ``hemei report``: a module's figures for a scope.

    ``rows`` is a table (list of dicts with the same keys) that the CLI
    prints as columns and ``--json`` emits as is; ``totals`` is a flat dict.
    """

    module: str
    title: str
    totals: dict = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"module": self.module, "title": self.title, "totals": self.totals, "rows": self.rows}
