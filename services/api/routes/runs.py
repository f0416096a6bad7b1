"""Runs: history and state, one-off runs, and stopping a run."""

from __future__ import annotations

import uuid

from aiohttp import web

from contracts import streams
from contracts.commands import OneOffRun, StopOptions
from services.api.context import ApiContext, context
from services.api.domain import runs as domain
from services.api.loaders import load_run
from services.api.models import RunListQuery, RunPage, RunView
from services.api.problems import ProblemError
from services.api.readmodels import queries
from services.api.requests import command_meta, json_response, path_uuid, read_body, read_query
from services.api.routes.endpoint import Endpoint
from shared.eventstore.errors import ConcurrencyError
from shared.eventstore.store import NO_STREAM

STOP_ATTEMPTS = 5
"""A stop races the dispatcher's appends (started, ended); each lost race re-reads and decides again."""


async def list_runs(request: web.Request) -> web.Response:
    query = read_query(request, RunListQuery)
    async with context(request).pool.acquire() as conn:
        items, cursor = await queries.list_runs(conn, query)
    return json_response(RunPage(items=items, next_cursor=cursor))


async def _run_view(ctx: ApiContext, run_id: uuid.UUID) -> RunView:
    async with ctx.pool.acquire() as conn:
        view = await queries.get_run(conn, run_id)
    if view is None:
        raise ProblemError(404, "Not Found", f"no run {run_id}", "not-found")
    return view


async def get_run(request: web.Request) -> web.Response:
    return json_response(await _run_view(context(request), path_uuid(request, "run_id")))


async def request_oneoff_run(request: web.Request) -> web.Response:
    ctx = context(request)
    body = await read_body(request, OneOffRun)
    spec = body.model_copy(update={"params": ctx.door.seal(body.params, "body.params")})
    meta = command_meta(request)
    async with ctx.pool.acquire() as conn:
        catalog = await queries.catalog(conn)
    run_id = uuid.uuid4()
    events = domain.decide_oneoff(run_id, spec, catalog)
    await ctx.append(streams.stream_id(streams.RUN, run_id), events, expected_version=NO_STREAM, meta=meta)
    view = await _run_view(ctx, run_id)
    return json_response(view, status=202, headers={"Location": f"/runs/{run_id}"})


async def stop_run(request: web.Request) -> web.Response:
    ctx = context(request)
    run_id = path_uuid(request, "run_id")
    options = await read_body(request, StopOptions, optional=True)
    meta = command_meta(request)
    stream_id = streams.stream_id(streams.RUN, run_id)
    for attempt in range(STOP_ATTEMPTS):
        state = await load_run(ctx.store, run_id)
        events = domain.decide_stop(run_id, state, options.grace_s)
        try:
            await ctx.append(stream_id, events, expected_version=state.version, meta=meta)
            break
        except ConcurrencyError:
            if attempt == STOP_ATTEMPTS - 1:
                raise
    return json_response(await _run_view(ctx, run_id), status=202)


ENDPOINTS = [
    Endpoint(
        "GET",
        "/runs",
        list_runs,
        "Run history, newest first; filters `job_id`, `status`; paged by `cursor`.",
        response=RunPage,
        query=RunListQuery,
        errors=(422,),
        tag="runs",
    ),
    Endpoint(
        "POST",
        "/runs",
        request_oneoff_run,
        "Run an execution without a job (a one-off run): `execution`, `dimensions`, `params`; answers 202 "
        "with the requested run. Unknown execution, dimension or value: 422 naming them.",
        status=202,
        response=RunView,
        body=OneOffRun,
        errors=(400, 422),
        tag="runs",
    ),
    Endpoint(
        "GET",
        "/runs/{run_id}",
        get_run,
        "One run: its status, exit code, the reason it ended, its times, who asked it to stop and who "
        "stopped it.",
        response=RunView,
        errors=(404,),
        tag="runs",
    ),
    Endpoint(
        "POST",
        "/runs/{run_id}/stop",
        stop_run,
        "Ask a run to stop: SIGTERM (or the driver's equivalent), then a kill after `grace_s` (default: the "
        "payload's `stop_grace_s`). 202 with the run; asking again while a stop is pending records nothing "
        "more; a run that already ended is 409.",
        status=202,
        response=RunView,
        body=StopOptions,
        body_optional=True,
        errors=(400, 404, 409, 422),
        tag="runs",
    ),
]
