"""Bulk operations along dimension values: one job at a time, each its own decision and event.

A job already in the wanted state is `unchanged`, not a failure: asking to pause every job of a
customer when some are already paused has done what was asked for those.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from contracts.base import Event, JsonObject
from services.api.domain.errors import InvalidTransition, Refused, UnknownReferences
from services.api.domain.jobs import Catalog, JobState, decide_pause, decide_request_run, decide_resume

Action = Literal["pause", "resume", "run"]


def require_known_selector(dimensions: Mapping[str, str], execution: str | None, catalog: Catalog) -> None:
    """A selector naming what does not exist is a typo, not an empty selection: 422 naming it."""
    unknown: list[str] = []
    if execution is not None and execution not in catalog.executions:
        unknown.append(f"execution {execution!r}")
    for dimension, value in sorted(dimensions.items()):
        if dimension not in catalog.dimensions:
            unknown.append(f"dimension {dimension!r}")
        elif value not in catalog.dimensions[dimension]:
            unknown.append(f"value {value!r} of dimension {dimension!r}")
    if unknown:
        raise UnknownReferences("the selector refers to undefined " + ", ".join(unknown), unknown=unknown)


@dataclass(frozen=True)
class BulkDecision:
    """What to append for one job: nothing with a reason (unchanged or failed), or events."""

    outcome: Literal["changed", "unchanged", "failed"]
    events: list[Event]
    reason: str | None = None
    run_id: uuid.UUID | None = None


def decide_bulk(
    action: Action, state: JobState, *, reason: str | None = None, overrides: JsonObject | None = None
) -> BulkDecision:
    try:
        if action == "pause":
            return BulkDecision("changed", decide_pause(state, reason))
        if action == "resume":
            return BulkDecision("changed", decide_resume(state))
        run_id = uuid.uuid4()
        return BulkDecision("changed", decide_request_run(state, run_id, overrides or {}), run_id=run_id)
    except InvalidTransition as exc:
        if state.exists:
            return BulkDecision("unchanged", [], reason=exc.detail)
        return BulkDecision("failed", [], reason=exc.detail)
    except Refused as exc:
        return BulkDecision("failed", [], reason=exc.detail)
