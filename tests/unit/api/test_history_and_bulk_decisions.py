"""Pure rules behind the job history and bulk operations."""

from __future__ import annotations

import uuid

import pytest

from contracts.events import JobCreated, JobDeleted, JobPaused, RunRequested
from contracts.specs import JobSpec
from services.api.domain.bulk import decide_bulk, require_known_selector
from services.api.domain.errors import UnknownReferences
from services.api.domain.history import Change, diff_specs
from services.api.domain.jobs import Catalog, JobState, fold_job

JOB = uuid.UUID(int=7)
SECRET = {"type": "secret", "encrypted": "abc"}
SPEC = JobSpec(name="j", execution="hello", dimensions={"customer": "acme"}, params={"db": {"host": "a"}})


def test_params_and_dimensions_are_compared_leaf_by_leaf() -> None:
    after = SPEC.model_copy(
        update={"params": {"db": {"host": "b", "port": 1}}, "dimensions": {"customer": "globex"}}
    )
    assert diff_specs(SPEC, after) == [
        Change("dimensions.customer", "acme", "globex"),
        Change("params.db.host", "a", "b"),
        Change("params.db.port", None, 1),
    ]


def test_a_secret_is_one_leaf_shown_masked() -> None:
    before = SPEC.model_copy(update={"params": {"pw": SECRET}})
    after = SPEC.model_copy(update={"params": {"pw": SECRET | {"encrypted": "xyz"}}})
    assert diff_specs(before, after) == [Change("params.pw", "***", "***")]
    assert diff_specs(before, SPEC) == [Change("params.db.host", None, "a"), Change("params.pw", "***", None)]


def test_an_object_replaced_by_a_scalar_shows_both_sides() -> None:
    after = SPEC.model_copy(update={"params": {"db": "sqlite"}})
    assert diff_specs(SPEC, after) == [
        Change("params.db", None, "sqlite"),
        Change("params.db.host", "a", None),
    ]


def test_bulk_pause_of_a_paused_job_is_unchanged_and_of_a_deleted_one_failed() -> None:
    live = fold_job(JOB, [JobCreated(job_id=JOB, spec=SPEC)])
    decision = decide_bulk("pause", live, reason="r")
    assert decision.outcome == "changed" and decision.events == [JobPaused(job_id=JOB, reason="r")]
    paused = fold_job(JOB, [JobCreated(job_id=JOB, spec=SPEC), JobPaused(job_id=JOB)])
    assert decide_bulk("pause", paused).outcome == "unchanged"
    assert decide_bulk("resume", live).outcome == "unchanged"
    deleted = fold_job(JOB, [JobCreated(job_id=JOB, spec=SPEC), JobDeleted(job_id=JOB)])
    assert decide_bulk("pause", deleted).outcome == "failed"
    assert decide_bulk("run", JobState(JOB)).outcome == "failed"


def test_bulk_run_of_a_paused_job_requests_a_run_with_the_overrides() -> None:
    paused = fold_job(JOB, [JobCreated(job_id=JOB, spec=SPEC), JobPaused(job_id=JOB)])
    decision = decide_bulk("run", paused, overrides={"x": 1})
    [event] = decision.events
    assert isinstance(event, RunRequested) and event.run_id == decision.run_id
    assert event.overrides == {"x": 1} and event.job_version == 2


def test_a_selector_naming_undefined_things_is_refused_naming_them() -> None:
    catalog = Catalog(frozenset({"hello"}), {"customer": frozenset({"acme"})})
    require_known_selector({"customer": "acme"}, "hello", catalog)
    with pytest.raises(UnknownReferences) as refused:
        require_known_selector({"customer": "initech", "env": "prod"}, "bye", catalog)
    assert refused.value.extra["unknown"] == [
        "execution 'bye'",
        "value 'initech' of dimension 'customer'",
        "dimension 'env'",
    ]
