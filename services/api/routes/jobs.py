"""Jobs: create, read, list, update, delete, pause, resume, and request a run."""

from __future__ import annotations

import uuid

from aiohttp import web
from pydantic import ValidationError

from contracts import streams
from contracts.commands import JobPatch, RunOverrides
from contracts.events import JobUpdated
from contracts.specs import JobSpec
from services.api.context import ApiContext, context
from services.api.domain import history
from services.api.domain import jobs as domain
from services.api.loaders import load_job
from services.api.models import (
    FieldChange,
    HistoryItem,
    HistoryPage,
    HistoryQuery,
    JobListQuery,
    JobPage,
    JobView,
    PauseBody,
    RunView,
)
from services.api.problems import ProblemError, validation_problem
from services.api.readmodels import queries
from services.api.render_check import refuse_unrenderable_params
from services.api.requests import (
    command_meta,
    etag,
    if_match,
    json_response,
    path_uuid,
    read_body,
    read_query,
)
from services.api.routes import schedules
from services.api.routes.endpoint import Endpoint
from shared.eventstore.errors import ConcurrencyError
from shared.eventstore.store import NO_STREAM


async def _job_response(ctx: ApiContext, job_id: uuid.UUID, status: int = 200) -> web.Response:
    async with ctx.pool.acquire() as conn:
        view = await queries.get_job(conn, job_id)
    if view is None:
        raise ProblemError(404, "Not Found", f"no job {job_id}", "not-found")
    headers = {"ETag": etag(view.version)}
    if status == 201:
        headers["Location"] = f"/jobs/{job_id}"
    return json_response(view, status=status, headers=headers)


async def _expected(request: web.Request, state: domain.JobState) -> int:
    """The version to append at: If-Match when given (refused early when already stale), else the read one."""
    wanted = if_match(request)
    if wanted is None:
        return state.version
    if state.spec is not None and wanted != state.version:
        raise ConcurrencyError(streams.stream_id(streams.JOB, state.job_id), wanted, state.version)
    return wanted


async def create_job(request: web.Request) -> web.Response:
    ctx = context(request)
    spec = ctx.door.seal_job(await read_body(request, JobSpec), "body")
    meta = command_meta(request)
    job_id = uuid.uuid4()
    async with ctx.pool.acquire() as conn:
        catalog = await queries.catalog(conn)
    events = domain.decide_create(job_id, spec, catalog)
    await refuse_unrenderable_params(ctx, spec, None)
    await ctx.append(streams.stream_id(streams.JOB, job_id), events, expected_version=NO_STREAM, meta=meta)
    return await _job_response(ctx, job_id, status=201)


async def get_job(request: web.Request) -> web.Response:
    return await _job_response(context(request), path_uuid(request, "job_id"))


async def list_jobs(request: web.Request) -> web.Response:
    query = read_query(request, JobListQuery)
    async with context(request).pool.acquire() as conn:
        items, cursor = await queries.list_jobs(conn, query)
    return json_response(JobPage(items=items, next_cursor=cursor))


async def patch_job(request: web.Request) -> web.Response:
    ctx = context(request)
    job_id = path_uuid(request, "job_id")
    patch = ctx.door.seal_patch(await read_body(request, JobPatch), "body")
    meta = command_meta(request)
    state = await load_job(ctx.store, job_id)
    expected = await _expected(request, state)
    async with ctx.pool.acquire() as conn:
        catalog = await queries.catalog(conn)
    try:
        events = domain.decide_update(state, patch, catalog)
    except ValidationError as exc:
        raise validation_problem(exc, "body") from None
    for event in events:
        if isinstance(event, JobUpdated) and RENDER_INPUTS & set(event.changed):
            await refuse_unrenderable_params(ctx, event.spec, job_id)
    await ctx.append(streams.stream_id(streams.JOB, job_id), events, expected_version=expected, meta=meta)
    return await _job_response(ctx, job_id)


async def delete_job(request: web.Request) -> web.Response:
    ctx = context(request)
    job_id = path_uuid(request, "job_id")
    meta = command_meta(request)
    state = await load_job(ctx.store, job_id)
    expected = await _expected(request, state)
    events = domain.decide_delete(state)
    await ctx.append(streams.stream_id(streams.JOB, job_id), events, expected_version=expected, meta=meta)
    return web.Response(status=204)


async def pause_job(request: web.Request) -> web.Response:
    ctx = context(request)
    job_id = path_uuid(request, "job_id")
    body = await read_body(request, PauseBody, optional=True)
    meta = command_meta(request)
    state = await load_job(ctx.store, job_id)
    expected = await _expected(request, state)
    events = domain.decide_pause(state, body.reason)
    await ctx.append(streams.stream_id(streams.JOB, job_id), events, expected_version=expected, meta=meta)
    return await _job_response(ctx, job_id)


