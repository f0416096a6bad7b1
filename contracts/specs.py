"""Configuration shapes shared by commands, events and the HTTP API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from contracts.base import Contract, JsonObject
from contracts.schedules import OverlapSpec, RetrySpec, ScheduleSpec

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"

Driver = Literal["local", "docker", "nomad"]


class ExecutionSpec(Contract):
    """A job template: which orchestrator runs it and the jsonnet that renders its payload.

    `name` (a display name) and `logstore` exist because striv's state files carry them.
    """

    name: str | None = Field(default=None, max_length=200)
    driver: Driver
    driver_config: JsonObject = Field(default_factory=dict)
    payload_template: str = Field(min_length=1)
    default_params: JsonObject = Field(default_factory=dict)
    required_params: list[str] = Field(default_factory=list)
    logstore: Any = None


class DimensionValue(Contract):
    params: JsonObject = Field(default_factory=dict)


class DimensionSpec(Contract):
    """An axis jobs are organised along (customer, environment…); higher priority wins in the merge."""

    priority: int = 0
    values: dict[str, DimensionValue] = Field(default_factory=dict)


class JobSpec(Contract):
    name: str = Field(min_length=1, max_length=200)
    execution: str = Field(pattern=NAME_PATTERN)
    dimensions: dict[str, str] = Field(default_factory=dict)
    params: JsonObject = Field(default_factory=dict)
    schedule: ScheduleSpec | None = None
    enabled: bool = True
    overlap: OverlapSpec = Field(default_factory=OverlapSpec)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    # How many finished runs of this job the read model keeps (None: all); the events stay forever.
    keep_runs: int | None = Field(default=None, ge=1, le=1_000_000)
