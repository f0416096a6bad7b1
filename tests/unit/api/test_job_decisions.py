"""The pure rules of a job's life, without any I/O."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from pydantic import ValidationError

from contracts.base import Event
from contracts.commands import JobPatch
from contracts.events import JobCreated, JobDeleted, JobPaused, JobResumed, JobUpdated, RunRequested
from contracts.schedules import ScheduleSpec
from contracts.specs import JobSpec
from services.api.domain.errors import InvalidTransition, NotFound, UnknownReferences
from services.api.domain.jobs import (
    Catalog,
    JobState,
    decide_create,
    decide_delete,
    decide_pause,
    decide_request_run,
    decide_resume,
    decide_update,
    fold_job,
)

JOB = uuid.UUID(int=1)
CATALOG = Catalog(frozenset({"hello", "bye"}), {"audience": frozenset({"moon", "sun"})})
SPEC = JobSpec(name="greet", execution="hello", dimensions={"audience": "moon"}, params={"a": 1})


def created(spec: JobSpec = SPEC) -> JobState:
    return fold_job(JOB, [JobCreated(job_id=JOB, spec=spec)])


def test_fold_tracks_version_pause_flag_and_deletion() -> None:
    state = fold_job(
        JOB,
        [
            JobCreated(job_id=JOB, spec=SPEC),
            JobPaused(job_id=JOB),
            JobResumed(job_id=JOB),
            JobPaused(job_id=JOB),
        ],
    )
    assert state.version == 4 and state.spec is not None and state.spec.enabled is False
    deleted = fold_job(JOB, [JobCreated(job_id=JOB, spec=SPEC), JobDeleted(job_id=JOB)])
    assert deleted.deleted and not deleted.exists


def test_create_refuses_unknown_execution_dimension_and_value_naming_all() -> None:
    spec = JobSpec(name="x", execution="nope", dimensions={"audience": "mars", "planet": "earth"})
    with pytest.raises(UnknownReferences) as refused:
        decide_create(JOB, spec, CATALOG)
    assert refused.value.extra["unknown"] == [
        "execution 'nope'",
        "value 'mars' of dimension 'audience'",
        "dimension 'planet'",
    ]
    assert decide_create(JOB, SPEC, CATALOG) == [JobCreated(job_id=JOB, spec=SPEC)]


def test_update_lists_changed_fields_and_records_nothing_for_a_no_op() -> None:
    [event] = decide_update(created(), JobPatch(name="renamed", params={"a": 1}), CATALOG)
    assert isinstance(event, JobUpdated) and event.changed == ["name"] and event.spec.name == "renamed"
    assert decide_update(created(), JobPatch(params={"a": 1}), CATALOG) == []


def test_update_with_explicit_null_clears_the_schedule() -> None:
    scheduled = created(SPEC.model_copy(update={"schedule": ScheduleSpec(cron="* * * * *")}))
    [event] = decide_update(scheduled, JobPatch.model_validate({"schedule": None}), CATALOG)
    assert isinstance(event, JobUpdated) and event.spec.schedule is None and event.changed == ["schedule"]


def test_update_checks_references_only_when_they_change() -> None:
    with pytest.raises(UnknownReferences):
        decide_update(created(), JobPatch(execution="ghost"), CATALOG)
    stale_catalog = Catalog(frozenset(), {})
    assert decide_update(created(), JobPatch(name="ok"), stale_catalog) != []


def test_update_refuses_a_merge_that_is_not_a_valid_job() -> None:
    with pytest.raises(ValidationError):
        decide_update(created(), JobPatch.model_validate({"name": None}), CATALOG)


def test_pause_and_resume_refuse_transitions_that_do_not_follow() -> None:
    with pytest.raises(InvalidTransition, match="not paused"):
        decide_resume(created())
    [paused] = decide_pause(created(), "holiday")
    assert paused == JobPaused(job_id=JOB, reason="holiday")
    state = fold_job(JOB, [JobCreated(job_id=JOB, spec=SPEC), paused])
    with pytest.raises(InvalidTransition, match="already paused"):
        decide_pause(state, None)
    assert decide_resume(state) == [JobResumed(job_id=JOB)]


def test_every_command_on_a_deleted_job_is_refused() -> None:
    deleted = fold_job(JOB, [JobCreated(job_id=JOB, spec=SPEC), JobDeleted(job_id=JOB)])
    decisions: list[Callable[[], list[Event]]] = [
        lambda: decide_pause(deleted, None),
        lambda: decide_resume(deleted),
        lambda: decide_delete(deleted),
        lambda: decide_update(deleted, JobPatch(name="x"), CATALOG),
        lambda: decide_request_run(deleted, uuid.uuid4(), {}),
    ]
    for decide in decisions:
        with pytest.raises(InvalidTransition, match="deleted"):
            decide()


def test_commands_on_an_unknown_job_are_not_found() -> None:
    with pytest.raises(NotFound):
        decide_delete(JobState(JOB))


def test_run_request_snapshots_spec_and_version_and_is_allowed_while_paused() -> None:
    run_id = uuid.UUID(int=2)
    state = fold_job(JOB, [JobCreated(job_id=JOB, spec=SPEC), JobPaused(job_id=JOB)])
    [event] = decide_request_run(state, run_id, {"a": 2})
    assert event == RunRequested(
        run_id=run_id,
        job_id=JOB,
        job_version=2,
        execution="hello",
        dimensions={"audience": "moon"},
        params={"a": 1},
        overrides={"a": 2},
        trigger="manual",
    )
