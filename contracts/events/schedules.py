"""Events of schedule streams (`schedule-<job id>`): what a job's scheduler decided not to run."""

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
