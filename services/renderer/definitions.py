"""Executions and dimensions as the event store holds them, folded from their streams on demand.

Reading the streams for every run (rather than a cache fed by the bus) means a run requested right
after a redefinition renders with the new definition: the store is the only source of truth.
"""

from __future__ import annotations

import asyncio
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

    async def execution(self, name: str, *, at: datetime | None = None) -> ExecutionDefinition | None:
        found: ExecutionDefinition | None = None
        for event in await self._history(streams.EXECUTION, name, at):
            payload = event.payload()
            if isinstance(payload, ExecutionDefined | ExecutionRedefined):
                found = ExecutionDefinition(name, payload.spec, event.stream_version)
            elif isinstance(payload, ExecutionRemoved):
                found = None
        return found

    async def dimension(self, name: str, *, at: datetime | None = None) -> DimensionSpec | None:
        found: DimensionSpec | None = None
        for event in await self._history(streams.DIMENSION, name, at):
            payload = event.payload()
            if isinstance(payload, DimensionDefined | DimensionRedefined):
                found = payload.spec
            elif isinstance(payload, DimensionRemoved):
                found = None
        return found

    async def dimensions(
        self, names: list[str], *, at: datetime | None = None
    ) -> dict[str, DimensionSpec | None]:
        specs = await asyncio.gather(*(self.dimension(name, at=at) for name in names))
        return dict(zip(names, specs, strict=True))

    async def _history(self, stream_type: str, name: str, at: datetime | None) -> list[RecordedEvent]:
        events = await self.store.read_stream(streams.stream_id(stream_type, name))
        return [event for event in events if at is None or event.time <= at]
