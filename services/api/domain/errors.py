"""Refusals the domain can answer with; the HTTP layer maps each kind to one status code."""

from __future__ import annotations

from typing import Any


class Refused(Exception):
    """A command that does not follow from the current state; nothing is recorded."""

    status = 409
    title = "Conflict"
    kind = "refused"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(Refused):
    status = 404
    title = "Not Found"
    kind = "not-found"


class InvalidTransition(Refused):
    title = "Invalid transition"
    kind = "invalid-transition"


class InUse(Refused):
    """A definition (or one of its values) is still referenced by jobs."""

    title = "Still in use"
    kind = "in-use"


class UnknownReferences(Refused):
    """A job names an execution, dimension or dimension value that is not defined."""

    status = 422
    title = "Unknown references"
    kind = "unknown-references"


class NotForNomad(Refused):
    """A job hands its schedule to Nomad's periodic block with something the block cannot honour; the
    same problem shape as a validation error, one `{field, reason}` per part to change."""

    status = 422
    title = "Invalid request"
    kind = "validation"
