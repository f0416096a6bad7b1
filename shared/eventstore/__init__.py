"""The append-only event store in PostgreSQL: the only source of truth."""

from shared.eventstore.errors import ConcurrencyError
from shared.eventstore.store import ANY_VERSION, NO_STREAM, EventStore

__all__ = ["ANY_VERSION", "NO_STREAM", "ConcurrencyError", "EventStore"]
