"""The dispatcher's own view of jobs, folded from job events read from the store.

The scheduler must not depend on the API's read models (services meet only in the store and on the
bus), and every replica needs every scheduled job, so each replica folds the job streams itself.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime

from contracts.envelope import RecordedEvent
from contracts.events import JobCreated, JobDeleted, JobPaused, JobResumed, JobUpdated
from contracts.specs import JobSpec

JOB_EVENT_TYPES = tuple(
    cls.event_type() for cls in (JobCreated, JobUpdated, JobPaused, JobResumed, JobDeleted)
)


@dataclass(frozen=True)
class IndexedJob:
    """`since` is when the current schedule took effect (created, rescheduled or resumed): no tick
    before it is the scheduler's to fire. `paused_since` is the `since` in force when the job was
    paused, so the resume can record the ticks of the pause as skipped."""

    job_id: uuid.UUID
    version: int
    spec: JobSpec
    since: datetime
    paused_since: datetime | None = None
    resumed: bool = False

    @property
    def scheduled(self) -> bool:
        """Its ticks are batchyard's scheduler's to fire."""
        schedule = self.spec.schedule
        return schedule is not None and self.spec.enabled and schedule.fired_by == "batchyard"

    @property
    def fired_by_nomad(self) -> bool:
        """Its schedule is to be handed to Nomad's periodic block (decision 0173)."""
        schedule = self.spec.schedule
        return schedule is not None and self.spec.enabled and schedule.fired_by == "nomad"


class JobIndex:
    def __init__(self) -> None:
        self.jobs: dict[uuid.UUID, IndexedJob] = {}
        self.deleted: set[uuid.UUID] = set()

    def staged_withdrawal(self, job_id: uuid.UUID, requested_at: datetime) -> str | None:
        """Why a run staged ahead of its tick at `requested_at` must not start at it (decision 0175).
        A job this replica has not heard of yet is not a reason: only a change it has seen is."""
        if job_id in self.deleted:
            return "withdrawn before its scheduled time: the job was deleted"
        job = self.jobs.get(job_id)
        if job is None:
            return None
        if not job.spec.enabled:
            return "withdrawn before its scheduled time: the job was paused"
        if not job.scheduled:
            return "withdrawn before its scheduled time: the job is no longer scheduled by batchyard"
        if job.since > requested_at:
            return "withdrawn before its scheduled time: the job's schedule changed after it was staged"
        return None

    def apply(self, event: RecordedEvent) -> uuid.UUID | None:
        """Fold one job event; the id of the job it changed, or None when it was not a job event."""
        payload = event.payload()
        job_id: uuid.UUID | None = getattr(payload, "job_id", None)
        if job_id is None or event.type not in JOB_EVENT_TYPES:
            return None
        current = self.jobs.get(job_id)
        if isinstance(payload, JobCreated):
            self.jobs[job_id] = IndexedJob(job_id, event.stream_version, payload.spec, event.time)
        elif current is None:
            return None
        elif isinstance(payload, JobUpdated):
            rescheduled = {"schedule", "enabled"} & set(payload.changed)
            since = event.time if rescheduled else current.since
            self.jobs[job_id] = replace(
                current, version=event.stream_version, spec=payload.spec, since=since, resumed=False
            )
        elif isinstance(payload, JobPaused):
            spec = current.spec.model_copy(update={"enabled": False})
            self.jobs[job_id] = replace(
                current, version=event.stream_version, spec=spec, paused_since=current.since
            )
        elif isinstance(payload, JobResumed):
            spec = current.spec.model_copy(update={"enabled": True})
            self.jobs[job_id] = replace(
                current, version=event.stream_version, spec=spec, since=event.time, resumed=True
            )
        elif isinstance(payload, JobDeleted):
            self.jobs.pop(job_id, None)
            self.deleted.add(job_id)
        return job_id
