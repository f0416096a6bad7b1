"""Reading a request: its JSON body, query string and headers, validated into pydantic models."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from contracts.envelope import EventMeta
from services.api.problems import ACTOR_HEADER, CORRELATION_KEY, ProblemError, validation_problem

ModelT = TypeVar("ModelT", bound=BaseModel)

MAX_ACTOR = 200
MAX_CORRELATION = 200
_IF_MATCH = re.compile(r'^\s*(?:W/)?"(\d+)"\s*$')


async def read_body(request: web.Request, model: type[ModelT], *, optional: bool = False) -> ModelT:
    raw = await request.read()
    if not raw.strip():
        if optional:
            return model()
        raise ProblemError(400, "Missing body", "this request needs a JSON body", "invalid-json")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ProblemError(
            400, "Malformed JSON", f"line {exc.lineno} column {exc.colno}: {exc.msg}", "invalid-json"
        ) from None
    except UnicodeDecodeError:
        raise ProblemError(400, "Malformed JSON", "the body is not UTF-8", "invalid-json") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_problem(exc, "body") from None


def read_query(request: web.Request, model: type[ModelT]) -> ModelT:
    """List-typed fields take every repetition of their parameter (`?dimension=a:1&dimension=b:2`)."""
    data: dict[str, Any] = {}
    for key in request.query:
        field = model.model_fields.get(key)
        is_list = field is not None and getattr(field.annotation, "__origin__", None) is list
        data[key] = request.query.getall(key) if is_list else request.query[key]
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_problem(exc, "query") from None


def path_uuid(request: web.Request, name: str) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info[name])
    except ValueError:
        raise ProblemError(
            404, "Not Found", f"no {name.removesuffix('_id')} {request.match_info[name]!r}"
        ) from None


def path_name(request: web.Request, name: str, pattern: str) -> str:
    value = request.match_info[name]
    if not re.fullmatch(pattern, value):
        raise ProblemError(
            422,
            "Invalid request",
            f"path.{name}: must match {pattern}",
            "validation",
            errors=[{"field": f"path.{name}", "reason": f"must match {pattern}"}],
        )
    return value


def command_meta(request: web.Request) -> EventMeta:
    actor = request.headers.get(ACTOR_HEADER, "anonymous").strip()
    if not 1 <= len(actor) <= MAX_ACTOR:
        reason = f"must be 1 to {MAX_ACTOR} characters"
        raise ProblemError(
            422,
            "Invalid request",
            f"header.{ACTOR_HEADER}: {reason}",
            "validation",
            errors=[{"field": f"header.{ACTOR_HEADER}", "reason": reason}],
        )
    return EventMeta(actor=actor, correlation_id=request[CORRELATION_KEY][:MAX_CORRELATION])


def if_match(request: web.Request) -> int | None:
    """The expected stream version from `If-Match: "<version>"`; None when absent or `*`."""
    header = request.headers.get("If-Match")
    if header is None or header.strip() == "*":
        return None
    match = _IF_MATCH.match(header)
    if match is None:
        raise ProblemError(
            400,
            "Invalid If-Match",
            'If-Match must be an ETag this API handed out, like "3"',
            "validation",
            errors=[{"field": "header.If-Match", "reason": 'expected "<version>"'}],
        )
    return int(match.group(1))


def last_event_id(request: web.Request, what: str, default: int) -> int:
    """Where an SSE client resumes: its `Last-Event-ID` (an event position or a log offset, named by
    `what` in the error), else `default` (the query's starting point)."""
    last = request.headers.get("Last-Event-ID")
    if last is None:
        return default
    if not last.strip().isdigit():
        raise ProblemError(
            400,
            "Invalid Last-Event-ID",
            f"Last-Event-ID must be {what}",
            "validation",
            errors=[{"field": "header.Last-Event-ID", "reason": "expected a non-negative integer"}],
        )
    return int(last)


def etag(version: int) -> str:
    return f'"{version}"'


def json_response(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        text=model.model_dump_json(),
        content_type="application/json",
        headers=headers,
    )
