"""Events of job streams: one stream per job, keyed by the job's id."""

from __future__ import annotations

import uuid

from contracts import streams
from contracts.base import Event
from contracts.specs import JobSpec


class JobCreated(Event):
    stream_type = streams.JOB
    job_id: uuid.UUID
    spec: JobSpec


class JobUpdated(Event):
    """Carries the whole new spec, so a projection or a point-in-time view needs no earlier event."""

    stream_type = streams.JOB
    job_id: uuid.UUID
    spec: JobSpec
    changed: list[str]


class JobPaused(Event):
    stream_type = streams.JOB
    job_id: uuid.UUID
    reason: str | None = None


class JobResumed(Event):
    stream_type = streams.JOB
    job_id: uuid.UUID


class JobDeleted(Event):
    stream_type = streams.JOB
    job_id: uuid.UUID
