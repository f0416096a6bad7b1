"""Executions and dimensions as the event store holds them, folded from their streams on demand.

Reading the streams for every run (rather than a cache fed by the bus) means a run requested right
after a redefinition renders with the new definition: the store is the only source of truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from contracts import streams
from contracts.envelope import RecordedEvent
from contracts.events import (
    DimensionDefined,
    DimensionRedefined,
    DimensionRemoved,
    ExecutionDefined,
    ExecutionRedefined,
    ExecutionRemoved,
)
from contracts.specs import DimensionSpec, ExecutionSpec
from shared.eventstore.store import EventStore


@dataclass(frozen=True)
class ExecutionDefinition:
    name: str
    spec: ExecutionSpec
    version: int
    """Stream version of the event that set this spec; recorded in `RunRendered.execution_version`."""


class Definitions:
    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def load(
        self, execution: str, dimensions: list[str], *, at: datetime | None = None
    ) -> tuple[ExecutionDefinition | None, dict[str, DimensionSpec | None]]:
        """An execution and the named dimensions as of `at`, read in one round trip: each stream on its
        own would cost a query and a pool connection, on every run's path to `RunRendered`."""
        execution_stream = streams.stream_id(streams.EXECUTION, execution)
        dimension_streams = {name: streams.stream_id(streams.DIMENSION, name) for name in dimensions}
        histories = await self.store.read_streams([execution_stream, *dimension_streams.values()])

        def until_at(stream_id: str) -> list[RecordedEvent]:
            return [event for event in histories[stream_id] if at is None or event.time <= at]

        specs = {name: _dimension(until_at(stream_id)) for name, stream_id in dimension_streams.items()}
        return _execution(execution, until_at(execution_stream)), specs


def _execution(name: str, history: list[RecordedEvent]) -> ExecutionDefinition | None:
    found: ExecutionDefinition | None = None
    for event in history:
        payload = event.payload()
        if isinstance(payload, ExecutionDefined | ExecutionRedefined):
            found = ExecutionDefinition(name, payload.spec, event.stream_version)
        elif isinstance(payload, ExecutionRemoved):
            found = None
    return found


def _dimension(history: list[RecordedEvent]) -> DimensionSpec | None:
    found: DimensionSpec | None = None
    for event in history:
        payload = event.payload()
        if isinstance(payload, DimensionDefined | DimensionRedefined):
            found = payload.spec
        elif isinstance(payload, DimensionRemoved):
            found = None
    return found
