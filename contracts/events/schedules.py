"""Events of schedule streams (`schedule-<job id>`): what a job's scheduler decided not to run, and the
hand-over of its schedule to Nomad's periodic block (decision 0173)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import Field

from contracts import streams
from contracts.base import Event

TickSkipReason = Literal["missed", "outside_catchup_window", "superseded", "paused"]


class TicksSkipped(Event):
    """Every tick of the job's schedule in (after, through] was skipped for `reason`: one event per
    range, however many ticks it holds, so nothing is dropped silently and nothing is capped."""

    stream_type = streams.SCHEDULE
    job_id: uuid.UUID
    after: datetime
    through: datetime
    first: datetime
    last: datetime
    # None when the range holds more ticks than the scheduler counts (`COUNT_LIMIT`): counting a year of
    # every-second ticks would stall it, and the range already names every tick.
    count: int | None = Field(default=None, ge=1)
    reason: TickSkipReason


class PeriodicParentRegistered(Event):
    """The job's schedule was handed to Nomad: `parent_id` was registered (or registered again, after a
    change of the job or of what it renders) with a `periodic` block, and Nomad launches the runs.
    `cron` is the expression as Nomad reads it (seven fields, seconds first, year last)."""

    stream_type = streams.SCHEDULE
    job_id: uuid.UUID
    job_version: int = Field(ge=1)
    execution_version: int
    parent_id: str
    nomad_url: str
    namespace: str | None = None
    cron: str
    timezone: str
    prohibit_overlap: bool


class PeriodicParentDeregistered(Event):
    """The parent was deregistered (paused, deleted, schedule removed or fired by batchyard again, or
    replaced by a parent of another ID): Nomad launches no more runs from it; runs it launched go on."""

    stream_type = streams.SCHEDULE
    job_id: uuid.UUID
    parent_id: str
    nomad_url: str
    namespace: str | None = None
    reason: str


class PeriodicHandoverFailed(Event):
    """The job's schedule could not be handed to Nomad (its payload does not render, renders for
    another driver, or Nomad refused the parent); recorded once per job version and reason, and tried
    again on the next change."""

    stream_type = streams.SCHEDULE
    job_id: uuid.UUID
    job_version: int = Field(ge=1)
    reason: str
