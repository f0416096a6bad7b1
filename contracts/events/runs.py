"""Events of run streams: the lifecycle of one run, from request to archived log."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import Field

from contracts import streams
from contracts.base import Event, JsonObject

Trigger = Literal["manual", "schedule", "retry", "rerun", "backfill", "oneoff"]


class RunRequested(Event):
    """Self-contained: it snapshots the job's configuration so rendering never races a later edit."""

    stream_type = streams.RUN
    run_id: uuid.UUID
    job_id: uuid.UUID | None = None
    job_version: int | None = None
    execution: str
    dimensions: dict[str, str] = Field(default_factory=dict)
    params: JsonObject = Field(default_factory=dict)
    overrides: JsonObject = Field(default_factory=dict)
    trigger: Trigger = "manual"
    scheduled_at: datetime | None = None
    # Attempts count from 1; a retry links to the first run of its chain.
    attempt: int = Field(default=1, ge=1)
    first_run_id: uuid.UUID | None = None
    rerun_of: uuid.UUID | None = None
    # A manual run that bypassed the job's overlap policy and concurrency limit.
    forced: bool = False
    # A scheduled run staged ahead of its tick (decision 0175): rendered and prepared at once, started
    # at this instant (the tick plus its jitter), not before.
    start_at: datetime | None = None


SkipCode = Literal["overlap_forbidden", "concurrency_limit_reached", "queue_full"]


class RunSkipped(Event):
    """A trigger that did not become a run because of the job's overlap policy; the first and only
    event of its run stream, so a skipped tick occupies its tick id and is decided once."""

    stream_type = streams.RUN
    run_id: uuid.UUID
    job_id: uuid.UUID
    trigger: Trigger
    scheduled_at: datetime | None = None
    code: SkipCode
    reason: str


class RunQueued(Event):
    """A trigger waiting for a slot under the `queue` policy; `RunRequested` follows on the same stream
    once an active run of the job ends."""

    stream_type = streams.RUN
    run_id: uuid.UUID
    job_id: uuid.UUID
    trigger: Trigger
    scheduled_at: datetime | None = None
    overrides: JsonObject = Field(default_factory=dict)


class RunRendered(Event):
    """`payload` is safe to show: when the run has secrets, each is `***` there, and `sealed` holds the
    real payload with its secrets, encrypted for the dispatcher (`shared.secrets.seal_rendered`)."""

    stream_type = streams.RUN
    run_id: uuid.UUID
    driver: str
    payload: JsonObject
    execution_version: int
    sealed: str | None = None
    # Set when Nomad's periodic block launched this run from that parent job (decision 0173): the
    # dispatcher that recorded the launch follows it, and no dispatcher starts it again.
    periodic_parent: str | None = None
    # Copied from the request: the dispatcher holds the prepared run until then (decision 0175).
    start_at: datetime | None = None


class RunRejected(Event):
    stream_type = streams.RUN
    run_id: uuid.UUID
    reason: str
    line: int | None = None
    column: int | None = None


class RunStarted(Event):
    stream_type = streams.RUN
    run_id: uuid.UUID
    dispatcher: str
    handle: JsonObject


class RunAdopted(Event):
    """A dispatcher took over a running run whose dispatcher went away (its lease lapsed); the work kept
    running on its orchestrator (Docker, Nomad) and `dispatcher` now follows it to its end. Appended at
    the run's expected version, so exactly one of several sweeping dispatchers wins."""

    stream_type = streams.RUN
    run_id: uuid.UUID
    dispatcher: str
    previous_dispatcher: str
    handle: JsonObject


StepOutcome = Literal["succeeded", "failed", "stopped", "skipped"]


class RunStepStarted(Event):
    """A step of a pipeline began (its gate opened); `started_at` is when, not when it was recorded."""

    stream_type = streams.RUN
    run_id: uuid.UUID
    step: str
    index: int = Field(ge=0)
    started_at: datetime


class RunStepEnded(Event):
    """A step of a pipeline ended, or was skipped because an earlier one failed or the run stopped.

    `started_at` is None for a skipped step; `exit_code`/`signal` say how a started one ended."""

    stream_type = streams.RUN
    run_id: uuid.UUID
    step: str
    index: int = Field(ge=0)
    outcome: StepOutcome
    exit_code: int | None = None
    signal: int | None = None
    started_at: datetime | None = None
    ended_at: datetime


class RunStopRequested(Event):
    stream_type = streams.RUN
    run_id: uuid.UUID
    grace_s: float | None = None


class RunSucceeded(Event):
    stream_type = streams.RUN
    run_id: uuid.UUID


class RunFailed(Event):
    stream_type = streams.RUN
    run_id: uuid.UUID
    exit_code: int | None = None
    signal: int | None = None
    reason: str


class RunTimedOut(Event):
    stream_type = streams.RUN
    run_id: uuid.UUID
    timeout_s: float


class RunStopped(Event):
    stream_type = streams.RUN
    run_id: uuid.UUID
    stopped_by: str
    reason: str


class RunLost(Event):
    stream_type = streams.RUN
    run_id: uuid.UUID
    reason: str


class RunRetryScheduled(Event):
    stream_type = streams.RUN
    run_id: uuid.UUID
    next_run_id: uuid.UUID
    attempt: int
    due_at: datetime


class RunLogArchived(Event):
    stream_type = streams.RUN
    run_id: uuid.UUID
    bytes: int
    sha256: str
    location: str
