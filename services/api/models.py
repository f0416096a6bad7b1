"""HTTP shapes of the API: query strings, read-model views, pages and problems.

These pydantic models are the one source of the OpenAPI document: handlers validate with them and
`openapi.py` derives the schemas from them, so documentation and behaviour cannot drift apart.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from contracts.base import JsonObject
from contracts.envelope import RecordedEvent
from contracts.events.definitions import StateChanges
from contracts.schedules import OverlapSpec, RetrySpec, ScheduleSpec
from contracts.specs import DimensionSpec, ExecutionSpec
from shared.archive.reader import DEFAULT_LIMIT, MAX_LIMIT
from shared.domain.job_state import JobState, RunStatus

DIMENSION_FILTER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}:.+$"


class BadCursor(ValueError):
    """A `cursor` query parameter this API did not hand out; the error middleware answers 422."""


class Query(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PageQuery(Query):
    limit: int = Field(default=50, ge=1, le=500, description="Most items in one page.")
    cursor: str | None = Field(default=None, description="Opaque `next_cursor` of the previous page.")


class JobListQuery(PageQuery):
    execution: str | None = Field(default=None, description="Only jobs of this execution.")
    state: Literal["enabled", "paused"] | None = Field(
        default=None, description="`enabled` (scheduled) or `paused` jobs only."
    )
    dimension: list[Annotated[str, Field(pattern=DIMENSION_FILTER_PATTERN)]] = Field(
        default_factory=list,
        description="`<dimension>:<value>`; repeat the parameter to require several (all must match).",
    )


class RunListQuery(PageQuery):
    job_id: uuid.UUID | None = Field(default=None, description="Only runs of this job.")
    status: RunStatus | None = Field(default=None, description="Only runs in this status.")


class EventListQuery(PageQuery):
    stream: str | None = Field(default=None, description="Only events of this stream id, e.g. `job-<uuid>`.")
    type: list[str] = Field(
        default_factory=list, description="Only these event types; repeat to allow several."
    )
    after: int = Field(default=0, ge=0, description="Only events after this global position.")


class EventStreamQuery(Query):
    stream: str | None = Field(default=None, description="Only events of this stream id.")
    type: list[str] = Field(default_factory=list, description="Only these event types; repeat for several.")
    after: int | None = Field(
        default=None, ge=0, description="Start after this position (the `Last-Event-ID` header wins)."
    )


class ForceQuery(Query):
    force: bool = Field(default=False, description="Remove even when jobs still use it.")


class StateQuery(Query):
    dry_run: bool = Field(default=False, description="Answer the changes without recording anything.")
    force: bool = Field(default=False, description="Apply even when it removes what jobs still use.")


class PauseBody(Query):
    reason: str | None = Field(default=None, max_length=500)


class PreviewQuery(Query):
    at: datetime | None = Field(
        default=None,
        description="RFC 3339 time: render the job, its execution and dimensions as they stood then "
        "(a time without offset is UTC). Absent: now.",
    )

    @field_validator("at", mode="before")
    @classmethod
    def _plus_sent_unencoded(cls, value: object) -> object:
        """`?at=2026-01-01T10:00:00+01:00` typed into a URL arrives with a space for the `+`."""
        return value.replace(" ", "+") if isinstance(value, str) else value


class LogQuery(Query):
    offset: int = Field(default=0, ge=0, description="Byte offset to read from.")
    limit: int = Field(
        default=DEFAULT_LIMIT,
        ge=1,
        le=MAX_LIMIT,
        description="Most bytes in the page (the text may hold fewer).",
    )


class LogStreamQuery(Query):
    offset: int | None = Field(
        default=None, ge=0, description="Byte offset to start from (the `Last-Event-ID` header wins)."
    )


class ExecutionView(BaseModel):
    name: str
    version: int = Field(description="Version of the execution's stream; also its ETag.")
    spec: ExecutionSpec
    defined_at: datetime
    updated_at: datetime


class DimensionView(BaseModel):
    name: str
    version: int
    spec: DimensionSpec
    defined_at: datetime
    updated_at: datetime


class ExecutionList(BaseModel):
    items: list[ExecutionView]


class DimensionList(BaseModel):
    items: list[DimensionView]


class DefinitionResult(BaseModel):
    """Answer of PUT/DELETE on a definition: what was recorded (`changed` empty when nothing was)."""

    name: str
    outcome: Literal["defined", "redefined", "unchanged", "removed"]
    changed: list[str] = Field(default_factory=list)


class JobView(BaseModel):
    id: uuid.UUID
    name: str
    execution: str
    dimensions: dict[str, str]
    params: JsonObject
    schedule: ScheduleSpec | None
    overlap: OverlapSpec
    retry: RetrySpec
    keep_runs: int | None = Field(description="Finished runs of the job the run history keeps (null: all).")
    enabled: bool = Field(description="False while the job is paused.")
    pause_reason: str | None
    version: int = Field(description="Version of the job's stream; send it back in `If-Match`.")
    created_at: datetime
    created_by: str
    updated_at: datetime
    state: JobState = Field(
        default="idle", description="idle, queued, running, retrying, failed or paused, from its runs."
    )
    next_runs: list[datetime] = Field(
        default_factory=list, description="The next fire times of the schedule (none while paused)."
    )


class JobPage(BaseModel):
    items: list[JobView]
    next_cursor: str | None


class LogArchive(BaseModel):
    bytes: int
    sha256: str
    location: str


class StepView(BaseModel):
    """One step of a pipeline run: `pending` until it starts; `skipped` when an earlier step failed or
    the run stopped before it began."""

    name: str
    status: Literal["pending", "running", "succeeded", "failed", "stopped", "skipped"]
    exit_code: int | None = None
    signal: int | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None


class RunView(BaseModel):
    id: uuid.UUID
    job_id: uuid.UUID | None
    status: RunStatus
    exit_code: int | None
    reason: str | None
    requested_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    job_version: int | None
    execution: str
    trigger: str
    overrides: JsonObject
    requested_by: str
    stop_requested_at: datetime | None
    stop_requested_by: str | None = Field(description="Who asked the run to stop (`X-Actor`).")
    stopped_by: str | None = Field(
        description="Who stopped it, once it ended stopped: the asker, or the dispatcher shutting down."
    )
    next_run_id: uuid.UUID | None
    log: LogArchive | None
    steps: list[StepView] = Field(default_factory=list)
    attempt: int = Field(default=1, description="1 for the first run; retries count on.")
    first_run_id: uuid.UUID | None = Field(default=None, description="The first run of a retry chain.")
    scheduled_at: datetime | None = Field(default=None, description="The tick a scheduled run is for.")
    start_at: datetime | None = Field(
        default=None,
        description="A scheduled run staged ahead of its tick starts then, not before (decision 0175).",
    )


class PreviewView(BaseModel):
    """What a run of the job would render; secrets are shown as `***`."""

    job_id: uuid.UUID
    job_version: int = Field(description="Version of the job's stream the preview used.")
    at: datetime | None = Field(description="The time the preview was asked for; null: now.")
    driver: str
    payload: JsonObject
    params: JsonObject = Field(description="The merged params.")
    provenance: dict[str, str] = Field(
        description="Each leaf param's dotted path → its layer: `default`, `dimension:<name>=<value>`, "
        "`job` or `run`."
    )
    execution_version: int


class LogPageView(BaseModel):
    """`data` is UTF-8 text that never ends inside a character; offsets count bytes of the log."""

    offset: int
    next_offset: int = Field(description="Where the next page starts: `offset` + the bytes this page used.")
    data: str
    complete: bool = Field(description="True when `next_offset` is the end of a log that will not grow.")


class RunPage(BaseModel):
    items: list[RunView]
    next_cursor: str | None


class EventPage(BaseModel):
    items: list[RecordedEvent]
    next_cursor: str | None


class JobSelector(Query):
    """Which jobs a bulk operation acts on: the filters of `GET /jobs`, as a body. At least one of
    `dimensions` and `execution` is required, so an empty body never acts on every job by accident."""

    dimensions: dict[str, str] = Field(
        default_factory=dict,
        description='`{"<dimension>": "<value>"}`; a job matches when it has all of them.',
    )
    execution: str | None = Field(default=None, description="Only jobs of this execution.")
    state: Literal["enabled", "paused"] | None = Field(
        default=None, description="Only `enabled` or only `paused` jobs."
    )

    @model_validator(mode="after")
    def _narrowed(self) -> JobSelector:
        if not self.dimensions and self.execution is None:
            raise ValueError("select jobs by `dimensions` or `execution` (or both)")
        return self


class BulkPauseBody(JobSelector):
    reason: str | None = Field(default=None, max_length=500)


class BulkResumeBody(JobSelector):
    pass


class BulkRunBody(JobSelector):
    params: JsonObject = Field(default_factory=dict, description="Overrides for every run requested.")


class BulkItem(BaseModel):
    job_id: uuid.UUID
    name: str
    outcome: Literal["changed", "unchanged", "failed"] = Field(
        description="`changed`: recorded; `unchanged`: already in that state; `failed`: see `reason`."
    )
    reason: str | None = None
    version: int | None = Field(default=None, description="The job's version after this operation.")
    run_id: uuid.UUID | None = Field(default=None, description="The requested run (`runs` only).")


class BulkResult(BaseModel):
    action: Literal["pause", "resume", "run"]
    correlation_id: str = Field(description="Shared by every event this operation recorded.")
    matched: int
    changed: int
    unchanged: int
    failed: int
    items: list[BulkItem]


class HistoryQuery(PageQuery):
    pass


class FieldChange(BaseModel):
    field: str = Field(description="`name`, `enabled`, `schedule`, or a leaf like `params.db.host`.")
    before: Any = Field(default=None, description="Null when the field was not set; secrets are `***`.")
    after: Any = Field(default=None, description="Null when the field was removed; secrets are `***`.")


class HistoryItem(BaseModel):
    version: int = Field(description="Version of the job's stream after this change.")
    position: int
    type: str = Field(description="The event: JobCreated, JobUpdated, JobPaused, JobResumed, JobDeleted.")
    time: datetime
    actor: str
    correlation_id: str
    causation_id: str | None
    changes: list[FieldChange]
    reason: str | None = Field(default=None, description="The reason given for a pause.")


class HistoryPage(BaseModel):
    job_id: uuid.UUID
    items: list[HistoryItem]
    next_cursor: str | None


class StateResult(BaseModel):
    dry_run: bool
    digest: str
    recorded: bool = Field(description="True when a StateLoaded event was appended.")
    executions: StateChanges
    dimensions: StateChanges


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready"]
    checks: dict[str, str]


class FieldError(BaseModel):
    field: str = Field(
        description="Where the error is: `body.spec.driver`, `query.limit`, `header.If-Match`."
    )
    reason: str


class Problem(BaseModel):
    """RFC 9457 problem details; extension members (`errors`, `jobs`, `unknown`) depend on the problem."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")
