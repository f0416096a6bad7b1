"""What the API decides about runs: requesting a one-off run, and asking a run to stop.

A stop request is decided on the run's own stream, folded from the store with the run lifecycle every
writer shares (`shared/domain/run_lifecycle.py`): a run that already ended
refuses it (409), and a run whose stop is already pending answers as if asked for the first time
without recording a second request, so a client retrying a stop, or two operators pressing the button
together, produce one `RunStopRequested` (0121).
"""

from __future__ import annotations

import uuid

from contracts.base import Event
from contracts.commands import OneOffRun
from contracts.events import RunRequested, RunStopRequested
from services.api.domain.errors import InvalidTransition, NotFound, UnknownReferences
from services.api.domain.jobs import Catalog, unknown_definitions
from shared.domain.run_lifecycle import RunState, refusal


def started(state: RunState) -> bool:
    """Whether a dispatcher ever started the run (and so whether it may have printed anything)."""
    return state.dispatcher is not None


def decide_oneoff(run_id: uuid.UUID, spec: OneOffRun, catalog: Catalog) -> list[Event]:
    """The params are the run's own layer (`overrides`), the last word in the merge, as for a manual
    run's overrides; there is no job layer."""
    unknown = unknown_definitions(spec.execution, spec.dimensions, catalog)
    if unknown:
        raise UnknownReferences("the run refers to undefined " + ", ".join(unknown), unknown=unknown)
    return [
        RunRequested(
            run_id=run_id,
            execution=spec.execution,
            dimensions=spec.dimensions,
            overrides=spec.params,
            trigger="oneoff",
        )
    ]


def decide_stop(run_id: uuid.UUID, state: RunState, grace_s: float | None) -> list[Event]:
    """No event when a stop is already pending: the first request's actor and grace stand."""
    if state.status is None:
        raise NotFound(f"no run {run_id}")
    if state.terminal:
        raise InvalidTransition(f"run {run_id} already ended ({state.status})", run_status=state.status)
    if state.stop_request is not None:
        return []
    event = RunStopRequested(run_id=run_id, grace_s=grace_s)
    reason = refusal(state, event)
    if reason is not None:
        raise InvalidTransition(f"run {run_id}: {reason}", run_status=state.status)
    return [event]
