"""An API served on a real port against the test's own PostgreSQL database and bus prefix."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.api.app import create_app
from shared.settings import Settings

HELLO: dict[str, Any] = {
    "driver": "local",
    "payload_template": "{command: ['echo', params.greeting]}",
    "default_params": {"greeting": "hello"},
}
AUDIENCE: dict[str, Any] = {
    "priority": 1,
    "values": {"moon": {"params": {"greeting": "Luna"}}, "sun": {"params": {"greeting": "Sol"}}},
}


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def defined(api: TestClient[Any, Any]) -> TestClient[Any, Any]:
    """An API with execution `hello` and dimension `audience` (values moon, sun) defined."""
    response = await api.post(
        "/state", json={"executions": {"hello": HELLO}, "dimensions": {"audience": AUDIENCE}}
    )
    assert response.status == 200, await response.text()
    return api


async def create_job(api: TestClient[Any, Any], **fields: Any) -> dict[str, Any]:
    body = {"name": "greet", "execution": "hello", "dimensions": {"audience": "moon"}} | fields
    response = await api.post("/jobs", json=body)
    assert response.status == 201, await response.text()
    job: dict[str, Any] = await response.json()
    return job
