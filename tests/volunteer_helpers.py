"""What the volunteer-hours tests share: an organiser, valid ID numbers, hours served in one step."""

from __future__ import annotations

from hemei.plugins.volunteer_hours import ledger, pii, registry

ACTOR = "organiser"


def id_number(serial: int, born: str = "19800101", region: str = "330602") -> str:
    """A valid resident ID number (its check character right), one per ``serial`` below 1000."""
    first17 = f"{region}{born}{serial % 1000:03d}"
    return first17 + pii.id_check_char(first17)


def served(node, volunteer: str, hours: float, title: str = "助老理发", date: str = "2026-11-20",
           category: str = "daily_care") -> str:
    """An activity added and ``hours`` of ``volunteer`` logged for it, confirmed: the entry's id."""
    act = registry.add_activity(node, ACTOR, title=title, category=category, date=date)
    return ledger.log_hours(node, ACTOR, activity=act["id"], volunteer=volunteer, hours=hours, confirm=True)["id"]
