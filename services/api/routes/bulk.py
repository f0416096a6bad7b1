"""Bulk operations on every job matching a selector: pause, resume, run.

Each job's change is its own event (appended at that job's folded version, like the single-job
endpoint), and every event carries the request's one correlation id, which the answer returns; the
answer lists each job's outcome. See docs/decisions/0133-bulk-operations.md.
"""

from __future__ import annotations

import asyncio
import uuid

from aiohttp import web

from contracts import streams
from contracts.base import JsonObject
from contracts.envelope import EventMeta
from services.api.context import ApiContext, context
from services.api.domain.bulk import Action, decide_bulk, require_known_selector
from services.api.loaders import load_job
from services.api.models import (
    BulkItem,
    BulkPauseBody,
    BulkResult,
    BulkResumeBody,
    BulkRunBody,
    JobSelector,
)
from services.api.readmodels import queries
from services.api.requests import command_meta, json_response, read_body
from services.api.routes.endpoint import Endpoint
from shared.eventstore.errors import ConcurrencyError
from shared.eventstore.store import NO_STREAM

CONCURRENT_JOBS = 16
"""Jobs decided and appended at once: appends share the store's group commits, so a customer with
hundreds of jobs is one short request, without one request monopolising the pool."""
ATTEMPTS = 3
"""A job changed by someone else between fold and append is folded again, this many times in all."""


async def _apply_one(
    ctx: ApiContext,
    action: Action,
    job_id: uuid.UUID,
    name: str,
    meta: EventMeta,
    reason: str | None,
    overrides: JsonObject,
) -> tuple[BulkItem, int | None]:
    """The job's outcome and the position of what was recorded (None when nothing was)."""
    for _ in range(ATTEMPTS):
        state = await load_job(ctx.store, job_id)
        decision = decide_bulk(action, state, reason=reason, overrides=overrides)
        version = state.version if state.exists else None
        if not decision.events:
            item = BulkItem(
                job_id=job_id, name=name, outcome=decision.outcome, reason=decision.reason, version=version
            )
            return item, None
        if decision.run_id is not None:
            stream, expected = streams.stream_id(streams.RUN, decision.run_id), NO_STREAM
        else:
            stream, expected = streams.stream_id(streams.JOB, job_id), state.version
        try:
            recorded = await ctx.store.append(stream, decision.events, expected_version=expected, meta=meta)
        except ConcurrencyError:
            continue
        if decision.run_id is None:
            version = recorded[-1].stream_version
        item = BulkItem(job_id=job_id, name=name, outcome="changed", version=version, run_id=decision.run_id)
        return item, recorded[-1].position
    reason = f"job changed concurrently {ATTEMPTS} times; nothing recorded, try again"
    return BulkItem(job_id=job_id, name=name, outcome="failed", reason=reason), None


async def _bulk(
    request: web.Request, action: Action, selector: JobSelector, reason: str | None, overrides: JsonObject
) -> web.Response:
    ctx = context(request)
    meta = command_meta(request)
    enabled = None if selector.state is None else selector.state == "enabled"
    async with ctx.pool.acquire() as conn:
        require_known_selector(selector.dimensions, selector.execution, await queries.catalog(conn))
        jobs = await queries.select_jobs(conn, selector.dimensions, selector.execution, enabled)
    gate = asyncio.Semaphore(CONCURRENT_JOBS)

    async def one(job_id: uuid.UUID, name: str) -> tuple[BulkItem, int | None]:
        async with gate:
            return await _apply_one(ctx, action, job_id, name, meta, reason, overrides)

    results = await asyncio.gather(*(one(job_id, name) for job_id, name in jobs))
    positions = [position for _, position in results if position is not None]
    if positions:
        await ctx.settle(max(positions))
    items = [item for item, _ in results]
    return json_response(
        BulkResult(
            action=action,
            correlation_id=meta.correlation_id,
            matched=len(items),
            changed=sum(item.outcome == "changed" for item in items),
            unchanged=sum(item.outcome == "unchanged" for item in items),
            failed=sum(item.outcome == "failed" for item in items),
            items=items,
        )
    )


async def bulk_pause(request: web.Request) -> web.Response:
    body = await read_body(request, BulkPauseBody)
    return await _bulk(request, "pause", body, body.reason, {})


async def bulk_resume(request: web.Request) -> web.Response:
    body = await read_body(request, BulkResumeBody)
    return await _bulk(request, "resume", body, None, {})


async def bulk_run(request: web.Request) -> web.Response:
    body = await read_body(request, BulkRunBody)
    overrides = context(request).door.seal(body.params, "body.params")
    return await _bulk(request, "run", body, None, overrides)


_SELECTION = (
    "Jobs are selected like `GET /jobs`: all of `dimensions` must match, optionally `execution` and "
    "`state`; at least one of `dimensions` and `execution` is required, and an undefined dimension, value "
    "or execution is 422 naming it. Each job's change is its own event; all of them carry the request's "
    "correlation id (`X-Correlation-Id`, returned as `correlation_id`). Answers 200 with each job's "
    "outcome: `changed`, `unchanged` (already in that state) or `failed` with a reason."
)

ENDPOINTS = [
    Endpoint(
        "POST",
        "/jobs/pause",
        bulk_pause,
        "Pause every selected job. " + _SELECTION,
        response=BulkResult,
        body=BulkPauseBody,
        errors=(400, 422),
        tag="jobs",
    ),
    Endpoint(
        "POST",
        "/jobs/resume",
        bulk_resume,
        "Resume every selected job. " + _SELECTION,
        response=BulkResult,
        body=BulkResumeBody,
        errors=(400, 422),
        tag="jobs",
    ),
    Endpoint(
        "POST",
        "/jobs/runs",
        bulk_run,
        "Run every selected job now (paused ones too, unless `state` says otherwise), with optional "
        "parameter overrides; each item carries its `run_id`. " + _SELECTION,
        response=BulkResult,
        body=BulkRunBody,
        errors=(400, 422),
        tag="runs",
    ),
]
