"""RFC 9457 problem+json for every error the API answers, so clients parse one error shape.

User error never becomes a 500: malformed JSON, validation failures (with the field path and reason),
unknown ids and routes, wrong methods, concurrency conflicts and refused commands each have their own
status. Only a genuine bug reaches the catch-all, which logs it and still answers problem+json.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from services.api.domain.errors import Refused
from services.api.models import BadCursor, Problem
from shared.eventstore.errors import ConcurrencyError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
CORRELATION_HEADER = "X-Correlation-Id"
ACTOR_HEADER = "X-Actor"
CORRELATION_KEY = web.RequestKey("correlation_id", str)
TYPE_BASE = "https://batchyard.dev/problems/"


class ProblemError(Exception):
    def __init__(
        self, status: int, title: str, detail: str | None = None, kind: str | None = None, **extra: Any
    ):
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.kind = kind
        self.extra = extra


class ReadModelsBehind(Exception):
    """The command was recorded, but the read models did not show it in time to answer from them.

    Answering 202 (recorded, look again shortly) is the truth; a 409 or 5xx would make a client retry a
    command that already happened.
    """

    def __init__(self, position: int, waited_s: float) -> None:
        super().__init__(f"recorded at position {position}; read models behind after {waited_s:g} s")
        self.position = position
        self.waited_s = waited_s


def validation_problem(error: ValidationError, where: str) -> ProblemError:
    """Turn pydantic's errors into `errors: [{field, reason}]` with paths like `body.schedule.cron`."""
    errors = [
        {"field": ".".join([where, *(str(part) for part in item["loc"])]), "reason": item["msg"]}
        for item in error.errors(include_url=False)
    ]
    detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
    return ProblemError(422, "Invalid request", detail, "validation", errors=errors)


def problem_response(request: web.Request, problem: ProblemError) -> web.Response:
    body = Problem(
        type=TYPE_BASE + problem.kind if problem.kind else "about:blank",
        title=problem.title,
        status=problem.status,
        detail=problem.detail,
        instance=request.path,
        **problem.extra,
    ).model_dump(mode="json", exclude_none=True)
    return web.Response(status=problem.status, text=json.dumps(body), content_type=PROBLEM_JSON)


def _from_exception(exc: Exception) -> ProblemError | None:
    if isinstance(exc, ProblemError):
        return exc
    if isinstance(exc, Refused):
        return ProblemError(exc.status, exc.title, exc.detail, exc.kind, **exc.extra)
    if isinstance(exc, BadCursor):
        reason = str(exc)
        return ProblemError(
            422,
            "Invalid request",
            f"query.cursor: {reason}",
            "validation",
            errors=[{"field": "query.cursor", "reason": reason}],
        )
    if isinstance(exc, ConcurrencyError):
        return ProblemError(
            409,
            "Concurrent modification",
            f"{exc}; read it again and retry",
            "concurrency",
            stream=exc.stream_id,
            expected_version=exc.expected,
            actual_version=exc.actual,
        )
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        extra: dict[str, Any] = {}
        if isinstance(exc, web.HTTPMethodNotAllowed):
            extra["allowed"] = sorted(exc.allowed_methods)
        detail = "no such route" if exc.status == 404 else exc.text if exc.text != exc.reason else None
        return ProblemError(exc.status, exc.reason, detail, None, **extra)
    return None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Also echoes (or mints) the correlation id, so a client can find its request in the event history."""
    correlation = request.headers.get(CORRELATION_HEADER) or str(uuid.uuid4())
    request[CORRELATION_KEY] = correlation
    try:
        response = await handler(request)
    except ReadModelsBehind as behind:
        response = web.json_response(
            {
                "recorded": True,
                "position": behind.position,
                "detail": f"the command was recorded, but the read models had not caught up after "
                f"{behind.waited_s:g} s; read the resource again shortly",
            },
            status=202,
        )
    except Exception as exc:
        problem = _from_exception(exc)
        if problem is None:
            if isinstance(exc, web.HTTPException):
                raise
            log.exception("unexpected error on %s %s", request.method, request.path)
            problem = ProblemError(500, "Internal Server Error", "an unexpected error; it has been logged")
        response = problem_response(request, problem)
        if isinstance(exc, web.HTTPMethodNotAllowed):
            response.headers["Allow"] = ",".join(sorted(exc.allowed_methods))
    if not response.prepared:
        response.headers[CORRELATION_HEADER] = correlation
    return response
