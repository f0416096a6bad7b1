"""What a new trigger of a job does when runs of that job are already active (decision 0072).

One rule covers every policy: a trigger starts a run while fewer runs are active than the job's limit;
at the limit, the policy decides: `allow` and `forbid` skip, `replace` stops the oldest runs to make
room, `queue` lets one run wait. `allow` only differs by its default limit (unbounded instead of one).
Scheduled and manual triggers are treated alike; only a forced manual trigger bypasses the policy.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from contracts.schedules import OverlapPolicy, OverlapSpec

MAX_QUEUED = 1

SkipCode = Literal["overlap_forbidden", "concurrency_limit_reached", "queue_full"]


@dataclass(frozen=True)
class Start:
    pass


@dataclass(frozen=True)
class Skip:
    """`code` is for machines (filters, metrics); `reason` is the sentence `RunSkipped` shows users."""

    code: SkipCode
    reason: str


@dataclass(frozen=True)
class StopThenStart:
    """Stop these runs (oldest first), then start the new one."""

    stop: tuple[uuid.UUID, ...]


@dataclass(frozen=True)
class Enqueue:
    pass


OverlapDecision = Start | Skip | StopThenStart | Enqueue


def effective_limit(policy: OverlapPolicy, concurrency_limit: int | None) -> int | None:
    """The number of runs that may be active at once; None means no bound."""
    if concurrency_limit is not None:
        return concurrency_limit
    return None if policy == "allow" else 1


def decide_overlap(
    spec: OverlapSpec,
    active: Sequence[uuid.UUID],
    queued: Sequence[uuid.UUID] = (),
    *,
    force: bool = False,
) -> OverlapDecision:
    """Decide what a new trigger does, given the job's active runs and waiting runs, oldest first."""
    limit = effective_limit(spec.policy, spec.concurrency_limit)
    if force:
        return Start()
    if spec.policy == "queue" and queued:
        # A new trigger never overtakes a waiting run, even in the moment before it is dequeued.
        return _queue_or_skip(queued)
    if limit is None or len(active) < limit:
        return Start()
    if spec.policy == "replace":
        return StopThenStart(stop=tuple(active[: len(active) - limit + 1]))
    if spec.policy == "queue":
        return _queue_or_skip(queued)
    if spec.policy == "forbid" and limit == 1:
        return Skip("overlap_forbidden", f"run {active[0]} is still active and overlap is forbidden")
    return Skip("concurrency_limit_reached", f"{len(active)} runs are active, the limit is {limit}")


def _queue_or_skip(queued: Sequence[uuid.UUID]) -> OverlapDecision:
    if len(queued) < MAX_QUEUED:
        return Enqueue()
    return Skip("queue_full", f"run {queued[0]} is already waiting and at most {MAX_QUEUED} may wait")


def next_to_dequeue(
    spec: OverlapSpec, active: Sequence[uuid.UUID], queued: Sequence[uuid.UUID]
) -> uuid.UUID | None:
    """The waiting run to start now that the active runs are these, if the limit leaves room."""
    limit = effective_limit(spec.policy, spec.concurrency_limit)
    if not queued or (limit is not None and len(active) >= limit):
        return None
    return queued[0]
