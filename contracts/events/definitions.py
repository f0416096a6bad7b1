"""Events of execution, dimension and state streams: the templates developers keep in Git."""

from __future__ import annotations

from pydantic import Field

from contracts import streams
from contracts.base import Contract, Event
from contracts.specs import DimensionSpec, ExecutionSpec


class ExecutionDefined(Event):
    stream_type = streams.EXECUTION
    name: str
    spec: ExecutionSpec


class ExecutionRedefined(Event):
    stream_type = streams.EXECUTION
    name: str
    spec: ExecutionSpec
    changed: list[str]


class ExecutionRemoved(Event):
    stream_type = streams.EXECUTION
    name: str


class DimensionDefined(Event):
    stream_type = streams.DIMENSION
    name: str
    spec: DimensionSpec


class DimensionRedefined(Event):
    stream_type = streams.DIMENSION
    name: str
    spec: DimensionSpec
    changed: list[str]


class DimensionRemoved(Event):
    stream_type = streams.DIMENSION
    name: str


class StateChanges(Contract):
    added: list[str] = Field(default_factory=list)
    changed: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)


class StateLoaded(Event):
    """A whole state file was applied; the definition events it implied carry this one's id as cause."""

    stream_type = streams.STATE
    digest: str
    executions: StateChanges
    dimensions: StateChanges
