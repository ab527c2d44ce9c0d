"""Errors that reach users.

Every failure a user can cause is a :class:`HemeiError` with a stable
``code`` (for scripts and the HTTP API) and a human ``message``. The CLI prints
the message; the HTTP API answers ``{"error": {"code", "message"}}`` with
``status``. Anything else that escapes is a bug.
"""

from __future__ import annotations


class HemeiError(Exception):
    """A failure caused by input, state or environment, never by a bug."""

    code = "error"
    status = 400

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def to_json(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


class InvalidInput(HemeiError):
    code = "invalid_input"
    status = 400


class NotFound(HemeiError):
    code = "not_found"
    status = 404


class Conflict(HemeiError):
    """The change contradicts what the node already holds."""

    code = "conflict"
    status = 409


class Unauthorized(HemeiError):
    code = "unauthorized"
    status = 401


class Forbidden(HemeiError):
    code = "forbidden"
    status = 403


class ScopeViolation(Forbidden):
    """An entry reaches outside the part of the tree its writer (or sender) stands for."""

    code = "scope_violation"


class ChainError(HemeiError):
    """A log segment or checkpoint does not verify."""

    code = "chain_invalid"
    status = 422


class ChainGap(ChainError):
    """Entries that start past what this node holds of their origin: the sender thinks it holds more
    (restored from a backup since). Same code on the wire; a bundle import answers it with its state."""


class ClockSkew(HemeiError):
    """An entry is stamped implausibly far in the future.

    ``writer``: the node id of the origin that wrote it, when known; on the wire beside the message, so
    a sender can tell its own entries refused from ones it relayed without reading the message's words.
    """

    code = "clock_skew"
    status = 422
    writer: str | None = None

    def to_json(self) -> dict:
        body = super().to_json()
        if self.writer is not None:
            body["error"]["writer"] = self.writer
        return body


class ClockNotSet(HemeiError):
    """This node's own clock reads a date before any release ran: the PC's clock was reset."""

    code = "clock_not_set"
    status = 503  # this node's state, not the caller's mistake


class NodeStateError(HemeiError):
    """The node home is missing, already exists, or is unusable."""

    code = "node_state"
    status = 409
