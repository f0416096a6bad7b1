"""The route table: each module lists its endpoints; the app and the OpenAPI document both read them."""

from __future__ import annotations

from services.api.routes import (
    artifacts,
    bulk,
    definitions,
    events,
    health,
    jobs,
    logs,
    preview,
    runs,
    schedules,
    state,
)
from services.api.routes.endpoint import Endpoint

ENDPOINTS: list[Endpoint] = [
    *health.ENDPOINTS,
    *definitions.ENDPOINTS,
    *state.ENDPOINTS,
    *bulk.ENDPOINTS,
    *jobs.ENDPOINTS,
    *preview.ENDPOINTS,
    *runs.ENDPOINTS,
    *schedules.ENDPOINTS,
    *artifacts.ENDPOINTS,
    *logs.ENDPOINTS,
    *events.ENDPOINTS,
]
