"""`POST /state`: apply a whole striv state file as one StateLoaded plus the definition events it implies."""

from __future__ import annotations

import asyncio

from aiohttp import web

from contracts import streams
from contracts.commands import StateFile
from contracts.envelope import EventMeta
from services.api.context import context
from services.api.domain.definitions import plan_state, replaced_kinds
from services.api.loaders import load_dimension, load_execution
from services.api.models import StateQuery, StateResult
from services.api.readmodels import queries
from services.api.requests import command_meta, json_response, read_body, read_query
from services.api.routes.endpoint import Endpoint


async def post_state(request: web.Request) -> web.Response:
    ctx = context(request)
    options = read_query(request, StateQuery)
    desired = ctx.door.seal_state(await read_body(request, StateFile), "body")
    meta = command_meta(request)
    kinds = replaced_kinds(desired)
    async with ctx.pool.acquire() as conn:
        exec_names = set(desired.executions)
        if "executions" in kinds:
            exec_names |= set(await queries.definition_names(conn, "executions"))
        dim_names = set(desired.dimensions)
        if "dimensions" in kinds:
            dim_names |= set(await queries.definition_names(conn, "dimensions"))
        jobs = await queries.job_refs(conn)
    executions = await asyncio.gather(*(load_execution(ctx.store, n) for n in sorted(exec_names)))
    dimensions = await asyncio.gather(*(load_dimension(ctx.store, n) for n in sorted(dim_names)))
    plan = plan_state(
        desired,
        {d.name: d for d in executions},
        {d.name: d for d in dimensions},
        jobs,
        force=options.force,
    )
    recorded = not options.dry_run and not plan.empty
    if recorded:
        state_version = await ctx.store.stream_version(streams.STATE_STREAM_ID)
        [loaded] = await ctx.store.append(
            streams.STATE_STREAM_ID, [plan.loaded_event()], expected_version=state_version, meta=meta
        )
        caused = EventMeta(actor=meta.actor, correlation_id=meta.correlation_id, causation_id=str(loaded.id))
        appended = await asyncio.gather(
            *(
                ctx.store.append(a.stream_id, a.events, expected_version=a.expected_version, meta=caused)
                for a in plan.appends
            )
        )
        await ctx.settle(max(e.position for batch in appended for e in batch))
    return json_response(
        StateResult(
            dry_run=options.dry_run,
            digest=plan.digest,
            recorded=recorded,
            executions=plan.executions,
            dimensions=plan.dimensions,
        )
    )


ENDPOINTS = [
    Endpoint(
        "POST",
        "/state",
        post_state,
        "Apply a state file in striv's format. Each kind the body carries (`executions`, `dimensions`, "
        "even `{}`) is replaced as a whole: definitions of that kind the file leaves out are removed. A kind "
        "absent from the body is left untouched. Removing what jobs still use is 409 listing the jobs, "
        'unless `force=true`. Cleartext secrets (`{"type": "secret", "value": …}`) are encrypted '
        "before anything is recorded. Answers 200 with the changes (also when nothing changed, which "
        "records nothing); `dry_run=true` records nothing.",
        response=StateResult,
        body=StateFile,
        query=StateQuery,
        errors=(400, 409, 422),
        tag="definitions",
    ),
]
