"""Commands: what a client asks batchyard to do. The API validates request bodies against these."""

from __future__ import annotations

import uuid

from pydantic import Field

from contracts.base import Command, JsonObject
from contracts.schedules import OverlapSpec, RetrySpec, ScheduleSpec
from contracts.specs import NAME_PATTERN, DimensionSpec, ExecutionSpec, JobSpec


class DefineExecution(Command):
    name: str = Field(pattern=NAME_PATTERN)
    spec: ExecutionSpec


class RemoveExecution(Command):
    name: str = Field(pattern=NAME_PATTERN)


class DefineDimension(Command):
    name: str = Field(pattern=NAME_PATTERN)
    spec: DimensionSpec


class RemoveDimension(Command):
    name: str = Field(pattern=NAME_PATTERN)


class StateFile(Command):
    """striv's state format: executions and dimensions keyed by id."""

    executions: dict[str, ExecutionSpec] = Field(default_factory=dict)
    dimensions: dict[str, DimensionSpec] = Field(default_factory=dict)


class ApplyState(Command):
    state: StateFile
    dry_run: bool = False
    force: bool = False


class CreateJob(Command):
    spec: JobSpec


class JobPatch(Command):
    """Fields of a job that PATCH may change; absent fields stay as they are."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    execution: str | None = Field(default=None, pattern=NAME_PATTERN)
    dimensions: dict[str, str] | None = None
    params: JsonObject | None = None
    schedule: ScheduleSpec | None = None
    enabled: bool | None = None
    overlap: OverlapSpec | None = None
    retry: RetrySpec | None = None
    keep_runs: int | None = Field(default=None, ge=1, le=1_000_000)


class UpdateJob(Command):
    job_id: uuid.UUID
    patch: JobPatch
    expected_version: int | None = None


class PauseJob(Command):
    job_id: uuid.UUID
    reason: str | None = Field(default=None, max_length=500)


class ResumeJob(Command):
    job_id: uuid.UUID


class DeleteJob(Command):
    job_id: uuid.UUID


class RunOverrides(Command):
    """Body of `POST /jobs/{id}/runs`: parameters that override the job's for this run only."""

    params: JsonObject = Field(default_factory=dict)


class RequestRun(Command):
    job_id: uuid.UUID
    overrides: JsonObject = Field(default_factory=dict)


class StopRun(Command):
    run_id: uuid.UUID
    grace_s: float | None = Field(default=None, ge=0, le=3600)


class OneOffRun(Command):
    """Body of `POST /runs`: a run of an execution without a job, like a process-runner API.

    The same inputs a job would give (dimension choices and params); they are validated against the
    definitions when the run is requested, and rendered like any other run."""

    execution: str = Field(pattern=NAME_PATTERN)
    dimensions: dict[str, str] = Field(default_factory=dict)
    params: JsonObject = Field(default_factory=dict)


class StopOptions(Command):
    """Body of `POST /runs/{id}/stop`: how long the run may take to exit after SIGTERM (or the driver's
    equivalent) before it is killed; absent means the payload's `stop_grace_s`."""

    grace_s: float | None = Field(default=None, ge=0, le=3600)
