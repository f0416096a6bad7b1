"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from aiohttp import web

from services.api.context import context
from services.api.models import Health, Readiness
from services.api.problems import ProblemError
from services.api.requests import json_response
from services.api.routes.endpoint import Endpoint

READY_TIMEOUT_S = 2.0


async def healthz(_: web.Request) -> web.Response:
    return json_response(Health(status="ok"))


async def readyz(request: web.Request) -> web.Response:
    """Ready when the store answers, the bus is connected and the read-model projector runs."""
    ctx = context(request)
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(READY_TIMEOUT_S), ctx.pool.acquire() as conn:
            await conn.fetchval("SELECT 1")
        checks["store"] = "ok"
    except Exception as exc:
        checks["store"] = f"unreachable: {exc}"
    checks["bus"] = "ok" if ctx.runtime.nc.is_connected else "disconnected"
    checks["projector"] = "ok" if not ctx.projector.done() else "stopped"
    if any(value != "ok" for value in checks.values()):
        raise ProblemError(
            503, "Not ready", "; ".join(f"{k}: {v}" for k, v in checks.items()), "not-ready", checks=checks
        )
    return json_response(Readiness(status="ready", checks=checks))


ENDPOINTS = [
    Endpoint("GET", "/healthz", healthz, "Liveness: the process answers.", response=Health, tag="health"),
    Endpoint(
        "GET",
        "/readyz",
        readyz,
        "Readiness: store, bus and read-model projector are up.",
        response=Readiness,
        errors=(503,),
        tag="health",
    ),
]
