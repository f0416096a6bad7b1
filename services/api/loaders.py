"""Current state of a stream for a decision, folded from the event store (the source of truth), so a
decision never rests on a read model that may lag; the stream version read here is the one appended at."""

from __future__ import annotations

import uuid

from contracts import streams
from contracts.specs import DimensionSpec, ExecutionSpec
from services.api.domain.definitions import Definition, fold_dimension, fold_execution
from services.api.domain.jobs import JobState, fold_job
from shared.domain.run_lifecycle import RunState, run_state
from shared.eventstore.store import EventStore


async def load_job(store: EventStore, job_id: uuid.UUID) -> JobState:
    events = await store.read_stream(streams.stream_id(streams.JOB, job_id))
    return fold_job(job_id, [e.payload() for e in events])


async def load_execution(store: EventStore, name: str) -> Definition[ExecutionSpec]:
    events = await store.read_stream(streams.stream_id(streams.EXECUTION, name))
    return fold_execution(name, [e.payload() for e in events])


async def load_dimension(store: EventStore, name: str) -> Definition[DimensionSpec]:
    events = await store.read_stream(streams.stream_id(streams.DIMENSION, name))
    return fold_dimension(name, [e.payload() for e in events])


async def load_run(store: EventStore, run_id: uuid.UUID) -> RunState:
    return run_state(await store.read_stream(streams.stream_id(streams.RUN, run_id)))
