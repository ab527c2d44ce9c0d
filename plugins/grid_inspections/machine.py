"""The case state machine, and the fold that turns a case's events into its current state.

A case is one immutable row (what was reported, where, when, its deadline)
plus append-only events. Nothing stores "the state": every node computes it
by folding the events in one total order, the hybrid-clock order
``(hlc, origin)``. The clock orders an event after everything its writer had
seen, so the fold respects cause and effect; ties between events written
concurrently on two nodes fall to the clock, then the node id, which every
replica sees the same way. Each event is applied if, at its place in that
order,

* it is a legal transition from the state reached so far (``TRANSITIONS``),
* and its writer holds the case: the node of the level the case is at
  (grid, community and street levels are the street's node; the district
  level is the district's node). Only an evaluation, which records what the
  resident said, may come from the owning street as well as from the holder.

An event that fails either test is kept and shown with the reason it did
not apply; it changes nothing. So two nodes acting on one case offline
converge, after sync, to the state the first valid event in clock order
leads to, and every event written by anyone stays in the history.

This module is pure (no database): the same function runs on every node,
which is what lets a district recompute any street's figures exactly.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

LEVELS = ("grid", "community", "street", "district")
STATES = ("reported", "registered", "rejected", "duplicate", "dispatched", "in_progress", "handled", "verified",
          "closed", "evaluated")
#: States in which a case is still being worked on (may pass its deadline and be escalated).
OPEN_STATES = ("reported", "registered", "dispatched", "in_progress")
RATINGS = ("satisfied", "basically_satisfied", "dissatisfied")
#: Ratings counted as satisfied in the satisfaction rate (满意 + 基本满意).
SATISFIED = ("satisfied", "basically_satisfied")

#: event kind -> (states it may follow, state it leads to); escalate keeps its own rule below.
TRANSITIONS = {
    "register": (("reported",), "registered"),
    "reject": (("reported",), "rejected"),
    "duplicate": (("reported", "registered"), "duplicate"),
    "dispatch": (("registered",), "dispatched"),
    "start": (("dispatched",), "in_progress"),
    "handle": (("in_progress",), "handled"),
    "verify": (("handled",), "verified"),
    "rework": (("handled",), "dispatched"),
    "close": (("verified",), "closed"),
    "evaluate": (("closed",), "evaluated"),
    # Escalating passes the case to the next level, which dispatches it anew.
    "escalate": (OPEN_STATES, "registered"),
}
EVENT_KINDS = tuple(TRANSITIONS)
#: What each kind must carry besides its kind and time.
NEEDS = {"reject": "note", "duplicate": "duplicate_of", "dispatch": "assignee", "handle": "note",
         "rework": "note", "evaluate": "rating", "escalate": "level"}


def is_local_time(value) -> bool:
    """True for a time as every node stores it: ``YYYY-MM-DDTHH:MM:SS``, years 2000 to 2999."""
    if not isinstance(value, str) or len(value) != 19 or not "2000" <= value[:4] <= "2999":
        return False
    try:
        return dt.datetime.fromisoformat(value).isoformat() == value
    except ValueError:
        return False


def holder_scope(case: dict, level: str) -> str:
    """The scope of the node that acts on ``case`` while it is at ``level``."""
    return case["district"] if level == "district" else case["street"]


def due_after(start: str, hours: int) -> str:
    return (dt.datetime.fromisoformat(start) + dt.timedelta(hours=hours)).isoformat()


@dataclass
class CaseState:
    """Where a case stands after its events, and the moments the metrics are computed from."""

    state: str = "reported"
    level: str = "grid"
    level_since: str = ""
    #: Time of the last applied event (or the report): later steps may not be dated before it.
    last_at: str = ""
    assignee: str | None = None
    responded_at: str | None = None
    handled_at: str | None = None
    closed_at: str | None = None
    evaluated_at: str | None = None
    rating: str | None = None
    reworks: int = 0
    escalations: int = 0
    duplicate_of: str | None = None
    #: For each event in fold order: None if it applied, else why it did not.
    verdicts: list = field(default_factory=list)


def refusal(case: dict, current: CaseState, event: dict) -> str | None:
    """Why ``event`` cannot follow ``current`` (None when it can): the rule both for writing and for folding."""
    kind = event["kind"]
    if kind not in TRANSITIONS:
        return f"unknown event kind {kind!r}"
    if event.get("scope", case["scope"]) != case["scope"]:
        return f"the event is filed under {event['scope']}, not under the case's scope {case['scope']}"
    holder = holder_scope(case, current.level)
    acting = event["acting_scope"]
    if acting != holder and not (kind == "evaluate" and acting == case["street"]):
        if kind == "escalate" or current.level == "district":
            return f"the case is at {current.level} level, held by {holder}: only {holder} can {kind} it"
        return (f"the case is at {current.level} level, held by {holder}; {acting} cannot {kind} it unless "
                f"{holder} escalates it")
    sources, _ = TRANSITIONS[kind]
    if current.state not in sources:
        allowed = [k for k, (srcs, _) in TRANSITIONS.items() if current.state in srcs]
        return (f"cannot {kind} a case that is {current.state}; "
                + (f"it can be: {', '.join(allowed)}" if allowed else "nothing follows that state"))
    if kind == "escalate":
        target = event.get("level")
        if target not in LEVELS or LEVELS.index(target) <= LEVELS.index(current.level):
            higher = LEVELS[LEVELS.index(current.level) + 1:]
            if not higher:
                return f"the case is at {current.level} level already, the top: it cannot be escalated further"
            return f"escalate goes up from {current.level}: to one of {', '.join(higher)}"
    if kind == "evaluate" and event.get("rating") not in RATINGS:
        return f"rating must be one of {', '.join(RATINGS)}"
    return None


def apply(case: dict, current: CaseState, event: dict) -> None:
    """Apply an event that :func:`refusal` accepted."""
    kind, at = event["kind"], event["at"]
    current.state = TRANSITIONS[kind][1]
    current.last_at = max(current.last_at, at)
    if current.responded_at is None and not event.get("auto"):
        current.responded_at = at  # an escalation because nobody acted in time is not an answer
    if kind == "dispatch":
        current.assignee = event.get("assignee")
    elif kind == "handle":
        current.handled_at = at
    elif kind == "rework":
        current.reworks += 1
        current.handled_at = None
    elif kind == "close":
        current.closed_at = at
    elif kind == "evaluate":
        current.evaluated_at, current.rating = at, event["rating"]
    elif kind == "duplicate":
        current.duplicate_of = event.get("duplicate_of")
    elif kind == "escalate":
        current.level, current.level_since = event["level"], at
        current.escalations += 1
        current.assignee = None


def fold(case: dict, events: list[dict]) -> CaseState:
    """The state of ``case`` after ``events``, taken in ``(hlc, origin)`` order."""
    current = CaseState(level_since=case["reported_at"], last_at=case["reported_at"])
    for event in sorted(events, key=lambda e: (e["_hlc"], e["_origin"])):
        reason = refusal(case, current, event)
        if reason is None:
            apply(case, current, event)
        current.verdicts.append(reason)
    return current


def level_due(case: dict, current: CaseState) -> str:
    """When the level holding the case must have handled it: each level gets the category's time anew."""
    return due_after(current.level_since or case["reported_at"], case["deadline_hours"])


def next_level(level: str) -> str | None:
    i = LEVELS.index(level)
    return LEVELS[i + 1] if i + 1 < len(LEVELS) else None
