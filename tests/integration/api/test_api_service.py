"""Health, readiness, routing errors and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from services.api.openapi import ALL_ENDPOINTS, openapi_path

Client = TestClient[Any, Any]


async def test_healthz_and_readyz_answer_when_everything_runs(api: Client) -> None:
    assert (await (await api.get("/healthz")).json()) == {"status": "ok"}
    ready = await api.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["checks"] == {"store": "ok", "bus": "ok", "projector": "ok"}


async def test_readyz_is_503_problem_when_the_bus_is_gone(api: Client) -> None:
    from services.api.context import CONTEXT

    await api.app[CONTEXT].runtime.nc.close()
    response = await api.get("/readyz")
    assert response.status == 503 and response.content_type == "application/problem+json"
    assert (await response.json())["checks"]["bus"] == "disconnected"


async def test_unknown_route_is_404_and_wrong_method_is_405_as_problems(api: Client) -> None:
    missing = await api.get("/nowhere")
    assert missing.status == 404 and missing.content_type == "application/problem+json"
    assert (await missing.json())["instance"] == "/nowhere"
    wrong = await api.post("/runs/00000000-0000-0000-0000-000000000000")
    assert wrong.status == 405 and wrong.content_type == "application/problem+json"
    assert "GET" in (await wrong.json())["allowed"] and "GET" in wrong.headers["Allow"]


async def test_every_response_echoes_a_correlation_id(api: Client) -> None:
    minted = await api.get("/nowhere")
    assert len(minted.headers["X-Correlation-Id"]) == 36
    given = await api.get("/healthz", headers={"X-Correlation-Id": "abc"})
    assert given.headers["X-Correlation-Id"] == "abc"


async def test_openapi_document_is_valid_and_covers_every_route(api: Client) -> None:
    document = await (await api.get("/openapi.json")).json()
    validate(document)
    assert document["openapi"].startswith("3.1")
    for endpoint in ALL_ENDPOINTS:
        assert endpoint.method.lower() in document["paths"][openapi_path(endpoint.path)], endpoint.path
    create = document["paths"]["/jobs"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JobSpec"
    }
    listing = {p["name"] for p in document["paths"]["/jobs"]["get"]["parameters"]}
    assert {"execution", "state", "dimension", "cursor", "limit"} <= listing
    assert "Problem" in document["components"]["schemas"]
