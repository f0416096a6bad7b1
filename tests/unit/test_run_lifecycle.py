"""The run state machine: which event may follow which, folded from recorded events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from contracts.base import Event
from contracts.envelope import RecordedEvent
from contracts.events.runs import (
    RunFailed,
    RunLogArchived,
    RunLost,
    RunRejected,
    RunRendered,
    RunRequested,
    RunRetryScheduled,
    RunStarted,
    RunStopped,
    RunStopRequested,
    RunSucceeded,
    RunTimedOut,
)
from shared.domain.run_lifecycle import (
    RunState,
    RunStatus,
    TransitionRefused,
    check,
    refusal,
    run_state,
)

RUN = uuid.uuid4()


def recorded(events: list[Event], actor: str = "alice") -> list[RecordedEvent]:
    return [
        RecordedEvent(
            id=uuid.uuid4(),
            stream_id=f"run-{RUN}",
            stream_version=version,
            position=version,
            type=event.event_type(),
            schema_version=1,
            time=datetime.now(UTC),
            actor=actor,
            correlation_id="corr",
            causation_id=None,
            data=event.model_dump(mode="json"),
        )
        for version, event in enumerate(events, start=1)
    ]


def requested() -> RunRequested:
    return RunRequested(run_id=RUN, execution="hello")


def rendered() -> RunRendered:
    return RunRendered(run_id=RUN, driver="local", payload={"command": ["true"]}, execution_version=1)


def started() -> RunStarted:
    return RunStarted(run_id=RUN, dispatcher="d1", handle={"pid": 42})


def stop_requested() -> RunStopRequested:
    return RunStopRequested(run_id=RUN)


TERMINALS: list[Event] = [
    RunSucceeded(run_id=RUN),
    RunFailed(run_id=RUN, exit_code=3, reason="exited with code 3"),
    RunTimedOut(run_id=RUN, timeout_s=1.0),
    RunStopped(run_id=RUN, stopped_by="alice", reason="asked"),
    RunLost(run_id=RUN, reason="dispatcher gone"),
]


def state_of(*events: Event) -> RunState:
    return run_state(recorded(list(events)))


def test_status_follows_the_events_of_a_successful_run() -> None:
    assert state_of().status is None
    assert state_of(requested()).status is RunStatus.REQUESTED
    assert state_of(requested(), rendered()).status is RunStatus.RENDERED
    running = state_of(requested(), rendered(), started())
    assert running.status is RunStatus.RUNNING
    assert running.dispatcher == "d1" and running.handle == {"pid": 42} and running.version == 3
    done = state_of(requested(), rendered(), started(), RunSucceeded(run_id=RUN))
    assert done.status is RunStatus.SUCCEEDED and done.terminal and done.version == 4


def test_rendered_state_keeps_driver_and_payload_for_the_dispatcher() -> None:
    state = state_of(requested(), rendered())
    assert state.driver == "local" and state.payload == {"command": ["true"]}


def test_stop_request_records_who_asked() -> None:
    events = recorded([requested(), rendered(), started(), RunStopRequested(run_id=RUN, grace_s=2)], "bob")
    state = run_state(events)
    assert state.status is RunStatus.RUNNING
    assert state.stop_request is not None
    assert state.stop_request.actor == "bob" and state.stop_request.grace_s == 2
    assert state.stop_request.event_id == events[-1].id


@pytest.mark.parametrize("terminal", TERMINALS, ids=lambda e: e.event_type())
def test_a_second_terminal_event_is_refused(terminal: Event) -> None:
    state = state_of(requested(), rendered(), started(), terminal)
    assert state.terminal
    for second in TERMINALS:
        assert refusal(state, second) is not None


@pytest.mark.parametrize("terminal", TERMINALS, ids=lambda e: e.event_type())
def test_a_start_or_stop_request_after_the_end_is_refused(terminal: Event) -> None:
    state = state_of(requested(), rendered(), started(), terminal)
    assert refusal(state, started()) == f"the run already ended ({state.status})"
    with pytest.raises(TransitionRefused) as refused:
        check(state, stop_requested())
    assert refused.value.event_type == "RunStopRequested"


def test_a_start_after_a_stop_request_is_refused_but_the_stop_is_allowed() -> None:
    state = state_of(requested(), rendered(), stop_requested())
    assert refusal(state, started()) == "a stop was requested before it started"
    assert refusal(state, RunStopped(run_id=RUN, stopped_by="alice", reason="asked")) is None


def test_a_second_start_is_refused() -> None:
    assert refusal(state_of(requested(), rendered(), started()), started()) == "already started"


def test_a_run_that_is_not_rendered_cannot_start() -> None:
    assert refusal(state_of(requested()), started()) is not None
    assert refusal(state_of(), started()) == "the run was never requested"


def test_a_second_stop_request_is_refused() -> None:
    state = state_of(requested(), rendered(), started(), stop_requested())
    assert refusal(state, stop_requested()) == "a stop was already requested"


def test_a_rendered_run_may_fail_without_starting_but_not_succeed() -> None:
    state = state_of(requested(), rendered())
    assert refusal(state, RunFailed(run_id=RUN, reason="command not found")) is None
    assert refusal(state, RunSucceeded(run_id=RUN)) == "the run is not running"
    assert refusal(state, RunLost(run_id=RUN, reason="x")) == "the run is not running"


def test_a_run_that_has_not_started_stops_only_on_request() -> None:
    stopped = RunStopped(run_id=RUN, stopped_by="d1", reason="dispatcher shutting down")
    assert refusal(state_of(requested(), rendered()), stopped) is not None
    assert refusal(state_of(requested(), rendered(), started()), stopped) is None


def test_rendering_happens_once() -> None:
    state = state_of(requested(), rendered())
    assert refusal(state, rendered()) == "the run was already rendered"
    assert refusal(state, RunRejected(run_id=RUN, reason="bad")) == "the run was already rendered"
    assert refusal(state_of(), requested()) is None
    assert refusal(state_of(requested()), requested()) == "the run was already requested"


def test_log_is_archived_once_and_only_after_the_end() -> None:
    archived = RunLogArchived(run_id=RUN, bytes=1, sha256="0" * 64, location="file:///x")
    assert refusal(state_of(requested(), rendered(), started()), archived) == "the run has not ended"
    ended = state_of(requested(), rendered(), started(), RunSucceeded(run_id=RUN))
    assert refusal(ended, archived) is None
    twice = state_of(requested(), rendered(), started(), RunSucceeded(run_id=RUN), archived)
    assert twice.status is RunStatus.SUCCEEDED
    assert refusal(twice, archived) == "the log was already archived"


def test_retry_is_scheduled_once_and_only_for_runs_that_went_wrong() -> None:
    retry = RunRetryScheduled(run_id=RUN, next_run_id=uuid.uuid4(), attempt=2, due_at=datetime.now(UTC))
    failed = state_of(requested(), rendered(), started(), RunFailed(run_id=RUN, exit_code=1, reason="x"))
    assert refusal(failed, retry) is None
    assert refusal(state_of(requested(), rendered(), started(), RunSucceeded(run_id=RUN)), retry) is not None
    assert refusal(run_state([*recorded([requested(), rendered(), started()])]), retry) is not None
    assert refusal(
        state_of(requested(), rendered(), started(), RunLost(run_id=RUN, reason="x"), retry), retry
    )


def test_folding_never_refuses_recorded_history() -> None:
    state = state_of(
        requested(), rendered(), started(), RunSucceeded(run_id=RUN), RunLost(run_id=RUN, reason="x")
    )
    assert state.status is RunStatus.LOST and state.version == 5
