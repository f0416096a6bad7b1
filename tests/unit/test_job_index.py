"""The dispatcher's job index: which jobs are scheduled, and since when their current schedule holds."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from contracts.base import Event
from contracts.envelope import RecordedEvent
from contracts.events import JobCreated, JobDeleted, JobPaused, JobResumed, JobUpdated, RunRequested
from contracts.specs import JobSpec
from services.dispatcher.job_index import JobIndex

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SPEC = JobSpec.model_validate({"name": "n", "execution": "x", "schedule": {"cron": "* * * * *"}})


def fold(job_id: uuid.UUID, events: list[Event]) -> JobIndex:
    index = JobIndex()
    for n, event in enumerate(events, start=1):
        index.apply(
            RecordedEvent(
                id=uuid.uuid4(),
                stream_id=f"job-{job_id}",
                stream_version=n,
                position=n,
                type=event.event_type(),
                schema_version=1,
                time=T0 + timedelta(minutes=n),
                actor="alice",
                correlation_id="c",
                causation_id=None,
                data=event.model_dump(mode="json"),
            )
        )
    return index


def test_a_created_job_with_a_schedule_is_scheduled_from_its_creation() -> None:
    job_id = uuid.uuid4()
    job = fold(job_id, [JobCreated(job_id=job_id, spec=SPEC)]).jobs[job_id]
    assert job.scheduled and job.since == T0 + timedelta(minutes=1) and job.version == 1


def test_pause_stops_scheduling_and_resume_restarts_it_remembering_the_pause() -> None:
    job_id = uuid.uuid4()
    created = JobCreated(job_id=job_id, spec=SPEC)
    paused = fold(job_id, [created, JobPaused(job_id=job_id)]).jobs[job_id]
    assert not paused.scheduled
    resumed = fold(job_id, [created, JobPaused(job_id=job_id), JobResumed(job_id=job_id)]).jobs[job_id]
    assert resumed.scheduled and resumed.resumed
    assert resumed.paused_since == T0 + timedelta(minutes=1) and resumed.since == T0 + timedelta(minutes=3)


def test_an_update_moves_since_only_when_the_schedule_or_enabled_changed() -> None:
    job_id = uuid.uuid4()
    renamed = JobUpdated(job_id=job_id, spec=SPEC.model_copy(update={"name": "m"}), changed=["name"])
    job = fold(job_id, [JobCreated(job_id=job_id, spec=SPEC), renamed]).jobs[job_id]
    assert job.since == T0 + timedelta(minutes=1) and job.spec.name == "m"
    rescheduled = JobUpdated(job_id=job_id, spec=SPEC, changed=["schedule"])
    job = fold(job_id, [JobCreated(job_id=job_id, spec=SPEC), rescheduled]).jobs[job_id]
    assert job.since == T0 + timedelta(minutes=2)


def test_deleted_jobs_leave_the_index_and_other_events_are_ignored() -> None:
    job_id = uuid.uuid4()
    index = fold(job_id, [JobCreated(job_id=job_id, spec=SPEC), JobDeleted(job_id=job_id)])
    assert job_id not in index.jobs
    assert fold(job_id, [RunRequested(run_id=uuid.uuid4(), job_id=job_id, execution="x")]).jobs == {}


def test_a_staged_run_starts_when_its_job_did_not_change_since_it_was_staged() -> None:
    job_id = uuid.uuid4()
    index = fold(job_id, [JobCreated(job_id=job_id, spec=SPEC)])
    assert index.staged_withdrawal(job_id, T0 + timedelta(minutes=5)) is None


def test_a_staged_run_is_withdrawn_when_its_job_was_paused_deleted_or_rescheduled_after_staging() -> None:
    job_id = uuid.uuid4()
    created = JobCreated(job_id=job_id, spec=SPEC)
    staged = T0 + timedelta(minutes=1, seconds=30)
    paused = fold(job_id, [created, JobPaused(job_id=job_id)])
    assert "paused" in (paused.staged_withdrawal(job_id, staged) or "")
    deleted = fold(job_id, [created, JobDeleted(job_id=job_id)])
    assert "deleted" in (deleted.staged_withdrawal(job_id, staged) or "")
    hourly = JobSpec.model_validate({"name": "n", "execution": "x", "schedule": {"cron": "0 * * * *"}})
    moved = fold(job_id, [created, JobUpdated(job_id=job_id, spec=hourly, changed=["schedule"])])
    assert "schedule changed" in (moved.staged_withdrawal(job_id, staged) or "")
    resumed = fold(job_id, [created, JobPaused(job_id=job_id), JobResumed(job_id=job_id)])
    assert "schedule changed" in (resumed.staged_withdrawal(job_id, staged) or "")


def test_a_job_this_replica_has_not_heard_of_yet_does_not_withdraw_its_staged_run() -> None:
    assert JobIndex().staged_withdrawal(uuid.uuid4(), T0) is None
