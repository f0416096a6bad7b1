"""Executions and dimensions as the event store holds them, folded from their streams on demand.

The store is the only source of truth (not a cache fed by the bus), so a run requested right after a
redefinition renders with the new definition. A `DefinitionCache` saves the read only when the store's
own notifications prove its entries current for the request's position (decision 0177).
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
from services.renderer.definition_cache import DefinitionCache, Folded
from shared.eventstore.store import EventStore


@dataclass(frozen=True)
class ExecutionDefinition:
    name: str
    spec: ExecutionSpec
    version: int
    """Stream version of the event that set this spec; recorded in `RunRendered.execution_version`."""


class Definitions:
    def __init__(self, store: EventStore, cache: DefinitionCache | None = None) -> None:
        self.store = store
        self.cache = cache

    async def load(
        self,
        execution: str,
        dimensions: list[str],
        *,
        at: datetime | None = None,
        position: int | None = None,
    ) -> tuple[ExecutionDefinition | None, dict[str, DimensionSpec | None]]:
        """An execution and the named dimensions as of `at`, read in one round trip: each stream on its
        own would cost a query and a pool connection, on every run's path to `RunRendered`. For a
        request recorded at `position`, from the cache when it is provably current for it."""
        execution_stream = streams.stream_id(streams.EXECUTION, execution)
        dimension_streams = {name: streams.stream_id(streams.DIMENSION, name) for name in dimensions}
        stream_ids = [execution_stream, *dimension_streams.values()]
        folded = self._cached(stream_ids, at, position) or await self._read(stream_ids, at)
        found = folded[execution_stream]
        specs: dict[str, DimensionSpec | None] = {}
        for name, stream_id in dimension_streams.items():
            spec = folded[stream_id]
            specs[name] = spec if isinstance(spec, DimensionSpec) else None
        return (found if isinstance(found, ExecutionDefinition) else None), specs

    def _cached(
        self, stream_ids: list[str], at: datetime | None, position: int | None
    ) -> dict[str, Folded] | None:
        if self.cache is None or at is not None or position is None or not self.cache.fresh_for(position):
            return None
        return self.cache.get(stream_ids)

    async def _read(self, stream_ids: list[str], at: datetime | None) -> dict[str, Folded]:
        changes = self.cache.changes if self.cache is not None else 0
        histories = await self.store.read_streams(stream_ids)
        folded: dict[str, Folded] = {}
        for stream_id, history in histories.items():
            until_at = [event for event in history if at is None or event.time <= at]
            name = streams.stream_key(stream_id)
            is_execution = streams.stream_type_of(stream_id) == streams.EXECUTION
            folded[stream_id] = _execution(name, until_at) if is_execution else _dimension(until_at)
        if self.cache is not None and at is None:
            self.cache.keep(changes, folded)
        return folded


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
