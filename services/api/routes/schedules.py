"""Runs that follow a job's policies at the API's door: manual runs under the overlap policy (unless
forced), reruns with the original rendered payload, and backfills of a schedule's past ticks.

The overlap decision reads the job's active and waiting runs from the event store, not from the read
models (which lag), with the same query as the dispatcher's scheduler (decision 0162).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from contracts import streams
from contracts.base import Event, JsonObject
from contracts.envelope import EventMeta
from contracts.events import RunQueued, RunRendered, RunRequested, RunSkipped, RunStopRequested
from services.api.context import ApiContext, context
from services.api.domain.jobs import JobState, decide_request_run
from services.api.loaders import load_job
from services.api.models import Query, RunView
from services.api.problems import ProblemError
from services.api.readmodels import queries
from services.api.requests import command_meta, json_response, path_uuid, read_body, read_query
from services.api.routes.endpoint import Endpoint
from shared.domain.policies import (
    Enqueue,
    OverlapDecision,
    Skip,
    Start,
    StopThenStart,
    decide_overlap,
    effective_limit,
)
from shared.domain.run_lifecycle import refusal, run_state
from shared.domain.schedule import CronSchedule, fire_times_between
from shared.eventstore.errors import ConcurrencyError
from shared.eventstore.job_runs import job_runs
from shared.eventstore.store import NO_STREAM

MAX_BACKFILL_TICKS = 1000


class ForceQuery(Query):
    force: bool = Field(
        default=False, description="Bypass the job's overlap policy and concurrency limit for this run."
    )


class BackfillBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    start: AwareDatetime = Field(alias="from", description="First instant of the range (included).")
    end: AwareDatetime = Field(alias="to", description="End of the range (excluded).")

    @model_validator(mode="after")
    def _ordered(self) -> BackfillBody:
        if self.end <= self.start:
            raise ValueError("`to` must be after `from`")
        return self


class BackfillResult(BaseModel):
    job_id: uuid.UUID
    runs: list[uuid.UUID]
    scheduled_at: list[datetime]


async def _answer_run(ctx: ApiContext, run_id: uuid.UUID) -> web.Response:
    async with ctx.pool.acquire() as conn:
        view = await queries.get_run(conn, run_id)
    if view is None:
        raise ProblemError(503, "Read model lagging", f"run {run_id} was recorded but is not visible yet")
    return json_response(view, status=202, headers={"Location": f"/runs/{run_id}"})


async def _request_stop(ctx: ApiContext, run_id: uuid.UUID, meta: EventMeta) -> None:
    stream_id = streams.stream_id(streams.RUN, run_id)
    while True:
        state = run_state(await ctx.store.read_stream(stream_id))
        event = RunStopRequested(run_id=run_id)
        if refusal(state, event) is not None:
            return
        try:
            await ctx.append(stream_id, [event], expected_version=state.version, meta=meta)
        except ConcurrencyError:
            continue
        return


async def start_under_policy(
    ctx: ApiContext,
    job_id: uuid.UUID,
    state: JobState,
    events: list[Event],
    overrides: JsonObject,
    *,
    force: bool,
    meta: EventMeta,
    can_wait: bool = True,
) -> web.Response:
    """Record `events` (a new run) if the job's overlap policy lets it start, or what the policy makes
    of it: a 409 with the recorded `RunSkipped`, a queued run (202), or a start after stop requests.
    `state` is the job as its caller read it from the store: a run's way to `RunRequested` reads it once."""
    assert state.spec is not None
    request = events[0]
    assert isinstance(request, RunRequested)
    run_id = request.run_id
    stream_id = streams.stream_id(streams.RUN, run_id)
    overlap = state.spec.overlap
    if force or effective_limit(overlap.policy, overlap.concurrency_limit) is None:
        decision: OverlapDecision = Start()
    else:
        runs = await job_runs(ctx.pool, job_id)
        decision = decide_overlap(overlap, runs.active, runs.queued)
    if isinstance(decision, Enqueue) and not can_wait:
        decision = Skip("queue_full", "a rerun cannot wait in the queue; force it to run now")
    if isinstance(decision, Skip):
        skipped = RunSkipped(
            run_id=run_id, job_id=job_id, trigger=request.trigger, code=decision.code, reason=decision.reason
        )
        await ctx.append(stream_id, [skipped], expected_version=NO_STREAM, meta=meta)
        raise ProblemError(
            409,
            "Run skipped by the overlap policy",
            f"{decision.reason}; add force=true to run anyway",
            "overlap",
            code=decision.code,
            run_id=str(run_id),
        )
    if isinstance(decision, Enqueue):
        queued = RunQueued(run_id=run_id, job_id=job_id, trigger=request.trigger, overrides=overrides)
        await ctx.append(stream_id, [queued], expected_version=NO_STREAM, meta=meta)
        return await _answer_run(ctx, run_id)
    if force:
        events = [request.model_copy(update={"forced": True}), *events[1:]]
    await ctx.append(stream_id, events, expected_version=NO_STREAM, meta=meta)
    if isinstance(decision, StopThenStart):
        for victim in decision.stop:
            await _request_stop(ctx, victim, meta)
    return await _answer_run(ctx, run_id)


