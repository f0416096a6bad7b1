"""The life of one run as a state machine over its events.

Writers (dispatcher, API, renderer) ask `refusal` before they append, and append at the version they
folded, so a decision and the history it was made on cannot drift apart: an event that does not follow
from the run's current state (a second terminal event, a start after a stop request, a stop request after
the end) is refused instead of recorded. Folding (`evolve`) never refuses: the history is the truth, even
if an older writer once recorded something this module would refuse today.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum

from contracts.base import Event, JsonObject
from contracts.envelope import RecordedEvent
from contracts.events.runs import (
    RunAdopted,
    RunFailed,
    RunLogArchived,
    RunLost,
    RunRejected,
    RunRendered,
    RunRequested,
    RunRetryScheduled,
    RunStarted,
    RunStepEnded,
    RunStepStarted,
    RunStopped,
    RunStopRequested,
    RunSucceeded,
    RunTimedOut,
)


class RunStatus(StrEnum):
    REQUESTED = "requested"
    RENDERED = "rendered"
    REJECTED = "rejected"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    STOPPED = "stopped"
    LOST = "lost"


TERMINAL_STATUSES = frozenset(
    {
        RunStatus.REJECTED,
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.TIMED_OUT,
        RunStatus.STOPPED,
        RunStatus.LOST,
    }
)
RETRYABLE_STATUSES = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.LOST})

TERMINAL_EVENTS: dict[type[Event], RunStatus] = {
    RunRejected: RunStatus.REJECTED,
    RunSucceeded: RunStatus.SUCCEEDED,
    RunFailed: RunStatus.FAILED,
    RunTimedOut: RunStatus.TIMED_OUT,
    RunStopped: RunStatus.STOPPED,
    RunLost: RunStatus.LOST,
}
TERMINAL_EVENT_TYPES = frozenset(cls.event_type() for cls in TERMINAL_EVENTS)


@dataclass(frozen=True)
class StopRequest:
    """Who asked a run to stop: the stopped event names them, whichever process carries the stop out."""

    actor: str
    grace_s: float | None
    event_id: uuid.UUID


@dataclass(frozen=True)
class RunState:
    """What the events of one run stream say about it so far; `version` is the version to append at."""

    version: int = 0
    status: RunStatus | None = None
    driver: str | None = None
    payload: JsonObject | None = None
    dispatcher: str | None = None
    handle: JsonObject | None = None
    stop_request: StopRequest | None = None
    log_archived: bool = False
    retry_scheduled: bool = False

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class TransitionRefused(Exception):
    """An event that does not follow from the run's state; callers answer it, they never record it."""

    def __init__(self, state: RunState, event_type: str, reason: str) -> None:
        super().__init__(f"{event_type} refused: {reason}")
        self.state = state
        self.event_type = event_type
        self.reason = reason


def refusal(state: RunState, event: Event) -> str | None:
    """Why `event` may not be appended to a run in `state`, or None when it may."""
    status = state.status
    if isinstance(event, RunRequested):
        return None if status is None else "the run was already requested"
    if status is None:
        return "the run was never requested"
    if isinstance(event, RunLogArchived):
        if not state.terminal:
            return "the run has not ended"
        return "the log was already archived" if state.log_archived else None
    if isinstance(event, RunRetryScheduled):
        if status not in RETRYABLE_STATUSES:
            return f"a {status} run is not retried"
        return "a retry was already scheduled" if state.retry_scheduled else None
    if state.terminal:
        return f"the run already ended ({status})"
    if isinstance(event, RunStepStarted | RunStepEnded):
        return None if status is RunStatus.RUNNING else "the run is not running"
    if isinstance(event, RunRendered | RunRejected):
        return None if status is RunStatus.REQUESTED else "the run was already rendered"
    if isinstance(event, RunStarted):
        if status is not RunStatus.RENDERED:
            return "the run is not waiting to start" if status is RunStatus.REQUESTED else "already started"
        return "a stop was requested before it started" if state.stop_request else None
    if isinstance(event, RunAdopted):
        return None if status is RunStatus.RUNNING else "the run is not running"
    if isinstance(event, RunStopRequested):
        return "a stop was already requested" if state.stop_request else None
    if isinstance(event, RunStopped):
        if status is RunStatus.RUNNING or state.stop_request is not None:
            return None
        return "nobody asked a run that has not started to stop"
    if isinstance(event, RunFailed):
        return None if status in (RunStatus.RENDERED, RunStatus.RUNNING) else "the run was never rendered"
    if isinstance(event, RunSucceeded | RunTimedOut | RunLost):
        return None if status is RunStatus.RUNNING else "the run is not running"
    return f"{event.event_type()} is not an event of a run"


def check(state: RunState, event: Event) -> None:
    reason = refusal(state, event)
    if reason is not None:
        raise TransitionRefused(state, event.event_type(), reason)


def evolve(state: RunState, recorded: RecordedEvent) -> RunState:
    """The state after one more recorded event of the same run."""
    event = recorded.payload()
    state = replace(state, version=recorded.stream_version)
    if isinstance(event, RunRequested):
        return replace(state, status=RunStatus.REQUESTED)
    if isinstance(event, RunRendered):
        return replace(state, status=RunStatus.RENDERED, driver=event.driver, payload=event.payload)
    if isinstance(event, RunStarted):
        return replace(state, status=RunStatus.RUNNING, dispatcher=event.dispatcher, handle=event.handle)
    if isinstance(event, RunAdopted):
        return replace(state, dispatcher=event.dispatcher, handle=event.handle)
    if isinstance(event, RunStopRequested):
        return replace(state, stop_request=StopRequest(recorded.actor, event.grace_s, recorded.id))
    if isinstance(event, RunLogArchived):
        return replace(state, log_archived=True)
    if isinstance(event, RunRetryScheduled):
        return replace(state, retry_scheduled=True)
    terminal = TERMINAL_EVENTS.get(type(event))
    if terminal is not None:
        return replace(state, status=terminal)
    return state


def run_state(events: Iterable[RecordedEvent]) -> RunState:
    state = RunState()
    for recorded in events:
        state = evolve(state, recorded)
    return state
