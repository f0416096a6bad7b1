"""The OpenAPI 3.1 document, derived from the route table and the pydantic models it names.

OpenAPI 3.1 uses JSON Schema 2020-12, which is what pydantic emits, so model schemas go into
`components/schemas` unchanged; nothing here restates a field by hand.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from services.api.models import Problem
from services.api.problems import ACTOR_HEADER, CORRELATION_HEADER, PROBLEM_JSON
from services.api.routes import ENDPOINTS
from services.api.routes.endpoint import Endpoint

REF = "#/components/schemas/{model}"
_PATH_PARAM = re.compile(r"{(\w+)(?::[^}]*)?}")


def openapi_path(path: str) -> str:
    """The route's path as OpenAPI writes it: aiohttp's `{name:regex}` becomes `{name}`."""
    return _PATH_PARAM.sub(r"{\1}", path)


_HEADER_DOCS = {
    "If-Match": 'Expected version of the job as its ETag (`"3"`); a stale one answers 409.',
    "Last-Event-ID": "Resume after this event position (events), or from this log offset (a run's log).",
    ACTOR_HEADER: "Who asks; recorded as the actor of the events (default `anonymous`).",
    CORRELATION_HEADER: "Correlation id recorded on the events; generated when absent, echoed back.",
}
_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    400: "Malformed request",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    416: "Offset beyond the end",
    422: "Invalid or unknown references",
    500: "Internal error",
    502: "A service behind the API failed",
    503: "Not ready",
}


def _header(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": _HEADER_DOCS[name],
        "schema": {"type": "string"},
    }


def build_openapi(endpoints: list[Endpoint]) -> dict[str, Any]:
    inputs = {e.body for e in endpoints if e.body is not None}
    outputs = {e.response for e in endpoints if e.response is not None} | {Problem}
    pairs: list[tuple[type[BaseModel], JsonSchemaMode]] = [(m, "validation") for m in inputs]
    pairs += [(m, "serialization") for m in outputs]
    refs, top = models_json_schema(pairs, ref_template=REF)
    schemas: dict[str, Any] = dict(top.get("$defs", {}))

    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        operation: dict[str, Any] = {
            "summary": endpoint.summary,
            "operationId": endpoint.handler.__name__,
            "tags": [endpoint.tag],
            "parameters": _parameters(endpoint, schemas),
            "responses": _responses(endpoint, refs),
        }
        if endpoint.body is not None:
            operation["requestBody"] = {
                "required": not endpoint.body_optional,
                "content": {"application/json": {"schema": refs[(endpoint.body, "validation")]}},
            }
        paths.setdefault(openapi_path(endpoint.path), {})[endpoint.method.lower()] = operation

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "batchyard API",
            "version": "0.1.0",
            "description": "Batch-job operation system. Errors are RFC 9457 problem+json.",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }


def _parameters(endpoint: Endpoint, schemas: dict[str, Any]) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = []
    for name in _PATH_PARAM.findall(endpoint.path):
        schema = {"type": "string", "format": "uuid"} if name.endswith("_id") else {"type": "string"}
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
    if endpoint.query is not None:
        query_schema = endpoint.query.model_json_schema(ref_template=REF)
        schemas.update(query_schema.pop("$defs", {}))
        required = set(query_schema.get("required", []))
        for name, schema in query_schema["properties"].items():
            parameter = {"name": name, "in": "query", "required": name in required, "schema": schema}
            if "description" in schema:
                parameter["description"] = schema["description"]
            if schema.get("type") == "array":
                parameter["style"] = "form"
                parameter["explode"] = True
            parameters.append(parameter)
    headers = list(endpoint.headers)
    if endpoint.method != "GET":
        headers += [ACTOR_HEADER, CORRELATION_HEADER]
    parameters += [_header(h) for h in headers]
    return parameters


def _responses(endpoint: Endpoint, refs: dict[Any, Any]) -> dict[str, Any]:
    success: dict[str, Any] = {"description": _STATUS_TEXT[endpoint.status]}
    if endpoint.media_type == "text/event-stream":
        success["content"] = {"text/event-stream": {"schema": {"type": "string"}}}
    elif endpoint.response is not None:
        success["content"] = {"application/json": {"schema": refs[(endpoint.response, "serialization")]}}
    responses: dict[str, Any] = {str(endpoint.status): success}
    problem = {PROBLEM_JSON: {"schema": refs[(Problem, "serialization")]}}
    for status in sorted({*endpoint.errors, 500}):
        responses[str(status)] = {"description": _STATUS_TEXT[status], "content": problem}
    return responses


async def serve_openapi(_: web.Request) -> web.Response:
    return web.json_response(document())


OPENAPI_ENDPOINT = Endpoint("GET", "/openapi.json", serve_openapi, "This OpenAPI 3.1 document.", tag="meta")
ALL_ENDPOINTS = [*ENDPOINTS, OPENAPI_ENDPOINT]


@functools.cache
def document() -> dict[str, Any]:
    """The whole API's document; also what `make contracts` can write to a file."""
    return build_openapi(ALL_ENDPOINTS)
