"""The one-word state of a job that users see in lists: idle, queued, running, retrying, failed, paused.

It is derived from the job's runs, never stored, so a replayed read model cannot disagree with the
history. Precedence (decision 0074): paused (scheduling is off, whatever still runs), running, queued,
retrying, then the outcome of the newest run that was not skipped. A scheduled run staged ahead of its
tick (decision 0175) is not waiting until its time comes: the job is as it was before it was staged.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

JobState = Literal["idle", "queued", "running", "retrying", "failed", "paused"]

RunStatus = Literal[
    "queued",
    "requested",
    "rendered",
    "rejected",
    "running",
    "succeeded",
    "failed",
    "timed_out",
    "stopped",
    "lost",
    "skipped",
]

WAITING_STATUSES: frozenset[RunStatus] = frozenset({"queued", "requested", "rendered"})
FAILED_STATUSES: frozenset[RunStatus] = frozenset({"failed", "timed_out", "lost", "rejected"})


@dataclass(frozen=True)
class RunSummary:
    """What the state needs from one run: its status and, after `RunRetryScheduled`, the next attempt."""

    run_id: uuid.UUID
    status: RunStatus
    retry_run_id: uuid.UUID | None = None
    start_at: datetime | None = None


def job_state(runs: Sequence[RunSummary], *, paused: bool, now: datetime | None = None) -> JobState:
    """Fold the job's runs, oldest first, into its state; `now` tells staged runs that are due."""
    if paused:
        return "paused"
    runs = [run for run in runs if run.start_at is None or now is None or run.start_at <= now]
    statuses = {run.status for run in runs}
    if "running" in statuses:
        return "running"
    if statuses & WAITING_STATUSES:
        return "queued"
    known = {run.run_id for run in runs}
    if any(run.retry_run_id is not None and run.retry_run_id not in known for run in runs):
        return "retrying"
    decisive = [run for run in runs if run.status != "skipped"]
    if decisive and decisive[-1].status in FAILED_STATUSES:
        return "failed"
    return "idle"