async def resume_job(request: web.Request) -> web.Response:
    ctx = context(request)
    job_id = path_uuid(request, "job_id")
    meta = command_meta(request)
    state = await load_job(ctx.store, job_id)
    expected = await _expected(request, state)
    events = domain.decide_resume(state)
    await ctx.append(streams.stream_id(streams.JOB, job_id), events, expected_version=expected, meta=meta)
    return await _job_response(ctx, job_id)


async def request_run(request: web.Request) -> web.Response:
    body = await read_body(request, RunOverrides, optional=True)
    overrides = context(request).door.seal(body.params, "body.params")
    return await schedules.request_run(request, overrides)


async def job_history(request: web.Request) -> web.Response:
    """Folded from the store, not a read model: a deleted job keeps its history, and it is exact."""
    ctx = context(request)
    job_id = path_uuid(request, "job_id")
    query = read_query(request, HistoryQuery)
    after = queries.decode_cursor(query.cursor) if query.cursor else 0
    events = await ctx.store.read_stream(streams.stream_id(streams.JOB, job_id))
    if not events:
        raise ProblemError(404, "Not Found", f"no job {job_id}", "not-found")
    entries = [e for e in history.job_history(job_id, events) if e.event.stream_version > after]
    page = entries[: query.limit]
    more = len(entries) > query.limit
    items = [
        HistoryItem(
            version=e.event.stream_version,
            position=e.event.position,
            type=e.event.type,
            time=e.event.time,
            actor=e.event.actor,
            correlation_id=e.event.correlation_id,
            causation_id=e.event.causation_id,
            changes=[FieldChange(field=c.field, before=c.before, after=c.after) for c in e.changes],
            reason=e.reason,
        )
        for e in page
    ]
    cursor = queries.encode_cursor(page[-1].event.stream_version) if more else None
    return json_response(HistoryPage(job_id=job_id, items=items, next_cursor=cursor))


JOB = "/jobs/{job_id}"
RENDER_INPUTS = frozenset({"execution", "dimensions", "params"})

ENDPOINTS = [
    Endpoint(
        "POST",
        "/jobs",
        create_job,
        "Create a job (201 with its `id`).",
        status=201,
        response=JobView,
        body=JobSpec,
        errors=(400, 422),
        tag="jobs",
    ),
    Endpoint(
        "GET",
        "/jobs",
        list_jobs,
        "List jobs, oldest first. Filters: `execution`, `state=enabled|paused`, `dimension=<name>:<value>` "
        "(repeatable, all must match); paged by `cursor` and `limit`.",
        response=JobPage,
        query=JobListQuery,
        errors=(422,),
        tag="jobs",
    ),
    Endpoint(
        "GET", JOB, get_job, "One job; `ETag` is its version.", response=JobView, errors=(404,), tag="jobs"
    ),
    Endpoint(
        "PATCH",
        JOB,
        patch_job,
        "Change fields of a job; honours `If-Match`.",
        response=JobView,
        body=JobPatch,
        errors=(400, 404, 409, 422),
        headers=("If-Match",),
        tag="jobs",
    ),
    Endpoint(
        "DELETE",
        JOB,
        delete_job,
        "Delete a job; honours `If-Match`.",
        status=204,
        errors=(400, 404, 409),
        headers=("If-Match",),
        tag="jobs",
    ),
    Endpoint(
        "POST",
        JOB + "/pause",
        pause_job,
        "Pause scheduling of a job; honours `If-Match`.",
        response=JobView,
        body=PauseBody,
        body_optional=True,
        errors=(400, 404, 409),
        headers=("If-Match",),
        tag="jobs",
    ),
    Endpoint(
        "POST",
        JOB + "/resume",
        resume_job,
        "Resume a paused job; honours `If-Match`.",
        response=JobView,
        errors=(400, 404, 409),
        headers=("If-Match",),
        tag="jobs",
    ),
    Endpoint(
        "GET",
        JOB + "/history",
        job_history,
        "Who changed the job's configuration, what and when, oldest first: each event with its actor, time, "
        "correlation id and the changed fields' values before and after (leaf by leaf for `params` and "
        "`dimensions`; secrets as `***`). Paged by `cursor`; a deleted job keeps its history.",
        response=HistoryPage,
        query=HistoryQuery,
        errors=(404, 422),
        tag="jobs",
    ),
    Endpoint(
        "POST",
        JOB + "/runs",
        request_run,
        "Run the job now with optional parameter overrides; answers 202 with the requested (or queued) run. "
        "The job's overlap policy applies unless `force=true`: a skipped run answers 409 naming why.",
        status=202,
        query=schedules.ForceQuery,
        response=RunView,
        body=RunOverrides,
        body_optional=True,
        errors=(400, 404, 409, 422),
        tag="runs",
    ),
]
