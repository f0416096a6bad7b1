"""Executions and dimensions, one at a time."""

from __future__ import annotations

from aiohttp import web

from contracts import streams
from contracts.events import DimensionDefined, ExecutionDefined
from contracts.specs import NAME_PATTERN, DimensionSpec, ExecutionSpec
from services.api.context import context
from services.api.domain.definitions import (
    decide_define_dimension,
    decide_define_execution,
    decide_remove_dimension,
    decide_remove_execution,
)
from services.api.loaders import load_dimension, load_execution
from services.api.models import DimensionList, DimensionView, ExecutionList, ExecutionView, ForceQuery
from services.api.problems import ProblemError
from services.api.readmodels import queries
from services.api.requests import command_meta, json_response, path_name, read_body, read_query
from services.api.routes.endpoint import Endpoint


def _removed_meanwhile(kind: str, name: str) -> ProblemError:
    return ProblemError(
        409, "Concurrent modification", f"{kind} {name!r} was removed by a concurrent request", "concurrency"
    )


async def put_execution(request: web.Request) -> web.Response:
    ctx = context(request)
    name = path_name(request, "name", NAME_PATTERN)
    spec = ctx.door.seal_execution(await read_body(request, ExecutionSpec), "body")
    meta = command_meta(request)
    current = await load_execution(ctx.store, name)
    events = decide_define_execution(current, spec)
    await ctx.append(
        streams.stream_id(streams.EXECUTION, name), events, expected_version=current.version, meta=meta
    )
    async with ctx.pool.acquire() as conn:
        view = await queries.get_execution(conn, name)
    if view is None:
        raise _removed_meanwhile("execution", name)
    created = any(isinstance(e, ExecutionDefined) for e in events)
    return json_response(view, status=201 if created else 200)


async def get_execution(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    async with context(request).pool.acquire() as conn:
        view = await queries.get_execution(conn, name)
    if view is None:
        raise ProblemError(404, "Not Found", f"no execution {name!r}", "not-found")
    return json_response(view)


async def delete_execution(request: web.Request) -> web.Response:
    ctx = context(request)
    name = path_name(request, "name", NAME_PATTERN)
    force = read_query(request, ForceQuery).force
    meta = command_meta(request)
    current = await load_execution(ctx.store, name)
    async with ctx.pool.acquire() as conn:
        jobs = await queries.job_refs(conn)
    events = decide_remove_execution(current, jobs, force=force)
    await ctx.append(
        streams.stream_id(streams.EXECUTION, name), events, expected_version=current.version, meta=meta
    )
    return web.Response(status=204)


async def list_executions(request: web.Request) -> web.Response:
    async with context(request).pool.acquire() as conn:
        return json_response(ExecutionList(items=await queries.list_executions(conn)))


async def put_dimension(request: web.Request) -> web.Response:
    ctx = context(request)
    name = path_name(request, "name", NAME_PATTERN)
    spec = ctx.door.seal_dimension(await read_body(request, DimensionSpec), "body")
    force = read_query(request, ForceQuery).force
    meta = command_meta(request)
    current = await load_dimension(ctx.store, name)
    async with ctx.pool.acquire() as conn:
        jobs = await queries.job_refs(conn)
    events = decide_define_dimension(current, spec, jobs, force=force)
    await ctx.append(
        streams.stream_id(streams.DIMENSION, name), events, expected_version=current.version, meta=meta
    )
    async with ctx.pool.acquire() as conn:
        view = await queries.get_dimension(conn, name)
    if view is None:
        raise _removed_meanwhile("dimension", name)
    created = any(isinstance(e, DimensionDefined) for e in events)
    return json_response(view, status=201 if created else 200)


async def get_dimension(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    async with context(request).pool.acquire() as conn:
        view = await queries.get_dimension(conn, name)
    if view is None:
        raise ProblemError(404, "Not Found", f"no dimension {name!r}", "not-found")
    return json_response(view)


async def delete_dimension(request: web.Request) -> web.Response:
    ctx = context(request)
    name = path_name(request, "name", NAME_PATTERN)
    force = read_query(request, ForceQuery).force
    meta = command_meta(request)
    current = await load_dimension(ctx.store, name)
    async with ctx.pool.acquire() as conn:
        jobs = await queries.job_refs(conn)
    events = decide_remove_dimension(current, jobs, force=force)
    await ctx.append(
        streams.stream_id(streams.DIMENSION, name), events, expected_version=current.version, meta=meta
    )
    return web.Response(status=204)


async def list_dimensions(request: web.Request) -> web.Response:
    async with context(request).pool.acquire() as conn:
        return json_response(DimensionList(items=await queries.list_dimensions(conn)))


ENDPOINTS = [
    Endpoint(
        "GET", "/executions", list_executions, "All executions.", response=ExecutionList, tag="definitions"
    ),
    Endpoint(
        "PUT",
        "/executions/{name}",
        put_execution,
        "Define or redefine an execution (201 when new, 200 otherwise).",
        response=ExecutionView,
        body=ExecutionSpec,
        errors=(400, 409, 422),
        tag="definitions",
    ),
    Endpoint(
        "GET",
        "/executions/{name}",
        get_execution,
        "One execution.",
        response=ExecutionView,
        errors=(404,),
        tag="definitions",
    ),
    Endpoint(
        "DELETE",
        "/executions/{name}",
        delete_execution,
        "Remove an execution; refused with 409 while jobs use it unless `force=true`.",
        status=204,
        query=ForceQuery,
        errors=(404, 409, 422),
        tag="definitions",
    ),
    Endpoint(
        "GET", "/dimensions", list_dimensions, "All dimensions.", response=DimensionList, tag="definitions"
    ),
    Endpoint(
        "PUT",
        "/dimensions/{name}",
        put_dimension,
        "Define or redefine a dimension; dropping a value jobs use is refused unless `force=true`.",
        response=DimensionView,
        body=DimensionSpec,
        query=ForceQuery,
        errors=(400, 409, 422),
        tag="definitions",
    ),
    Endpoint(
        "GET",
        "/dimensions/{name}",
        get_dimension,
        "One dimension.",
        response=DimensionView,
        errors=(404,),
        tag="definitions",
    ),
    Endpoint(
        "DELETE",
        "/dimensions/{name}",
        delete_dimension,
        "Remove a dimension; refused with 409 while jobs use it unless `force=true`.",
        status=204,
        query=ForceQuery,
        errors=(404, 409, 422),
        tag="definitions",
    ),
]
