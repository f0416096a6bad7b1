"""`GET /jobs/{id}/preview`: what a run of the job would render, now or as the job stood at a past time.

Only the renderer evaluates templates (0043), so the API folds the job's configuration from its own
stream and asks the renderer over NATS request-reply; the renderer folds the execution and dimensions
up to the same time. See docs/decisions/0120-preview-endpoint.md.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import nats.errors
from aiohttp import web

from contracts import streams
from contracts.preview import PreviewFailed, PreviewRequest, parse_preview_reply
from contracts.subjects import render_preview_subject
from services.api.context import ApiContext, context
from services.api.domain.jobs import JobState, fold_job
from services.api.models import PreviewQuery, PreviewView
from services.api.problems import ProblemError
from services.api.requests import json_response, path_uuid, read_query
from services.api.routes.endpoint import Endpoint

PREVIEW_TIMEOUT_S = 5.0
"""A render takes well under a second; longer means no renderer is taking requests."""


async def _job_at(ctx: ApiContext, job_id: uuid.UUID, at: datetime | None) -> JobState:
    """The job as its stream stood at `at` (all of it when None), or the problem that says why not."""
    recorded = await ctx.store.read_stream(streams.stream_id(streams.JOB, job_id))
    if not recorded:
        raise ProblemError(404, "Not Found", f"no job {job_id}", "not-found")
    upto = [e for e in recorded if at is None or e.time <= at]
    state = fold_job(job_id, [e.payload() for e in upto])
    if state.spec is None:
        reason = f"job {job_id} did not exist yet then; it was created at {recorded[0].time.isoformat()}"
        raise ProblemError(
            422,
            "Invalid request",
            f"query.at: {reason}",
            "validation",
            errors=[{"field": "query.at", "reason": reason}],
        )
    if state.deleted:
        when = upto[-1].time.isoformat()
        raise ProblemError(404, "Not Found", f"job {job_id} was deleted at {when}", "not-found")
    return state


def _render_problem(failed: PreviewFailed, execution: str) -> ProblemError:
    error = failed.error
    where = ", ".join(
        part
        for part in (
            f"line {error.line}" if error.line is not None else "",
            f"column {error.column}" if error.column is not None else "",
            f"field {error.field}" if error.field else "",
        )
        if part
    )
    detail = f"execution {execution!r}" + (f", {where}" if where else "") + f": {error.reason}"
    if error.kind == "internal":
        return ProblemError(502, "Renderer failed", detail, "renderer-failed", execution=execution)
    problem = ProblemError(
        422,
        "Render failed",
        detail,
        "render",
        execution=execution,
        line=error.line,
        column=error.column,
        field=error.field,
    )
    problem.extra["kind"] = error.kind
    if error.field:
        problem.extra["errors"] = [{"field": error.field, "reason": error.reason}]
    return problem


async def preview_job(request: web.Request) -> web.Response:
    ctx = context(request)
    job_id = path_uuid(request, "job_id")
    query = read_query(request, PreviewQuery)
    at = query.at if query.at is None or query.at.tzinfo else query.at.replace(tzinfo=UTC)
    state = await _job_at(ctx, job_id, at)
    assert state.spec is not None
    ask = PreviewRequest(
        execution=state.spec.execution,
        dimensions=state.spec.dimensions,
        params=state.spec.params,
        job_id=job_id,
        at=at,
    )
    subject = render_preview_subject(ctx.runtime.settings.bus_prefix)
    try:
        answer = await ctx.runtime.nc.request(
            subject, ask.model_dump_json().encode(), timeout=PREVIEW_TIMEOUT_S
        )
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
        raise ProblemError(
            503, "Renderer unavailable", "no renderer is running to render the preview", "not-ready"
        ) from None
    reply = parse_preview_reply(answer.data)
    if isinstance(reply, PreviewFailed):
        raise _render_problem(reply, state.spec.execution)
    return json_response(
        PreviewView(
            job_id=job_id,
            job_version=state.version,
            at=at,
            driver=reply.driver,
            payload=reply.payload,
            params=reply.params,
            provenance=reply.provenance,
            execution_version=reply.execution_version,
        )
    )


ENDPOINTS = [
    Endpoint(
        "GET",
        "/jobs/{job_id}/preview",
        preview_job,
        "The payload a run of this job would render (secrets as `***`), with the merged params and the "
        "layer each came from; `at` renders the job as it stood at that time. A template or params error "
        "is 422 naming the execution, line, column and field; no renderer running is 503.",
        response=PreviewView,
        query=PreviewQuery,
        errors=(404, 422, 502, 503),
        tag="jobs",
    ),
]
