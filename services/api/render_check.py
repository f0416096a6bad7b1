"""Asking the renderer, before a job is recorded, whether its params can render at all.

Only the renderer merges params and evaluates templates (0043), so the API sends it a preview request
for the job about to be created or changed. A job whose own params are at fault — a required param
missing, or dotted keys that conflict — is refused with a 422 naming the param and the job, instead of
being recorded and failing on every run. Everything else is left to render time (RunRejected): a
template error is the execution's fault, not this job's, and must not block editing jobs.

The check is best effort. It costs one NATS round trip and one render (milliseconds); when no renderer
answers (none running: NATS says at once that there are no responders) or it answers late, the job is
recorded unchecked and the run reports the problem. See docs/decisions/0132-job-checks-at-the-door.md.
"""

from __future__ import annotations

import logging
import uuid

from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from pydantic import ValidationError

from contracts.preview import PreviewFailed, PreviewRequest, parse_preview_reply
from contracts.specs import JobSpec
from contracts.subjects import render_preview_subject
from services.api.context import ApiContext
from services.api.problems import ProblemError

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 1.0
JOB_FAULTS = frozenset({"missing_params", "params"})
"""Preview failures caused by the job's params (and so refused at the door)."""


async def refuse_unrenderable_params(ctx: ApiContext, spec: JobSpec, job_id: uuid.UUID | None) -> None:
    """Raise a 422 when the renderer says this job's params cannot render; return otherwise."""
    request = PreviewRequest(execution=spec.execution, dimensions=spec.dimensions, params=spec.params)
    subject = render_preview_subject(ctx.runtime.settings.bus_prefix)
    try:
        message = await ctx.runtime.nc.request(
            subject, request.model_dump_json().encode(), timeout=CHECK_TIMEOUT_S
        )
        reply = parse_preview_reply(message.data)
    except NoRespondersError:
        log.debug("no renderer answers previews; job %s recorded without a params check", spec.name)
        return
    except (NatsTimeoutError, NatsError, TimeoutError, ValidationError) as exc:
        log.warning("params check of job %r skipped: %s", spec.name, type(exc).__name__)
        return
    if not isinstance(reply, PreviewFailed) or reply.error.kind not in JOB_FAULTS:
        return
    job = f"job {spec.name!r}" + (f" ({job_id})" if job_id is not None else "")
    field = f"body.{reply.error.field}" if reply.error.field else "body.params"
    reason = f"{reply.error.reason} for {job}"
    raise ProblemError(
        422,
        "Job would not render",
        reason,
        "missing-params" if reply.error.kind == "missing_params" else "params",
        errors=[{"field": field, "reason": reason}],
    )
