"""The pure rules for executions, dimensions and state files."""

from __future__ import annotations

import uuid

import pytest

from contracts.commands import StateFile
from contracts.events import (
    DimensionDefined,
    DimensionRedefined,
    DimensionRemoved,
    ExecutionDefined,
    ExecutionRedefined,
    ExecutionRemoved,
)
from contracts.specs import DimensionSpec, ExecutionSpec
from services.api.domain.definitions import (
    Definition,
    JobRef,
    decide_define_dimension,
    decide_define_execution,
    decide_remove_dimension,
    decide_remove_execution,
    fold_dimension,
    fold_execution,
    plan_state,
    state_digest,
)
from services.api.domain.errors import InUse, NotFound

HELLO = ExecutionSpec(driver="local", payload_template="{}")
AUDIENCE = DimensionSpec(priority=1, values={"moon": {}, "sun": {}})
JOB = JobRef(uuid.UUID(int=7), "hello", {"audience": "moon"})


def test_fold_follows_define_redefine_remove_and_counts_the_version() -> None:
    other = HELLO.model_copy(update={"driver": "docker"})
    state = fold_execution(
        "hello",
        [
            ExecutionDefined(name="hello", spec=HELLO),
            ExecutionRedefined(name="hello", spec=other, changed=["driver"]),
            ExecutionRemoved(name="hello"),
        ],
    )
    assert state.spec is None and state.version == 3
    assert fold_dimension("a", [DimensionDefined(name="a", spec=AUDIENCE)]).spec == AUDIENCE


def test_define_is_new_redefine_names_changes_and_same_spec_records_nothing() -> None:
    assert decide_define_execution(Definition("hello"), HELLO) == [ExecutionDefined(name="hello", spec=HELLO)]
    current = Definition("hello", 1, HELLO)
    assert decide_define_execution(current, HELLO) == []
    other = HELLO.model_copy(update={"default_params": {"a": 1}})
    [event] = decide_define_execution(current, other)
    assert isinstance(event, ExecutionRedefined) and event.changed == ["default_params"]


def test_removing_a_used_execution_is_refused_listing_jobs_unless_forced() -> None:
    current = Definition("hello", 1, HELLO)
    with pytest.raises(InUse) as refused:
        decide_remove_execution(current, [JOB], force=False)
    assert refused.value.extra["jobs"] == [str(JOB.id)]
    assert decide_remove_execution(current, [JOB], force=True) == [ExecutionRemoved(name="hello")]
    with pytest.raises(NotFound):
        decide_remove_execution(Definition("hello"), [], force=False)


def test_dropping_a_used_dimension_value_is_refused_but_adding_values_is_not() -> None:
    current = Definition("audience", 1, AUDIENCE)
    with pytest.raises(InUse):
        decide_define_dimension(current, DimensionSpec(values={"sun": {}}), [JOB], force=False)
    wider = DimensionSpec(priority=1, values={"moon": {}, "sun": {}, "mars": {}})
    [event] = decide_define_dimension(current, wider, [JOB], force=False)
    assert isinstance(event, DimensionRedefined) and event.changed == ["values"]
    with pytest.raises(InUse):
        decide_remove_dimension(current, [JOB], force=False)
    assert decide_remove_dimension(current, [JOB], force=True) == [DimensionRemoved(name="audience")]


def test_state_plan_adds_changes_and_removes_with_versions_to_append_at() -> None:
    executions = {"hello": Definition("hello", 2, HELLO), "old": Definition("old", 1, HELLO)}
    dimensions = {"audience": Definition("audience", 1, AUDIENCE)}
    desired = StateFile(
        executions={"hello": HELLO.model_copy(update={"driver": "docker"}), "new": HELLO},
        dimensions={"audience": AUDIENCE},
    )
    plan = plan_state(desired, executions, dimensions, [], force=False)
    assert plan.executions.added == ["new"] and plan.executions.changed == ["hello"]
    assert plan.executions.removed == ["old"]
    assert plan.dimensions.added == plan.dimensions.changed == plan.dimensions.removed == []
    assert [(a.stream_id, a.expected_version) for a in plan.appends] == [
        ("execution-hello", 2),
        ("execution-new", 0),
        ("execution-old", 1),
    ]
    assert plan.loaded_event().digest == state_digest(desired)


def test_state_plan_with_nothing_to_change_is_empty() -> None:
    plan = plan_state(
        StateFile(executions={"hello": HELLO}),
        {"hello": Definition("hello", 1, HELLO)},
        {},
        [JOB],
        force=False,
    )
    assert plan.empty


def test_state_plan_refuses_every_stranding_removal_at_once_unless_forced() -> None:
    executions = {"hello": Definition("hello", 1, HELLO)}
    dimensions = {"audience": Definition("audience", 1, AUDIENCE)}
    empty = StateFile(executions={}, dimensions={})
    with pytest.raises(InUse) as refused:
        plan_state(empty, executions, dimensions, [JOB], force=False)
    assert refused.value.extra["blocked"] == {
        "execution hello": [str(JOB.id)],
        "dimension audience": [str(JOB.id)],
    }
    forced = plan_state(empty, executions, dimensions, [JOB], force=True)
    assert forced.executions.removed == ["hello"] and forced.dimensions.removed == ["audience"]


def test_state_plan_leaves_a_kind_absent_from_the_file_untouched() -> None:
    executions = {"hello": Definition("hello", 1, HELLO)}
    dimensions = {"audience": Definition("audience", 1, AUDIENCE)}
    assert plan_state(StateFile(), executions, dimensions, [JOB], force=False).empty
    only_dimensions = plan_state(StateFile(dimensions={}), executions, dimensions, [], force=False)
    assert only_dimensions.dimensions.removed == ["audience"] and only_dimensions.executions.removed == []
    assert state_digest(StateFile()) != state_digest(StateFile(dimensions={}))


def test_state_digest_ignores_key_order() -> None:
    a = StateFile(executions={"x": HELLO, "y": HELLO})
    b = StateFile(executions={"y": HELLO, "x": HELLO})
    assert state_digest(a) == state_digest(b)
