"""What a job view adds to the stored row: its state from its runs and its next fire times.

Both are derived when asked, never stored: the state follows from the runs (decision 0074) and the
next fire times from the schedule and the clock, which a projection must not read.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from services.api.models import JobView
from services.api.readmodels.schema import LIVE_SCHEMA, quote
from shared.domain.job_state import RunSummary, job_state
from shared.domain.schedule import CronSchedule, next_fire_times

S = quote(LIVE_SCHEMA)
NEXT_RUNS = 5
# The state depends on the newest runs only; older ones are finished or long superseded.
RECENT_RUNS = 100


async def with_status(conn: asyncpg.Connection, view: JobView) -> JobView:
    rows = await conn.fetch(
        f"SELECT id, status, next_run_id, start_at FROM {S}.runs WHERE job_id = $1 "
        "ORDER BY requested_position DESC LIMIT $2",
        view.id,
        RECENT_RUNS,
    )
    runs = [RunSummary(r["id"], r["status"], r["next_run_id"], r["start_at"]) for r in reversed(rows)]
    now = datetime.now(UTC)
    next_runs: list[datetime] = []
    if view.schedule is not None and view.enabled:
        next_runs = next_fire_times(CronSchedule.from_spec(view.schedule), now, NEXT_RUNS)
    state = job_state(runs, paused=not view.enabled, now=now)
    return view.model_copy(update={"state": state, "next_runs": next_runs})
