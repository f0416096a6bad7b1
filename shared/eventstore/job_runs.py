"""A job's active and waiting runs, read from the event store itself.

Overlap decisions (decision 0072) need them at the moment of a trigger; read models lag and belong to
the API, while the store is where every service meets, so the dispatcher's scheduler and the API's
manual-run endpoint ask the store with the same query.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from shared.domain.run_lifecycle import TERMINAL_EVENT_TYPES

# One round trip for both lists: at a busy tick every job asks at once.
_RUNS = """
SELECT 'active' AS kind, (r.data->>'run_id')::uuid AS run_id, r.position FROM events r
WHERE r.type = 'RunRequested' AND r.data->>'job_id' = $1
  AND NOT EXISTS (SELECT 1 FROM events t WHERE t.stream_id = r.stream_id AND t.type = ANY($2::text[]))
UNION ALL
SELECT 'queued', (q.data->>'run_id')::uuid, q.position FROM events q
WHERE q.type = 'RunQueued' AND q.data->>'job_id' = $1
  AND NOT EXISTS (SELECT 1 FROM events t WHERE t.stream_id = q.stream_id AND t.type = 'RunRequested')
ORDER BY position
"""


@dataclass(frozen=True)
class JobRuns:
    """Oldest first, as `decide_overlap` wants them."""

    active: tuple[uuid.UUID, ...]
    queued: tuple[uuid.UUID, ...]


async def job_runs(pool: asyncpg.Pool, job_id: uuid.UUID) -> JobRuns:
    async with pool.acquire() as conn:
        rows = await conn.fetch(_RUNS, str(job_id), sorted(TERMINAL_EVENT_TYPES))
    return JobRuns(
        tuple(r["run_id"] for r in rows if r["kind"] == "active"),
        tuple(r["run_id"] for r in rows if r["kind"] == "queued"),
    )