async def request_run(request: web.Request, overrides: JsonObject) -> web.Response:
    """`POST /jobs/{id}/runs`: a manual run, under the job's overlap policy unless `force=true`."""
    ctx = context(request)
    job_id = path_uuid(request, "job_id")
    force = read_query(request, ForceQuery).force
    meta = command_meta(request)
    state = await load_job(ctx.store, job_id)
    events = decide_request_run(state, uuid.uuid4(), overrides)
    return await start_under_policy(ctx, job_id, state, events, overrides, force=force, meta=meta)


async def rerun(request: web.Request) -> web.Response:
    """The same rendered payload again: the new stream gets a copy of the original `RunRendered`, so the
    renderer's attempt to render it finds it rendered (decision 0163)."""
    ctx = context(request)
    original_id = path_uuid(request, "run_id")
    force = read_query(request, ForceQuery).force
    meta = command_meta(request)
    history = [e.payload() for e in await ctx.store.read_stream(streams.stream_id(streams.RUN, original_id))]
    original = next((p for p in history if isinstance(p, RunRequested)), None)
    rendered = next((p for p in history if isinstance(p, RunRendered)), None)
    if original is None:
        raise ProblemError(404, "Not Found", f"no run {original_id}", "not-found")
    if rendered is None:
        raise ProblemError(
            409, "Not rendered", f"run {original_id} was never rendered, so there is nothing to run again"
        )
    run_id = uuid.uuid4()
    events: list[Event] = [
        original.model_copy(
            update={
                "run_id": run_id,
                "trigger": "rerun",
                "rerun_of": original_id,
                "attempt": 1,
                "first_run_id": None,
                "forced": False,
                "start_at": None,
            }
        ),
        rendered.model_copy(update={"run_id": run_id, "start_at": None}),
    ]
    if original.job_id is None:
        await ctx.append(
            streams.stream_id(streams.RUN, run_id), events, expected_version=NO_STREAM, meta=meta
        )
        return await _answer_run(ctx, run_id)
    job = await load_job(ctx.store, original.job_id)
    return await start_under_policy(
        ctx, original.job_id, job, events, original.overrides, force=force, meta=meta, can_wait=False
    )


async def backfill(request: web.Request) -> web.Response:
    """Every tick of the job's schedule in [from, to), each a run with `params.scheduled_at` set to its
    tick. Backfills bypass the overlap policy: the user asked for exactly these runs."""
    ctx = context(request)
    job_id = path_uuid(request, "job_id")
    body = await read_body(request, BackfillBody)
    meta = command_meta(request)
    state = await load_job(ctx.store, job_id)
    if state.spec is None or state.deleted:
        raise ProblemError(404, "Not Found", f"no job {job_id}", "not-found")
    if state.spec.schedule is None:
        raise ProblemError(409, "No schedule", f"job {job_id} has no schedule to backfill")
    schedule = CronSchedule.from_spec(state.spec.schedule)
    ticks = []
    for tick in fire_times_between(schedule, body.start, body.end):
        ticks.append(tick)
        if len(ticks) > MAX_BACKFILL_TICKS:
            reason = f"the range holds more than {MAX_BACKFILL_TICKS} ticks; backfill it in parts"
            raise ProblemError(
                422,
                "Invalid request",
                f"body.to: {reason}",
                "validation",
                errors=[{"field": "body.to", "reason": reason}],
            )
    run_ids = []
    for tick in ticks:
        run_id = uuid.uuid4()
        [event] = decide_request_run(state, run_id, {"scheduled_at": tick.isoformat()})
        assert isinstance(event, RunRequested)
        event = event.model_copy(update={"trigger": "backfill", "scheduled_at": tick})
        await ctx.append(
            streams.stream_id(streams.RUN, run_id), [event], expected_version=NO_STREAM, meta=meta
        )
        run_ids.append(run_id)
    return json_response(BackfillResult(job_id=job_id, runs=run_ids, scheduled_at=ticks), status=202)


ENDPOINTS = [
    Endpoint(
        "POST",
        "/runs/{run_id}/rerun",
        rerun,
        "Run again with the same rendered payload (202 with the new run); under the job's overlap policy "
        "unless `force=true` (409 with the recorded skip otherwise).",
        status=202,
        response=RunView,
        query=ForceQuery,
        errors=(404, 409, 422),
        tag="runs",
    ),
    Endpoint(
        "POST",
        "/jobs/{job_id}/backfill",
        backfill,
        "Run each tick of the job's schedule in [`from`, `to`), with `params.scheduled_at` set to the tick "
        f"(at most {MAX_BACKFILL_TICKS} ticks).",
        status=202,
        response=BackfillResult,
        body=BackfillBody,
        errors=(400, 404, 409, 422),
        tag="runs",
    ),
]
